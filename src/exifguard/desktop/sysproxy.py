"""The system auto-proxy (PAC) setting: read it, plan a change, apply it, undo it.

Why a module of its own: `exifguard proxy on` must route the browser without a
terminal, and a privacy tool must say exactly what it touches.  So everything here is
*planned* first, as data (the exact commands, the values before and after), by pure
functions that take the platform as a parameter: a Windows or macOS plan can be made and
tested on Linux, `--dry-run` prints a plan without running it, and `off` restores the
values that were there before `on` (saved in <certs>/sysproxy.json, mode 0600).

Which PAC URL (measured in Debian Chromium 156 and Firefox ESR 153, see docs/browsers.md):

* ``data:`` (the default) -- the PAC inside the URL.  Needs no server and no file, so
  with exifguard stopped the AI hosts still point at the stopped proxy and their uploads
  fail: **fail closed**.  Chromium reads it from the GNOME and KDE settings, Firefox
  too (its own setting or the system one).
* ``file://`` -- Chromium ignores a file:// PAC (it goes DIRECT even while exifguard
  runs: fail open), WinHTTP refuses it; Firefox honours it.  Only for Firefox.
* ``http://127.0.0.1:PORT/proxy.pac`` -- served by `exifguard run`.  Works everywhere
  (Safari, WinHTTP apps) but a browser that cannot fetch its PAC goes DIRECT, so it
  **fails open** when exifguard is stopped.

No mitmproxy here and nothing of the CLI: the caller passes the PAC text, the running
proxy's address and a command runner.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import shutil
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .commands import Result, Runner, subprocess_runner  # noqa: F401 - part of this module's interface

STATE_NAME = "sysproxy.json"
PAC_MARKER = "// exifguard proxy auto-config"
PAC_KINDS = ("data", "file", "http")

GNOME_SCHEMA = "org.gnome.system.proxy"
KDE_FILE = "kioslaverc"
KDE_GROUP = "Proxy Settings"
KDE_TYPE_KEY = "ProxyType"
KDE_SCRIPT_KEY = "Proxy Config Script"
KDE_TYPE_PAC = "2"
#: Chromium reads kioslaverc line by line into a small buffer and skips longer lines: a
#: "Proxy Config Script=" line of 466 characters was honoured, one of 574 ignored (Debian
#: Chromium 156, tests/browser/test_pac_kinds.py) -- the browser then goes DIRECT.
KDE_MAX_LINE = 500
WIN_KEY = r"HKCU\Software\Microsoft\Windows\CurrentVersion\Internet Settings"
WIN_VALUE = "AutoConfigURL"
PLATFORMS = ("linux", "darwin", "win32")


class SysProxyError(Exception):
    """Something a person can act on (the message says what to do); never a traceback."""


# ---- where the setting lives ----------------------------------------------------------
@dataclass(frozen=True)
class Target:
    """Whose setting: the platform ("linux", "darwin", "win32") and, on Linux, the
    desktop whose setting browsers read ("gnome", "kde5" or "kde6")."""
    platform: str
    desktop: str | None = None

    def describe(self) -> str:
        return {"linux": f"Linux {self.desktop_name()}", "darwin": "macOS",
                "win32": "Windows (per-user Internet settings)"}.get(self.platform, self.platform)

    def desktop_name(self) -> str:
        return {"gnome": "GNOME settings (gsettings)", "kde5": "KDE Plasma 5 (kioslaverc)",
                "kde6": "KDE Plasma 6 (kioslaverc)"}.get(self.desktop or "", "")


def normalize_platform(platform: str) -> str:
    if platform.startswith("linux"):
        return "linux"
    if platform in ("darwin", "macos"):
        return "darwin"
    if platform in ("win32", "windows", "cygwin"):
        return "win32"
    raise SysProxyError(f"exifguard proxy: unsupported platform {platform!r} (Linux with GNOME or KDE, "
                        "macOS and Windows are supported)")


def detect(platform: str, environ: Mapping[str, str], which: Callable[[str], str | None] = shutil.which,
           desktop: str | None = None, no_desktop_help: str = "") -> Target:
    """The target for this platform; on Linux the desktop from XDG_CURRENT_DESKTOP and the
    tools present (or `desktop`, when the person chose one with --desktop).

    Why XDG_CURRENT_DESKTOP: Chromium picks the settings it reads (GNOME's gsettings or
    KDE's kioslaverc) from the same variable, so we write where the browser looks.
    """
    platform = normalize_platform(platform)
    if platform != "linux":
        return Target(platform)
    names = [n.strip().lower() for n in environ.get("XDG_CURRENT_DESKTOP", "").split(":") if n.strip()]
    kde_tool = "kwriteconfig6" if which("kwriteconfig6") else "kwriteconfig5" if which("kwriteconfig5") else None
    if desktop is None:
        if "kde" in names:
            desktop = "kde"
        elif names and which("gsettings"):
            desktop = "gnome"  # GNOME, Unity, Cinnamon, XFCE, Budgie, ...: Chromium reads gsettings
    if desktop == "kde":
        version = environ.get("KDE_SESSION_VERSION", "")
        if version in ("5", "6"):
            return Target("linux", f"kde{version}")
        return Target("linux", "kde6" if kde_tool == "kwriteconfig6" else "kde5")
    if desktop == "gnome":
        return Target("linux", "gnome")
    if desktop in ("kde5", "kde6"):
        return Target("linux", desktop)
    seen = environ.get("XDG_CURRENT_DESKTOP") or "not set"
    raise SysProxyError(
        f"exifguard proxy: no desktop whose proxy setting browsers read was found (XDG_CURRENT_DESKTOP is "
        f"{seen}; GNOME needs gsettings, KDE kwriteconfig5/6). On a machine without a desktop session, set "
        f"the PAC in the browser itself instead:{no_desktop_help}")


# ---- which PAC URL ----------------------------------------------------------------------
def data_url(pac: str) -> str:
    return "data:application/x-ns-proxy-autoconfig;base64," + base64.b64encode(pac.encode()).decode("ascii")


@dataclass(frozen=True)
class PacInfo:
    """What a PAC URL found in a setting is: its kind, whether it is exifguard's, and the
    proxy its PAC points at when that can be read without a network."""
    url: str
    kind: str  # data | file | http | other | none
    ours: bool
    proxy: str | None = None

    @property
    def fails_closed(self) -> bool:
        """True where a stopped exifguard makes AI uploads fail rather than go DIRECT
        (for the browsers that accept the URL at all: see docs/browsers.md)."""
        return self.kind in ("data", "file")


_PROXY_LINE = re.compile(r'var EXIFGUARD_PROXY = "PROXY ([^"]+)";')


def _pac_proxy(text: str) -> str | None:
    m = _PROXY_LINE.search(text)
    return m.group(1) if m else None


def classify(url: str | None, certs: Path | None = None, known_urls: Sequence[str] = ()) -> PacInfo:
    """Is this PAC URL exifguard's?  data: URLs are decoded, file:// URLs are read (a
    local file); http URLs count as ours when they are exifguard's own (`known_urls`:
    the one we set, the one `exifguard run` serves) or a loopback /proxy.pac."""
    if not url:
        return PacInfo("", "none", False)
    low = url.lower()
    if low.startswith("data:"):
        head, _, payload = url.partition(",")
        try:
            text = (base64.b64decode(payload, validate=False).decode("utf-8", "replace") if ";base64" in head.lower()
                    else urllib.parse.unquote(payload))
        except ValueError:
            return PacInfo(url, "data", False)
        ours = text.lstrip().startswith(PAC_MARKER)
        return PacInfo(url, "data", ours, _pac_proxy(text) if ours else None)
    if low.startswith("file:"):
        # url2pathname: on Windows file:///C:/Users/x is C:\Users\x (Path(unquote(...)) gave \C:\...)
        path = Path(urllib.request.url2pathname(urllib.parse.urlsplit(url).path))
        try:
            text = path.read_text(errors="replace")[:200_000]
        except OSError:
            text = ""
        ours = text.lstrip().startswith(PAC_MARKER) or (
            certs is not None and path.name == "proxy.pac" and path.parent == certs)
        return PacInfo(url, "file", ours, _pac_proxy(text) if ours else None)
    if low.startswith(("http:", "https:")):
        parts = urllib.parse.urlsplit(url)
        loopback = (parts.hostname or "") in ("127.0.0.1", "localhost", "::1")
        ours = url in known_urls or (loopback and parts.path == "/proxy.pac")
        return PacInfo(url, "http", ours)
    return PacInfo(url, "other", False)


def abbreviate(url: str) -> str:
    """A URL short enough for a sentence (a data: PAC is several kilobytes)."""
    if url.lower().startswith("data:") and len(url) > 80:
        info = classify(url)
        what = f"exifguard's PAC, proxy {info.proxy}" if info.ours else "a PAC"
        return f"{url[:url.index(',') + 1]}...({what}, {len(url)} characters)"
    return url or "(empty)"


# ---- commands and plans -----------------------------------------------------------------
@dataclass(frozen=True)
class Command:
    """One command of the plan: argv (no shell) and what it does, in words."""
    argv: tuple[str, ...]
    why: str
    may_fail: bool = False  # a notification nobody may be listening to

    def shell(self, platform: str) -> str:
        """The command as a person would type it: PowerShell on Windows, sh elsewhere."""
        if platform == "win32":
            return " ".join(_ps_quote(a) for a in self.argv)
        return shlex.join(self.argv)


def _ps_quote(arg: str) -> str:
    if re.fullmatch(r"[A-Za-z0-9_/.:=+-]+", arg) and not arg.startswith("-"):
        return arg
    if re.fullmatch(r"/[A-Za-z]+", arg):  # reg.exe switches
        return arg
    return "'" + arg.replace("'", "''") + "'"


@dataclass
class Change:
    """One setting, before and after (for the person: what changed, exactly)."""
    where: str
    before: str | None
    after: str | None

    def describe(self) -> str:
        def show(v: str | None) -> str:
            return "(not set)" if v is None else repr(abbreviate(v)) if v.lower().startswith("data:") else repr(v)
        if self.before == self.after:
            return f"{self.where}: {show(self.after)} (unchanged)"
        return f"{self.where}: {show(self.before)} -> {show(self.after)}"


@dataclass
class Plan:
    """Everything `proxy on|off` would do: commands in order, the changes they make, the
    values to restore later (`previous`, saved by `on`), and notes for the person."""
    action: str
    target: Target
    pac_url: str | None
    commands: list[Command] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    previous: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    nothing_to_do: str | None = None


# ---- reading the current setting ------------------------------------------------------
@dataclass
class Current:
    """The setting as it is now, per place it lives (GNOME: one; macOS: per service)."""
    target: Target
    values: dict  # platform-specific, JSON-able: what `previous` stores
    errors: list[str] = field(default_factory=list)


def gvariant_string(value: str) -> str:
    """A string value for `gsettings set`.

    gsettings parses its argument as GVariant text and, for a string key, takes
    unparseable text as the string itself; only text that starts like GVariant (a quote,
    an @type) could be misread, so only that is quoted ('...'): a URL stays readable in
    the printed command.
    """
    if value[:1] in ("'", '"', "@") or value.strip() != value:
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return value


def parse_gvariant_string(text: str) -> str:
    """`gsettings get` prints strings as GVariant text: 'auto' (or "it's")."""
    t = text.strip()
    if t.startswith("@s "):
        t = t[3:].strip()
    if len(t) >= 2 and t[0] == t[-1] and t[0] in "'\"":
        out, i, body = [], 0, t[1:-1]
        while i < len(body):
            c = body[i]
            if c == "\\" and i + 1 < len(body):
                nxt = body[i + 1]
                out.append({"n": "\n", "t": "\t"}.get(nxt, nxt))
                i += 2
                continue
            out.append(c)
            i += 1
        return "".join(out)
    return t


def _kde_tools(target: Target) -> tuple[str, str]:
    v = "6" if target.desktop == "kde6" else "5"
    return f"kwriteconfig{v}", f"kreadconfig{v}"


def read_current(target: Target, run: Runner) -> Current:
    """Read the setting with the OS's own tools (read-only commands)."""
    cur = Current(target, {})
    if target.platform == "linux" and target.desktop == "gnome":
        for key in ("mode", "autoconfig-url"):
            r = run(["gsettings", "get", GNOME_SCHEMA, key])
            if r.returncode != 0:
                cur.errors.append(f"gsettings get {GNOME_SCHEMA} {key}: {_first_line(r.stderr)}")
                continue
            cur.values[key] = parse_gvariant_string(r.stdout)
    elif target.platform == "linux":
        _, kread = _kde_tools(target)
        for key in (KDE_TYPE_KEY, KDE_SCRIPT_KEY):
            r = run([kread, "--file", KDE_FILE, "--group", KDE_GROUP, "--key", key])
            if r.returncode != 0:
                cur.errors.append(f"{kread} {key}: {_first_line(r.stderr)}")
                continue
            value = r.stdout.rstrip("\n")
            cur.values[key] = value if value != "" else None  # kreadconfig prints "" for a missing key
    elif target.platform == "darwin":
        r = run(["networksetup", "-listallnetworkservices"])
        if r.returncode != 0:
            cur.errors.append(f"networksetup -listallnetworkservices: {_first_line(r.stderr or r.stdout)}")
            return cur
        services = {}
        for name, enabled in parse_services(r.stdout):
            if not enabled:
                continue
            q = run(["networksetup", "-getautoproxyurl", name])
            if q.returncode != 0:
                cur.errors.append(f"networksetup -getautoproxyurl {name}: {_first_line(q.stderr or q.stdout)}")
                continue
            services[name] = parse_autoproxy(q.stdout)
        cur.values["services"] = services
    else:
        r = run(["reg", "query", WIN_KEY, "/v", WIN_VALUE])
        if r.returncode == 127:
            cur.errors.append(f"reg query {WIN_VALUE}: {_first_line(r.stderr)}")
        # reg exits 1 when the value does not exist: that is "not set", not an error
        cur.values[WIN_VALUE] = parse_reg_query(r.stdout, WIN_VALUE) if r.returncode == 0 else None
    return cur


def _first_line(text: str) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else "failed"


def parse_services(text: str) -> list[tuple[str, bool]]:
    """`networksetup -listallnetworkservices`: a header line, then one service per line;
    a leading '*' marks a disabled service."""
    out = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("An asterisk"):
            continue
        out.append((line[1:], False) if line.startswith("*") else (line, True))
    return out


def parse_autoproxy(text: str) -> dict:
    """`networksetup -getautoproxyurl S` prints "URL: <url or (null)>" and "Enabled: Yes|No"."""
    url, enabled = None, False
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "URL":
            value = value.strip()
            url = None if value in ("", "(null)") else value
        elif key.strip() == "Enabled":
            enabled = value.strip().lower() == "yes"
    return {"url": url, "enabled": enabled}


def parse_reg_query(text: str, name: str) -> str | None:
    """`reg query KEY /v NAME` prints "    NAME    REG_SZ    VALUE"."""
    for line in text.splitlines():
        parts = line.strip().split(None, 2)
        if len(parts) >= 2 and parts[0].lower() == name.lower() and parts[1].startswith("REG_"):
            return parts[2] if len(parts) == 3 else ""
    return None


def active_urls(cur: Current) -> list[tuple[str, str | None]]:
    """(where, PAC URL in effect or None) for each place of the setting."""
    t, v = cur.target, cur.values
    if t.platform == "linux" and t.desktop == "gnome":
        return [("GNOME", v.get("autoconfig-url") if v.get("mode") == "auto" else None)]
    if t.platform == "linux":
        on = v.get(KDE_TYPE_KEY) == KDE_TYPE_PAC
        return [("KDE", v.get(KDE_SCRIPT_KEY) if on else None)]
    if t.platform == "darwin":
        return [(name, s.get("url") if s.get("enabled") else None) for name, s in v.get("services", {}).items()]
    return [("Internet Settings", v.get(WIN_VALUE))]


# ---- planning -----------------------------------------------------------------------
RESTART_NOTE = {
    "linux": "Chromium-based browsers and Firefox (with \"Use system proxy settings\") read this setting; "
             "restart the browser if an open window still goes direct.",
    "darwin": "Chrome, Edge, Brave and Firefox (\"Use system proxy settings\") read this setting; Safari "
              "is not expected to load a data: PAC (docs/browsers.md). Restart the browser if an open window still goes direct. "
              "networksetup may ask for an administrator password.",
    "win32": "Chrome and Edge read it on their next start: close every window of the browser (also in the "
             "background, from the tray) and start it again. Firefox needs \"Use system proxy settings\".",
    "kde": "Chromium-based browsers read this setting; restart the browser if an open window still goes direct. "
           "Firefox did not follow KDE's setting in our measurements: give it the PAC in its own setting "
           "(docs/browsers.md).",
}


def restart_note(t: Target) -> str:
    return RESTART_NOTE["kde" if (t.desktop or "").startswith("kde") else t.platform]


def plan_on(cur: Current, pac_url: str, saved: dict | None = None) -> Plan:
    """Point the system setting at `pac_url`.  `previous` is what `off` restores: the values
    found now, unless they are already exifguard's and an earlier `on` saved the real ones."""
    t, v = cur.target, cur.values
    plan = Plan("on", t, pac_url, notes=[restart_note(t)])
    urls = [u for _, u in active_urls(cur) if u]
    # `on` twice must not save exifguard's own URL as "the value from before"
    keep_saved = bool(saved) and saved.get("target") == asdict(t) and bool(urls) and all(
        classify(u).ours or u == saved.get("url") for u in urls)
    if keep_saved:
        plan.previous = dict(saved["previous"])
    elif urls and all(classify(u).ours for u in urls):
        # exifguard's URL is set but nothing saved says what was there before (another
        # certs folder, a deleted sysproxy.json): `off` should switch it off, not restore it
        plan.previous = neutral_values(t, v)
    else:
        plan.previous = json.loads(json.dumps(v))
    if t.platform == "linux" and t.desktop == "gnome":
        plan.commands = [
            Command(("gsettings", "set", GNOME_SCHEMA, "autoconfig-url", gvariant_string(pac_url)),
                    "the PAC URL GNOME gives to browsers"),
            Command(("gsettings", "set", GNOME_SCHEMA, "mode", "auto"), "use the PAC URL (automatic)"),
        ]
        plan.changes = [Change(f"{GNOME_SCHEMA} autoconfig-url", v.get("autoconfig-url"), pac_url),
                        Change(f"{GNOME_SCHEMA} mode", v.get("mode"), "auto")]
    elif t.platform == "linux":
        if not kde_line_ok(pac_url):
            raise SysProxyError(
                f"exifguard proxy: this PAC URL is {len(pac_url)} characters; Chromium-based browsers ignore a "
                f"KDE proxy script address longer than about {KDE_MAX_LINE - len(KDE_SCRIPT_KEY) - 1} characters and "
                "connect DIRECT, uncleaned. On KDE use the http URL (--pac-kind http, the default there), or "
                "give the browser the data: URL itself (docs/browsers.md)")
        kwrite, _ = _kde_tools(t)
        base = (kwrite, "--file", KDE_FILE, "--group", KDE_GROUP, "--key")
        plan.commands = [
            Command((*base, KDE_SCRIPT_KEY, pac_url), "the PAC URL KDE gives to browsers"),
            Command((*base, KDE_TYPE_KEY, KDE_TYPE_PAC), "use the PAC URL (ProxyType 2)"),
            _kde_notify(),
        ]
        plan.changes = [Change(f"kioslaverc [{KDE_GROUP}] {KDE_SCRIPT_KEY}", v.get(KDE_SCRIPT_KEY), pac_url),
                        Change(f"kioslaverc [{KDE_GROUP}] {KDE_TYPE_KEY}", v.get(KDE_TYPE_KEY), KDE_TYPE_PAC)]
    elif t.platform == "darwin":
        services = v.get("services") or {}
        if not services:
            raise SysProxyError("exifguard proxy: networksetup lists no enabled network service; "
                                "check System Settings > Network")
        for name, s in services.items():
            plan.commands += [
                Command(("networksetup", "-setautoproxyurl", name, pac_url), f"PAC URL of {name}"),
                Command(("networksetup", "-setautoproxystate", name, "on"), f"use it for {name}"),
            ]
            plan.changes += [Change(f"{name}: automatic proxy configuration URL", s.get("url"), pac_url),
                             Change(f"{name}: automatic proxy configuration", _onoff(s.get("enabled")), "on")]
    else:
        plan.commands = [Command(("reg", "add", WIN_KEY, "/v", WIN_VALUE, "/t", "REG_SZ", "/d", pac_url, "/f"),
                                 "the per-user \"Use setup script\" address")]
        plan.changes = [Change(f"{WIN_KEY}\\{WIN_VALUE}", v.get(WIN_VALUE), pac_url)]
    return plan


def neutral_values(t: Target, values: dict) -> dict:
    """The setting with exifguard's PAC switched off: what `off` restores when it has no
    record of what was there before."""
    if t.platform == "linux" and t.desktop == "gnome":
        return {"mode": "none", "autoconfig-url": ""}
    if t.platform == "linux":
        return {KDE_TYPE_KEY: "0", KDE_SCRIPT_KEY: None}
    if t.platform == "darwin":
        return {"services": {name: {"url": None, "enabled": False} for name in values.get("services") or {}}}
    return {WIN_VALUE: None}


def kde_line_ok(url: str) -> bool:
    """Whether Chromium would read this PAC URL from kioslaverc at all (see KDE_MAX_LINE)."""
    return len(f"{KDE_SCRIPT_KEY}={url}") <= KDE_MAX_LINE


def default_pac_kind(target: Target) -> str:
    """data: where browsers read it from the system setting (fails closed); on KDE the
    http URL, because a data: PAC does not fit the line Chromium reads from kioslaverc
    and a file:// PAC is ignored by Chromium everywhere -- both would go DIRECT even
    while exifguard runs, which is worse than http failing open only when it stops."""
    return "http" if target.platform == "linux" and (target.desktop or "").startswith("kde") else "data"


def _onoff(enabled: object) -> str | None:
    return None if enabled is None else ("on" if enabled else "off")


def _kde_notify() -> Command:
    """Tell running KDE programs to re-read kioslaverc (browsers also watch the file)."""
    return Command(("dbus-send", "--type=signal", "/KIO/Scheduler",
                    "org.kde.KIO.Scheduler.reparseSlaveConfiguration", "string:"),
                   "tell running KDE programs to re-read it", may_fail=True)


def plan_off(cur: Current, saved: dict | None) -> Plan:
    """Undo `on`: restore the saved previous values where the setting still points at
    exifguard; leave alone a setting someone changed since (it is not ours to undo)."""
    t, v = cur.target, cur.values
    plan = Plan("off", t, None, notes=[restart_note(t)])
    saved_for_us = saved if saved and saved.get("target") == asdict(t) else None
    ours_url = saved_for_us.get("url") if saved_for_us else None
    ours = [where for where, u in active_urls(cur) if u and (classify(u).ours or u == ours_url)]
    if not ours:
        plan.nothing_to_do = ("the system proxy setting does not point at exifguard"
                              + (" any more (it was changed after `proxy on`); it was left as it is"
                                 if saved_for_us else "; nothing to undo"))
        return plan
    prev = saved_for_us["previous"] if saved_for_us else None
    if t.platform == "linux" and t.desktop == "gnome":
        p = prev or neutral_values(t, v)
        mode, url = p.get("mode") or "none", p.get("autoconfig-url") or ""
        plan.commands = [Command(("gsettings", "set", GNOME_SCHEMA, "mode", mode), "the proxy mode from before"),
                         Command(("gsettings", "set", GNOME_SCHEMA, "autoconfig-url", gvariant_string(url)),
                                 "the PAC URL from before")]
        plan.changes = [Change(f"{GNOME_SCHEMA} mode", v.get("mode"), mode),
                        Change(f"{GNOME_SCHEMA} autoconfig-url", v.get("autoconfig-url"), url)]
    elif t.platform == "linux":
        kwrite, _ = _kde_tools(t)
        base = (kwrite, "--file", KDE_FILE, "--group", KDE_GROUP, "--key")
        p = prev or neutral_values(t, v)
        for key in (KDE_TYPE_KEY, KDE_SCRIPT_KEY):
            old = p.get(key)
            plan.commands.append(Command((*base, key, "--delete") if old is None else (*base, key, old),
                                         f"{key} from before"))
            plan.changes.append(Change(f"kioslaverc [{KDE_GROUP}] {key}", v.get(key), old))
        plan.commands.append(_kde_notify())
    elif t.platform == "darwin":
        services = (prev or {}).get("services") or {}
        for name, s in (v.get("services") or {}).items():
            u = s.get("url") if s.get("enabled") else None
            if not (u and (classify(u).ours or u == ours_url)):
                continue
            old = services.get(name) or {"url": None, "enabled": False}
            if old.get("url"):
                plan.commands.append(Command(("networksetup", "-setautoproxyurl", name, old["url"]),
                                             f"the PAC URL {name} had before"))
                plan.changes.append(Change(f"{name}: automatic proxy configuration URL", s.get("url"), old["url"]))
            state = "on" if old.get("enabled") else "off"
            plan.commands.append(Command(("networksetup", "-setautoproxystate", name, state),
                                         f"automatic proxy configuration {state} for {name}, as before"))
            plan.changes.append(Change(f"{name}: automatic proxy configuration", "on", state))
    else:
        old = (prev or {}).get(WIN_VALUE)
        if old:
            plan.commands = [Command(("reg", "add", WIN_KEY, "/v", WIN_VALUE, "/t", "REG_SZ", "/d", old, "/f"),
                                     "the setup script address from before")]
        else:
            plan.commands = [Command(("reg", "delete", WIN_KEY, "/v", WIN_VALUE, "/f"),
                                     "remove the setup script address")]
        plan.changes = [Change(f"{WIN_KEY}\\{WIN_VALUE}", v.get(WIN_VALUE), old)]
    return plan


# ---- applying ---------------------------------------------------------------------------
def apply(plan: Plan, run: Runner) -> list[str]:
    """Run the plan's commands in order; stop at the first real failure.  Returns notes
    about optional steps that failed (a KDE notification nobody listens to)."""
    skipped = []
    for cmd in plan.commands:
        r = run(list(cmd.argv))
        if r.returncode != 0:
            if cmd.may_fail:
                skipped.append(f"{cmd.why}: skipped ({_first_line(r.stderr)})")
                continue
            raise SysProxyError(f"exifguard proxy: `{cmd.shell(plan.target.platform)[:200]}` failed "
                                f"({_first_line(r.stderr or r.stdout)}); {_fix_hint(plan.target)}")
    return skipped


def _fix_hint(t: Target) -> str:
    if t.platform == "darwin":
        return "networksetup may need an administrator: run the command again with sudo, or set it in " \
               "System Settings > Network > Details > Proxies"
    if t.platform == "win32":
        return "set it in Settings > Network & Internet > Proxy > Use setup script"
    return "set it in the desktop's network proxy settings"


# ---- saved state --------------------------------------------------------------------
def state_path(certs: Path) -> Path:
    return certs / STATE_NAME


def load_state(certs: Path) -> dict | None:
    try:
        data = json.loads(state_path(certs).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("previous"), dict) else None


def save_state(certs: Path, plan: Plan) -> Path:
    """What `off` needs: the target, the URL we set and the values before (mode 0600:
    a PAC URL someone had before may carry a company proxy's address)."""
    certs.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = state_path(certs)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        if hasattr(os, "fchmod"):
            os.fchmod(f.fileno(), 0o600)
        json.dump({"version": 1, "target": asdict(plan.target), "url": plan.pac_url,
                   "previous": plan.previous}, f, indent=1)
    os.replace(tmp, path)
    return path


def stale_setting(certs: Path, pac_text: str, pac_hosts: Sequence[str] = ()) -> str | None:
    """Why the data: PAC that `proxy on` put in the system setting no longer matches the PAC
    of the proxy starting now (None: it matches, or `proxy on` set none).

    A data: PAC is a snapshot.  After an upgrade adds hosts, or `--add-service` or another
    port, the browser keeps the old one: uploads to the new hosts go DIRECT, uncleaned,
    and requests for the old port fail.  `pac_hosts` are the names the current PAC sends to
    exifguard; the reason names those the old PAC lacks.
    """
    state = load_state(certs)
    url = state.get("url") if state else None
    if not isinstance(url, str) or not url.lower().startswith("data:") or url == data_url(pac_text):
        return None
    head, _, payload = url.partition(",")
    try:
        old = (base64.b64decode(payload, validate=False).decode("utf-8", "replace") if ";base64" in head.lower()
               else urllib.parse.unquote(payload))
    except ValueError:
        old = ""
    if not old.lstrip().startswith(PAC_MARKER):
        return None  # not ours any more: `proxy status` explains that case
    reasons = []
    old_proxy, new_proxy = _pac_proxy(old), _pac_proxy(pac_text)
    if old_proxy != new_proxy:
        reasons.append(f"it points at {old_proxy or 'another address'}, this proxy listens on {new_proxy}")
    missing = [h for h in pac_hosts if f'"{h}"' not in old]
    if missing:
        shown = ", ".join(missing[:6]) + (f" and {len(missing) - 6} more" if len(missing) > 6 else "")
        reasons.append(f"it lacks {shown}: uploads there go DIRECT, uncleaned")
    return "; ".join(reasons) or "its host list differs from this proxy's"


def clear_state(certs: Path) -> None:
    state_path(certs).unlink(missing_ok=True)


# ---- status ---------------------------------------------------------------------------
@dataclass
class StatusEntry:
    where: str
    pac: PacInfo

    def describe(self) -> str:
        if self.pac.kind == "none":
            return f"{self.where}: no automatic proxy configuration"
        who = "exifguard's PAC" if self.pac.ours else "another PAC (not exifguard's)"
        via = f", proxy {self.pac.proxy}" if self.pac.proxy else ""
        return f"{self.where}: {who} ({self.pac.kind} URL{via}): {abbreviate(self.pac.url)}"


@dataclass
class Status:
    target: Target
    entries: list[StatusEntry]
    running: str | None
    errors: list[str] = field(default_factory=list)

    @property
    def routed(self) -> bool:
        return any(e.pac.ours for e in self.entries)

    def advice(self) -> list[str]:
        """What the person should know: stale port, stopped proxy (closed or open)."""
        out = []
        ours = [e for e in self.entries if e.pac.ours]
        if not ours:
            return out
        for e in ours:
            if e.where == "KDE" and not kde_line_ok(e.pac.url):
                out.append("KDE's proxy script address is too long for Chromium-based browsers, which ignore it "
                           "and go DIRECT (uncleaned): run `proxy on` again (it uses the http URL on KDE)")
            if self.running and e.pac.proxy and e.pac.proxy != self.running:
                out.append(f"{e.where} points at {e.pac.proxy} but exifguard runs on {self.running}: uploads to "
                           "AI services fail until you run `proxy on` again")
        if self.running is None:
            if any(e.pac.kind == "http" for e in ours):
                out.append("exifguard is NOT running and the PAC is an http URL it serves: browsers cannot fetch "
                           "it and go DIRECT, so uploads leave UNCLEANED (fail open). Start exifguard, or use the "
                           "default data: URL (`proxy on` without --pac-kind)")
            if any(e.pac.fails_closed for e in ours):
                out.append("exifguard is not running: uploads to AI services fail (closed) until you start it")
        return out


def status(cur: Current, running: str | None, certs: Path | None = None, known_urls: Sequence[str] = ()) -> Status:
    entries = [StatusEntry(where, classify(u, certs, known_urls)) for where, u in active_urls(cur)]
    return Status(cur.target, entries, running, list(cur.errors))
