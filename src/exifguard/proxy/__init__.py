"""exifguard's intercepting proxy: mitmproxy addons, AI host policy, audit log, CA and PAC.

Only this package imports mitmproxy (and only `addon` does, lazily for the rest), so
the engine and carrier layers stay usable without it.
"""

from .hosts import DEFAULT_HOSTS, HostSet
from .policy import Action, Mode, OnError

__all__ = ["DEFAULT_HOSTS", "Action", "HostSet", "Mode", "OnError"]
