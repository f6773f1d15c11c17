"""A `mitmdump -s` script that `exifguard run` adds: no per-connection lines in its output.

Why: mitmproxy logs "client connect", "server connect <addr>", "Streaming response
from ...", "server disconnect" and "client disconnect" at INFO for every connection,
tunnelled ones included, so a browser with a dozen tabs buried exifguard's one line
per image (README, Quickstart step 5) under hundreds of them.  exifguard's own lines
come from the "exifguard" logger and are untouched, and so is everything mitmproxy
logs at WARNING or above on a connection (a browser that does not trust the CA, a
refused client, a crash).

Why a separate script in the cli package: what `exifguard run` prints is a choice of
that command, not of the addon; people who run `mitmdump -s` by hand keep mitmproxy's
usual output.  `exifguard run -- --set termlog_verbosity=info` (any explicit
termlog_verbosity) leaves this script out and brings the lines back.
"""

import logging

#: the logger mitmproxy's connection handler writes those per-connection lines to
CONNECTION_LOGGER = "mitmproxy.proxy.server"

logging.getLogger(CONNECTION_LOGGER).setLevel(logging.WARNING)
