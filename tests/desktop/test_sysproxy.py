"""`exifguard proxy on|off|status`: plans per platform, dry-run, restore, status, errors.

Nothing here touches this machine's real proxy setting: the OS tools are a fake
(`FakeOS`, which keeps the setting in a dict and records every command), and the one
test that runs the real `gsettings` points it at a private keyfile backend in tmp_path.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import shutil
import stat
import subprocess
import sys

import pytest

from exifguard import cli
from exifguard.cli import sysproxy as cli_sysproxy
from exifguard.desktop import sysproxy as sp
from exifguard.proxy import pac
from exifguard.proxy.hosts import HostSet

WIN_KEY = sp.WIN_KEY


class FakeOS:
    """gsettings, kreadconfig/kwriteconfig, networksetup and reg over an in-memory setting."""

    def __init__(self, gnome=None, kde=None, services=None, win=None, fail=()):
        self.gnome = dict(gnome or {"mode": "none", "autoconfig-url": ""})
        self.kde = dict(kde or {})
        self.services = dict(services or {})  # name -> {"url", "enabled", "active"}
        self.win = win
        self.fail = set(fail)
        self.calls: list[list[str]] = []

    @property
    def writes(self) -> list[list[str]]:
        reads = ("get", "-listallnetworkservices", "-getautoproxyurl", "query")
        return [c for c in self.calls if not (c[0].startswith("kread") or c[1] in reads)]

    def __call__(self, argv):
        argv = list(argv)
        self.calls.append(argv)
        if argv[0] in self.fail:
            return sp.Result(1, "", f"{argv[0]}: permission denied")
        tool = argv[0]
        if tool == "gsettings":
            _, verb, schema, key, *rest = argv
            assert schema == sp.GNOME_SCHEMA
            if verb == "get":
                return sp.Result(0, f"'{self.gnome[key]}'\n")
            value = rest[0]
            self.gnome[key] = sp.parse_gvariant_string(value) if value[:1] == "'" else value
            return sp.Result(0)
        if tool.startswith("kread"):
            key = argv[argv.index("--key") + 1]
            return sp.Result(0, (self.kde.get(key) or "") + "\n")
        if tool.startswith("kwrite"):
            key = argv[argv.index("--key") + 1]
            if argv[-1] == "--delete":
                self.kde.pop(key, None)
            else:
                self.kde[key] = argv[-1]
            return sp.Result(0)
        if tool == "dbus-send":
            return sp.Result(1, "", "no session bus")
        if tool == "networksetup":
            verb = argv[1]
            if verb == "-listallnetworkservices":
                lines = ["An asterisk (*) denotes that a network service is disabled."]
                lines += [("" if s.get("active", True) else "*") + n for n, s in self.services.items()]
                return sp.Result(0, "\n".join(lines) + "\n")
            name = argv[2]
            s = self.services[name]
            if verb == "-getautoproxyurl":
                return sp.Result(0, f"URL: {s['url'] or '(null)'}\nEnabled: {'Yes' if s['enabled'] else 'No'}\n")
            if verb == "-setautoproxyurl":
                s["url"] = argv[3]
                return sp.Result(0)
            if verb == "-setautoproxystate":
                s["enabled"] = argv[3] == "on"
                return sp.Result(0)
        if tool == "reg":
            verb = argv[1]
            assert argv[2] == WIN_KEY and argv[4] == "AutoConfigURL"
            if verb == "query":
                if self.win is None:
                    return sp.Result(1, "", "ERROR: The system was unable to find the specified registry key or value.")
                return sp.Result(0, f"\r\n{WIN_KEY}\r\n    AutoConfigURL    REG_SZ    {self.win}\r\n\r\n")
            if verb == "add":
                self.win = argv[argv.index("/d") + 1]
                return sp.Result(0)
            if verb == "delete":
                self.win = None
                return sp.Result(0)
        raise AssertionError(f"unexpected command {argv}")


PAC = pac.pac_text(HostSet.build(), "127.0.0.1:8080")
URL = sp.data_url(PAC)


# ---- detection --------------------------------------------------------------------------
def _which(*present):
    return lambda name: f"/usr/bin/{name}" if name in present else None


def test_detect_gnome_kde_and_other_platforms():
    assert sp.detect("linux", {"XDG_CURRENT_DESKTOP": "ubuntu:GNOME"}, _which("gsettings")) == sp.Target("linux", "gnome")
    assert sp.detect("linux", {"XDG_CURRENT_DESKTOP": "X-Cinnamon"}, _which("gsettings")).desktop == "gnome"
    assert sp.detect("linux", {"XDG_CURRENT_DESKTOP": "KDE", "KDE_SESSION_VERSION": "6"}, _which()).desktop == "kde6"
    assert sp.detect("linux", {"XDG_CURRENT_DESKTOP": "KDE"}, _which("kwriteconfig5")).desktop == "kde5"
    assert sp.detect("linux", {"XDG_CURRENT_DESKTOP": "KDE"}, _which("kwriteconfig6")).desktop == "kde6"
    assert sp.detect("linux", {}, _which(), desktop="gnome").desktop == "gnome"
    assert sp.detect("darwin", {}) == sp.Target("darwin")
    assert sp.detect("win32", {}) == sp.Target("win32")


def test_detect_headless_says_what_to_do_instead():
    with pytest.raises(sp.SysProxyError) as e:
        sp.detect("linux", {}, _which("gsettings"), no_desktop_help=" HELP")
    msg = str(e.value)
    assert "XDG_CURRENT_DESKTOP is not set" in msg and "in the browser itself" in msg and msg.endswith("HELP")
    with pytest.raises(sp.SysProxyError, match="unsupported platform"):
        sp.detect("aix", {})


def test_cli_headless_error_names_the_browser_flag_and_firefox(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("XDG_CURRENT_DESKTOP", raising=False)
    fake = FakeOS()
    monkeypatch.setattr(cli_sysproxy, "_runner", fake)
    if not sys.platform.startswith("linux"):
        pytest.skip("a Linux-only situation")
    rc = cli.main(["proxy", "on", "--certs", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert "--proxy-pac-url=" in err and "pac --data-url" in err and "Firefox" in err
    # the dry run answers the question it was asked: nothing would change, and what instead
    assert cli.main(["proxy", "on", "--dry-run", "--certs", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# exifguard proxy on: nothing would change") and "--proxy-pac-url=" in out
    assert fake.calls == [] and not any(tmp_path.iterdir())


# ---- parsing and classifying ------------------------------------------------------------
def test_classify_recognises_exifguard_pacs(tmp_path):
    info = sp.classify(URL)
    assert (info.kind, info.ours, info.proxy, info.fails_closed) == ("data", True, "127.0.0.1:8080", True)
    other = sp.classify(sp.data_url('function FindProxyForURL(u, h) { return "DIRECT"; }'))
    assert other.kind == "data" and not other.ours
    f = tmp_path / "proxy.pac"
    f.write_text(PAC)
    assert sp.classify(f.as_uri()).ours and sp.classify(f.as_uri()).proxy == "127.0.0.1:8080"
    assert sp.classify("http://127.0.0.1:8081/proxy.pac").ours
    assert not sp.classify("http://127.0.0.1:8081/proxy.pac").fails_closed
    assert not sp.classify("http://corp.example/wpad.dat").ours
    assert sp.classify("http://corp.example/x.pac", known_urls=["http://corp.example/x.pac"]).ours
    assert sp.classify(None).kind == "none" and sp.classify("ftp://x/y").kind == "other"


def test_abbreviate_never_prints_a_whole_data_url():
    short = sp.abbreviate(URL)
    assert len(short) < 160 and "127.0.0.1:8080" in short and str(len(URL)) in short


@pytest.mark.parametrize("value", ["", "auto", "http://x/y.pac", URL, "it's", "'quoted'", " lead"])
def test_gvariant_quote_round_trip(value):
    quoted = sp.gvariant_string(value)
    # what gsettings does with its argument: GVariant text if it parses, else the string itself
    back = sp.parse_gvariant_string(quoted) if quoted[:1] == "'" else quoted
    assert back == value
    assert sp.gvariant_string(URL) == URL  # readable in the printed command


def test_parsers_of_the_os_tools_output():
    text = "An asterisk (*) denotes that a network service is disabled.\nWi-Fi\n*Bluetooth PAN\nUSB 10/100 LAN\n"
    assert sp.parse_services(text) == [("Wi-Fi", True), ("Bluetooth PAN", False), ("USB 10/100 LAN", True)]
    assert sp.parse_autoproxy("URL: (null)\nEnabled: No\n") == {"url": None, "enabled": False}
    assert sp.parse_autoproxy("URL: http://a/b.pac\nEnabled: Yes\n") == {"url": "http://a/b.pac", "enabled": True}
    out = f"\r\n{WIN_KEY}\r\n    AutoConfigURL    REG_SZ    data:x;base64,AA==\r\n"
    assert sp.parse_reg_query(out, "AutoConfigURL") == "data:x;base64,AA=="
    assert sp.parse_reg_query("", "AutoConfigURL") is None


# ---- plans ------------------------------------------------------------------------------
def test_plan_on_gnome_exact_commands_and_previous():
    fake = FakeOS(gnome={"mode": "manual", "autoconfig-url": ""})
    cur = sp.read_current(sp.Target("linux", "gnome"), fake)
    plan = sp.plan_on(cur, URL)
    assert [c.argv for c in plan.commands] == [
        ("gsettings", "set", "org.gnome.system.proxy", "autoconfig-url", URL),
        ("gsettings", "set", "org.gnome.system.proxy", "mode", "auto")]
    assert plan.previous == {"mode": "manual", "autoconfig-url": ""}
    assert fake.writes == []  # planning only reads


HTTP_URL = "http://127.0.0.1:8081/proxy.pac"


def test_plan_on_kde_writes_kioslaverc_then_notifies():
    cur = sp.read_current(sp.Target("linux", "kde6"), FakeOS())
    plan = sp.plan_on(cur, HTTP_URL)
    argvs = [c.argv for c in plan.commands]
    assert argvs[0] == ("kwriteconfig6", "--file", "kioslaverc", "--group", "Proxy Settings",
                        "--key", "Proxy Config Script", HTTP_URL)
    assert argvs[1][-2:] == ("ProxyType", "2")
    assert argvs[2][0] == "dbus-send" and plan.commands[2].may_fail
    assert plan.previous == {"ProxyType": None, "Proxy Config Script": None}


def test_kde_refuses_a_pac_url_chromium_would_ignore():
    """Chromium skips kioslaverc lines longer than its buffer and goes DIRECT: a data: PAC
    there would fail open even while exifguard runs (tests/browser/test_pac_kinds.py)."""
    assert sp.default_pac_kind(sp.Target("linux", "kde5")) == "http"
    assert sp.default_pac_kind(sp.Target("linux", "gnome")) == "data"
    assert sp.default_pac_kind(sp.Target("win32")) == sp.default_pac_kind(sp.Target("darwin")) == "data"
    cur = sp.read_current(sp.Target("linux", "kde5"), FakeOS())
    with pytest.raises(sp.SysProxyError, match="ignore a KDE proxy script address longer"):
        sp.plan_on(cur, URL)
    st = sp.status(sp.read_current(sp.Target("linux", "kde5"), FakeOS(kde={"ProxyType": "2",
                                                                          "Proxy Config Script": URL})), None)
    assert any("too long for Chromium" in a for a in st.advice())


def test_plan_on_macos_sets_every_enabled_service_only():
    fake = FakeOS(services={"Wi-Fi": {"url": None, "enabled": False},
                            "Thunderbolt Bridge": {"url": None, "enabled": False, "active": False},
                            "USB LAN": {"url": "http://corp/p.pac", "enabled": True}})
    cur = sp.read_current(sp.Target("darwin"), fake)
    plan = sp.plan_on(cur, URL)
    assert [c.argv for c in plan.commands] == [
        ("networksetup", "-setautoproxyurl", "Wi-Fi", URL), ("networksetup", "-setautoproxystate", "Wi-Fi", "on"),
        ("networksetup", "-setautoproxyurl", "USB LAN", URL), ("networksetup", "-setautoproxystate", "USB LAN", "on")]
    assert "Thunderbolt Bridge" not in plan.previous["services"]


def test_plan_on_windows_reg_add_and_powershell_line():
    cur = sp.read_current(sp.Target("win32"), FakeOS())
    plan = sp.plan_on(cur, URL)
    (cmd,) = plan.commands
    assert cmd.argv == ("reg", "add", WIN_KEY, "/v", "AutoConfigURL", "/t", "REG_SZ", "/d", URL, "/f")
    line = cmd.shell("win32")
    assert line.startswith(f"reg add '{WIN_KEY}' /v AutoConfigURL /t REG_SZ /d ") and line.endswith(" /f")
    assert f"'{URL}'" in line  # ';' and ',' would split an unquoted PowerShell argument
    assert "Chrome and Edge read it on their next start" in " ".join(plan.notes)


def test_macos_without_services_is_an_actionable_error():
    cur = sp.read_current(sp.Target("darwin"), FakeOS())
    with pytest.raises(sp.SysProxyError, match="no enabled network service"):
        sp.plan_on(cur, URL)


# ---- on, then off, restores what was there ------------------------------------------------
def _on_off(target, fake, certs, url):
    cur = sp.read_current(target, fake)
    plan = sp.plan_on(cur, url, sp.load_state(certs))
    sp.apply(plan, fake)
    sp.save_state(certs, plan)
    after_on = sp.read_current(target, fake)
    off = sp.plan_off(after_on, sp.load_state(certs))
    sp.apply(off, fake)
    return after_on, sp.read_current(target, fake)


@pytest.mark.parametrize("target,fake,check", [
    (sp.Target("linux", "gnome"), lambda: FakeOS(gnome={"mode": "auto", "autoconfig-url": "http://corp/w.pac"}),
     lambda f: f.gnome == {"mode": "auto", "autoconfig-url": "http://corp/w.pac"}),
    (sp.Target("linux", "gnome"), lambda: FakeOS(), lambda f: f.gnome == {"mode": "none", "autoconfig-url": ""}),
    (sp.Target("linux", "kde5"), lambda: FakeOS(), lambda f: f.kde == {}),
    (sp.Target("linux", "kde5"), lambda: FakeOS(kde={"ProxyType": "1"}), lambda f: f.kde == {"ProxyType": "1"}),
    (sp.Target("darwin"), lambda: FakeOS(services={"Wi-Fi": {"url": "http://corp/p.pac", "enabled": False},
                                                   "Ethernet": {"url": None, "enabled": False}}),
     lambda f: f.services == {"Wi-Fi": {"url": "http://corp/p.pac", "enabled": False},
                              "Ethernet": {"url": URL, "enabled": False}}),
    (sp.Target("win32"), lambda: FakeOS(), lambda f: f.win is None),
    (sp.Target("win32"), lambda: FakeOS(win="http://corp/p.pac"), lambda f: f.win == "http://corp/p.pac"),
])
def test_on_then_off_restores_the_previous_values(tmp_path, target, fake, check):
    f = fake()
    url = HTTP_URL if target.desktop and target.desktop.startswith("kde") else URL
    after_on, after_off = _on_off(target, f, tmp_path, url)
    assert all(u == url for _, u in sp.active_urls(after_on))
    assert check(f), f.__dict__
    assert not any(u == url for _, u in sp.active_urls(after_off))


def test_state_file_is_private_and_on_twice_keeps_the_first_previous(tmp_path):
    f = FakeOS(gnome={"mode": "auto", "autoconfig-url": "http://corp/w.pac"})
    t = sp.Target("linux", "gnome")
    for _ in range(2):  # a second `on` must not save exifguard's own URL as "before"
        plan = sp.plan_on(sp.read_current(t, f), URL, sp.load_state(tmp_path))
        sp.apply(plan, f)
        path = sp.save_state(tmp_path, plan)
    if os.name == "posix":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["previous"] == {"mode": "auto", "autoconfig-url": "http://corp/w.pac"}


def test_on_over_an_unrecorded_exifguard_setting_saves_off_not_itself(tmp_path):
    f = FakeOS(gnome={"mode": "auto", "autoconfig-url": sp.data_url(pac.pac_text(HostSet.build(), "127.0.0.1:9"))})
    plan = sp.plan_on(sp.read_current(sp.Target("linux", "gnome"), f), URL, saved=None)
    assert plan.previous == {"mode": "none", "autoconfig-url": ""}


def test_off_leaves_a_setting_someone_changed_since(tmp_path):
    f = FakeOS()
    t = sp.Target("linux", "gnome")
    plan = sp.plan_on(sp.read_current(t, f), URL)
    sp.apply(plan, f)
    sp.save_state(tmp_path, plan)
    f.gnome["autoconfig-url"] = "http://someone-else/p.pac"
    off = sp.plan_off(sp.read_current(t, f), sp.load_state(tmp_path))
    assert off.commands == [] and "changed after `proxy on`" in off.nothing_to_do


def test_off_without_saved_values_switches_exifguards_setting_off():
    f = FakeOS(gnome={"mode": "auto", "autoconfig-url": URL})
    off = sp.plan_off(sp.read_current(sp.Target("linux", "gnome"), f), None)
    sp.apply(off, f)
    assert f.gnome == {"mode": "none", "autoconfig-url": ""}
    assert sp.plan_off(sp.read_current(sp.Target("linux", "gnome"), FakeOS()), None).nothing_to_do


def test_apply_stops_at_a_failed_command_with_a_hint_and_skips_optional_ones():
    f = FakeOS(fail={"networksetup"}, services={"Wi-Fi": {"url": None, "enabled": False}})
    plan = sp.Plan("on", sp.Target("darwin"), URL,
                   commands=[sp.Command(("networksetup", "-setautoproxyurl", "Wi-Fi", URL), "x")])
    with pytest.raises(sp.SysProxyError, match="sudo"):
        sp.apply(plan, f)
    kde = sp.plan_on(sp.read_current(sp.Target("linux", "kde5"), FakeOS()), HTTP_URL)
    skipped = sp.apply(kde, FakeOS())
    assert len(skipped) == 1 and "skipped" in skipped[0]


# ---- status -----------------------------------------------------------------------------
def test_status_advice_closed_open_and_stale_port():
    t = sp.Target("linux", "gnome")
    cur = sp.read_current(t, FakeOS(gnome={"mode": "auto", "autoconfig-url": URL}))
    st = sp.status(cur, running=None)
    assert st.routed and any("fail (closed)" in a for a in st.advice())
    assert any("runs on 127.0.0.1:9999" in a for a in sp.status(cur, running="127.0.0.1:9999").advice())
    assert sp.status(cur, running="127.0.0.1:8080").advice() == []
    http = sp.read_current(t, FakeOS(gnome={"mode": "auto", "autoconfig-url": "http://127.0.0.1:8081/proxy.pac"}))
    assert any("fail open" in a for a in sp.status(http, running=None).advice())
    off = sp.read_current(t, FakeOS(gnome={"mode": "none", "autoconfig-url": URL}))
    assert not sp.status(off, None).routed  # the URL is there but not in use


# ---- the command ------------------------------------------------------------------------
def _cli(monkeypatch, fake, *args):
    monkeypatch.setattr(cli_sysproxy, "_runner", fake)
    return cli.main(["proxy", *args])


@pytest.mark.parametrize("platform,fake,first", [
    ("linux", FakeOS, "gsettings set org.gnome.system.proxy autoconfig-url "),
    ("darwin", lambda: FakeOS(services={"Wi-Fi": {"url": None, "enabled": False}}), "networksetup -setautoproxyurl Wi-Fi "),
    ("win32", FakeOS, "reg add "),
])
def test_dry_run_prints_runnable_commands_and_changes_nothing(monkeypatch, tmp_path, capsys, platform, fake, first):
    f = fake()
    setting = lambda: json.dumps([f.gnome, f.kde, f.services, f.win])  # noqa: E731
    before = setting()
    rc = _cli(monkeypatch, f, "on", "--dry-run", "--platform", platform, "--desktop", "gnome",
              "--certs", str(tmp_path / "certs"))
    out = capsys.readouterr().out
    assert rc == 0
    lines = [line for line in out.splitlines() if not line.startswith("#")]
    assert lines[0].startswith(first)
    assert f.writes == [] and setting() == before
    assert not (tmp_path / "certs").exists()  # no state, no PAC file
    if platform != "win32":  # sh: the printed line splits back into the exact argv
        url = shlex.split(lines[0])[-1]
        assert sp.classify(url).ours and base64.b64decode(url.split(",", 1)[1]).decode() == PAC


def test_cli_on_status_off_round_trip(monkeypatch, tmp_path, capsys):
    f = FakeOS(gnome={"mode": "auto", "autoconfig-url": "http://corp/w.pac"})
    certs = tmp_path / "certs"
    assert _cli(monkeypatch, f, "on", "--desktop", "gnome", "--certs", str(certs)) == 0
    out = capsys.readouterr().out
    assert "changed:" in out and "http://corp/w.pac" in out and "proxy off --certs" in out
    assert "exifguard is not running" in out and "fail" in out
    assert f.gnome["autoconfig-url"] == URL and (certs / "sysproxy.json").exists()

    assert _cli(monkeypatch, f, "status", "--desktop", "gnome", "--certs", str(certs)) == 0
    out = capsys.readouterr().out
    assert "exifguard's PAC (data URL, proxy 127.0.0.1:8080)" in out and "not running" in out

    assert _cli(monkeypatch, f, "status", "--json", "--desktop", "gnome", "--certs", str(certs)) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["routed"] and d["entries"][0]["fails_closed"] and d["running"] is False

    assert _cli(monkeypatch, f, "off", "--desktop", "gnome", "--certs", str(certs)) == 0
    assert f.gnome == {"mode": "auto", "autoconfig-url": "http://corp/w.pac"}
    assert not (certs / "sysproxy.json").exists()
    assert _cli(monkeypatch, f, "status", "--desktop", "gnome", "--certs", str(certs)) == 1
    assert "another PAC (not exifguard's)" in capsys.readouterr().out


def test_cli_uses_the_running_proxys_address(monkeypatch, tmp_path, capsys):
    from exifguard.cli import proxy as cli_proxy
    monkeypatch.setattr(cli_proxy, "running_proxy", lambda certs: "127.0.0.1:9191")
    f = FakeOS()
    assert _cli(monkeypatch, f, "on", "--desktop", "gnome", "--certs", str(tmp_path)) == 0
    assert sp.classify(f.gnome["autoconfig-url"]).proxy == "127.0.0.1:9191"
    assert "exifguard is not running" not in capsys.readouterr().out
    monkeypatch.setattr(cli_proxy, "running_proxy", lambda certs: "127.0.0.1:8080")
    assert _cli(monkeypatch, f, "status", "--desktop", "gnome", "--certs", str(tmp_path)) == 0
    assert "runs on 127.0.0.1:8080" in capsys.readouterr().out  # the setting is stale


def test_cli_pac_kinds_file_and_http(monkeypatch, tmp_path, capsys):
    f = FakeOS()
    assert _cli(monkeypatch, f, "on", "--pac-kind", "file", "--desktop", "gnome", "--certs", str(tmp_path)) == 0
    assert f.gnome["autoconfig-url"] == (tmp_path / "proxy.pac").as_uri()
    assert (tmp_path / "proxy.pac").read_text() == PAC
    assert "IGNORE" in capsys.readouterr().out  # Chromium ignores file:// PACs: said at once
    (tmp_path / "run.json").write_text(json.dumps({"pac_url": "http://127.0.0.1:8181/proxy.pac"}))
    assert _cli(monkeypatch, f, "on", "--pac-kind", "http", "--desktop", "gnome", "--certs", str(tmp_path)) == 0
    assert f.gnome["autoconfig-url"] == "http://127.0.0.1:8181/proxy.pac"
    assert "fail open" in capsys.readouterr().out
    # `off` restores the setting from before the *first* `on`
    assert _cli(monkeypatch, f, "off", "--desktop", "gnome", "--certs", str(tmp_path)) == 0
    assert f.gnome == {"mode": "none", "autoconfig-url": ""}


def test_cli_kde_defaults_to_http_and_says_how_to_fail_closed(monkeypatch, tmp_path, capsys):
    f = FakeOS()
    assert _cli(monkeypatch, f, "on", "--desktop", "kde", "--certs", str(tmp_path)) == 0
    out = capsys.readouterr().out
    assert f.kde["Proxy Config Script"] == "http://127.0.0.1:8081/proxy.pac" and f.kde["ProxyType"] == "2"
    assert "fail open" in out and "--proxy-pac-url=" in out and "Firefox" in out
    assert _cli(monkeypatch, f, "on", "--desktop", "kde", "--pac-kind", "data", "--certs", str(tmp_path)) == 2
    assert "ignore a KDE proxy script address" in capsys.readouterr().err
    assert _cli(monkeypatch, f, "off", "--desktop", "kde", "--certs", str(tmp_path)) == 0
    assert f.kde == {}


def test_cli_errors_are_sentences_not_tracebacks(monkeypatch, tmp_path, capsys):
    assert _cli(monkeypatch, FakeOS(), "--certs", str(tmp_path)) == 2
    assert "proxy on" in capsys.readouterr().err
    other = "win32" if not os.name == "nt" else "linux"
    assert _cli(monkeypatch, FakeOS(), "on", "--platform", other, "--certs", str(tmp_path)) == 2
    assert "only --dry-run" in capsys.readouterr().err
    assert _cli(monkeypatch, FakeOS(), "on", "--desktop", "gnome", "--proxy", "nope",
                "--certs", str(tmp_path)) == 2
    assert "HOST:PORT" in capsys.readouterr().err
    assert _cli(monkeypatch, FakeOS(), "on", "--desktop", "gnome", "--pac-url", "ftp://x/y",
                "--certs", str(tmp_path)) == 2
    assert "--pac-url must be" in capsys.readouterr().err
    fail = FakeOS(fail={"gsettings"})
    assert _cli(monkeypatch, fail, "on", "--desktop", "gnome", "--certs", str(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "nothing was changed" in err and "Traceback" not in err and fail.writes == []


def test_help_describes_every_option(capsys):
    with pytest.raises(SystemExit):
        cli.main(["proxy", "--help"])
    out = capsys.readouterr().out
    for opt in ("--dry-run", "--certs", "--pac-kind", "--pac-url", "--proxy", "--desktop", "--json"):
        assert opt in out
    assert "--platform" not in out  # for tests only


# ---- the real gsettings, on a private keyfile backend --------------------------------
def test_real_gsettings_on_a_private_backend(monkeypatch, tmp_path, capsys):
    """The commands as planned, run by the real gsettings: only against a keyfile in
    tmp_path (GSETTINGS_BACKEND=keyfile, XDG_CONFIG_HOME=tmp_path), never this machine's."""
    if shutil.which("gsettings") is None:
        pytest.skip("gsettings missing (apt-get install libglib2.0-bin gsettings-desktop-schemas)")
    env = {"GSETTINGS_BACKEND": "keyfile", "XDG_CONFIG_HOME": str(tmp_path / "xdg"), "XDG_CURRENT_DESKTOP": "GNOME"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    schemas = subprocess.run(["gsettings", "list-schemas"], capture_output=True, text=True).stdout.split()
    if sp.GNOME_SCHEMA not in schemas:
        pytest.skip("the org.gnome.system.proxy schema is missing (apt-get install gsettings-desktop-schemas)")
    subprocess.run(["gsettings", "set", sp.GNOME_SCHEMA, "autoconfig-url", "http://corp.example/w.pac"], check=True)
    keyfile = tmp_path / "xdg" / "glib-2.0" / "settings" / "keyfile"
    assert keyfile.exists(), "gsettings did not use the private keyfile backend"
    certs = tmp_path / "certs"
    monkeypatch.setattr(cli_sysproxy, "_runner", sp.subprocess_runner)
    assert cli.main(["proxy", "on", "--certs", str(certs)]) == 0
    cur = sp.read_current(sp.Target("linux", "gnome"), sp.subprocess_runner)
    assert cur.values == {"mode": "auto", "autoconfig-url": URL}
    assert cli.main(["proxy", "off", "--certs", str(certs)]) == 0
    cur = sp.read_current(sp.Target("linux", "gnome"), sp.subprocess_runner)
    assert cur.values == {"mode": "none", "autoconfig-url": "http://corp.example/w.pac"}
    capsys.readouterr()


def test_cli_http_pac_is_refused_when_the_running_proxy_serves_none(monkeypatch, tmp_path, capsys):
    """`run --pac-port -1` (or a taken PAC port) serves no PAC: an http:// URL would point at
    nothing and the browser would go DIRECT, uncleaned; IPv6 proxies still get 127.0.0.1,
    where `run` serves its PAC."""
    f = FakeOS()
    (tmp_path / "run.json").write_text(json.dumps({"proxy": "127.0.0.1:8080", "pac_url": None}))
    assert _cli(monkeypatch, f, "on", "--pac-kind", "http", "--desktop", "gnome", "--certs", str(tmp_path)) == 2
    assert "serves no PAC" in capsys.readouterr().err and f.gnome["autoconfig-url"] == ""  # unchanged
    (tmp_path / "run.json").unlink()
    assert _cli(monkeypatch, f, "on", "--pac-kind", "http", "--proxy", "[::1]:8080", "--desktop", "gnome",
                "--certs", str(tmp_path)) == 0
    assert f.gnome["autoconfig-url"] == "http://127.0.0.1:8081/proxy.pac"
    assert "leave UNCLEANED until you start it" in capsys.readouterr().out  # http: fails open


def test_cli_saves_the_previous_setting_before_changing_it(monkeypatch, tmp_path, capsys):
    """A step failing half-way must not lose what was there before (a company's PAC)."""
    f = FakeOS(gnome={"mode": "auto", "autoconfig-url": "http://wpad.example/proxy.pac"})
    real_apply = sp.apply

    def failing_apply(plan, runner):
        raise sp.SysProxyError("exifguard proxy: gsettings failed half-way")
    monkeypatch.setattr(sp, "apply", failing_apply)
    assert _cli(monkeypatch, f, "on", "--desktop", "gnome", "--certs", str(tmp_path)) == 2
    saved = sp.load_state(tmp_path)
    assert saved is not None and "wpad.example" in json.dumps(saved["previous"])
    monkeypatch.setattr(sp, "apply", real_apply)
