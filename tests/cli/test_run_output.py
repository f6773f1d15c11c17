"""`exifguard run` as a person sees it: a real run on IPv6 loopback in front of the local sink.

One run checks several rough edges of issue 12: the output shows exifguard's line per image
and not mitmproxy's per-connection lines; `--host ::1` is written `[::1]:PORT` in the
banner, run.json and the PAC; `exifguard pac` without --proxy points at the running proxy;
`selftest` names tags as the audit log does; `report` right after it says the selftest
upload is not counted.
"""

from __future__ import annotations

import io
import json
import socket
from pathlib import Path

import pytest
from PIL import Image

from exifguard.cli import main
from exifguard.cli import run as cli_run
from proxy.harness import start_proxy
from proxy.sink import Sink

PUT_URL = "https://files.oaiusercontent.com/files/abc/raw?se=2030&sp=w&sig=SECRETSIG"


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def _photo() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "CanaryCam"
    exif[0x8825] = {1: "N", 2: (52.0, 31.0, 12.0)}
    buf = io.BytesIO()
    Image.new("RGB", (32, 16), (1, 2, 3)).save(buf, "JPEG", exif=exif.tobytes())
    return buf.getvalue()


@pytest.mark.e2e
@pytest.mark.skipif(not _ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_run_on_ipv6_loopback_quiet_output_and_pac_from_the_running_proxy(tmp_path: Path, capsys) -> None:
    httpx = pytest.importorskip("httpx")
    (tmp_path / "sink").mkdir()
    sink = Sink(tmp_path / "sink")
    p = start_proxy(tmp_path, sink.port, sink.cert, "--host", "::1", "--pac-port", "-1")
    try:
        addr = f"[::1]:{p.port}"
        assert f"http://{addr}  (ready" in p.output()
        assert "::1:" not in p.output().replace("[::1]:", "")  # never an unbracketed ::1:PORT
        assert json.loads((p.certs / "run.json").read_text())["proxy"] == addr
        assert f'PROXY {addr}"' in (p.certs / "proxy.pac").read_text()
        # `pac` without --proxy: the running proxy's address, not 127.0.0.1:8080
        assert main(["pac", "--certs", str(p.certs)]) == 0
        assert f'PROXY {addr}"' in capsys.readouterr().out

        assert f"--proxy '{addr}'" in p.output()  # quoted in the printed command: [..] is a shell glob
        # selftest through [::1], then report right after it: the selftest upload is named, not counted
        assert main(["selftest", "--certs", str(p.certs)]) == 0
        out = capsys.readouterr().out
        assert "selftest passed" in out and "GPSInfo" in out and "GPSTag" not in out
        assert main(["report", "--certs", str(p.certs), "--audit-log", str(p.audit)]) == 0
        assert "1 test upload(s) from selftest or the check page not counted; --include-selftest counts them" in capsys.readouterr().out

        with httpx.Client(proxy=f"http://{addr}", verify=str(p.ca), timeout=60) as c:
            r = c.put(PUT_URL, content=_photo(), headers={"content-type": "image/jpeg"})
        assert 200 <= r.status_code < 300, r.text
        assert p.wait_for("exifguard: files.oaiusercontent.com image (JPEG")
        out = p.output()
        for noise in ("client connect", "server connect", "client disconnect", "server disconnect",
                      "Streaming response"):
            assert noise not in out, out
    finally:
        assert p.stop() == 0, p.output()
        sink.close()


def test_explicit_termlog_verbosity_brings_mitmproxy_connection_lines_back(tmp_path: Path) -> None:
    from exifguard.proxy.hosts import HostSet
    kw = dict(host="127.0.0.1", port=1, certs=tmp_path, hosts=HostSet.build(), constrained=True,
              exifguard_sets=[], token="")
    quiet = str(cli_run.quiet_script_path())
    assert quiet in cli_run.build_mitmdump_args(passthrough=[], **kw)
    assert quiet not in cli_run.build_mitmdump_args(passthrough=["--set", "termlog_verbosity=info"], **kw)
    assert "mitmproxy.proxy.server" in Path(quiet).read_text()


def test_only_routine_connection_lines_are_hidden() -> None:
    import logging
    import runpy
    logger = logging.getLogger("mitmproxy.proxy.server")
    before = list(logger.filters)
    try:
        ns = runpy.run_path(str(cli_run.quiet_script_path()))
        runpy.run_path(str(cli_run.quiet_script_path()))  # loaded twice: still one filter
        added = [f for f in logger.filters if f not in before]
        assert len(added) == 1

        def shown(msg: str, level: int = logging.INFO) -> bool:
            return bool(logger.filter(logger.makeRecord(logger.name, level, __file__, 1, msg, (), None)))
        for routine in ("client connect", "client disconnect", "server connect claude.ai:443",
                        "server disconnect claude.ai:443", "Streaming response from claude.ai."):
            assert not shown(routine), routine
        for useful in ("Client TLS handshake failed. The client disconnected during the handshake. If this "
                       "happens consistently for claude.ai, this may indicate that the client does not trust "
                       "the proxy's certificate.", "error establishing server connection: timeout"):
            assert shown(useful), useful
        assert shown("server connect x", logging.WARNING)
        assert ns["CONNECTION_LOGGER"] == logger.name
    finally:
        for f in list(logger.filters):
            if f not in before:
                logger.removeFilter(f)
