"""Script for `mitmdump -s <this file>` (what `exifguard run` passes).

It lives inside the package so an installed exifguard can find it; the repository's
addons/exifguard_addon.py is the same two lines for people who run mitmdump by hand.
"""

from exifguard.proxy.addon import make_addons

addons = make_addons()
