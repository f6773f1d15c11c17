"""Part 4: exifguard as an ICAP service behind Squid, side by side with Squid alone.

Everything on 127.0.0.1, started the way tests/icap does it (the same Squid launcher,
`tests/icap/squidharness.py`, so the configuration is `exifguard squid-config`'s own):
a local HTTPS sink in its own process that counts and discards bodies; three Squids
that differ only in adaptation: `icap_enable off` (Squid alone), exifguard icap with
one worker process, and with two.  Needs root and Debian's squid-openssl; otherwise
the part reports why it did not run.

Measured, each comparison interleaved round by round:
  * latency of one 5 MB photo upload (multipart POST to claude.ai), new connection each;
  * latency of a non-image POST (a 20 kB JSON chat message): the cost of the ICAP round
    trip for ordinary traffic to an AI host;
  * uploads per second at concurrency 32 with 1 and 2 worker processes (1 MB photos,
    to keep the run short), through Squid and straight to the service;
  * peak RSS of the ICAP service (parent + workers, VmHWM).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from . import gen
from .common import REPO, Series, proc_status_kb, rotate

SINK_SCRIPT = r"""
import sys, time
from pathlib import Path
from proxy.sink import Sink
from icap.squidharness import ai_sink_cert
class Count(list):
    def append(self, r):  # keep nothing: a benchmark sends hundreds of megabytes
        self.n = getattr(self, "n", 0) + 1
d = Path(sys.argv[1])
s = Sink(d)
ai_sink_cert(s, d)
s.received = Count()
print(s.port, flush=True)
while True:
    time.sleep(3600)
"""


@dataclass
class IcapResult:
    squid_version: str
    photo_bytes: int
    small_photo_bytes: int
    text_bytes: int
    latency: dict[str, Series] = field(default_factory=dict)
    """variant -> 5 MB upload latency; variants: "squid alone", "squid + exifguard"."""
    text_latency: dict[str, Series] = field(default_factory=dict)
    rps: dict[int, float] = field(default_factory=dict)
    """workers -> uploads per second at the concurrency below."""
    rps_failed: dict[int, int] = field(default_factory=dict)
    rps_direct: dict[int, float] = field(default_factory=dict)
    """workers -> REQMOD exchanges per second sent straight to the service (no Squid): the
    service's own scaling, which Squid's single process and the shared CPUs hide above."""
    concurrency: int = 32
    requests: int = 0
    peak_rss_kb: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    when: str = ""
    load: tuple[float, float] = (float("nan"), float("nan"))
    """1-minute load average at the start and the end of this part."""


def available() -> str | None:
    """None when the part can run, else the reason it cannot."""
    if shutil.which("squid") is None and not os.path.exists("/usr/sbin/squid"):
        return "squid is not installed (Debian: apt-get install squid-openssl)"
    if os.geteuid() != 0:
        return "starting squid needs root (it drops to user proxy)"
    if not os.path.exists("/usr/lib/squid/security_file_certgen"):
        return "squid-openssl's security_file_certgen is missing"
    return None


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{REPO / 'tests'}:{REPO / 'src'}"}


def _tree_hwm_kb(pid: int) -> int:
    pids = [pid]
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    pids.append(int(d.name))
            except (OSError, ValueError, IndexError):
                pass
    return sum(proc_status_kb(p, "VmHWM") for p in pids)


def _multipart(photo: bytes, n: int) -> tuple[dict[str, str], bytes]:
    b = f"----benchIcap{n:08d}"
    body = (f"--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"photo.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + photo + f"\r\n--{b}--\r\n".encode()
    return {"Content-Type": f"multipart/form-data; boundary={b}", "Origin": "https://claude.ai"}, body


def run_icap(work: Path, *, reps: int, requests: int, concurrency: int = 32, log=print) -> IcapResult | None:
    why = available()
    if why is not None:
        log(f"icap: not run: {why}")
        return None
    sys.path.insert(0, str(REPO / "tests"))
    sys.path.insert(0, str(REPO / "src"))
    from icap.icapclient import Client as IcapClient
    from icap.icapclient import exchange, reqmod
    from icap.squidharness import free_port, send, squid_version, start_squid, wait_port

    work.mkdir(parents=True, exist_ok=True)
    photo = gen.make_photos(work / "photos", [5])[0].read_bytes()
    small = gen.make_photos(work / "photos", [1])[0].read_bytes()
    text = json.dumps({"prompt": "Summarise the attached notes. " * 650, "model": "x"}).encode()
    res = IcapResult(squid_version() or "?", len(photo), len(small), len(text), concurrency=concurrency,
                     requests=requests, when=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    load0 = os.getloadavg()[0]
    procs: list[subprocess.Popen] = []
    squids = []
    try:
        sinkdir = work / "sink"
        sinkdir.mkdir(exist_ok=True)
        sink = subprocess.Popen([sys.executable, "-c", SINK_SCRIPT, str(sinkdir)], stdout=subprocess.PIPE,
                                text=True, env=_env())
        procs.append(sink)
        sink_port = int(sink.stdout.readline())
        sink_cert = sinkdir / "ai-sink-cert.pem"
        services: dict[int, tuple[subprocess.Popen, int]] = {}
        for workers in (1, 2):
            port = free_port()
            p = subprocess.Popen([sys.executable, "-m", "exifguard.icap", "icap", "--port", str(port),
                                  "--workers", str(workers)], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, env=_env())
            procs.append(p)
            wait_port(port, proc=p)
            services[workers] = (p, port)
        alone = start_squid([f"icap://127.0.0.1:{services[1][1]}/reqmod"], sink_port, sink_cert,
                            extra="icap_enable off")
        squids.append(alone)
        with_eg = {w: start_squid([f"icap://127.0.0.1:{port}/reqmod"], sink_port, sink_cert)
                   for w, (_p, port) in services.items()}
        squids += list(with_eg.values())

        def upload(sq, body_photo: bytes, n: int) -> float:
            h, body = _multipart(body_photo, n)
            t = time.perf_counter()
            r = send(sq, "POST", "claude.ai", sink_port, "/api/upload", h, body)
            dt = time.perf_counter() - t
            if r.status != 201:
                raise RuntimeError(f"upload failed: {r.status} {r.error}")
            return dt

        def post_text(sq) -> float:
            t = time.perf_counter()
            r = send(sq, "POST", "claude.ai", sink_port, "/api/chat", {"Content-Type": "application/json"}, text)
            dt = time.perf_counter() - t
            if r.status != 201:
                raise RuntimeError(f"text POST failed: {r.status} {r.error}")
            return dt

        variants = {"squid alone": alone, "squid + exifguard": with_eg[2]}
        for name, sq in variants.items():  # warm up: certificate generation, OPTIONS, caches
            upload(sq, small, 0)
            post_text(sq)
        log(f"icap: latency, {len(photo) / 1e6:.1f} MB photo and {len(text) / 1e3:.0f} kB text, {reps} rounds")
        for k in range(reps):
            for name in rotate(list(variants), k):
                res.latency.setdefault(name, Series()).add(upload(variants[name], photo, k))
                res.text_latency.setdefault(name, Series()).add(post_text(variants[name]))
        for workers in (1, 2):
            log(f"icap: {requests} uploads at concurrency {concurrency}, {workers} worker process(es)")
            sq = with_eg[workers]
            failed = 0
            lock = threading.Lock()

            def one(i: int) -> None:
                nonlocal failed
                try:
                    upload(sq, small, 1000 + i)
                except RuntimeError:
                    with lock:
                        failed += 1

            t = time.perf_counter()
            with ThreadPoolExecutor(concurrency) as ex:
                list(ex.map(one, range(requests)))
            res.rps[workers] = (requests - failed) / (time.perf_counter() - t)
            res.rps_failed[workers] = failed
            log(f"icap: {requests} REQMODs straight to the service at concurrency {concurrency}, "
                f"{workers} worker process(es)")
            h, body = _multipart(small, 7)
            first, rest = reqmod("POST", "https://claude.ai/api/upload",
                                 [("Host", "claude.ai"), *h.items(), ("Content-Length", str(len(body)))],
                                 body, preview=32768)
            port = services[workers][1]

            def direct(_i: int) -> bool:
                c = IcapClient(port)
                try:
                    return exchange(c, first, rest).status == 200
                except OSError:
                    return False
                finally:
                    c.close()

            t = time.perf_counter()
            with ThreadPoolExecutor(concurrency) as ex:
                ok = sum(ex.map(direct, range(requests)))
            res.rps_direct[workers] = ok / (time.perf_counter() - t)
            res.peak_rss_kb[workers] = _tree_hwm_kb(services[workers][0].pid)
    except Exception as exc:  # noqa: BLE001 - a benchmark part that fails says why
        log(f"icap: could not complete: {type(exc).__name__}: {exc}")
        res.errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        res.load = (load0, os.getloadavg()[0])
        for sq in squids:
            sq.stop()
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
    return res
