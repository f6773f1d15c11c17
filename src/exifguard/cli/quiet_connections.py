"""A `mitmdump -s` script that `exifguard run` adds: no routine per-connection lines.

Why: mitmproxy logs "client connect", "server connect <addr>", "Streaming response
from ...", "server disconnect" and "client disconnect" at INFO for every connection,
tunnelled ones included, so a browser with a dozen tabs buried exifguard's one line
per image (README, Quickstart step 5) under hundreds of them.  Only those routine
lines are dropped: exifguard's own lines (the "exifguard" logger) and everything else
mitmproxy says about a connection stay, e.g. "Client TLS handshake failed ... may
indicate that the client does not trust the proxy's certificate" or "error
establishing server connection", which tell a person what is wrong.

Why a separate script in the cli package: what `exifguard run` prints is a choice of
that command, not of the addon; people who run `mitmdump -s` by hand keep mitmproxy's
usual output.  `exifguard run -- --set termlog_verbosity=info` (any explicit
termlog_verbosity) leaves this script out and brings the lines back.
"""

import logging

#: the logger mitmproxy's connection handler writes the per-connection lines to
CONNECTION_LOGGER = "mitmproxy.proxy.server"
#: how those routine lines start (mitmproxy 11 and 12)
ROUTINE = ("client connect", "client disconnect", "server connect ", "server disconnect ",
           "Streaming request to ", "Streaming response from ", "Closing connection due to inactivity")


def _not_routine(record: logging.LogRecord) -> bool:
    if record.levelno > logging.INFO:
        return True
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001 - a broken record is shown, not hidden
        return True
    return not message.startswith(ROUTINE)


_logger = logging.getLogger(CONNECTION_LOGGER)
# a reloaded script defines a new function: compare by name so the filter is added once
if not any(getattr(f, "__name__", "") == _not_routine.__name__ for f in _logger.filters):
    _logger.addFilter(_not_routine)
