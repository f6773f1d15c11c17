"""Helpers for the fault and load tests through the real proxy (tests/proxy/test_faults.py,
tests/proxy/test_load.py, scripts/loadtest).

Builds on `harness.start_proxy` and `sink.Sink` (used as they are) and adds:

* canary images in every upload format, generated here with Pillow / pillow-heif so the
  tests need no corpus: a marker string in every text carrier the format has, GPS in
  EXIF, and, on request, a fault *trigger* (a comment the fault injector looks for);
* the four upload shapes a browser or SDK sends (multipart, raw PUT, base64 JSON,
  data: URL), each able to pull the image back out of what the sink received;
* `ResetSink`: a `Sink` that resets the connection after part of a body when asked;
* reading the mitmdump child's memory (/proc) and counting log lines since a mark.

Why our own generators: the fault tests must prove "no original byte arrived", so every
image carries a marker we can search for in every encoding (`support.canary`), and the
load test needs a thousand different inputs without a corpus on disk.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import os
import random
import re
import socket
import ssl
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from PIL import Image

from support import canary

from .harness import ProxyProc, start_proxy
from .sink import Received, Sink

#: Every marker starts with this, so one search finds any of them in any encoding.
MARK_PREFIX = "EGFLTcanary"
#: Hosts and URLs (all mapped to the local sink by harness.start_proxy).
UPLOAD_URL = "https://claude.ai/api/organizations/o1/conversations/c1/wiggle/upload-file"
PUT_URL = "https://files.oaiusercontent.com/files/{n}/raw?se=2030&sp=w&sig=SECRETSIG"
ANTHROPIC_URL = "https://api.anthropic.com/v1/messages"
OPENAI_URL = "https://api.openai.com/v1/chat/completions"
#: Request header the fault injector reads to fail a hook for this flow only.
FAULT_HEADER = "x-eg-test-fault"
#: Request header the load test uses to match what the sink received to what was sent.
ID_HEADER = "x-eg-load-id"
#: Request header that makes `ResetSink` reset the connection after that many body bytes.
RESET_HEADER = "x-eg-sink-reset-after"

FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "HEIC")
MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif",
        "TIFF": "image/tiff", "HEIC": "image/heic"}
EXT = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "TIFF": "tif", "HEIC": "heic"}


def trigger(fault: str) -> bytes:
    """The bytes the fault injector (fault_addon.py) looks for inside an image or body."""
    return b"EGFAULT[" + fault.encode() + b"]"


# ---- canary images ------------------------------------------------------------------------
def _pixels(size: tuple[int, int], seed: int, mode: str = "RGB") -> Image.Image:
    """Deterministic noisy pixels (noise defeats run-length tricks, so sizes are realistic)."""
    rnd = random.Random(seed)
    w, h = size
    base = Image.linear_gradient("L").resize((w, h)).convert("RGB")
    noise = Image.frombytes("RGB", (w, h), rnd.randbytes(w * h * 3))
    img = Image.blend(base, noise, 0.35)
    return img.convert(mode) if mode != "RGB" else img


def _exif(marker: str) -> Image.Exif:
    ex = Image.Exif()
    ex[0x010F] = "Make " + marker               # Make
    ex[0x0110] = "Model " + marker              # Model
    ex[0x013B] = "Artist " + marker             # Artist
    ex[0x8298] = "Copyright " + marker          # Copyright
    ex[0x0112] = 1                              # Orientation (kept)
    sub = ex.get_ifd(0x8769)
    sub[0xA431] = "Serial" + marker             # BodySerialNumber
    sub[0x9003] = "2024:05:12 14:22:33"         # DateTimeOriginal
    gps = ex.get_ifd(0x8825)
    gps[1], gps[2] = "N", (48.0, 51.0, 29.0)
    gps[3], gps[4] = "E", (2.0, 17.0, 40.0)
    return ex


def _xmp(marker: str) -> bytes:
    return (b'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
            b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
            b'xmlns:dc="http://purl.org/dc/elements/1.1/" dc:creator="' + marker.encode()
            + b'"/></rdf:RDF></x:xmpmeta><?xpacket end="w"?>')


def make_image(fmt: str, marker: str, *, size: tuple[int, int] = (64, 48), seed: int = 0,
               fault: str | None = None) -> bytes:
    """An image of `fmt` carrying `marker` (must start with MARK_PREFIX) in its metadata.

    With `fault`, the image also carries `trigger(fault)` (in its text fields, and in a
    comment where the format has one), which the fault injector recognises in the bytes
    the engine is given.
    """
    assert marker.startswith(MARK_PREFIX)
    if fault is not None:  # also in every text field, so each format's walker sees it
        marker = f"{marker} {trigger(fault).decode()}"
    img = _pixels(size, seed)
    exif = _exif(marker).tobytes()
    extra = b"" if fault is None else b" " + trigger(fault)
    b = io.BytesIO()
    if fmt == "JPEG":
        img.save(b, "JPEG", quality=88, exif=exif, comment=b"comment " + marker.encode() + extra)
        data = b.getvalue()
        # XMP in its own APP1 segment, right after the Exif one
        xmp = b"http://ns.adobe.com/xap/1.0/\x00" + _xmp(marker)
        seg = b"\xff\xe1" + struct.pack(">H", len(xmp) + 2) + xmp
        return data[:2] + seg + data[2:]
    if fmt == "PNG":
        from PIL.PngImagePlugin import PngInfo
        info = PngInfo()
        info.add_text("Comment", "comment " + marker + extra.decode())
        info.add_itxt("XML:com.adobe.xmp", _xmp(marker).decode())
        info.add_text("Author", marker, zip=True)
        img.save(b, "PNG", exif=exif, pnginfo=info)
    elif fmt == "WEBP":
        img.save(b, "WEBP", quality=85, exif=exif, xmp=_xmp(marker))
    elif fmt == "GIF":
        img.convert("P", palette=Image.Palette.ADAPTIVE).save(
            b, "GIF", comment=b"comment " + marker.encode() + extra)
    elif fmt == "TIFF":
        img.save(b, "TIFF", exif=exif)
    elif fmt == "HEIC":
        import pillow_heif
        hf = pillow_heif.from_pillow(img)
        hf.info["exif"] = exif
        hf.info["xmp"] = _xmp(marker)
        hf.save(b, quality=80)
    else:
        raise ValueError(fmt)
    out = b.getvalue()
    assert canary.find(out, marker.encode()), f"{fmt}: the generator must plant the marker"
    return out


def truncated_jpeg(marker: str, seed: int = 0) -> bytes:
    """A JPEG that ends inside its Exif segment: no safe rewrite exists, it must be refused."""
    data = make_image("JPEG", marker, seed=seed)
    i = data.find(b"Exif\x00\x00")
    return data[:i + 120]


def decode(data: bytes) -> tuple[tuple[int, int], str, bytes]:
    """Size, mode and raw pixels as Pillow decodes them (the first frame, no orientation)."""
    if data[4:12] in (b"ftypheic", b"ftypmif1", b"ftypheix"):
        import pillow_heif
        pillow_heif.register_heif_opener()
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        return im.size, im.mode, im.tobytes()


def private_exif(data: bytes) -> list[str]:
    """EXIF entries a cleaned image must not have, by Pillow's reading (not exifguard's)."""
    if data[4:12] in (b"ftypheic", b"ftypmif1", b"ftypheix"):
        import pillow_heif
        pillow_heif.register_heif_opener()
    with Image.open(io.BytesIO(data)) as im:
        ex = im.getexif()
    bad = [f"0x{k:04x}" for k in ex if k not in (0x0112, 0x8769, 0x8825, 0x0128, 0x011A, 0x011B, 0x0213,
                                                 0x0100, 0x0101, 0x0102, 0x0103, 0x0106, 0x0111, 0x0115,
                                                 0x0116, 0x0117, 0x011C, 0x0140, 0x0152, 0x0153, 0x0142,
                                                 0x0143, 0x0144, 0x0145, 0x0147, 0x0148)]
    if ex.get_ifd(0x8825):
        bad.append("GPS")
    if any(k in ex.get_ifd(0x8769) for k in (0xA431, 0x9003, 0xA435, 0xA420)):
        bad.append("ExifIFD private tag")
    return bad


def leaked(data: bytes, marker: str = MARK_PREFIX) -> list[str]:
    """Where a marker survives in `data` (raw, UTF-16, hex, base64, inside zlib)."""
    return canary.find(data, marker.encode())


# ---- upload shapes -----------------------------------------------------------------------
@dataclass
class Upload:
    """One request, and how to find its image again in what the sink received."""
    shape: str
    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    image: bytes
    fmt: str
    extract: Callable[[bytes], bytes] = field(repr=False)


def _span_extract(sent: bytes, img: bytes) -> Callable[[bytes], bytes]:
    i = sent.find(img)
    assert i >= 0

    def get(got: bytes) -> bytes:
        assert len(got) == len(sent), f"length changed {len(sent)} -> {len(got)}"
        assert got[:i] == sent[:i] and got[i + len(img):] == sent[i + len(img):], \
            "bytes outside the image changed"
        return got[i:i + len(img)]
    return get


def multipart_upload(img: bytes, fmt: str, n: int = 0, text: str = "") -> Upload:
    boundary = f"----egFaultBoundary{n:06d}"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"orgUuid\"\r\n\r\no1{text}\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"IMG_20240512_142233.{EXT[fmt]}\"\r\nContent-Type: {MIME[fmt]}\r\n\r\n"
            ).encode() + img + f"\r\n--{boundary}--\r\n".encode()
    return Upload("multipart", "POST", UPLOAD_URL,
                  {"content-type": f"multipart/form-data; boundary={boundary}", "origin": "https://claude.ai",
                   ID_HEADER: str(n)},
                  body, img, fmt, _span_extract(body, img))


def raw_put(img: bytes, fmt: str, n: int = 0, text: str = "") -> Upload:
    return Upload("raw PUT", "PUT", PUT_URL.format(n=f"file-{n}"),
                  {"content-type": MIME[fmt], "x-ms-blob-type": "BlockBlob", ID_HEADER: str(n)}, img, img, fmt,
                  _span_extract(img, img))


def base64_json(img: bytes, fmt: str, n: int = 0, text: str = "") -> Upload:
    data = base64.b64encode(img).decode()
    doc = {"model": "claude-test", "max_tokens": 10, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": MIME[fmt], "data": data}},
        {"type": "text", "text": f"describe {n}{text}"}]}]}
    body = json.dumps(doc).encode()

    def get(got: bytes) -> bytes:
        assert len(got) == len(body), f"length changed {len(body)} -> {len(got)}"
        d = json.loads(got)
        s = d["messages"][0]["content"][0]["source"]["data"]
        assert len(s) == len(data)
        d["messages"][0]["content"][0]["source"]["data"] = data
        assert d == doc, "JSON outside the image changed"
        return base64.b64decode(s)
    return Upload("base64 JSON", "POST", ANTHROPIC_URL,
                  {"content-type": "application/json", "x-api-key": "sk-ant-test",
                   "anthropic-version": "2023-06-01", ID_HEADER: str(n)}, body, img, fmt, get)


def data_url_json(img: bytes, fmt: str, n: int = 0, text: str = "") -> Upload:
    url = f"data:{MIME[fmt]};base64," + base64.b64encode(img).decode()
    doc = {"model": "gpt-4o", "messages": [{"role": "user", "content": [
        {"type": "text", "text": f"where was this taken? {n}{text}"},
        {"type": "image_url", "image_url": {"url": url}}]}]}
    body = json.dumps(doc).encode()

    def get(got: bytes) -> bytes:
        assert len(got) == len(body), f"length changed {len(body)} -> {len(got)}"
        d = json.loads(got)
        s = d["messages"][0]["content"][1]["image_url"]["url"]
        assert len(s) == len(url) and s.startswith(f"data:{MIME[fmt]};base64,")
        d["messages"][0]["content"][1]["image_url"]["url"] = url
        assert d == doc, "JSON outside the image changed"
        return base64.b64decode(s.split(",", 1)[1])
    return Upload("data URL", "POST", OPENAI_URL,
                  {"content-type": "application/json", "authorization": "Bearer sk-test", ID_HEADER: str(n)},
                  body, img, fmt, get)


def gzipped(up: Upload) -> Upload:
    """The same request sent with Content-Encoding: gzip (the sink sees it compressed)."""
    import gzip
    body = gzip.compress(up.body, mtime=0)
    return Upload(up.shape + " gzip", up.method, up.url, {**up.headers, "content-encoding": "gzip"}, body,
                  up.image, up.fmt, lambda got: up.extract(gzip.decompress(got)))


def plain(body: bytes, headers: dict[str, str]) -> bytes:
    """A received body with its gzip Content-Encoding undone (for canary searches)."""
    if headers.get("content-encoding", "").lower() == "gzip":
        import gzip
        try:
            return gzip.decompress(body)
        except (OSError, EOFError):
            return body
    return body


def arrivals(sink: Sink, up: Upload) -> list[Received]:
    """What the sink received for this upload (matched by ID_HEADER)."""
    return [r for r in sink.received if r.headers.get(ID_HEADER) == up.headers[ID_HEADER]]


#: shape name -> builder(image, format, n, text): `text` goes into a plain-text field (not for raw PUT)
SHAPES: dict[str, Callable[..., Upload]] = {
    "multipart": multipart_upload, "raw PUT": raw_put, "base64 JSON": base64_json, "data URL": data_url_json,
}


# ---- the sink that resets ----------------------------------------------------------------
class ResetSink(Sink):
    """A `Sink` that, for a request with RESET_HEADER: N, reads N body bytes and resets.

    What it read is kept in `partial` (so a test can prove no original byte went out
    even on the half-sent attempt); the client side then sees a connection reset.
    """

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.partial: list[Received] = []
        base = self.server.RequestHandlerClass
        sink = self

        def _handle(handler) -> None:  # type: ignore[no-untyped-def]
            n = handler.headers.get(RESET_HEADER)
            if n is None:
                return base._handle(handler)
            part = handler.rfile.read(int(n))
            sink.partial.append(Received(handler.command, handler.path,
                                         {k.lower(): v for k, v in handler.headers.items()}, part))
            raw = handler.connection
            try:
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                socket.socket.close(raw)  # no TLS close_notify: an abrupt RST mid-body
            except OSError:
                pass
            handler.close_connection = True

        def finish(handler) -> None:  # type: ignore[no-untyped-def]
            try:
                base.finish(handler)
            except (OSError, ValueError):
                pass

        self.server.RequestHandlerClass = type("ResetHandler", (base,), {
            "do_POST": _handle, "do_PUT": _handle, "do_PATCH": _handle, "finish": finish})

    def clear(self) -> None:
        super().clear()
        self.partial.clear()


# ---- a client ------------------------------------------------------------------------------
@dataclass
class Reply:
    status: int | None          # None: no HTTP answer (connection killed or reset)
    body: bytes = b""
    error: str = ""
    seconds: float = 0.0


class Client:
    """HTTPS through the proxy with CONNECT, one kept-alive connection per host.

    http.client rather than an SDK: it can bind a source address (127.0.0.2 for the
    client_connected fault) and adds nothing of its own to the request.
    """

    def __init__(self, proxy: ProxyProc, *, source: str = "127.0.0.1", timeout: float = 60.0) -> None:
        self.proxy = proxy
        self.source = source
        self.timeout = timeout
        self.ctx = ssl.create_default_context(cafile=str(proxy.ca))
        self.conns: dict[str, http.client.HTTPSConnection] = {}

    def _conn(self, host: str) -> http.client.HTTPSConnection:
        c = self.conns.get(host)
        if c is None:
            c = http.client.HTTPSConnection("127.0.0.1", self.proxy.port, context=self.ctx, timeout=self.timeout,
                                            source_address=(self.source, 0))
            c.set_tunnel(host, 443)
            self.conns[host] = c
        return c

    def send(self, up: Upload, headers: dict[str, str] | None = None) -> Reply:
        u = urlsplit(up.url)
        path = u.path + (f"?{u.query}" if u.query else "")
        hdrs = {**up.headers, **(headers or {})}
        host = u.hostname or ""
        t = time.perf_counter()
        c = self._conn(host)
        try:
            c.request(up.method, path, body=up.body, headers=hdrs)
            r = c.getresponse()
            body = r.read()
            if r.will_close:
                self.close(host)
            return Reply(r.status, body, "", time.perf_counter() - t)
        except (OSError, http.client.HTTPException) as exc:  # no retry: every attempt counts
            self.close(host)
            return Reply(None, b"", f"{type(exc).__name__}: {exc}", time.perf_counter() - t)

    def close(self, host: str | None = None) -> None:
        for h in ([host] if host else list(self.conns)):
            c = self.conns.pop(h, None)
            if c is not None:
                c.close()


def send(proxy: ProxyProc, up: Upload, headers: dict[str, str] | None = None, *,
         source: str = "127.0.0.1") -> Reply:
    """One request on a fresh connection."""
    c = Client(proxy, source=source)
    try:
        return c.send(up, headers)
    finally:
        c.close()


# ---- the proxy process -------------------------------------------------------------------
def mitmdump_pid(proxy: ProxyProc, timeout: float = 10.0) -> int:
    """The mitmdump child of `exifguard run` (found by parent pid in /proc)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for d in Path("/proc").iterdir():
            if not d.name.isdigit():
                continue
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == proxy.proc.pid:
                return int(d.name)
        time.sleep(0.1)
    raise RuntimeError("no mitmdump child found")


def status_kb(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM (and the rest of /proc/<pid>/status's kB fields)."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        v = v.strip()
        if v.endswith(" kB"):
            out[k] = int(v[:-3])
    return out


FAULT_ADDON = Path(__file__).with_name("fault_addon.py")


def start_fault_proxy(tmp: Path, sink: Sink, *run_args: str, audit: Path | None = None,
                      mitmdump_args: tuple[str, ...] = (), **env: str) -> tuple[ProxyProc, Path]:
    """`exifguard run` (harness.start_proxy) with fault_addon.py loaded after exifguard's own
    script; returns the proxy and the folder where fired.log records each fault that fired.
    `env` sets the injector's EGFAULT_* variables (see fault_addon.py)."""
    fault_dir = tmp / "faults"
    fault_dir.mkdir(exist_ok=True)
    audit = audit or tmp / "audit.jsonl"
    values = {"EGFAULT_DIR": str(fault_dir), "EGFAULT_AUDIT_PATH": str(audit), **env}
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)  # start_proxy hands its environment to exifguard run
    try:
        args = run_args if "--audit-log" in run_args else (*run_args, "--audit-log", str(audit))
        p = start_proxy(tmp, sink.port, sink.cert, *args, extra=[*mitmdump_args, "-s", str(FAULT_ADDON)])
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    p.audit = audit
    if not p.wait_for("FAULT-INJECTOR ready", 20):
        p.stop()
        raise RuntimeError("the fault injector did not load:\n" + p.output())
    settle(p, quiet=0.3)  # start-up lines are not a fault's
    return p, fault_dir


def lines_since(proxy: ProxyProc, mark: int) -> list[str]:
    return list(proxy.lines[mark:])


def wait_lines(proxy: ProxyProc, mark: int, pattern: str, n: int = 1, timeout: float = 10.0) -> list[str]:
    """Lines since `mark` once at least `n` match `pattern` (or the timeout passed)."""
    rx = re.compile(pattern)
    end = time.monotonic() + timeout
    while True:
        got = lines_since(proxy, mark)
        if sum(1 for line in got if rx.search(line)) >= n or time.monotonic() > end:
            return got
        time.sleep(0.05)


def count(lines: list[str], pattern: str) -> int:
    rx = re.compile(pattern)
    return sum(1 for line in lines if rx.search(line))


def settle(proxy: ProxyProc, quiet: float = 0.5, timeout: float = 10.0) -> None:
    """Wait until the proxy printed nothing new for `quiet` seconds (hang-protected)."""
    end = time.monotonic() + timeout
    n = len(proxy.lines)
    since = time.monotonic()
    while time.monotonic() < end:
        time.sleep(0.1)
        if len(proxy.lines) != n:
            n, since = len(proxy.lines), time.monotonic()
        elif time.monotonic() - since >= quiet:
            return


def env_with(**kw: str) -> dict[str, str]:
    return {**os.environ, **kw}


# ---- load: many uploads of mixed formats and shapes ---------------------------------------------
@dataclass
class LoadItem:
    up: Upload
    refuse: bool                 # designed to be refused (blocked), never to arrive
    key: tuple[str, int]         # which pool image (format, variant) it carries


@dataclass
class LoadResult:
    uploads: int
    concurrency: int
    wall: float
    cleaned: int = 0
    refused: int = 0
    failures: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    by_format: dict[str, int] = field(default_factory=dict)
    by_shape: dict[str, int] = field(default_factory=dict)
    rss_cold_kb: int = 0          # VmRSS before the warm-up (fresh mitmdump)
    rss_before_kb: int = 0        # VmRSS after the warm-up, right before the run
    rss_peak_kb: int = 0          # highest VmRSS sampled during the run
    hwm_kb: int = 0               # VmHWM at the end (peak since mitmdump started)
    rss_after_kb: int = 0         # VmRSS a few seconds after the run
    oracle_checked: int = 0
    oracle_leaks: list[str] = field(default_factory=list)
    image_lines: int = 0          # exifguard's per-image log lines during the run
    private_log_lines: int = 0    # log lines holding a canary marker (must be 0)

    @property
    def lost(self) -> int:
        return self.uploads - self.cleaned - self.refused

    def percentile(self, q: float) -> float:
        xs = sorted(self.latencies)
        if not xs:
            return float("nan")
        k = min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))
        return xs[k]

    def summary(self) -> str:
        mb = 1024
        return "\n".join([
            f"uploads {self.uploads} at concurrency {self.concurrency} in {self.wall:.1f} s "
            f"({self.uploads / self.wall:.1f}/s)",
            f"  arrived cleaned {self.cleaned}, refused as designed {self.refused}, lost {self.lost}, "
            f"failures {len(self.failures)}",
            f"  formats {dict(sorted(self.by_format.items()))}",
            f"  shapes  {dict(sorted(self.by_shape.items()))}",
            f"  latency p50 {self.percentile(50) * 1000:.0f} ms, p90 {self.percentile(90) * 1000:.0f} ms, "
            f"p99 {self.percentile(99) * 1000:.0f} ms, max {max(self.latencies, default=0) * 1000:.0f} ms",
            f"  mitmdump RSS fresh {self.rss_cold_kb / mb:.0f} MB, after warm-up {self.rss_before_kb / mb:.0f} MB,"
            f" peak sampled {self.rss_peak_kb / mb:.0f} MB, VmHWM {self.hwm_kb / mb:.0f} MB,"
            f" steady after {self.rss_after_kb / mb:.0f} MB"
            f" (after - warm {(self.rss_after_kb - self.rss_before_kb) / mb:+.0f} MB,"
            f" after - fresh {(self.rss_after_kb - self.rss_cold_kb) / mb:+.0f} MB)",
            f"  ExifTool oracle: {self.oracle_checked} cleaned images read, "
            f"{len(self.oracle_leaks)} with a non-allowlisted tag",
            f"  log: {self.image_lines} per-image exifguard lines for {self.uploads} uploads, "
            f"{self.private_log_lines} holding a private value",
            *(f"  FAIL {f}" for f in self.failures[:20]),
        ])


#: (width, height) size classes and how often each is drawn
SIZES = [((64, 48), 40), ((200, 150), 30), ((480, 360), 20), ((1024, 768), 8), ((2048, 1536), 2)]


#: the faults `build_load(fault_every=...)` mixes in (fault_addon.py must be loaded)
LOAD_FAULTS = ("engine-runtime", "engine-memory", "verify-reject", "carrier-internal", "rewrite-raise",
               "policy-raise")


def build_load(n: int, *, seed: int = 1, variants: int = 4, max_side: int = 4096,
               refuse_every: int = 33, fault_every: int = 0) -> list[LoadItem]:
    """`n` uploads cycling formats and shapes over a pool of canary images.

    Every `refuse_every`-th upload is a truncated JPEG that must be blocked; with
    `fault_every`, every such upload is a JPEG that triggers one of LOAD_FAULTS in the
    fault injector (also to be blocked, and not to disturb the uploads around it).  Images are
    drawn from a pool (format x size class x variant) so generation stays quick; each
    upload still has its own id and its own body.
    """
    rnd = random.Random(seed)
    sizes = [s for s, _ in SIZES if max(s) <= max_side]
    weights = [w for s, w in SIZES if max(s) <= max_side]
    pool: dict[tuple[str, int], bytes] = {}
    shapes = list(SHAPES)
    items = []
    for i in range(n):
        shape = shapes[i % len(shapes)]
        if fault_every and i % fault_every == fault_every - 1:
            fault = LOAD_FAULTS[(i // fault_every) % len(LOAD_FAULTS)]
            shape = shapes[(i // fault_every) % len(shapes)]  # every shape, whatever fault_every is
            img = make_image("JPEG", f"{MARK_PREFIX}-load-fault", seed=i, fault=fault)
            up = SHAPES[shape](img, "JPEG", i, " " + trigger(fault).decode())
            items.append(LoadItem(up, True, ("JPEG", -2)))
            continue
        if refuse_every and i % refuse_every == refuse_every - 1:
            img = truncated_jpeg(f"{MARK_PREFIX}-load-refuse", seed=i % 5)
            items.append(LoadItem(SHAPES[shape](img, "JPEG", i), True, ("JPEG", -1)))
            continue
        fmt = FORMATS[(i // len(shapes) + i) % len(FORMATS)]
        size = rnd.choices(sizes, weights)[0]
        v = rnd.randrange(variants)
        key = (fmt, sizes.index(size) * 100 + v)
        if key not in pool:
            pool[key] = make_image(fmt, f"{MARK_PREFIX}-load-{fmt}-{key[1]}", size=size, seed=key[1] * 7 + 1)
        items.append(LoadItem(SHAPES[shape](pool[key], fmt, i), False, key))
    return items


def _sample_rss(pid: int, stop: "threading.Event", out: list[int]) -> None:
    while not stop.is_set():
        try:
            out.append(status_kb(pid).get("VmRSS", 0))
        except OSError:
            return
        stop.wait(0.2)


def warm_up(proxy: ProxyProc, sink: Sink) -> None:
    """One small upload of every format in every shape, one after the other: loads every
    walker and verifier and makes each host's certificate, so "before" is a warm proxy."""
    c = Client(proxy)
    try:
        for k, fmt in enumerate(FORMATS):
            img = make_image(fmt, f"{MARK_PREFIX}-warm-{fmt}", seed=9000 + k)
            for j, shape in enumerate(SHAPES):
                c.send(SHAPES[shape](img, fmt, 90000 + k * 10 + j))
    finally:
        c.close()
    sink.clear()


def run_load(proxy: ProxyProc, sink: Sink, items: list[LoadItem], concurrency: int, *,
             settle_seconds: float = 3.0, oracle_sample: int = 60, warm: bool = True,
             log: Callable[[str], None] = lambda s: None) -> LoadResult:
    """Send every item through the proxy with `concurrency` client threads, then judge what
    the sink received (in this process: Pillow decodes, canary search, ExifTool on a sample)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    pid = mitmdump_pid(proxy)
    res = LoadResult(len(items), concurrency, 0.0)
    res.rss_cold_kb = status_kb(pid).get("VmRSS", 0)
    if warm:
        warm_up(proxy, sink)
        time.sleep(settle_seconds)
    sink.clear()
    res.rss_before_kb = status_kb(pid).get("VmRSS", 0)
    mark = len(proxy.lines)
    local = threading.local()
    clients: list[Client] = []
    lock = threading.Lock()

    def one(item: LoadItem) -> Reply:
        c = getattr(local, "client", None)
        if c is None:
            c = local.client = Client(proxy, timeout=300)
            with lock:
                clients.append(c)
        return c.send(item.up)

    stop = threading.Event()
    samples: list[int] = []
    sampler = threading.Thread(target=_sample_rss, args=(pid, stop, samples), daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as ex:
        replies = list(ex.map(one, items))
    res.wall = time.perf_counter() - t0
    for c in clients:
        c.close()
    time.sleep(settle_seconds)
    stop.set()
    sampler.join()
    st = status_kb(pid)
    res.rss_after_kb, res.hwm_kb = st.get("VmRSS", 0), st.get("VmHWM", 0)
    res.rss_peak_kb = max(samples + [res.rss_after_kb])
    log(f"sent {len(items)} uploads in {res.wall:.1f} s; judging what arrived")

    by_id: dict[str, list[Received]] = {}
    for r in list(sink.received):
        by_id.setdefault(r.headers.get(ID_HEADER, "?"), []).append(r)
    expected: dict[tuple[str, int], tuple] = {}
    sample: list[tuple[str, bytes]] = []
    sampled: set[tuple[str, int]] = set()
    for i, (item, reply) in enumerate(zip(items, replies)):
        up = item.up
        res.latencies.append(reply.seconds)
        got = by_id.get(up.headers[ID_HEADER], [])
        what = f"#{i} {up.fmt} {up.shape}"
        if item.refuse:
            if reply.status is not None and reply.status >= 400 and not got:
                res.refused += 1
            else:
                res.failures.append(f"{what}: designed to be refused, got {reply.status} {reply.error} "
                                    f"and {len(got)} arrival(s)")
            continue
        if reply.status is None or not 200 <= reply.status < 300:
            res.failures.append(f"{what}: answered {reply.status} {reply.error} {reply.body[:160]!r}")
            continue
        if len(got) != 1:
            res.failures.append(f"{what}: {len(got)} arrivals")
            continue
        try:
            img = up.extract(got[0].body)
            if leaked(got[0].body):
                raise AssertionError(f"canary at the sink: {leaked(got[0].body)[:3]}")
            if img == up.image:
                raise AssertionError("image unchanged")
            if item.key not in expected:
                expected[item.key] = decode(up.image)
            if decode(img) != expected[item.key]:
                raise AssertionError("pixels differ")
            bad = private_exif(img)
            if bad:
                raise AssertionError(f"private EXIF by Pillow's reading: {bad}")
        except Exception as exc:  # noqa: BLE001 - every deviation is reported, not just the first
            res.failures.append(f"{what}: {type(exc).__name__}: {exc}")
            continue
        res.cleaned += 1
        res.by_format[up.fmt] = res.by_format.get(up.fmt, 0) + 1
        res.by_shape[up.shape] = res.by_shape.get(up.shape, 0) + 1
        if item.key not in sampled and len(sample) < oracle_sample:
            sampled.add(item.key)
            sample.append((up.fmt, img))
    strays = [k for k in by_id if k not in {it.up.headers[ID_HEADER] for it in items}]
    if strays:
        res.failures.append(f"the sink received {len(strays)} request(s) nobody sent")
    res.oracle_checked, res.oracle_leaks = _oracle(sample)
    settle(proxy, quiet=0.5)
    lines = lines_since(proxy, mark)
    res.image_lines = count(lines, r"exifguard: .*image \(")
    res.private_log_lines = sum(1 for line in lines if MARK_PREFIX in line)
    return res


def _oracle(sample: list[tuple[str, bytes]]) -> tuple[int, list[str]]:
    """ExifTool over one cleaned image per pool entry: keys outside the format's allowlist."""
    import tempfile

    from support import oracle
    if not sample or not oracle.exiftool_available():
        return 0, []
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, (fmt, data) in enumerate(sample):
            p = Path(tmp) / f"img{i}.{EXT[fmt]}"
            p.write_bytes(data)
            paths.append((fmt, p))
        tags = oracle.exiftool_files([p for _, p in paths])
        leaks = []
        for fmt, p in paths:
            bad = oracle.leaks(fmt, tags.get(str(p), {}))
            if bad:
                leaks.append(f"{p.name} ({fmt}): {bad[:6]}")
    return len(paths), leaks
