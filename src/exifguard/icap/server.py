"""The ICAP server: asyncio connections, Preview, persistent connections, worker processes.

One process runs an asyncio loop per listening socket; `serve(..., processes=N)` forks N
of them on one shared listening socket (the pre-fork model: the kernel hands each new
connection to one process), so inspections spread over every core and one slow image
holds at most its own process's slot.  The parent only supervises: it restarts a worker
that died (its connections were reset, so the proxy failed those requests: with
bypass=off nothing was forwarded) and stops them all on SIGTERM/SIGINT.  Each worker
dies with the parent (PR_SET_PDEATHSIG), so `kill -9` of the parent leaves no orphans.

Bounds per process: `Max-Connections` connections (the service's advertised total, which
one process may also take alone, since the kernel does not split connections evenly; more
are answered 503 and closed),
`buffer_budget` bytes of bodies held at once and `inspect_limit` per body (more: the
upload is refused and the rest of its body read and discarded), the inspection pool's
threads and queue (more: 503 busy), and a read timeout on idle or trickling
connections.

Error statuses (RFC 3507 §4.3.3): 400 malformed request (then the connection is closed:
its framing can no longer be trusted), 404 unknown service path, 405 RESPMOD on the
REQMOD service, 501 unknown method, 505 other ICAP versions, 500 an internal error
outside an inspection (inside one, the *HTTP* request is refused instead, see handler),
503 too many connections.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from email.utils import formatdate
from typing import Any

from .. import __version__
from .handler import Client, Reqmod, ServiceConfig, Verdict
from .protocol import (CONTINUE, LAST_CHUNK, BodyData, BodyEnd, Event, HTTPHead, ICAPError, ICAPRequest,
                       Parser, PreviewEnd, RequestHead, chunk, chunked, http_response_head, response_head)

log = logging.getLogger("exifguard")

READ_SIZE = 256 * 1024
READ_TIMEOUT = 300.0
"""Seconds a connection may stay silent (between requests, or inside a body)."""


class _Closed(Exception):
    """The client went away."""


class _Conn:
    """Reads and parses one connection's bytes; hands out events one at a time."""

    def __init__(self, reader: asyncio.StreamReader, timeout: float) -> None:
        self.reader = reader
        self.parser = Parser()
        self.events: deque[Event] = deque()
        self.timeout = timeout

    async def next(self, *, idle_ok: bool = False) -> Event | None:
        while not self.events:
            try:
                data = await asyncio.wait_for(self.reader.read(READ_SIZE), self.timeout)
            except (asyncio.TimeoutError, ConnectionError) as exc:
                if idle_ok and self.parser.idle:
                    return None
                raise _Closed() from exc
            if not data:
                if idle_ok and self.parser.idle:
                    return None
                raise _Closed()
            self.events.extend(self.parser.feed(data))
        return self.events.popleft()

    def continue_body(self) -> None:
        self.events.extend(self.parser.continue_body())

    def next_request(self) -> None:
        self.events.extend(self.parser.next_request())

    async def body(self) -> AsyncIterator[Event]:
        """Body events up to and including the end (PreviewEnd or BodyEnd)."""
        while True:
            ev = await self.next()
            yield ev
            if isinstance(ev, (PreviewEnd, BodyEnd)):
                return

    async def discard(self) -> bool | None:
        """Read the (rest of the) body without keeping it; returns ieof for a preview end."""
        async for ev in self.body():
            if isinstance(ev, PreviewEnd):
                return ev.ieof
        return None


class Server:
    """One process's ICAP service (see the module docstring)."""

    def __init__(self, config: ServiceConfig, reqmod: Reqmod | None = None) -> None:
        self.config = config
        self.reqmod = reqmod or Reqmod(config)
        self.istag = config.istag()
        self.active = 0
        self.buffered = 0
        self.read_timeout = READ_TIMEOUT
        self.tasks: set[asyncio.Task[Any]] = set()

    async def close_connections(self) -> None:
        """Stop serving every open connection (at shutdown)."""
        tasks = [t for t in self.tasks if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # ---- framing helpers ---------------------------------------------------------------
    def _headers(self, close: bool = False) -> list[tuple[str, str]]:
        h = [("ISTag", self.istag), ("Date", formatdate(usegmt=True)), ("Server", f"exifguard/{__version__}")]
        if close:
            h.append(("Connection", "close"))
        return h

    async def _send(self, writer: asyncio.StreamWriter, parts: list[bytes]) -> None:
        writer.writelines(parts)
        await writer.drain()

    def _error(self, status: int, close: bool = True) -> bytes:
        return response_head(status, self._headers(close))

    # ---- connections -------------------------------------------------------------------
    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.active >= self.config.max_connections:
            try:
                await self._send(writer, [self._error(503)])
            except ConnectionError:
                pass
            writer.close()
            return
        self.active += 1
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
        try:
            await self._serve(_Conn(reader, self.read_timeout), writer)
        except (_Closed, ConnectionError):
            pass
        except asyncio.CancelledError:  # shutting down: the connection just ends
            pass
        except Exception as exc:  # noqa: BLE001 - one connection's bug must not stop the server
            log.error("exifguard icap: internal error on a connection: %s", type(exc).__name__)
            try:
                await self._send(writer, [self._error(500)])
            except Exception:  # noqa: BLE001
                pass
        finally:
            self.active -= 1
            if task is not None:
                self.tasks.discard(task)
            try:
                writer.close()
            except Exception:  # noqa: BLE001
                pass

    async def _serve(self, conn: _Conn, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                ev = await conn.next(idle_ok=True)
                if ev is None:
                    return
                if not isinstance(ev, RequestHead):  # the parser only starts with a head
                    raise ICAPError(400, "unexpected data")
                req = ev.request
                keep = await self._request(conn, writer, req)
            except ICAPError as exc:
                log.warning("exifguard icap: refused a malformed ICAP request: %d %s", exc.status, exc)
                await self._send(writer, [self._error(exc.status)])
                return
            if req.close or not keep:
                return
            conn.next_request()

    async def _request(self, conn: _Conn, writer: asyncio.StreamWriter, req: ICAPRequest) -> bool:
        """Answer one request; False: close the connection afterwards."""
        self.reqmod.counters.requests += 1
        if req.service.rstrip("/") != self.config.service_path.rstrip("/"):
            await self._send(writer, [self._error(404)])
            return False
        if req.method == "OPTIONS":
            self.reqmod.counters.options += 1
            if req.has_body:
                await conn.discard()
            await self._send(writer, [response_head(200, self._options_headers(req.close))])
            return True
        if req.method != "REQMOD":
            await self._send(writer, [self._error(405)])
            return False
        head = req.http_head()
        assert head is not None
        if not req.has_body:  # nothing to inspect; 204 only if allowed (no preview here, §4.6)
            await self._unchanged(writer, req, head, None, may_204=False)
            return True
        match = self.reqmod.classify(head)
        if match is None:
            await self._pass_through(conn, writer, req, head)
            return True
        return await self._candidate(conn, writer, req, head)

    def _options_headers(self, close: bool) -> list[tuple[str, str]]:
        c = self.config
        return [("Methods", "REQMOD"), ("Service", f"exifguard/{__version__} image metadata cleaner"),
                ("Service-ID", "exifguard"), *self._headers(close),
                ("Max-Connections", str(c.max_connections)),
                ("Options-TTL", str(c.options_ttl)), ("Allow", "204"), ("Preview", str(c.preview)),
                ("Transfer-Preview", "*")]

    # ---- answers -----------------------------------------------------------------------
    async def _unchanged(self, writer: asyncio.StreamWriter, req: ICAPRequest, head: HTTPHead,
                         body: bytes | None, *, may_204: bool) -> None:
        """Forward as it came: 204 where allowed, else the request echoed back (§4.6)."""
        if may_204 or req.allow_204:
            await self._send(writer, [response_head(204, self._headers(req.close))])
            return
        if body is None:
            await self._send(writer, [response_head(200, self._headers(req.close), [("req-hdr", head.raw)])])
            return
        await self._send(writer, [response_head(200, self._headers(req.close), [("req-hdr", head.raw)],
                                                "req-body"), *chunked(body)])

    async def _pass_through(self, conn: _Conn, writer: asyncio.StreamWriter, req: ICAPRequest,
                            head: HTTPHead) -> None:
        """Not an upload candidate: answer as cheaply as the client allows, keep nothing."""
        if req.preview is not None:
            await conn.discard()  # the preview only; 204 in answer to it is always allowed (§4.5)
            await self._send(writer, [response_head(204, self._headers(req.close))])
            return
        if req.allow_204:
            await conn.discard()
            await self._send(writer, [response_head(204, self._headers(req.close))])
            return
        # neither: stream the body back as it arrives (never buffered)
        await self._send(writer, [response_head(200, self._headers(req.close), [("req-hdr", head.raw)],
                                                "req-body")])
        async for ev in conn.body():
            if isinstance(ev, BodyData):
                await self._send(writer, [chunk(ev.data)])
        await self._send(writer, [LAST_CHUNK])

    async def _respond(self, writer: asyncio.StreamWriter, req: ICAPRequest, v: Verdict) -> None:
        body = v.text.encode("utf-8")
        http = http_response_head(v.status, [("Content-Type", "text/plain; charset=utf-8"),
                                             ("Content-Length", str(len(body))), ("Cache-Control", "no-store"),
                                             ("X-Exifguard", "blocked"), *v.headers])
        await self._send(writer, [response_head(200, self._headers(req.close), [("res-hdr", http)], "res-body"),
                                  *chunked(body)])

    async def _answer(self, writer: asyncio.StreamWriter, req: ICAPRequest, head: HTTPHead, body: bytes,
                      v: Verdict, *, may_204: bool) -> None:
        self.reqmod.emit(v)  # logged and recorded before the proxy can act on the answer
        if v.kind == "respond":
            await self._respond(writer, req, v)
        elif v.kind == "modified" and v.head is not None and v.body is not None:
            await self._send(writer, [response_head(200, self._headers(req.close), [("req-hdr", v.head.render())],
                                                    "req-body"), *chunked(v.body)])
        else:
            await self._unchanged(writer, req, head, body, may_204=may_204)

    async def _candidate(self, conn: _Conn, writer: asyncio.StreamWriter, req: ICAPRequest,
                         head: HTTPHead) -> bool:
        """An upload to an AI host: the whole body is read and inspected, whatever its preview
        shows (an image may sit after the first 64 KiB: a long prompt before a base64 image)."""
        rm, cfg = self.reqmod, self.config
        host = head.host() or "unknown"
        in_preview = req.preview is not None
        declared = rm.declared_too_large(head)
        if declared is not None:
            v = rm.too_large(host, declared)
            if v.kind != "respond":  # audit mode: forwarded unchecked, as the proxy does
                rm.emit(v)
                await self._pass_through(conn, writer, req, head)
                return True
            await conn.discard()  # a preview only (then the client sends no more), else everything
            rm.emit(v)
            await self._respond(writer, req, v)
            return True
        buf = bytearray()
        taken = 0
        overflow: Verdict | None = None
        ieof = False
        try:
            while True:
                ev = await conn.next()
                if isinstance(ev, BodyEnd):
                    break
                if isinstance(ev, BodyData):
                    if overflow is not None:
                        continue
                    n = len(ev.data)
                    if len(buf) + n > cfg.inspect_limit:
                        overflow = rm.too_large(host, None)
                    elif self.buffered + n > cfg.buffer_budget:
                        overflow = rm.busy(host, f"{self.buffered} bytes of uploads are held already")
                    else:
                        buf += ev.data
                        taken += n
                        self.buffered += n
                        continue
                    self.buffered -= taken
                    taken = 0
                    buf = bytearray()
                elif isinstance(ev, PreviewEnd):
                    ieof = ev.ieof
                    if ieof:
                        break
                    if overflow is not None and overflow.kind == "respond":
                        # answer the preview: the client sends no more of this body
                        rm.emit(overflow)
                        await self._respond(writer, req, overflow)
                        return True
                    in_preview = False
                    await self._send(writer, [CONTINUE[:-2] + f"ISTag: {self.istag}\r\n\r\n".encode()])
                    conn.continue_body()
            may_204 = in_preview  # still answering the preview (it ended with ieof)
            if overflow is not None:
                # too large or no room: refused (audit mode: forwarded, though we kept no copy)
                if overflow.kind == "respond":
                    rm.emit(overflow)
                    await self._respond(writer, req, overflow)
                    return True
                if may_204 or req.allow_204:
                    rm.emit(overflow)
                    await self._send(writer, [response_head(204, self._headers(req.close))])
                    return True
                await self._respond(writer, req, Verdict.respond(503, "exifguard could not keep a copy of "
                                                                 "this upload to forward it\n"))
                return True
            body = bytes(buf)
            del buf
            v = await rm.inspect(head, body, Client.from_icap(req.headers))
            await self._answer(writer, req, head, body, v, may_204=may_204)
            return True
        finally:
            self.buffered -= taken


# ---- processes -----------------------------------------------------------------------------
def bind(host: str, port: int) -> socket.socket:
    """The listening socket, shared by every worker process."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=1024, reuse_port=False)
    sock.set_inheritable(True)
    return sock


def _die_with_parent() -> None:
    """Linux: SIGTERM this process when its parent dies (no orphaned workers)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


async def run_worker(sock: socket.socket, config: ServiceConfig,
                     started: Callable[[Server], Any] | None = None) -> None:
    """Serve on `sock` until SIGTERM/SIGINT (or cancellation)."""
    server = Server(config)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError, ValueError):
            pass
    srv = await asyncio.start_server(server.handle, sock=sock, limit=READ_SIZE)
    if started is not None:
        started(server)
    try:
        await stop.wait()
    finally:
        srv.close()
        await server.close_connections()
        server.reqmod.close()


def _child(sock: socket.socket, config: ServiceConfig, parent: int) -> None:
    # First undo the parent's handlers, which fork copied: its SIGTERM handler would swallow
    # the parent-death signal (and signal this worker's siblings) instead of ending it.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles ^C for the group
    _die_with_parent()
    if os.getppid() != parent:  # the parent died before the death signal was armed
        os._exit(0)
    try:
        asyncio.run(run_worker(sock, config))
    finally:
        os._exit(0)


def serve(config: ServiceConfig, host: str, port: int, *, processes: int = 1,
          ready: Callable[[int], Any] | None = None) -> int:
    """Run the service until SIGTERM/SIGINT; returns the exit status."""
    sock = bind(host, port)
    bound = sock.getsockname()[1]
    if processes <= 1:
        if ready is not None:
            ready(bound)
        try:
            asyncio.run(run_worker(sock, config))
        except KeyboardInterrupt:
            pass
        return 0
    children: dict[int, float] = {}
    stopping = False
    restarts: deque[float] = deque(maxlen=10)

    def spawn() -> None:
        parent = os.getpid()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            _child(sock, config, parent)
        children[pid] = time.monotonic()

    def stop(_sig: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for pid in list(children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for _ in range(processes):
        spawn()
    if ready is not None:
        ready(bound)
    status = 0
    deadline: float | None = None
    while children:
        try:
            pid, st = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            if stopping:
                deadline = deadline or time.monotonic() + 5.0
                if time.monotonic() > deadline:
                    for p in list(children):
                        try:
                            os.kill(p, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
            time.sleep(0.05)
            continue
        children.pop(pid, None)
        if stopping:
            continue
        code = os.waitstatus_to_exitcode(st)
        log.error("exifguard icap: worker process %d ended (%s); starting another", pid,
                  f"signal {-code}" if code < 0 else f"exit {code}")
        now = time.monotonic()
        restarts.append(now)
        if len(restarts) == restarts.maxlen and now - restarts[0] < 60:
            log.error("exifguard icap: workers keep dying (10 in a minute); stopping")
            stop(0, None)
            status = 1
            continue
        spawn()
    sock.close()
    return status
