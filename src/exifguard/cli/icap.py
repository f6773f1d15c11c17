"""`exifguard icap` (the ICAP service) and `exifguard squid-config` (a Squid configuration).

For organisations that already run a TLS-intercepting proxy: the proxy hands uploads
to exifguard over ICAP (RFC 3507 REQMOD) and forwards what exifguard returns.  See
docs/deploy.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from pathlib import Path

from ..proxy import policy
from ..proxy.hosts import HostSet

_SIZE = re.compile(r"^\s*(\d+)\s*([kmg]?)i?b?\s*$", re.IGNORECASE)


def parse_size(value: str) -> int:
    """"256m", "1g", "1048576" -> bytes; raises ValueError naming the value."""
    m = _SIZE.match(value)
    if not m or int(m.group(1)) < 1:
        raise ValueError(f"not a size: {value!r} (use bytes or a k/m/g suffix, e.g. 256m)")
    return int(m.group(1)) * {"": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}[m.group(2).lower()]


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _hosts(args: argparse.Namespace) -> HostSet:
    extra = [*(args.add_host or []), *(f"service:{s}" for s in args.add_service or [])]
    return HostSet.build(extra=extra, remove=args.remove_host or [])


def _host_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--add-host", action="append", metavar="HOST",
                   help="also clean uploads to HOST (example.com or *.example.com); repeatable")
    p.add_argument("--remove-host", action="append", metavar="HOST",
                   help="remove HOST (or service:ID) from the default AI host list; repeatable")
    p.add_argument("--add-service", action="append", metavar="ID",
                   help="also clean uploads to a service that is off by default because it needs shared "
                        "storage or a whole site decrypted (huggingchat, doubao, m365-sharepoint, azure-blob, "
                        "aws-s3, ...; `exifguard hosts` lists them); give the same to `icap` and "
                        "`squid-config`; repeatable")


def register(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001
    """Add the `icap` and `squid-config` subcommands."""
    p = sub.add_parser("icap", help="run exifguard as an ICAP service for Squid or an enterprise proxy",
                       description="Serve ICAP/1.0 REQMOD at icap://HOST:PORT/reqmod: the proxy sends uploads "
                                   "to AI services here and forwards what comes back (cleaned, or refused "
                                   "with exifguard's explanation). Configure the proxy with bypass=off so a "
                                   "failure never forwards an upload uncleaned (exifguard squid-config).")
    p.add_argument("--host", default="127.0.0.1",
                   help="listen address (default 127.0.0.1; use the proxy-facing address to serve "
                        "proxies on other machines)")
    p.add_argument("--port", type=int, default=1344, help="listen port (default 1344; 0: a free port)")
    p.add_argument("--workers", type=int, default=0, metavar="N",
                   help="worker processes (default 0: one per CPU core)")
    p.add_argument("--threads", type=int, default=2, metavar="N",
                   help="inspections at once per worker process (default 2)")
    p.add_argument("--queue", type=int, default=32, metavar="N",
                   help="inspections that may wait per worker process; more are refused with 503 (default 32)")
    p.add_argument("--mode", choices=[m.value for m in policy.Mode], default="strip",
                   help="strip: clean images (default); audit: log only, forward unchanged; block: refuse "
                        "every image upload")
    p.add_argument("--on-error", choices=[o.value for o in policy.OnError], default="block",
                   help="an image that cannot be cleaned: block the upload (default) or pass it unchanged")
    p.add_argument("--audit-log", type=Path, default=None, metavar="PATH",
                   help="JSON Lines audit log (one record per image, with the proxy's X-Client-IP and "
                        "X-Authenticated-User; no metadata values)")
    p.add_argument("--log-values", action="store_true",
                   help="include metadata values in logs (private data; off by default)")
    p.add_argument("--rename-files", action="store_true", help="replace multipart file names by neutral ones")
    p.add_argument("--drop-icc", action="store_true", help="remove ICC colour profiles too")
    p.add_argument("--inspect-limit", default="256m", metavar="SIZE",
                   help="largest body inspected (after Content-Encoding); larger uploads are refused "
                        "(default 256m)")
    p.add_argument("--inspect-timeout", type=float, default=60.0, metavar="SECONDS",
                   help="one inspection's deadline, waiting included; later: refused with 503 (default 60)")
    p.add_argument("--buffer-budget", default="1g", metavar="SIZE",
                   help="upload bytes one worker process holds at once; more: refused with 503 (default 1g)")
    p.add_argument("--max-connections", type=int, default=128, metavar="N",
                   help="ICAP connections the service accepts (advertised as Max-Connections; default 128)")
    _host_args(p)
    p.set_defaults(func=cmd_icap)

    q = sub.add_parser("squid-config", help="print a Squid configuration that sends AI uploads to exifguard",
                       description="Print a Squid (5.7+, built with OpenSSL) configuration generated from "
                                   "exifguard's host table: bump only the AI hosts, splice everything else, "
                                   "send their POST/PUT/PATCH to exifguard icap with bypass=off.")
    q.add_argument("--icap", action="append", metavar="URL",
                   help="the service, icap://HOST:PORT/reqmod (default icap://127.0.0.1:1344/reqmod); "
                        "repeat for an ordered failover set")
    q.add_argument("--ca-cert", type=Path, default=None, metavar="PEM",
                   help="the CA certificate Squid signs bumped connections with "
                        "(default /etc/squid/exifguard-ca.pem)")
    q.add_argument("--ca-key", type=Path, default=None, metavar="PEM",
                   help="its private key (default: in the --ca-cert file)")
    q.add_argument("--http-port", default="3128", metavar="[ADDR:]PORT",
                   help="where Squid listens (default 3128)")
    q.add_argument("--ssl-db", default="/var/lib/squid/ssl_db", metavar="DIR",
                   help="Squid's generated-certificate database (create it with security_file_certgen -c)")
    _host_args(q)
    q.set_defaults(func=cmd_squid_config)


def _fail(msg: str) -> int:
    print(f"exifguard: {msg}", file=sys.stderr)
    return 2


def cmd_icap(args: argparse.Namespace) -> int:
    from ..icap.handler import ServiceConfig
    from ..icap.server import serve
    try:
        hosts = _hosts(args)
        limit = parse_size(args.inspect_limit)
        budget = parse_size(args.buffer_budget)
    except ValueError as exc:
        return _fail(str(exc))
    if args.inspect_timeout <= 0 or args.threads < 1 or args.queue < 0 or args.max_connections < 1 \
            or args.workers < 0:
        return _fail("--inspect-timeout, --threads and --max-connections must be positive, "
                     "--queue and --workers zero or more")
    if not 0 <= args.port <= 65535:
        return _fail(f"--port must be 0..65535 (got {args.port})")
    processes = args.workers or _cores()
    config = ServiceConfig(hosts=hosts, mode=policy.parse_mode(args.mode),
                           on_error=policy.parse_on_error(args.on_error), keep_icc=not args.drop_icc,
                           rename_files=args.rename_files, log_values=args.log_values, inspect_limit=limit,
                           inspect_timeout=args.inspect_timeout, threads=args.threads, queue=args.queue,
                           buffer_budget=max(budget, limit), max_connections=args.max_connections,
                           audit_log=args.audit_log.expanduser().resolve() if args.audit_log else None,
                           processes=processes)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.audit_log:
        try:
            from ..proxy.audit import AuditLog
            AuditLog(config.audit_log, with_values=args.log_values).close()  # fail now, not per upload
        except OSError as exc:
            return _fail(f"cannot open the audit log {args.audit_log}: {exc.strerror}")

    def ready(port: int) -> None:
        host = f"[{args.host}]" if ":" in args.host else args.host
        print(f"exifguard icap: serving icap://{host}:{port}{config.service_path} "
              f"({processes} worker process{'es' if processes != 1 else ''}, mode {config.mode.value}, "
              f"on error {config.on_error.value}, ISTag {config.istag()})", flush=True)
        if args.host not in ("127.0.0.1", "::1", "localhost"):
            print("exifguard icap: listening beyond loopback: allow only your proxies to reach this port "
                  "(firewall); uploads it receives are decrypted traffic", flush=True)

    try:
        return serve(config, args.host, args.port, processes=processes, ready=ready)
    except OSError as exc:
        return _fail(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc} "
                     "(another service on that port? choose one with --port)")


def cmd_squid_config(args: argparse.Namespace) -> int:
    from ..icap.squid import DEFAULT_ICAP, squid_config
    try:
        hosts = _hosts(args)
    except ValueError as exc:
        return _fail(str(exc))
    urls = args.icap or [DEFAULT_ICAP]
    for u in urls:
        if not re.match(r"^icap://[^/\s]+(:\d+)?/\S*$", u):
            return _fail(f"--icap must look like icap://HOST:PORT/reqmod (got {u!r})")
    sys.stdout.write(squid_config(hosts, icap=urls, ca_cert=args.ca_cert, ca_key=args.ca_key,
                                  http_port=args.http_port, ssl_db=args.ssl_db))
    return 0
