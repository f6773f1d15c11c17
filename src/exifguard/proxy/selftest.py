"""`exifguard selftest`: prove the running proxy cleans a photo, end to end.

1. Make a small JPEG full of canary metadata (GPS, camera make/model, serial number,
   timestamps, a description holding a random marker).
2. Start a plain-HTTP sink on 127.0.0.1 (a random port) that records what it gets.
3. Upload the photo as multipart to https://claude.ai/... *through the running proxy*,
   trusting only exifguard's CA.  The request carries the run's secret selftest token,
   so the addon (after cleaning it, like any upload) delivers it to the local sink
   instead of the real claude.ai.  Nothing leaves this computer.
4. Compare what was sent with what arrived: same length, marker gone, EXIF tags gone.

This checks the CA, the TLS interception, the host list, the carrier layer and the
engine together, the way a browser upload would go through them.
"""

from __future__ import annotations

import http.server
import io
import secrets
import ssl
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

SELFTEST_HOST = "claude.ai"
SELFTEST_PATH = "/api/organizations/exifguard-selftest/upload-file"


@dataclass
class SelftestResult:
    ok: bool
    status: int | None
    sent_bytes: int
    received_bytes: int | None
    removed: list[str] = field(default_factory=list)
    remaining: list[str] = field(default_factory=list)
    marker_found: bool = False
    message: str = ""


def canary_jpeg(marker: str) -> bytes:
    """A 64x48 JPEG whose EXIF holds GPS, device, serial, time and the marker."""
    import piexif
    from PIL import Image

    exif = {
        "0th": {piexif.ImageIFD.Make: b"ExifguardCam", piexif.ImageIFD.Model: b"Selftest 1",
                piexif.ImageIFD.ImageDescription: marker.encode(),
                piexif.ImageIFD.DateTime: b"2024:01:02 03:04:05",
                piexif.ImageIFD.Software: b"exifguard selftest"},
        "Exif": {piexif.ExifIFD.DateTimeOriginal: b"2024:01:02 03:04:05",
                 piexif.ExifIFD.BodySerialNumber: b"SN-" + marker[-8:].encode(),
                 piexif.ExifIFD.UserComment: b"ASCII\x00\x00\x00" + marker.encode()},
        "GPS": {piexif.GPSIFD.GPSLatitudeRef: b"N", piexif.GPSIFD.GPSLatitude: ((48, 1), (51, 1), (2964, 100)),
                piexif.GPSIFD.GPSLongitudeRef: b"E", piexif.GPSIFD.GPSLongitude: ((2, 1), (17, 1), (4020, 100))},
    }
    img = Image.new("RGB", (64, 48), (200, 120, 40))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85, exif=piexif.dump(exif))
    return buf.getvalue()


#: piexif's directory names -> the engine's (exifguard.engine.exif.TAG_NAMES)
_IFD_NAMES = {"0th": "IFD0", "1st": "IFD1", "Exif": "ExifIFD", "GPS": "GPS", "Interop": "InteropIFD"}


def exif_tag_names(jpeg: bytes) -> list[str]:
    """The EXIF tags in a JPEG, named as the engine, the proxy's log line and the audit
    log name them (ExifTool's names: `GPSInfo`, `ExifOffset`).

    The tags are *read* with piexif, a parser independent of the engine's, so the
    selftest still checks the engine's output from outside; only the names are the
    engine's.  (piexif's own names, `GPSTag` and `ExifTag`, made the selftest and the
    audit log call the same tag two different things.)
    """
    import piexif

    from ..engine.exif import tag_name
    try:
        d = piexif.load(jpeg)
    except Exception:  # noqa: BLE001 - no/invalid EXIF means no tags
        return []
    names = []
    for ifd, tags in d.items():
        if ifd == "thumbnail" or not isinstance(tags, dict):
            continue
        for t in tags:
            names.append(tag_name(_IFD_NAMES.get(ifd, ifd), t))
    return list(dict.fromkeys(names))


class _Sink(http.server.BaseHTTPRequestHandler):
    received: list[bytes]

    def do_POST(self) -> None:  # noqa: N802
        n = int(self.headers.get("Content-Length", "0"))
        self.received.append(self.rfile.read(n))
        body = b'{"ok": true}'
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def run_selftest(proxy: str, ca_cert: Path, token: str, timeout: float = 30.0) -> SelftestResult:
    marker = "EXIFGUARD-CANARY-" + secrets.token_hex(8)
    jpeg = canary_jpeg(marker)
    before = exif_tag_names(jpeg)
    received: list[bytes] = []
    handler = type("SelftestSink", (_Sink,), {"received": received})
    sink = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    boundary = "exifguard-" + secrets.token_hex(8)
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"selftest.jpg\"\r\n"
            f"Content-Type: image/jpeg\r\n\r\n").encode() + jpeg + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(
        f"https://{SELFTEST_HOST}{SELFTEST_PATH}", data=body, method="POST",
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}",
                 "Origin": f"https://{SELFTEST_HOST}",
                 "x-exifguard-selftest": token,
                 "x-exifguard-selftest-sink": str(sink.server_address[1])})
    ctx = ssl.create_default_context(cafile=str(ca_cert))
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"https": f"http://{proxy}"}),
                                         urllib.request.HTTPSHandler(context=ctx))
    status: int | None = None
    try:
        try:
            with opener.open(req, timeout=timeout) as resp:
                status = resp.status
                resp.read()
        except urllib.error.HTTPError as exc:
            status = exc.code
            text = exc.read().decode("utf-8", "replace")[:300]
            return SelftestResult(False, status, len(jpeg), None,
                                  message=f"the proxy answered {status}: {text.strip()}")
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            hint = ""
            if isinstance(reason, ssl.SSLError):
                hint = " (the certificate was not exifguard's: is the proxy running with this --certs dir?)"
            return SelftestResult(False, None, len(jpeg), None,
                                  message=f"could not reach the proxy at {proxy}: {reason}{hint}")
    finally:
        sink.shutdown()
        sink.server_close()
    if not received:
        return SelftestResult(False, status, len(jpeg), None,
                              message="the upload never reached the local sink (was the running "
                                      "proxy started with the same --certs folder?)")
    got = received[0]
    start = got.find(b"\xff\xd8\xff")
    end = got.rfind(f"\r\n--{boundary}--".encode())
    img = got[start:end] if start >= 0 and end > start else got
    after = exif_tag_names(img)
    marker_found = marker.encode() in got
    removed = [t for t in before if t not in after]
    ok = (not marker_found and not any(t.startswith("GPS") for t in after)
          and "Make" not in after and "BodySerialNumber" not in after)
    msg = ("selftest passed: the photo reached the sink without its private metadata"
           if ok else "selftest FAILED: private metadata reached the sink")
    return SelftestResult(ok, status, len(jpeg), len(img), removed, after, marker_found, msg)
