"""exifguard as an ICAP/1.0 service (RFC 3507 REQMOD) behind Squid and enterprise proxies.

Layout: `protocol` (sans-I/O parser and response writers), `handler` (the proxy's
policy applied to one REQMOD, sharing exifguard.proxy and exifguard.carriers),
`server` (asyncio connections, preview, worker processes), `squid` (a Squid
configuration generated from the same host table).  No mitmproxy imports.
"""

from .handler import Reqmod, ServiceConfig
from .server import Server, serve

__all__ = ["Reqmod", "Server", "ServiceConfig", "serve"]
