"""A newcomer's journey in a real browser (issue 6).

Debian's Chromium, driven by Playwright, with a fresh profile that trusts the exifguard
CA (installed by `exifguard cert install`) and reaches the proxy only through the PAC
file `exifguard pac` writes.  It attaches a real GPS-tagged photo and a synthesised
canary photo on pages that upload the way the real apps do, and the test judges what
arrived at the sink: ExifTool allowlist, canary search, same length and pixels, the
declared size, the page's own verdict, and exifguard's audit record.

With the proxy stopped the same uploads must fail visibly, not go out directly.
"""

from __future__ import annotations

import hashlib
import io
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pytest
from PIL import Image

from support import canary, corpus, oracle

from .harness import CHROMIUM, OUTPUT, Journey

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} missing: apt-get install chromium "
                       "libnss3-tools (scripts/test installs them when run as root)"),
    oracle.requires_exiftool,
]

CANARY = b"EXIFGUARD-BROWSER-CANARY-5d1e"


# ------------------------------------------------------------------ the photos

@dataclass(frozen=True)
class Photo:
    id: str
    name: str
    data: bytes
    path: Path | None = None
    marker: bytes | None = None

    @cached_property
    def pixels(self) -> bytes:
        with Image.open(io.BytesIO(self.data)) as im:
            return im.tobytes()


#: Real camera photos with GPS coordinates (names from the corpus manifest): one with an
#: EXIF thumbnail, XMP and maker notes; one that adds serials, names, IPTC and ICC.
GPS_PHOTOS = ("jpeg_nikon-coolpix-p6000_gps_thumb.jpg",
              "jpeg_canon-eos-600d_gps_serials_people_iptc_xmp.jpg")


def gps_photo(name: str):
    """A pytest param for a corpus JPEG whose manifest records GPS coordinates."""
    pid = "gps-" + name.split("_")[1]
    f = next((f for f in corpus.files("JPEG") if f.name == name), None)
    if f is None:
        return pytest.param(None, id=pid, marks=pytest.mark.skip(
            reason=corpus.missing(name)))
    assert any("GPSLatitude" in k for k in f.entry["privacy"]["gps"]), f"{name} has no GPS"
    return pytest.param(Photo(pid, f.path.name, f.data, path=f.path), id=pid)


def canary_photo() -> Photo:
    """A small JPEG with the canary in EXIF (IFD0, Exif, GPS), XMP and a COM segment."""
    import piexif

    im = Image.new("RGB", (320, 200))
    im.putdata([(40 + x // 3, 90 + y // 3, 160) for y in range(200) for x in range(320)])
    text = CANARY.decode()
    exif = piexif.dump({
        "0th": {piexif.ImageIFD.Make: text, piexif.ImageIFD.Model: text,
                piexif.ImageIFD.Artist: text, piexif.ImageIFD.ImageDescription: text},
        "Exif": {piexif.ExifIFD.UserComment: b"ASCII\0\0\0" + CANARY,
                 piexif.ExifIFD.BodySerialNumber: text},
        "GPS": {piexif.GPSIFD.GPSLatitudeRef: b"N", piexif.GPSIFD.GPSLatitude: ((48, 1), (51, 1), (2, 1)),
                piexif.GPSIFD.GPSLongitudeRef: b"E", piexif.GPSIFD.GPSLongitude: ((2, 1), (21, 1), (3, 1)),
                piexif.GPSIFD.GPSProcessingMethod: b"ASCII\0\0\0" + CANARY},
    })
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=85, exif=exif, comment=CANARY)
    data = buf.getvalue()
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/'
           b'22-rdf-syntax-ns#"><rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/" '
           b'dc:creator="' + CANARY + b'"/></rdf:RDF></x:xmpmeta>')
    payload = b"http://ns.adobe.com/xap/1.0/\0" + xmp
    app1 = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
    return Photo("canary", "canary.jpg", data[:2] + app1 + data[2:], marker=CANARY)


PHOTOS = [pytest.param(canary_photo(), id="canary"), *map(gps_photo, GPS_PHOTOS)]


# ------------------------------------------------------------------ the upload paths

@dataclass(frozen=True)
class UploadPath:
    id: str
    url: str
    how: str
    """"picker" (setInputFiles), "drop" (DataTransfer drop event) or "paste" (ClipboardEvent)."""
    route: str
    """The sink endpoint that must receive the image."""
    host: str
    """The AI host exifguard must log in the audit record."""
    declares_size: bool = False


PATHS = [
    UploadPath("claude-multipart", "https://claude.ai/new", "picker", "claude multipart", "claude.ai"),
    UploadPath("chatgpt-put", "https://chatgpt.com/", "picker", "chatgpt put",
               "files.oaiusercontent.com", declares_size=True),
    UploadPath("gemini-resumable", "https://gemini.google.com/app", "picker", "gemini resumable",
               "push.clients6.google.com", declares_size=True),
    UploadPath("claude-drag-drop", "https://claude.ai/new", "drop", "claude multipart", "claude.ai"),
    UploadPath("chatgpt-paste", "https://chatgpt.com/", "paste", "chatgpt put",
               "files.oaiusercontent.com", declares_size=True),
    UploadPath("api-data-url", "https://devapp.exifguard.test/api-playground", "picker", "openai json",
               "api.openai.com"),
]


def wait_audit(journey: Journey, since: int, host: str, timeout: float = 10) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        recs = [r for r in journey.proxy.audit_records()[since:] if r.get("host") == host]
        if recs or time.monotonic() > deadline:
            return recs
        time.sleep(0.1)


@pytest.mark.parametrize("photo", PHOTOS)
@pytest.mark.parametrize("up", PATHS, ids=[p.id for p in PATHS])
def test_upload_arrives_clean(journey: Journey, up: UploadPath, photo: Photo) -> None:
    journey.proxy.start()  # no-op unless a test stopped it
    page = journey.open(up.url)
    mark = journey.sink.mark()
    audit_mark = len(journey.proxy.audit_records())
    try:
        journey.attach(page, up.how, photo.name, photo.data, path=photo.path)
        outcome = journey.wait_outcome(page, OUTPUT / f"{up.id}-{photo.id}.png")
    finally:
        page.close()

    # the page's own verdict (it compares the server's byte count with the file's)
    assert outcome.state == "done", f"page says: {outcome.text}"
    assert "Uploaded" in outcome.text

    uploads = journey.sink.uploads_since(mark)
    assert [u.route for u in uploads] == [up.route], "the image reached the wrong endpoint"
    got = uploads[0].image

    # clean by the independent oracle, and no canary in any encoding
    tags = oracle.exiftool_bytes(got, ".jpg")
    assert oracle.leaks("JPEG", tags) == [], "metadata reached the AI service"
    assert not any(k.startswith(("GPS:", "XMP")) for k in tags)
    if photo.marker:
        assert canary.find(got, photo.marker) == []

    # length-preserving and lossless: every declared size stays true, pixels untouched
    # (booleans, so a failure never prints the photo's bytes)
    unchanged = got == photo.data
    assert not unchanged, "the upload arrived unmodified"
    assert len(got) == len(photo.data)
    if up.declares_size:
        assert uploads[0].declared_size == len(got)
    with Image.open(io.BytesIO(got)) as im:
        same_pixels = im.tobytes() == photo.pixels
    assert same_pixels, "the pixels changed"

    # exifguard logged what it did, with the real host and without values
    recs = wait_audit(journey, audit_mark, up.host)
    assert len(recs) == 1, f"expected one audit record for {up.host}, got {len(recs)}"
    rec = recs[0]
    assert rec["action"] == "stripped" and rec["format"] == "JPEG"
    assert "location" in rec["categories"]
    assert rec["input_bytes"] == rec["output_bytes"] == len(got)
    assert rec["sha256"] == hashlib.sha256(got).hexdigest()
    assert photo.marker is None or photo.marker.decode() not in str(rec)


def test_pac_sends_only_ai_hosts_through_exifguard(journey: Journey) -> None:
    """claude.ai arrives with a certificate from exifguard's CA (intercepted via the PAC);
    chatgpt.com, which exifguard deliberately leaves alone, with the site's own."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    ca = x509.load_pem_x509_certificate((journey.proxy.certs / "mitmproxy-ca-cert.pem").read_bytes())
    ca_cn = ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    constraints = ca.extensions.get_extension_for_class(x509.NameConstraints)
    assert constraints.critical and constraints.value.permitted_subtrees, "the CA is not name-constrained"

    issuers = {}
    for url in ("https://claude.ai/new", "https://chatgpt.com/"):
        page = journey.context.new_page()
        try:
            response = page.goto(url, wait_until="load")
            assert response is not None and response.ok
            issuers[url] = (response.security_details() or {}).get("issuer")
        finally:
            page.close()
    assert issuers["https://claude.ai/new"] == ca_cn
    assert issuers["https://chatgpt.com/"] == "exifguard browser-test web PKI (throwaway)"


@pytest.mark.parametrize("up", [PATHS[0], PATHS[1]], ids=["claude-multipart", "chatgpt-put"])
def test_stopped_proxy_fails_closed(journey: Journey, up: UploadPath) -> None:
    """The PAC has no DIRECT fallback: with exifguard down the upload fails, visibly.

    The browser *could* reach the sink directly (its resolver rules map every test host
    there), so an upload that went around the stopped proxy would be seen.
    """
    photo = canary_photo()
    journey.proxy.start()
    page = journey.open(up.url)  # the chat page is open when exifguard goes away
    try:
        journey.proxy.stop()
        mark = journey.sink.mark()
        journey.attach(page, "picker", photo.name, photo.data)
        outcome = journey.wait_outcome(page, OUTPUT / f"stopped-{up.id}.png")
    finally:
        page.close()
        journey.proxy.start()
    assert outcome.state == "failed", f"page says: {outcome.text}"
    assert journey.sink.uploads_since(mark) == [], "the photo went around the stopped proxy"
    reached = [r for r in journey.sink.requests_since(mark) if r[0] in ("PUT", "POST")]
    # only ChatGPT's own create call (chatgpt.com is not proxied) may reach the site
    assert all(path == "/backend-api/files" for _, path in reached), reached
