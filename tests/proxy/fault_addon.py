"""Test-only fault injector for `mitmdump -s` (never shipped, never imported by src/).

Loaded *after* exifguard's own script by `exifguard run ... -- -s tests/proxy/fault_addon.py`,
in the same interpreter, so it patches the very module objects and addon instances the
running exifguard uses.  Every fault is triggered per request, so the same proxy keeps
serving clean uploads and a test can prove that it does:

* by bytes in the image or body (`EGFAULT[<name>]`, see faultharness.trigger):
    engine-runtime   the JPEG/PNG/GIF walker raises RuntimeError
    engine-memory    the walker raises MemoryError
    engine-slow      the walker sleeps $EGFAULT_SLOW seconds (default 2), then cleans
    verify-reject    the independent verifier raises ScrubError on the walker's output
    carrier-internal the carrier layer's inner function raises (its own guard must catch it)
    rewrite-raise    rewrite_request itself raises (breaks its "never raises" contract)
    policy-raise     policy.decide raises while the upload is judged
    decode-raise     decoding the Content-Encoding raises (after inflating the trigger)
    encode-raise     re-encoding the cleaned body with its Content-Encoding raises
* by the request header `x-eg-test-fault: <Class>.<hook>` (e.g. Exifguard.request): that
  hook of that exifguard addon raises RuntimeError before doing anything (every per-flow
  event hook any exifguard addon implements is wrapped);
  `audit-enospc` / `audit-short` make the audit log's write(2) fail with ENOSPC / write
  only half the line while that flow is handled;
* by the client address, for per-connection hooks (client_connected, tls_*, server_*):
  $EGFAULT_PEERS="<Class>.<hook>=127.0.0.2,..." makes that hook raise for a client
  connecting from that loopback address.

Each time a fault fires, one line "<name>" is appended to $EGFAULT_DIR/fired.log, so a
test can tell "the product survived the fault" from "the fault never happened".  Nothing
here writes a line containing the word exifguard, so log counting stays exact.
"""

from __future__ import annotations

import errno
import functools
import inspect
import logging
import os
import threading
import time
from typing import Any

import exifguard.carriers as carriers
from exifguard.engine import ScrubError
from exifguard.proxy import policy

log = logging.getLogger("egfault")

FAULT_HEADER = "x-eg-test-fault"
#: Lifecycle hooks are not wrapped (a fault there is a start-up failure, tested elsewhere).
LIFECYCLE = frozenset({"load", "configure", "running", "done", "update"})


def event_hooks() -> list[str]:
    """Every per-connection/per-flow mitmproxy event (the registry fills as layers import)."""
    import mitmproxy.proxy.layers  # noqa: F401 - registers the flow hooks
    import mitmproxy.proxy.server_hooks  # noqa: F401
    from mitmproxy import hooks
    return sorted(set(hooks.all_hooks) - LIFECYCLE)
BYTE_FAULTS = ("engine-runtime", "engine-memory", "engine-slow", "verify-reject",
               "carrier-internal", "rewrite-raise", "policy-raise", "decode-raise", "encode-raise")
WALKERS = ("jpeg", "png", "gif", "webp", "tiff", "heif")

_tls = threading.local()
_audit_fault: dict[str, Any] = {"mode": None, "flow": None, "shorted": False}


def fired(name: str) -> None:
    d = os.environ.get("EGFAULT_DIR")
    if d:
        fd = os.open(os.path.join(d, "fired.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            _real_write(fd, (name + "\n").encode())
        finally:
            os.close(fd)


def _which(data: Any) -> str | None:
    try:
        b = bytes(data)
    except Exception:  # noqa: BLE001
        return None
    if b"EGFAULT[" not in b:
        return None
    for name in BYTE_FAULTS:
        if b"EGFAULT[" + name.encode() + b"]" in b:
            return name
    return None


# ---- engine: walkers and verifiers ---------------------------------------------------------
def _patch_walker(mod: Any) -> None:
    orig = mod.scrub

    @functools.wraps(orig)
    def scrub(data: Any, options: Any, findings: Any) -> Any:
        name = _which(data)
        _tls.verify_reject = name == "verify-reject"
        if name == "engine-runtime":
            fired(name)
            raise RuntimeError("injected test fault in the walker")
        if name == "engine-memory":
            fired(name)
            raise MemoryError("injected test fault in the walker")
        if name == "engine-slow":
            fired(name)
            time.sleep(float(os.environ.get("EGFAULT_SLOW", "2")))
        return orig(data, options, findings)
    mod.scrub = scrub


def _patch_verifier(mod: Any) -> None:
    orig = mod.verify

    @functools.wraps(orig)
    def verify(clean: Any, options: Any) -> Any:
        if getattr(_tls, "verify_reject", False):
            _tls.verify_reject = False
            fired("verify-reject")
            raise ScrubError("injected test fault: the verifier rejects this output")
        return orig(clean, options)
    mod.verify = verify


# ---- carriers and policy ------------------------------------------------------------------
def _patch_carriers() -> None:
    inner = carriers._rewrite  # noqa: SLF001 - the guard inside rewrite_request is what we test

    @functools.wraps(inner)
    def _rewrite(method: str, url: str, headers: Any, body: Any, options: Any) -> Any:
        if _which(body) == "carrier-internal":
            fired("carrier-internal")
            raise RuntimeError("injected test fault in the carrier layer")
        return inner(method, url, headers, body, options)
    carriers._rewrite = _rewrite  # noqa: SLF001

    outer = carriers.rewrite_request

    @functools.wraps(outer)
    def rewrite_request(method: str, url: str, headers: Any, body: Any, *a: Any, **kw: Any) -> Any:
        name = _which(body)
        _tls.policy_raise = name == "policy-raise"
        if name == "rewrite-raise":
            fired(name)
            raise RuntimeError("injected test fault: rewrite_request raised")
        return outer(method, url, headers, body, *a, **kw)
    carriers.rewrite_request = rewrite_request

    decide = policy.decide

    @functools.wraps(decide)
    def decide_(*a: Any, **kw: Any) -> Any:
        if getattr(_tls, "policy_raise", False):
            _tls.policy_raise = False
            fired("policy-raise")
            raise RuntimeError("injected test fault in policy.decide")
        return decide(*a, **kw)
    policy.decide = decide_

    try:
        from exifguard.proxy import decode as codings
    except ImportError:  # an exifguard without its own Content-Encoding decoder
        return
    dec = codings.decode

    @functools.wraps(dec)
    def decode(raw: Any, *a: Any, **kw: Any) -> Any:
        out = dec(raw, *a, **kw)
        if _which(getattr(out, "body", b"")) == "decode-raise":
            fired("decode-raise")
            raise RuntimeError("injected test fault while decoding the Content-Encoding")
        return out
    codings.decode = decode

    enc = codings.encode

    @functools.wraps(enc)
    def encode(body: Any, *a: Any, **kw: Any) -> Any:
        if _which(body) == "encode-raise":
            fired("encode-raise")
            raise RuntimeError("injected test fault while re-encoding the cleaned body")
        return enc(body, *a, **kw)
    codings.encode = encode


# ---- the audit log's write(2) ---------------------------------------------------------------
_real_write = os.write


def _is_audit_fd(fd: int) -> bool:
    path = os.environ.get("EGFAULT_AUDIT_PATH")
    if not path:
        return False
    try:
        return os.path.realpath(os.readlink(f"/proc/self/fd/{fd}")) == os.path.realpath(path)
    except OSError:
        return False


def _write(fd: int, data: Any) -> int:
    mode = _audit_fault["mode"]
    if mode and _is_audit_fd(fd):
        fired(mode)
        if mode == "audit-short" and not _audit_fault["shorted"]:
            # what write(2) does when the disk has room for part of the line only
            _audit_fault["shorted"] = True
            return _real_write(fd, bytes(data)[: max(1, len(data) // 2)])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return _real_write(fd, data)


# ---- exifguard's addon hooks ---------------------------------------------------------------
def _flow_fault(args: tuple[Any, ...]) -> str | None:
    for a in args:
        req = getattr(a, "request", None)
        if req is not None:
            return req.headers.get(FAULT_HEADER)
    return None


def _peer(args: tuple[Any, ...]) -> str | None:
    """The client address of a connection-level event (Client, hook data with .client/.context)."""
    for a in args:
        for c in (a, getattr(a, "client", None), getattr(getattr(a, "context", None), "client", None)):
            peer = getattr(c, "peername", None)
            if isinstance(peer, tuple) and peer:
                return str(peer[0])
        flow = getattr(a, "client_conn", None)
        peer = getattr(flow, "peername", None)
        if isinstance(peer, tuple) and peer:
            return str(peer[0])
    return None


def _wrap_hook(addon: Any, hook: str) -> None:
    orig = getattr(addon, hook)
    what = f"{type(addon).__name__}.{hook}"
    peers = dict(x.split("=", 1) for x in os.environ.get("EGFAULT_PEERS", "").split(",") if "=" in x)
    peer = peers.get(what, "")

    def should_fail(args: tuple[Any, ...]) -> bool:
        """Flow events: the request names this hook (Class.hook); others: the client's address."""
        if any(getattr(a, "request", None) is not None for a in args):
            return _flow_fault(args) == what
        return bool(peer) and _peer(args) == peer

    if inspect.iscoroutinefunction(orig):
        @functools.wraps(orig)
        async def wrapper(*args: Any) -> Any:
            if should_fail(args):
                fired(what)
                raise RuntimeError(f"injected test fault in {what}")
            return await orig(*args)
    else:
        @functools.wraps(orig)
        def wrapper(*args: Any) -> Any:  # type: ignore[misc]
            if should_fail(args):
                fired(what)
                raise RuntimeError(f"injected test fault in {what}")
            return orig(*args)
    setattr(addon, hook, wrapper)


def _exifguard_addons(master: Any) -> list[Any]:
    from mitmproxy.addonmanager import traverse
    return [a for a in traverse(master.addons.chain)
            if type(a).__module__.startswith("exifguard.") and not isinstance(a, FaultInjector)]


class FaultInjector:
    name = "egfault_injector"

    def __init__(self) -> None:
        self.patched = False
        self.wrapped: list[str] = []

    def running(self) -> None:
        self._patch()

    def configure(self, updated: set[str]) -> None:
        self._patch()

    def _patch(self) -> None:
        from mitmproxy import ctx
        if self.patched:
            return
        found = _exifguard_addons(ctx.master)
        if not found:  # exifguard's own script is not loaded yet
            return
        import importlib
        for w in WALKERS:
            _patch_walker(importlib.import_module(f"exifguard.engine.formats.{w}"))
            _patch_verifier(importlib.import_module(f"exifguard.engine.verify.{w}"))
        _patch_carriers()
        os.write = _write
        for addon in found:
            for hook in event_hooks():
                if callable(getattr(addon, hook, None)):
                    _wrap_hook(addon, hook)
                    self.wrapped.append(f"{type(addon).__name__}.{hook}")
        self.patched = True
        log.warning("FAULT-INJECTOR ready; hooks wrapped: %s", " ".join(self.wrapped))

    # arm/disarm the audit fault around one flow
    def requestheaders(self, flow: Any) -> None:
        f = flow.request.headers.get(FAULT_HEADER, "")
        if f == "malloc-trim":  # a probe, not a fault: would trimming give memory back?
            import ctypes
            import ctypes.util
            ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
            fired(f)
        if f in ("audit-enospc", "audit-short"):
            _audit_fault.update(mode=f, flow=flow.id, shorted=False)

    def response(self, flow: Any) -> None:
        self._disarm(flow)

    def error(self, flow: Any) -> None:
        self._disarm(flow)

    def _disarm(self, flow: Any) -> None:
        if _audit_fault.get("flow") == flow.id:
            _audit_fault.update(mode=None, flow=None, shorted=False)


addons = [FaultInjector()]
