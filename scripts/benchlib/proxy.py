"""Part 2: what the proxy adds to an upload, compared with bare mitmdump and no proxy.

Everything stays on 127.0.0.1: a local HTTPS sink (its own process), and mitmdump with
`map_remote` from real AI hostnames (claude.ai, files.oaiusercontent.com,
api.openai.com) to the sink, `connection_strategy=lazy` (so nothing ever connects to the
real service) and `ssl_verify_upstream_trusted_ca=<sink cert>`.  The client is httpx
with trust_env=False (no ambient proxy settings).  Request counts are bounded.

Variants: direct (no proxy), bare mitmdump, bare mitmdump whose responses are streamed
by a two-line addon (the fair SSE baseline: bare mitmdump buffers whole responses), and
mitmdump + exifguard (`-s addons/exifguard_addon.py`, same arguments otherwise).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import ssl
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from . import gen
from .common import REPO, VENV_BIN, Series, proc_status_kb, rotate

HOSTS = ("claude.ai", "files.oaiusercontent.com", "api.openai.com")
SHAPES = ("multipart", "raw PUT", "base64 JSON")
STREAM_ADDON = Path(__file__).with_name("stream_addon.py")


def exifguard_addon() -> Path | None:
    p = REPO / "addons" / "exifguard_addon.py"
    return p if p.exists() else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_cert(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "sink.pem", folder / "sink.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


@dataclass
class Running:
    name: str
    proc: subprocess.Popen | None
    port: int | None  # proxy port (None = direct)
    log: Path | None = None


class Harness:
    """Starts the sink and the proxies; stops exactly the processes it started."""

    def __init__(self, work: Path, sse_delay: float) -> None:
        self.work = work
        self.work.mkdir(parents=True, exist_ok=True)
        self.cert, self.key = make_cert(work)
        self.conf = work / "mitmconf"
        self.conf.mkdir(exist_ok=True)
        port_file = work / "sink.port"
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1]))
        self.sink = subprocess.Popen([sys.executable, "-m", "benchlib.sink", "--cert", str(self.cert),
                                      "--key", str(self.key), "--port-file", str(port_file),
                                      "--sse-delay", str(sse_delay)], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not port_file.exists():
            if time.monotonic() > deadline or self.sink.poll() is not None:
                raise RuntimeError("the benchmark sink did not start")
            time.sleep(0.05)
        self.sink_port = int(port_file.read_text())
        self.proxies: dict[str, Running] = {}

    def start_proxy(self, name: str, scripts: list[Path], extra_env: dict[str, str] | None = None) -> Running:
        port = free_port()
        argv = [str(VENV_BIN / "mitmdump"), "--listen-host", "127.0.0.1", "--listen-port", str(port),
                "--set", f"confdir={self.conf}", "--set", "connection_strategy=lazy",
                "--set", f"ssl_verify_upstream_trusted_ca={self.cert}", "--set", "flow_detail=0",
                "--set", "termlog_verbosity=warn"]
        for h in HOSTS:
            argv += ["--map-remote", f"|//{h.replace('.', chr(92) + '.')}/|//127.0.0.1:{self.sink_port}/"]
        for s in scripts:
            argv += ["-s", str(s)]
        log = self.work / f"{name.replace(' ', '_').replace('+', 'plus')}.log"
        env = dict(os.environ)
        env.pop("HTTP_PROXY", None)
        env.pop("HTTPS_PROXY", None)
        env.update(extra_env or {})
        proc = subprocess.Popen(argv, stdout=open(log, "wb"), stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env, cwd=str(REPO))
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited at start-up (see {log})")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    proc.kill()
                    raise RuntimeError(f"{name} did not listen within 60 s")
                time.sleep(0.1)
        r = Running(name, proc, port, log)
        self.proxies[name] = r
        return r

    @property
    def mitm_ca(self) -> Path:
        return self.conf / "mitmproxy-ca-cert.pem"

    def stop(self) -> None:
        for r in self.proxies.values():
            if r.proc and r.proc.poll() is None:
                r.proc.terminate()
                try:
                    r.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    r.proc.kill()
                    r.proc.wait()
        if self.sink.poll() is None:
            self.sink.terminate()
            try:
                self.sink.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.sink.kill()
                self.sink.wait()


# ---- request shapes -------------------------------------------------------------------------------
@dataclass
class Req:
    method: str
    url: str  # path + query on the AI host
    host: str
    headers: dict[str, str]
    body: bytes


def build(shape: str, photo: bytes) -> Req:
    if shape == "multipart":
        boundary = "----benchBoundary" + uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"IMG_0001.jpg\"\r\n"
                f"Content-Type: image/jpeg\r\n\r\n").encode() + photo + f"\r\n--{boundary}--\r\n".encode()
        return Req("POST", "/api/organizations/o1/conversations/c1/wiggle/upload-file", "claude.ai",
                   {"content-type": f"multipart/form-data; boundary={boundary}",
                    "origin": "https://claude.ai"}, body)
    if shape == "raw PUT":
        return Req("PUT", "/files/file-abc/raw?se=2030&sp=cw&sig=benchsig", "files.oaiusercontent.com",
                   {"content-type": "image/jpeg", "x-ms-blob-type": "BlockBlob", "origin": "https://chatgpt.com"},
                   photo)
    if shape == "base64 JSON":
        doc = {"model": "gpt-4o", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "what is in this photo?"},
            {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64," + base64.b64encode(photo).decode()}}]}]}
        return Req("POST", "/v1/chat/completions", "api.openai.com", {"content-type": "application/json"},
                   json.dumps(doc).encode())
    raise ValueError(shape)


class Client:
    """An httpx client for one variant: direct to the sink, or through a proxy to an AI host."""

    def __init__(self, h: Harness, variant: Running, *, limit: int = 1) -> None:
        import httpx
        self.direct = variant.port is None
        if self.direct:
            ctx = ssl.create_default_context(cafile=str(h.cert))
            self.base = f"https://127.0.0.1:{h.sink_port}"
            proxy = None
        else:
            ctx = ssl.create_default_context(cafile=str(h.mitm_ca))
            self.base = None
            proxy = f"http://127.0.0.1:{variant.port}"
        limits = httpx.Limits(max_connections=limit, max_keepalive_connections=limit)
        self.client = httpx.AsyncClient(verify=ctx, proxy=proxy, trust_env=False, limits=limits,
                                        timeout=httpx.Timeout(120.0))

    def url(self, r: Req) -> str:
        return (self.base or f"https://{r.host}") + r.url

    async def send(self, r: Req, *, want_hash: bool = False) -> dict:
        headers = dict(r.headers)
        if want_hash:
            headers["x-bench-hash"] = "1"
        resp = await self.client.request(r.method, self.url(r), headers=headers, content=r.body)
        if resp.status_code != 200:
            raise RuntimeError(f"HTTP {resp.status_code}")
        return resp.json()

    async def sse(self, host: str = "claude.ai") -> tuple[float, float]:
        path = "/api/organizations/o1/chat_conversations/c1/completion/sse"
        url = (self.base or f"https://{host}") + path
        t0 = time.perf_counter()
        async with self.client.stream("GET", url, headers={"accept": "text/event-stream"}) as resp:
            first = None
            async for chunk in resp.aiter_raw():
                if chunk and first is None:
                    first = time.perf_counter() - t0
            total = time.perf_counter() - t0
        return first if first is not None else total, total

    async def close(self) -> None:
        await self.client.aclose()


# ---- measurements ---------------------------------------------------------------------------------
@dataclass
class ProxyResult:
    variants: list[str]
    sizes: list[tuple[float, int]]
    latency: dict[tuple[str, str, int], Series] = field(default_factory=dict)  # (variant, shape, size)
    modified: dict[tuple[str, str, int], bool] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    rps: dict[tuple[str, int], Series] = field(default_factory=dict)  # (variant, concurrency)
    rss_kb: dict[tuple[str, int], int] = field(default_factory=dict)
    cpu_ms: dict[tuple[str, int], Series] = field(default_factory=dict)  # proxy CPU per request
    attribution: list[tuple[str, int, Series, Series, Series]] = field(default_factory=list)
    # (shape, body bytes, request latency, rewrite wall, rewrite CPU) through the timed addon
    ttfb: dict[str, Series] = field(default_factory=dict)
    sse_total: dict[str, Series] = field(default_factory=dict)
    rps_photo_bytes: int = 0
    rps_requests: int = 0
    reps: int = 0
    sse_delay: float = 0.0
    notes: list[str] = field(default_factory=list)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a live process (all its threads), from /proc/PID/stat."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def _reset_hwm(pid: int) -> None:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        pass


async def _measure(h: Harness, variants: list[Running], res: ProxyResult, photos: dict[int, bytes],
                   small: bytes, *, reps: int, levels: list[int], requests: int, sse_reps: int,
                   log) -> None:
    import hashlib
    clients = {v.name: Client(h, v) for v in variants}
    upload_variants = [v for v in variants if v.name != "mitmdump (responses streamed)"]
    try:
        # warm-up (TLS handshakes, certificate generation in the proxy) and the "was it
        # changed?" check: the sink returns the SHA-256 it received
        for size, photo in photos.items():
            for shape in SHAPES:
                r = build(shape, photo)
                for v in upload_variants:
                    try:
                        doc = await clients[v.name].send(r, want_hash=True)
                        res.modified[(v.name, shape, size)] = doc.get("sha256") != hashlib.sha256(r.body).hexdigest()
                    except Exception as exc:  # noqa: BLE001 - report per variant, keep going
                        res.errors[f"{v.name} / {shape} / {size}"] = f"{type(exc).__name__}: {exc}"[:120]
        # 1. upload latency, interleaved: each repetition visits every variant in a new order
        for rep in range(reps):
            for size, photo in photos.items():
                for shape in SHAPES:
                    r = build(shape, photo)
                    for v in rotate(upload_variants, rep + len(shape)):
                        if f"{v.name} / {shape} / {size}" in res.errors:
                            continue
                        t0 = time.perf_counter()
                        try:
                            await clients[v.name].send(r)
                        except Exception as exc:  # noqa: BLE001
                            res.errors[f"{v.name} / {shape} / {size}"] = f"{type(exc).__name__}: {exc}"[:120]
                            continue
                        res.latency.setdefault((v.name, shape, size), Series()).add(time.perf_counter() - t0)
            log(f"  upload latency repetition {rep + 1}/{reps} done")
        # 2. SSE time to first byte
        for rep in range(sse_reps):
            for v in rotate(variants, rep):
                try:
                    first, total = await clients[v.name].sse()
                except Exception as exc:  # noqa: BLE001
                    res.errors[f"{v.name} / SSE"] = f"{type(exc).__name__}: {exc}"[:120]
                    continue
                res.ttfb.setdefault(v.name, Series()).add(first)
                res.sse_total.setdefault(v.name, Series()).add(total)
        log("  SSE done")
    finally:
        for c in clients.values():
            await c.close()
    # 3. requests per second at each concurrency (a small photo, multipart to claude.ai)
    r = build("multipart", small)
    for level in levels:
        for rnd in range(2):
            for v in rotate(upload_variants, rnd):
                c = Client(h, v, limit=level)
                try:
                    await c.send(r)  # open one connection before the clock starts
                    if v.proc:
                        _reset_hwm(v.proc.pid)
                    sem = asyncio.Semaphore(level)
                    failures = 0

                    async def one() -> None:
                        nonlocal failures
                        async with sem:
                            try:
                                await c.send(r)
                            except Exception:  # noqa: BLE001
                                failures += 1

                    c0 = cpu_seconds(v.proc.pid) if v.proc else float("nan")
                    t0 = time.perf_counter()
                    await asyncio.gather(*(one() for _ in range(requests)))
                    dt = time.perf_counter() - t0
                    if v.proc:
                        res.cpu_ms.setdefault((v.name, level), Series()).add(
                            (cpu_seconds(v.proc.pid) - c0) * 1000 / requests)
                    if failures:
                        res.errors[f"{v.name} / c={level}"] = f"{failures} of {requests} requests failed"
                    res.rps.setdefault((v.name, level), Series()).add((requests - failures) / dt)
                    if v.proc:
                        res.rss_kb[(v.name, level)] = max(res.rss_kb.get((v.name, level), 0),
                                                          proc_status_kb(v.proc.pid, "VmHWM"))
                finally:
                    await c.close()
        log(f"  concurrency {level} done")


async def _attribute(h: Harness, v: Running, times: Path, res: ProxyResult, photo: bytes, small: bytes,
                     reps: int) -> None:
    """Latency through the timed addon next to the rewrite time it logged (same requests)."""
    c = Client(h, v)
    try:
        for label, data in (("small", small), ("5 MB", photo)):
            for shape in SHAPES:
                r = build(shape, data)
                await c.send(r)  # warm-up
                lat = Series()
                times.write_text("")
                for _ in range(reps):
                    t0 = time.perf_counter()
                    await c.send(r)
                    lat.add(time.perf_counter() - t0)
                wall, cpu = Series(), Series()
                for line in times.read_text().split("\n"):
                    parts = line.split()
                    if len(parts) == 3:
                        wall.add(float(parts[1]))
                        cpu.add(float(parts[2]))
                res.attribution.append((shape, len(r.body), lat, wall, cpu))
    finally:
        await c.close()


def run_proxy(work: Path, *, sizes_mb: list[float], reps: int, levels: list[int], requests: int,
              sse_reps: int, sse_delay: float = 0.5, attribute_reps: int = 5, log=print) -> ProxyResult:
    h = Harness(work, sse_delay)
    res = ProxyResult([], [], reps=reps, sse_delay=sse_delay, rps_requests=requests)
    try:
        variants = [Running("direct", None, None)]
        variants.append(h.start_proxy("mitmdump (bare)", []))
        variants.append(h.start_proxy("mitmdump (responses streamed)", [STREAM_ADDON]))
        addon = exifguard_addon()
        if addon is None:
            res.notes.append("addons/exifguard_addon.py is missing: the exifguard variant was not run.")
        else:
            try:
                variants.append(h.start_proxy("mitmdump + exifguard", [addon]))
            except RuntimeError as exc:
                res.notes.append(f"mitmdump + exifguard did not start: {exc}")
        res.variants = [v.name for v in variants]
        paths = gen.make_photos(work / "photos", sizes_mb)
        photos = {p.stat().st_size: p.read_bytes() for p in paths}
        res.sizes = [(mb, p.stat().st_size) for mb, p in zip(sizes_mb, paths)]
        small_path = work / "photos" / "small.jpg"
        gen.make_photo(small_path, 150_000)
        small = small_path.read_bytes()
        res.rps_photo_bytes = len(small)
        asyncio.run(_measure(h, variants, res, photos, small, reps=reps, levels=levels, requests=requests,
                             sse_reps=sse_reps, log=log))
        for v in variants:
            if v.proc and v.proc.poll() is not None:
                res.notes.append(f"{v.name} exited during the run (code {v.proc.returncode})")
        if addon is not None and attribute_reps:
            for v in variants:  # free the cores before the attribution pass
                if v.proc and v.proc.poll() is None:
                    v.proc.terminate()
            times = work / "rewrite_times.txt"
            try:
                tv = h.start_proxy("mitmdump + exifguard (timed)", [Path(__file__).with_name("timed_addon.py")],
                                   {"EXIFGUARD_BENCH_TIMES": str(times)})
                mid = sorted(photos.items())[len(photos) // 2][1] if photos else small
                five = next((p.read_bytes() for mb, p in zip(sizes_mb, paths) if abs(mb - 5) < 0.01), mid)
                asyncio.run(_attribute(h, tv, times, res, five, small, attribute_reps))
            except (RuntimeError, OSError) as exc:
                res.notes.append(f"attribution pass failed: {exc}")
    finally:
        h.stop()
    return res


def profile_rewrite(shape: str, photo: bytes, top: int = 18) -> str:
    """cProfile of the addon's per-request work (carrier rewrite + engine), in-process."""
    import cProfile
    import io
    import pstats
    try:
        from exifguard.carriers import CarrierOptions, rewrite_request
        from exifguard.engine.report import ScrubOptions
    except ImportError as exc:
        return f"(carriers not importable: {exc})"
    r = build(shape, photo)
    opts = CarrierOptions(scrub=ScrubOptions())
    url = f"https://{r.host}{r.url}"
    headers = list(r.headers.items()) + [("content-length", str(len(r.body)))]
    pr = cProfile.Profile()
    t0 = time.perf_counter()
    pr.enable()
    for _ in range(3):
        rewrite_request(r.method, url, headers, r.body, opts)
    pr.disable()
    dt = (time.perf_counter() - t0) / 3
    s = io.StringIO()
    pstats.Stats(pr, stream=s).sort_stats("cumulative").print_stats(top)
    return f"mean {dt * 1000:.1f} ms per request (under cProfile)\n" + _trim_profile(s.getvalue())


def _trim_profile(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    keep = []
    started = False
    for ln in lines:
        if ln.lstrip().startswith("ncalls"):
            started = True
        if started:
            keep.append(ln.replace(str(REPO) + "/", "").replace(sys.prefix, "<venv>"))
    return "\n".join(keep)
