"""The guard: a mitmdump that carries AI traffic has a working exifguard addon, or refuses it.

Why this exists: mitmproxy loads `-s` scripts in a background task and, when loading
fails, only logs it (or, for an option error raised while it applies deferred
`--set` values, logs nothing at all) and keeps proxying without the script.  Seen in
the wild: `exifguard run -- --set exifguard_mode=audit` gave mitmdump two values for
one option, the script was silently dropped, and images were forwarded uncleaned.

The guard closes that hole from outside the script's own addon list:

* `install()` (called by both `mitmdump -s` scripts) builds exifguard's addons, checks
  every `exifguard_*` value mitmproxy deferred for them (unknown names, duplicates,
  bad types, values outside the choices) *before* mitmproxy applies them, and registers
  the `Guard` directly in the master, so it stays in the chain even when the script's
  addons do not make it there;
* it wraps each addon's `configure` to remember whether the last configuration worked,
  and its request hooks so an exception escaping them refuses the request instead of
  letting mitmproxy forward it unchecked;
* `Guard` refuses every request (HTTP 503, nothing is sent) until its `running` check
  has passed, and again whenever the exifguard addon is not in the chain or its last
  `configure` failed;
* under `exifguard run` (option `exifguard_ready_file`) it writes a readiness record
  (ok or the reasons, plus the effective options) that `exifguard run` waits for before
  it says the proxy is ready;
* run by hand, it warns loudly when the proxy listens beyond loopback, the CA in the
  confdir is not name-constrained, or no body_size_limit caps what mitmproxy buffers.
"""

from __future__ import annotations

import asyncio
import inspect
import ipaddress
import json
import logging
import os
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mitmproxy import ctx, http
from mitmproxy.optmanager import OptManager

log = logging.getLogger("exifguard")

GUARD_NAME = "exifguard_guard"
READY_OPTION = "exifguard_ready_file"
#: options whose values are secrets or plumbing: never echoed in the readiness record
PRIVATE_OPTIONS = frozenset({"exifguard_selftest_token", READY_OPTION})
#: mitmproxy options `exifguard run` checks in the readiness record
CHECKED_MITM_OPTIONS = ("listen_host", "listen_port", "confdir", "body_size_limit", "stream_large_bodies",
                        "allow_hosts", "ignore_hosts", "upstream_cert", "connection_strategy", "mode")
REFUSED_STATUS = 503
#: hooks of the script's addons the guard watches: an exception escaping one refuses the
#: request (or the client), and so does a hook that did not run to its end for a flow
REQUEST_HOOKS = ("requestheaders", "request")
CLIENT_HOOKS = ("client_connected",)
DONE_KEY = "exifguard_guard_done"   # flow.metadata: the watched hooks that completed
CLIENT_DONE_ATTR = "_exifguard_guard_done"  # on a client connection: its watched hooks that completed


def refusal_text(reason: str) -> str:
    return (f"exifguard is not active in this proxy, so this request was refused and nothing was "
            f"sent: {reason}. Look at the proxy's output for the cause and restart it.\n")


class _CollectOptions:
    """A stand-in for mitmproxy's Loader that records options into a scratch OptManager."""

    def __init__(self, into: OptManager) -> None:
        self.into = into

    def add_option(self, name: str, typespec: Any, default: Any, help: str,  # noqa: A002 - mitmproxy's name
                   choices: Iterable[str] | None = None) -> None:
        self.into.add_option(name, typespec, default, help, list(choices) if choices else None)

    def add_command(self, *args: Any, **kwargs: Any) -> None:  # pragma: no cover - not used by our addons
        pass


def option_specs(addons: Iterable[object] | None = None) -> OptManager:
    """A scratch OptManager holding exifguard's option definitions (nothing else).

    Fresh addon instances are used so loading them here has no effect on the real ones.
    """
    if addons is None:
        from .addon import make_addons
        addons = make_addons()
    om = OptManager()
    loader = _CollectOptions(om)
    for a in [*addons, Guard()]:
        load = getattr(a, "load", None)
        if callable(load):
            load(loader)
    return om


def _is_str_sequence(specs: OptManager, name: str) -> bool:
    import collections.abc
    import typing
    for k, opt in specs.items():
        if k == name:
            return typing.get_origin(opt.typespec) is collections.abc.Sequence
    return False


def choices_of(specs: OptManager, name: str) -> list[str] | None:
    for k, opt in specs.items():
        if k == name:
            return list(opt.choices) if opt.choices else None
    return None


def check_value(specs: OptManager, name: str, value: Any) -> Any:
    """Parse/type-check one option value as mitmproxy would, plus the choices mitmproxy does
    not enforce.  `value` is a list of `--set` strings or an already typed config.yaml value.
    Returns the typed value; raises ValueError with a message naming the option."""
    try:
        if isinstance(value, _Strings) and _is_str_sequence(specs, name):
            # mitmproxy 11 parses `--set` lists only for collections.abc.Sequence[str];
            # a typing.Sequence[str] option would raise NotImplementedError there
            specs.update(**{name: list(value.val)})
        elif isinstance(value, _Strings):
            specs.set(*([f"{name}={v}" for v in value.val] or [name]))
        else:
            specs.update(**{name: value})
    except Exception as exc:  # OptionsError, TypeError from mitmproxy's type check
        raise ValueError(f"{name}: {exc}") from None
    typed = getattr(specs, name)
    allowed = choices_of(specs, name)
    if allowed and typed not in allowed:
        raise ValueError(f"{name}: {typed!r} is not one of {', '.join(allowed)}")
    return typed


class _Strings:
    """Duck type of mitmproxy's deferred `--set` strings (an object with `.val`)."""

    def __init__(self, val: list[str]) -> None:
        self.val = val


def _as_check_value(raw: Any) -> Any:
    val = getattr(raw, "val", None)
    if isinstance(val, list) and all(isinstance(v, str) for v in val):
        return _Strings(val)
    return raw


def check_deferred(options: Any, specs: OptManager) -> list[str]:
    """Validate the `exifguard*` values mitmproxy deferred until our addons exist.

    Bad ones are removed from `options.deferred` (so mitmproxy's own processing cannot
    abort the script's registration) and returned as problems; good ones stay, already
    typed, and mitmproxy applies them as usual.  Unknown `exifguard*` names are problems too:
    mitmproxy would keep them deferred forever, silently.
    """
    deferred = getattr(options, "deferred", None)
    if not isinstance(deferred, dict):
        return []
    problems = []
    known = specs.keys()
    for name in sorted(k for k in deferred if k.startswith("exifguard")):
        if name not in known:
            problems.append(f"unknown option {name} (exifguard's options are "
                            f"{', '.join(sorted(k for k in known if k not in PRIVATE_OPTIONS))})")
            del deferred[name]
            continue
        try:
            # typed now, so mitmproxy applies the value as is (no second parse)
            deferred[name] = check_value(specs, name, _as_check_value(deferred[name]))
        except ValueError as exc:
            problems.append(str(exc))
            del deferred[name]
    return problems


def _jsonable(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return str(v)


def _is_loopback_listen(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "" = every interface


def _write_private(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


class Guard:
    """Refuse traffic unless exifguard's addons are in the chain and configured; see module doc."""

    name = GUARD_NAME

    def __init__(self) -> None:
        self.problems: list[str] = []      # found before/while loading (deferred options, import)
        self.watched: list[object] = []    # the script's addons
        self.configured: dict[int, str | None] = {}  # id(addon) -> None never, "" ok, else the error
        self.checked = False               # the running() check passed
        self.warned = False
        self.hooked: dict[str, list[str]] = {}   # hook -> marks of the addons wrapped for it

    # ---- set-up ------------------------------------------------------------------------
    def load(self, loader: Any) -> None:
        loader.add_option(READY_OPTION, str, "",
                          "Set by `exifguard run`: file where the guard reports whether exifguard's "
                          "addon is loaded and configured (and the effective options).")

    def track(self, addons: list[object], problems: list[str]) -> None:
        """(Re)start watching a freshly loaded script's addons."""
        self.problems = list(problems)
        self.watched = list(addons)
        self.configured = {id(a): None for a in addons if callable(getattr(a, "configure", None))}
        self.checked = False
        self.hooked = {h: [] for h in (*REQUEST_HOOKS, *CLIENT_HOOKS)}
        for a in addons:
            self._wrap_configure(a)
            for hook in (*REQUEST_HOOKS, *CLIENT_HOOKS):
                self._wrap_hook(a, hook)

    def fail(self, reason: str) -> None:
        self.problems.append(reason)
        self.watched = []
        self.configured = {}
        self.checked = False
        log.error(self._banner("exifguard FAILED TO LOAD: every request through this proxy is refused",
                               [reason]))

    def _wrap_configure(self, addon: object) -> None:
        orig = getattr(addon, "configure", None)
        if not callable(orig):
            return
        key = id(addon)

        def configure(updated: set[str]) -> None:
            try:
                orig(updated)
            except BaseException as exc:
                self.configured[key] = f"{getattr(addon, 'name', type(addon).__name__)}: {exc}"
                raise
            self.configured[key] = ""
        configure.__doc__ = getattr(orig, "__doc__", None)
        addon.configure = configure  # type: ignore[attr-defined]  # mitmproxy looks hooks up per instance

    def _wrap_hook(self, addon: object, hook: str) -> None:
        """Wrap one hook of a script addon: record that it ran to its end, and turn an
        exception escaping it into a refusal.

        Why: mitmproxy logs an exception from a hook (its message may quote the upload)
        and carries on, so the request is forwarded unchecked.  The wrapper refuses the
        request instead (unless audit mode or on_error=pass) and logs the exception's type
        and place only.  The completion mark also lets the guard's own hooks, which run
        after exifguard's in the chain, refuse a flow for which an exifguard hook did not
        finish, whatever the reason (e.g. something wrapped around it raised)."""
        orig = getattr(addon, hook, None)
        if not callable(orig):
            return
        name = getattr(addon, "name", type(addon).__name__)
        mark = f"{name}.{hook}"
        self.hooked[hook].append(mark)
        done = self._done

        if inspect.iscoroutinefunction(orig):
            async def async_wrapper(obj: Any) -> None:
                try:
                    await orig(obj)
                except Exception as exc:  # noqa: BLE001 - see docstring
                    _escaped(name, hook, obj, exc)
                done(obj, mark)
            wrapper: Any = async_wrapper
        else:
            def wrapper(obj: Any) -> None:
                try:
                    orig(obj)
                except Exception as exc:  # noqa: BLE001 - see docstring
                    _escaped(name, hook, obj, exc)
                done(obj, mark)
        wrapper.__doc__ = getattr(orig, "__doc__", None)
        setattr(addon, hook, wrapper)

    @staticmethod
    def _done(obj: Any, mark: str) -> None:
        if isinstance(obj, http.HTTPFlow):
            obj.metadata.setdefault(DONE_KEY, set()).add(mark)
        else:  # a client connection: the mark lives (and dies) with it
            try:
                obj.__dict__.setdefault(CLIENT_DONE_ATTR, set()).add(mark)
            except AttributeError:
                pass

    # ---- health ------------------------------------------------------------------------
    def faults(self) -> list[str]:
        """Why the proxy must not carry traffic now (empty: healthy)."""
        out = list(self.problems)
        if not self.watched and not out:
            out.append("exifguard's addon was not loaded")
        try:
            from mitmproxy.addonmanager import traverse
            in_chain = {id(a) for a in traverse(ctx.master.addons.chain)}
        except Exception:  # noqa: BLE001 - no master (tests): judge by configure alone
            in_chain = None
        for a in self.watched:
            n = getattr(a, "name", type(a).__name__)
            if in_chain is not None and id(a) not in in_chain:
                out.append(f"the {n} addon is not active (mitmproxy could not load the script: see "
                           "the error above)")
            state = self.configured.get(id(a), "")
            if state is None:
                out.append(f"the {n} addon was never configured")
            elif state:
                out.append(f"option error: {state}")
        try:
            deferred = [k for k in ctx.options.deferred if k.startswith("exifguard")]
        except Exception:  # noqa: BLE001
            deferred = []
        out.extend(f"unknown option {k}" for k in deferred)
        return out

    def healthy(self) -> bool:
        return self.checked and not self.faults()

    # ---- hooks -------------------------------------------------------------------------
    def running(self) -> None:
        self.check()
        if getattr(ctx.options, READY_OPTION, ""):
            self._watch_parent()

    def _watch_parent(self) -> None:
        """Under `exifguard run`: stop when exifguard is gone.  Linux does this with a
        parent-death signal; this covers the platforms without one (macOS)."""
        parent = os.getppid()

        async def watch() -> None:
            while True:
                await asyncio.sleep(1.0)
                if os.getppid() != parent:
                    log.error("exifguard: `exifguard run` (pid %d) is gone; stopping this mitmdump", parent)
                    ctx.master.shutdown()
                    return
        try:
            self._parent_task = asyncio.get_running_loop().create_task(watch())
        except RuntimeError:  # no loop (tests)
            pass

    def check(self) -> None:
        """Decide readiness once the script's addons are loaded and configured."""
        faults = self.faults()
        self.checked = not faults
        if faults:
            log.error(self._banner("exifguard is NOT active: every request through this proxy is "
                                   "refused until this is fixed", faults))
        else:
            log.info("exifguard: guard check passed (addon loaded and configured)")
            if not getattr(ctx.options, READY_OPTION):
                self._warn_exposure()
        self._report(faults)

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        self._refuse_unless_healthy(flow)
        self._refuse_unless_done(flow, "requestheaders")

    def request(self, flow: http.HTTPFlow) -> None:
        self._refuse_unless_healthy(flow)
        self._refuse_unless_done(flow, "request")

    def _refuse_unless_done(self, flow: http.HTTPFlow, hook: str) -> None:
        if flow.response is not None or flow.error is not None or not flow.live or not self.checked:
            return
        client_done = getattr(flow.client_conn, CLIENT_DONE_ATTR, set())
        unchecked = [m for h in CLIENT_HOOKS for m in self.hooked.get(h, ()) if m not in client_done]
        if unchecked:  # admission (loopback-only) did not run to its end: never lenient
            log.error("exifguard: %s did not complete for this client (see above); its request was "
                      "refused, nothing was sent", unchecked[0])
            flow.response = http.Response.make(
                REFUSED_STATUS, "exifguard could not check this proxy client, so its request was refused and "
                                "nothing was sent.\n", {"content-type": "text/plain; charset=utf-8"})
            return
        done = flow.metadata.get(DONE_KEY, set())
        missing = [m for m in self.hooked.get(hook, ()) if m not in done]
        if not missing:
            return
        if _lenient():
            log.error("exifguard: %s did not complete for a request to %s; it went on unchecked "
                      "(audit mode or on_error=pass)", missing[0], flow.request.pretty_host[:100])
            return
        log.error("exifguard: %s did not complete for a request to %s (see above); the request was "
                  "refused, nothing was sent", missing[0], flow.request.pretty_host[:100])
        flow.response = http.Response.make(
            REFUSED_STATUS, f"exifguard could not check this request ({missing[0]} failed), so it was refused "
                            "and nothing was sent. The proxy's output says where it failed.\n",
            {"content-type": "text/plain; charset=utf-8"})

    def _refuse_unless_healthy(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or flow.error is not None:
            return
        if self.checked:
            faults = self.faults()
            if not faults:
                return
            reason = "; ".join(faults)
        else:
            reason = "; ".join(self.faults()) or "the proxy is still starting"
        log.error("exifguard: REFUSED a request to %s: exifguard is not active (%s)",
                  flow.request.pretty_host[:100], reason[:300])
        flow.response = http.Response.make(REFUSED_STATUS, refusal_text(reason),
                                           {"content-type": "text/plain; charset=utf-8"})

    # ---- reporting ---------------------------------------------------------------------
    @staticmethod
    def _banner(title: str, lines: list[str]) -> str:
        bar = "!" * 76
        return "\n".join([bar, title, *(f"  - {x}" for x in lines), bar])

    def _report(self, faults: list[str]) -> None:
        try:
            target = getattr(ctx.options, READY_OPTION)
        except Exception:  # noqa: BLE001
            return
        if not target:
            return
        opts: dict[str, Any] = {}
        for name in sorted(ctx.options.keys()):
            if (name.startswith("exifguard") and name not in PRIVATE_OPTIONS) or name in CHECKED_MITM_OPTIONS:
                opts[name] = _jsonable(getattr(ctx.options, name))
        try:
            ps = ctx.master.addons.get("proxyserver")
            listen = [[str(a[0]), int(a[1])] for a in ps.listen_addrs()] if ps is not None else []
        except Exception:  # noqa: BLE001
            listen = []
        record = {"ok": not faults, "faults": faults, "pid": os.getpid(), "options": opts, "listen": listen}
        try:
            _write_private(Path(target), record)
        except OSError as exc:
            log.error("exifguard: could not write the readiness record %s: %s", target, exc.strerror)

    def _warn_exposure(self) -> None:
        """Run by hand (not by `exifguard run`): say loudly what exposes the user."""
        opts = ctx.options
        lines = []
        host = str(getattr(opts, "listen_host", ""))
        if not _is_loopback_listen(host):
            who = "EVERY interface" if host in ("", "0.0.0.0", "::") else host
            lines.append(f"this proxy listens on {who}, not only on loopback: other machines can reach "
                         "it" + ("" if getattr(opts, "exifguard_allow_remote", False) else
                                 " (exifguard refuses them unless exifguard_allow_remote is set)")
                         + ". Use --listen-host 127.0.0.1.")
        try:
            from .ca import load_ca
            info = load_ca(Path(str(opts.confdir)).expanduser())
            if not info.constrained:
                lines.append(f"the CA in {info.directory} has NO name constraints: anyone with its key can "
                             "impersonate any website to a browser that trusts it. This makes one limited "
                             f"to the AI domains (then reinstall it): {_cert_create_command(info.directory)}")
        except FileNotFoundError:
            lines.append(f"no CA found in {opts.confdir}: mitmproxy's default CA has no name constraints.")
        except Exception as exc:  # noqa: BLE001
            lines.append(f"could not read the CA in {opts.confdir} ({type(exc).__name__}).")
        if not getattr(opts, "body_size_limit", None):
            lines.append("no body_size_limit: mitmproxy buffers uploads of any size in memory "
                         "(exifguard run sets --set body_size_limit=256m).")
        if lines and not self.warned:
            self.warned = True
            log.warning(self._banner("exifguard WARNING: this mitmproxy set-up exposes you", lines))


def _lenient() -> bool:
    """The person chose to forward what cannot be checked (audit mode or on_error=pass)."""
    try:
        opts = ctx.options
        return getattr(opts, "exifguard_mode", "strip") == "audit" or \
            getattr(opts, "exifguard_on_error", "block") == "pass"
    except Exception:  # noqa: BLE001
        return False


def _escaped(addon: str, hook: str, obj: Any, exc: BaseException) -> None:
    """An addon's hook raised: log type and place (never the message), refuse the flow/client."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno}" if frames else "?"
    if not isinstance(obj, http.HTTPFlow):  # client_connected: admission must not fail open
        log.error("exifguard: %s.%s raised %s at %s; the client was refused", addon, hook,
                  type(exc).__name__, where)
        try:
            obj.error = "exifguard could not check this client"
        except Exception:  # noqa: BLE001
            pass
        return
    if _lenient() or not obj.live or obj.response is not None:
        log.error("exifguard: %s.%s raised %s at %s; the request went on unchecked (audit mode or "
                  "on_error=pass)", addon, hook, type(exc).__name__, where)
        return
    log.error("exifguard: %s.%s raised %s at %s; the request was refused, nothing was sent",
              addon, hook, type(exc).__name__, where)
    obj.response = http.Response.make(
        REFUSED_STATUS, f"exifguard could not check this request (internal error: {type(exc).__name__}), so "
                        "it was refused and nothing was sent. The proxy's output says where it failed.\n",
        {"content-type": "text/plain; charset=utf-8"})


def _cert_create_command(confdir: Path) -> str:
    """Printed as is, so it must run as printed (see exifguard.cli.locations)."""
    import shlex
    try:
        from ..cli.locations import command_prefix  # a pure module: no cycle, no mitmproxy
        prefix = command_prefix()
    except Exception:  # noqa: BLE001 - the message matters more than the prefix
        prefix = "exifguard"
    return f"{prefix} cert create --force --certs {shlex.quote(str(confdir))}"


def _running_master() -> Any:
    try:
        return ctx.master
    except Exception:  # noqa: BLE001 - imported outside mitmproxy
        return None


def install() -> list[object]:
    """The addon list for the `mitmdump -s` scripts, with the guard in place.

    Returns the script's addons; the guard itself is registered in the master (not in
    the returned list) so that it survives a failure of the script's registration.
    Outside a running master (tests importing the script) the guard is part of the list.
    """
    master = _running_master()
    existing = master.addons.get(GUARD_NAME) if master is not None else None
    guard = existing if isinstance(existing, Guard) else Guard()
    addons: list[object] = []
    problems: list[str] = []
    try:
        from .addon import make_addons
        addons = make_addons()
        specs = option_specs()
        if master is not None:
            problems = check_deferred(master.options, specs)
    except Exception as exc:  # noqa: BLE001 - exifguard itself is broken: fail closed
        guard.fail(f"exifguard's addon could not be loaded: {type(exc).__name__}: {exc}"[:500])
    else:
        guard.track(addons, problems)
        if problems:
            log.error(guard._banner("exifguard option errors (these values were NOT applied; "  # noqa: SLF001
                                    "every request is refused until they are fixed)", problems))
    if master is None:
        return [*addons, guard]
    if existing is None:
        try:
            master.addons.add(guard)
        except Exception as exc:  # noqa: BLE001 - keep it in the script then
            log.error("exifguard: could not register the guard in the master (%s); it runs "
                      "inside the script", type(exc).__name__)
            return [*addons, guard]
    loader = master.addons.get("scriptloader")
    if getattr(loader, "is_running", False):
        # loaded into a running proxy (script reload): check once the script is configured
        try:
            asyncio.get_running_loop().call_soon(guard.check)
        except RuntimeError:
            pass
    return addons


__all__ = ["Guard", "GUARD_NAME", "READY_OPTION", "check_deferred", "check_value", "install",
           "option_specs", "refusal_text"]
