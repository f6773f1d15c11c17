"""`exifguard check`: refuse hosts exifguard does not intercept, say when it is not running,
open the page unless --no-browser.  (Against a running proxy: tests/proxy/test_checkpage.py.)"""

from __future__ import annotations

import pytest

from exifguard.cli import build_parser
from exifguard.cli.check import cmd_check
from exifguard.cli.locations import command_prefix


def run(argv, opened):
    args = build_parser().parse_args(["check", *argv])
    return cmd_check(args, open_browser=lambda url: opened.append(url) or True)


def test_a_host_exifguard_does_not_intercept_is_refused_with_the_list_command(tmp_path, capsys):
    opened: list[str] = []
    assert run(["--host", "www.example.com", "--certs", str(tmp_path)], opened) == 2
    err = capsys.readouterr().err
    assert "www.example.com is not a host exifguard intercepts" in err
    assert f"{command_prefix()} hosts --certs {tmp_path}" in err
    assert opened == []


def test_not_running_says_how_to_start_and_still_opens_the_page(tmp_path, capsys):
    opened: list[str] = []
    assert run(["--certs", str(tmp_path)], opened) == 1
    out = capsys.readouterr().out
    assert "check page: https://claude.ai/.well-known/exifguard" in out
    assert "exifguard is NOT running" in out and f"{command_prefix()} run --certs {tmp_path}" in out
    assert opened == ["https://claude.ai/.well-known/exifguard"]
    assert "opened it in the default browser" in out


def test_no_browser_only_prints(tmp_path, capsys):
    opened: list[str] = []
    assert run(["--no-browser", "--host", "API.OpenAI.com.", "--certs", str(tmp_path)], opened) == 1
    assert "https://api.openai.com/.well-known/exifguard" in capsys.readouterr().out
    assert opened == []


def test_a_browser_that_cannot_open_gives_the_url(tmp_path, capsys):
    args = build_parser().parse_args(["check", "--certs", str(tmp_path)])
    assert cmd_check(args, open_browser=lambda url: False) == 1
    assert "open the URL yourself: https://claude.ai/.well-known/exifguard" in capsys.readouterr().out


def test_help_describes_it(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["check", "--help"])
    out = capsys.readouterr().out
    assert "--no-browser" in out and "--host" in out and "loads only when that browser" in out


def test_status_page_address_comes_from_run_json(tmp_path):
    import json

    from exifguard.cli.check import _status_page
    assert _status_page(tmp_path) is None
    (tmp_path / "run.json").write_text(json.dumps({"pac_url": "http://127.0.0.1:8081/proxy.pac"}))
    assert _status_page(tmp_path) == "http://127.0.0.1:8081/"
    (tmp_path / "run.json").write_text(json.dumps({"pac_url": None}))
    assert _status_page(tmp_path) is None
