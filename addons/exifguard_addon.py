"""Thin script for `mitmdump -s addons/exifguard_addon.py` (the addons live in exifguard.proxy)."""

from exifguard.proxy.addon import make_addons

addons = make_addons()
