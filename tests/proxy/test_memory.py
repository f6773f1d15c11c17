"""Bounded memory through the real proxy (issue 11, point 3): `exifguard run` -> mitmdump.

Reproductions: 3.2 MB of gzip inflating to 3 GiB drove mitmdump to 6.8 GB peak RSS;
64 concurrent 5 MB uploads peaked at 863 MB and 715 MB stayed resident.  Here (sizes
reduced for CI, inspection limit lowered with `--set exifguard_inspect_limit=`):

* a gzip bomb (1 GiB of zeros) is answered 413 and mitmdump's peak RSS (VmHWM of the
  mitmdump child of the `exifguard run` process) rises by less than the limit + a margin;
* a burst of 32 concurrent 5 MB uploads all arrive clean with a bounded peak, and
  mitmdump's RSS returns to within 100 MB of what it was before the burst.

`scripts/memcheck` runs the full-size versions and prints the numbers; the helpers here
are shared with it.  Waits are bounded polls (hang protection), never timing assertions.
"""

from __future__ import annotations

import concurrent.futures
import io
import os
import time
import zlib
from pathlib import Path

import pytest

from .harness import start_proxy
from .sink import Sink

pytestmark = [pytest.mark.e2e]

MiB = 1024 * 1024
PUT_URL = "https://files.oaiusercontent.com/files/memcheck/raw?sig=SECRET"
UPLOAD = "https://claude.ai/api/organizations/o1/conversations/c1/wiggle/upload-file"
CANARY = b"CANARY-MAKE-7Q"


# ---- helpers (also used by scripts/memcheck) -------------------------------------------------

def child_pids(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may hold spaces/parentheses
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            out.append(int(d.name))
    return out


def mitmdump_pid(run_pid: int, timeout: float = 30.0) -> int:
    """The mitmdump process started by `exifguard run` (its child)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for c in child_pids(run_pid):
            try:
                cmd = Path(f"/proc/{c}/cmdline").read_bytes()
            except OSError:
                continue
            if b"mitmdump" in cmd or b"mitmproxy" in cmd:
                return c
        time.sleep(0.05)
    raise RuntimeError(f"no mitmdump child of pid {run_pid}")


def mem(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM (peak RSS) of a process, in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM"):
            out[k] = int(v.split()[0]) * 1024
    return out


def gzip_bomb(inflated: int) -> bytes:
    """`inflated` zero bytes as gzip, built streamed (1 GiB -> about 1 MB)."""
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(MiB)
    parts = [c.compress(chunk) for _ in range(inflated // MiB)]
    parts.append(c.flush())
    return b"".join(parts)


def dirty_jpeg() -> bytes:
    """A small JPEG whose Exif names a canary camera make (generated, not a corpus file)."""
    import piexif
    from PIL import Image
    exif = piexif.dump({"0th": {piexif.ImageIFD.Make: CANARY}, "Exif": {}, "GPS": {
        piexif.GPSIFD.GPSLatitudeRef: b"N", piexif.GPSIFD.GPSLatitude: ((48, 1), (51, 1), (0, 1))}})
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (120, 80, 40)).save(buf, "JPEG", quality=90, exif=exif)
    return buf.getvalue()


def upload_body(size: int, img: bytes, boundary: str = "egMemBoundary") -> tuple[bytes, str]:
    """A multipart upload of about `size` bytes: a text part as filler, then the photo."""
    words = b"lorem ipsum dolor sit amet, consectetur adipiscing elit; "
    filler = (words * (size // len(words) + 1))[:max(0, size - len(img) - 400)]
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"note\"\r\n"
            f"Content-Type: text/plain\r\n\r\n").encode() + filler + \
           (f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"photo.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + img + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def client(proxy, timeout: float = 300.0):
    import httpx
    return httpx.Client(proxy=proxy.url, verify=str(proxy.ca), timeout=timeout)


def settle(pid: int, target: int, timeout: float = 20.0) -> int:
    """Wait (bounded) until RSS is at or below `target`; returns the last RSS seen."""
    end = time.monotonic() + timeout
    rss = mem(pid)["VmRSS"]
    while rss > target and time.monotonic() < end:
        time.sleep(0.25)
        rss = mem(pid)["VmRSS"]
    return rss


def burst(proxy, n: int, size: int, img: bytes) -> list[int]:
    """n concurrent uploads of `size` bytes; returns their status codes."""
    body, ctype = upload_body(size, img)

    def one(_: int) -> int:
        with client(proxy) as c:
            return c.post(UPLOAD, content=body, headers={"content-type": ctype}).status_code
    with concurrent.futures.ThreadPoolExecutor(n) as ex:
        return list(ex.map(one, range(n)))


# ---- tests ---------------------------------------------------------------------------------------

LIMIT = 32 * MiB


@pytest.fixture(scope="module")
def sink(tmp_path_factory):
    s = Sink(tmp_path_factory.mktemp("memsink"))
    yield s
    s.close()


@pytest.fixture(scope="module")
def proxy(tmp_path_factory, sink):
    pytest.importorskip("httpx")
    p = start_proxy(tmp_path_factory.mktemp("mem"), sink.port, sink.cert,
                    extra=["--set", f"exifguard_inspect_limit={LIMIT}"])
    p.mitm = mitmdump_pid(p.proc.pid)  # type: ignore[attr-defined]
    yield p
    assert p.stop() == 0, p.output()


def test_gzip_bomb_is_refused_and_peak_memory_stays_bounded(proxy, sink):
    pid = proxy.mitm
    img = dirty_jpeg()
    with client(proxy) as c:  # warm up: the first TLS interception and imports
        assert c.put(PUT_URL, content=img, headers={"content-type": "image/jpeg"}).status_code == 201
    bomb = gzip_bomb(1024 * MiB)
    sink.clear()
    before = mem(pid)
    with client(proxy) as c:
        r = c.put(PUT_URL, content=bomb, headers={"content-type": "application/octet-stream",
                                                  "content-encoding": "gzip"})
    after = mem(pid)
    assert r.status_code == 413, r.text
    assert f"inflates to more than {LIMIT} bytes" in r.text
    assert sink.received == []
    rise = after["VmHWM"] - before["VmRSS"]
    # without the cap this inflates 1 GiB; with it: at most the limit, the raw body and a margin
    assert rise < LIMIT + 128 * MiB, f"peak RSS rose by {rise / MiB:.0f} MiB"
    assert proxy.wait_for("inflates to more than")


def test_burst_of_concurrent_uploads_is_clean_and_bounded(proxy, sink):
    """32 concurrent 5 MB uploads: all arrive clean; inspection memory is bounded by the
    worker pool (the old addon inspected all at once: 863 MB peak for 64)."""
    pid = proxy.mitm
    img = dirty_jpeg()
    assert burst(proxy, 2, 5 * MiB, img) == [201, 201]  # warm up at this size
    sink.clear()
    base = settle(pid, 0, timeout=2.0)
    codes = burst(proxy, 32, 5 * MiB, img)
    assert codes == [201] * 32, codes
    assert len(sink.received) == 32
    assert not any(CANARY in r.body for r in sink.received), "an upload arrived with its metadata"
    peak = mem(pid)["VmHWM"]
    # mitmproxy itself holds each buffered body plus its TLS copies; exifguard adds at most
    # `workers` inspections' copies on top (not one per upload)
    assert peak - base < 32 * 5 * MiB * 3, f"peak {peak / MiB:.0f} MiB over a base of {base / MiB:.0f} MiB"
    sink.clear()


def test_memory_returns_after_a_burst_of_concurrent_uploads(proxy, sink):
    """Finished flows sit in reference cycles with their bodies and TLS buffers until a
    full collection; exifguard collects and trims once a burst of large uploads is over."""
    pid = proxy.mitm
    img = dirty_jpeg()
    assert burst(proxy, 2, 5 * MiB, img) == [201, 201]
    sink.clear()
    base = settle(pid, 0, timeout=2.0)
    assert burst(proxy, 32, 5 * MiB, img) == [201] * 32
    sink.clear()
    peak = mem(pid)["VmHWM"]
    rss = settle(pid, base + 100 * MiB)
    assert rss - base < 100 * MiB, (f"RSS {rss / MiB:.0f} MiB is {(rss - base) / MiB:.0f} MiB over the "
                                    f"{base / MiB:.0f} MiB before the burst (peak {peak / MiB:.0f} MiB)")


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(pytest.main([os.path.abspath(__file__), "-q"]))
