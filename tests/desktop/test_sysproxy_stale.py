"""`run` warns when the data: PAC that `proxy on` put in the system setting is out of date.

A data: PAC is a snapshot: after an upgrade adds hosts (or --add-service, or another port)
the browser keeps sending the new hosts DIRECT, uncleaned, until `proxy on` runs again.
"""

from __future__ import annotations

from pathlib import Path

from exifguard.cli import run as run_mod
from exifguard.desktop import sysproxy
from exifguard.proxy import pac
from exifguard.proxy.hosts import HostSet


def _set_by_proxy_on(certs: Path, pac_text: str) -> None:
    """What `proxy on` leaves behind (sysproxy.save_state), for a GNOME desktop."""
    plan = sysproxy.Plan("on", sysproxy.Target("linux", "gnome"), sysproxy.data_url(pac_text),
                         previous={"mode": "none"})
    sysproxy.save_state(certs, plan)


def _names(hosts: HostSet) -> list[str]:
    return [d for d, _ in hosts.pac_entries()]


def test_matching_setting_is_not_stale(tmp_path):
    hosts = HostSet.build()
    text = pac.pac_text(hosts, "127.0.0.1:8080")
    _set_by_proxy_on(tmp_path, text)
    assert sysproxy.stale_setting(tmp_path, text, _names(hosts)) is None


def test_no_setting_or_not_a_data_url_is_not_stale(tmp_path):
    text = pac.pac_text(HostSet.build())
    assert sysproxy.stale_setting(tmp_path, text) is None
    plan = sysproxy.Plan("on", sysproxy.Target("linux", "kde5"), "http://127.0.0.1:8081/proxy.pac")
    sysproxy.save_state(tmp_path, plan)
    assert sysproxy.stale_setting(tmp_path, text) is None  # served: always current


def test_new_hosts_and_another_port_are_named(tmp_path):
    old = HostSet.build(remove=["chat.z.ai"])
    _set_by_proxy_on(tmp_path, pac.pac_text(old, "127.0.0.1:8080"))
    now = HostSet.build(extra=["service:huggingchat"])
    why = sysproxy.stale_setting(tmp_path, pac.pac_text(now, "127.0.0.1:9090"), _names(now))
    assert why is not None
    assert "127.0.0.1:8080" in why and "127.0.0.1:9090" in why
    assert "chat.z.ai" in why and "huggingface.co" in why and "DIRECT, uncleaned" in why


def test_run_prints_the_command_that_refreshes_it(tmp_path, capsys):
    old = HostSet.build(remove=["chat.z.ai"])
    _set_by_proxy_on(tmp_path, pac.pac_text(old, "127.0.0.1:8080"))
    now = HostSet.build()
    run_mod._warn_stale_system_setting(tmp_path, pac.pac_text(now, "127.0.0.1:8080"), now,
                                       "./scripts/exifguard", True)
    err = capsys.readouterr().err
    assert "older PAC" in err and "chat.z.ai" in err
    assert f"./scripts/exifguard proxy on --certs {tmp_path}" in err
