"""`exifguard run --log-file` (a private, rotated log of the run's and mitmdump's output)
and `--notify` (mapped to the exifguard_notify option by the same rule as --mode)."""

from __future__ import annotations

import argparse
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from exifguard.cli import run as cli_run
from exifguard.cli.runlog import RunLog
from proxy.harness import spawn_run, wait_banner


def _read_all(log: Path) -> list[str]:
    """The lines of the log and its rotated files, oldest first, without the time stamp."""
    files = sorted(log.parent.glob(log.name + ".*"), key=lambda p: -int(p.suffix[1:])) + [log]
    lines = []
    for f in files:
        lines += [line.split(" ", 2)[2] if line.count(" ") >= 2 else line for line in f.read_text().splitlines()]
    return lines


# ---- a real run ---------------------------------------------------------------------------
@pytest.mark.e2e
def test_a_real_run_logs_everything_to_a_private_rotated_file(tmp_path):
    certs = tmp_path / "certs"
    log = tmp_path / "state" / "exifguard" / "exifguard.log"
    rotate_at = 1500
    pp = spawn_run(["--certs", str(certs), "--port", "0", "--pac-port", "-1", "--notify", "off",
                    "--log-file", str(log), "--log-max-bytes", str(rotate_at)], certs)
    try:
        assert wait_banner(pp), pp.output()
        assert f"log file:        {log}  (rotated)" in pp.output()  # the terminal still sees everything
    finally:
        if pp.proc.poll() is None:
            pp.proc.send_signal(signal.SIGTERM)  # how a service manager stops it
        rc = pp.proc.wait(timeout=30)
    assert rc == 0, pp.output()
    lines = _read_all(log)
    text = "\n".join(lines)
    # exifguard's own lines and mitmdump's (piped through exifguard), up to the very last one
    assert "HTTP(S) proxy listening at" in text                 # mitmdump's stdout
    assert "exifguard: guard check passed" in text              # the addon, inside mitmdump
    assert "exifguard proxy: http://127.0.0.1:" in text         # the banner
    assert lines[-1] == "exifguard: stopped."
    # rotated by size, every file private, the folders made private
    rotated = sorted(log.parent.glob("exifguard.log.*"))
    assert rotated, "the banner alone is larger than the rotation size: a rotation must have happened"
    for f in [log, *rotated]:
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
        assert f.stat().st_size <= rotate_at + 400, f  # one line may cross the limit
    for d in (log.parent, log.parent.parent):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    # the notify flag reached the addon (the run compares it with the addon's effective options)
    assert "exifguard_notify" not in text


@pytest.mark.e2e
def test_a_run_that_fails_says_why_in_the_log(tmp_path):
    certs = tmp_path / "certs"
    log = tmp_path / "logs" / "x.log"
    p = subprocess.run([sys.executable, "-m", "exifguard.cli", "run", "--certs", str(certs), "--port", "0",
                        "--log-file", str(log), "--", "--set", "exifguard_mode=bogus"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2
    assert "exifguard_mode: 'bogus' is not one of strip, audit, block" in log.read_text()
    assert "exifguard_mode: 'bogus'" in p.stderr  # and still on stderr (the journal, a terminal)


def test_an_unusable_log_file_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    from exifguard.cli import main
    rc = main(["run", "--certs", str(tmp_path / "certs"), "--log-file", str(tmp_path / "file" / "x.log")])
    err = capsys.readouterr().err
    assert rc == 1 and "cannot open the log file" in err and "--log-file" in err
    assert not (tmp_path / "certs").exists()  # refused before anything started


# ---- RunLog itself --------------------------------------------------------------------------
def test_rotation_keeps_three_old_files_and_makes_an_old_log_private(tmp_path):
    log = tmp_path / "x.log"
    log.write_text("old line\n")
    log.chmod(0o644)
    with RunLog(log, max_bytes=200):
        for i in range(200):
            print(f"line {i:03d} " + "x" * 30)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["x.log", "x.log.1", "x.log.2", "x.log.3"]
    for p in tmp_path.iterdir():
        assert stat.S_IMODE(p.stat().st_mode) == 0o600
    lines = _read_all(log)
    assert lines[-1].startswith("line 199 ") and all(line.startswith("line ") for line in lines)
    # nothing lost inside the kept window: consecutive numbers
    nums = [int(line.split()[1]) for line in lines]
    assert nums == list(range(nums[0], 200))


def test_child_output_is_copied_without_losing_lines(tmp_path, capfd):
    """Both of a child's streams, up to its last line, even when it exits at once."""
    log = tmp_path / "x.log"
    code = ("import sys\nfor i in range(3000): print('out', i)\n"
            "print('err last', file=sys.stderr)\nprint('out last')\n")
    with RunLog(log) as rl:
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        rl.pump(proc)
        proc.wait(timeout=60)
        rl.drain()
        print("after the child")
    lines = _read_all(log)
    assert [line for line in lines if line.startswith("out ") and line != "out last"] == \
        [f"out {i}" for i in range(3000)]
    assert "out last" in lines and "err last" in lines and lines[-1] == "after the child"
    captured = capfd.readouterr()
    assert "out 2999" in captured.out and "err last" in captured.err  # the original streams still get them


def test_a_partial_last_line_is_not_lost(tmp_path):
    log = tmp_path / "x.log"
    with RunLog(log):
        sys.stdout.write("no newline at the end")
    assert _read_all(log) == ["no newline at the end"]


# ---- --notify -------------------------------------------------------------------------------
def _args(**kw) -> argparse.Namespace:
    base = dict(mode=None, on_error=None, notify=None, no_audit_log=False, audit_log=None, allow_remote=False,
                add_host=None, remove_host=None)
    base.update(kw)
    return argparse.Namespace(**base)


def _plan(tmp_path: Path, passthrough: list[str], **kw) -> cli_run.Plan:
    return cli_run.plan_options(_args(**kw), tmp_path, cli_run.parse_passthrough(passthrough))


def test_notify_flag_maps_to_the_exifguard_notify_option(tmp_path):
    p = _plan(tmp_path, [], notify="all")
    assert "exifguard_notify=all" in p.sets and p.expected["exifguard_notify"] == "all" and p.notify == "all"
    p = _plan(tmp_path, [])  # not given: the addon's default (blocked) applies, nothing is passed
    assert not any(s.startswith("exifguard_notify") for s in p.sets) and "exifguard_notify" not in p.expected
    p = _plan(tmp_path, ["--set", "exifguard_notify=off"])
    assert not any(s.startswith("exifguard_notify") for s in p.sets) and p.expected["exifguard_notify"] == "off"
    p = _plan(tmp_path, ["--set", "exifguard_notify=off"], notify="off")  # the same value twice is fine
    assert p.expected["exifguard_notify"] == "off" and p.sets.count("exifguard_notify=off") == 0


def test_notify_given_twice_differently_or_badly_stops_the_run(tmp_path):
    with pytest.raises(cli_run.RunError, match=r"exifguard_notify is given twice with different values: "
                                               r"--notify all and `--set exifguard_notify=off`"):
        _plan(tmp_path, ["--set", "exifguard_notify=off"], notify="all")
    with pytest.raises(cli_run.RunError, match=r"exifguard_notify: 'loud' is not one of blocked, all, off"):
        _plan(tmp_path, ["--set", "exifguard_notify=loud"])


def test_notify_flag_is_on_the_run_and_service_commands(capsys):
    from exifguard.cli import build_parser
    assert build_parser().parse_args(["run", "--notify", "off"]).notify == "off"
    assert build_parser().parse_args(["run"]).notify is None
    assert build_parser().parse_args(["service", "install", "--notify", "all"]).notify == "all"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--notify", "loud"])
    assert "invalid choice: 'loud'" in capsys.readouterr().err


def test_log_is_not_used_without_the_flag(tmp_path, monkeypatch):
    """Without --log-file mitmdump inherits the streams exactly as before (no pipes, no threads)."""
    seen = {}

    def fake_popen(argv, **kw):
        seen.update(kw)
        raise OSError("stop here")
    monkeypatch.setattr(cli_run.subprocess, "Popen", fake_popen)
    with pytest.raises(OSError):
        cli_run.spawn(["x"])
    assert "stdout" not in seen and "stderr" not in seen and "env" not in seen
    with RunLog(tmp_path / "l.log") as rl, pytest.raises(OSError):
        cli_run.spawn(["x"], rl)
    assert seen["stdout"] is subprocess.PIPE and seen["stderr"] is subprocess.PIPE
    assert seen["env"]["PYTHONUNBUFFERED"] == "1" and os.environ.get("PYTHONUNBUFFERED") != "0"
