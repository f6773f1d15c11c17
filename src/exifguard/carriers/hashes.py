"""Integrity headers that hash the request body: recompute them, or say why we cannot.

Why: storage hosts verify same-request hashes (Azure rejects a wrong ``Content-MD5``
with 400; S3 checks ``x-amz-checksum-*``; GCS checks ``x-goog-hash``).  After the body
is cleaned they must describe the new bytes.  A hash we can only recompute if nobody
signed it: when a signature covers the hash or the payload (AWS SigV4 payload hash,
a checksum listed in SignedHeaders, Azure SharedKey, an HTTP message signature over
``content-digest``) the request cannot be forwarded modified, so a *blocker* is
reported and the policy decides (block, or pass the original untouched).

A header whose old value did not hash the (decoded) body we saw — e.g. it hashes the
compressed bytes — cannot be recomputed either: blocker.

``Content-CRC32`` (ByteDance's upload hosts, Doubao/Dola: a zlib CRC-32 of the body) has
no single spelling: it is recomputed in the spelling the client used for the old body
(8 hex digits in either case, unpadded or 0x-prefixed hex, decimal, or base64 of the 4
big-endian bytes; public clients use all of these), and a value that is none of these for
the body we saw is a blocker.  The literal ``Ignore`` (the server skips the check) stays.
"""

from __future__ import annotations

import base64
import hashlib
import re
import zlib
from collections.abc import Callable, Sequence
from urllib.parse import parse_qsl, urlsplit


def _table(poly: int, bits: int) -> list[int]:
    out = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ poly if c & 1 else c >> 1
        out.append(c & ((1 << bits) - 1))
    return out


_CRC32C = _table(0x82F63B78, 32)
_CRC64NVME = _table(0x9A6C9329AC4BC9B5, 64)


try:  # the `crc32c` package (a runtime dependency) is a C implementation, ~1000x faster
    from crc32c import crc32c as _crc32c_fast
except ImportError:  # pragma: no cover - exercised by the cross-check test
    _crc32c_fast = None


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as S3 and GCS use it."""
    if _crc32c_fast is not None:
        return _crc32c_fast(data)
    return crc32c_pure(data)


def crc32c_pure(data: bytes) -> int:
    """Table-driven CRC-32C in pure Python (~1 s per 10 MB): the fallback and test oracle."""
    crc = 0xFFFFFFFF
    t = _CRC32C
    for b in data:
        crc = t[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def crc64nvme(data: bytes) -> int:
    """CRC-64/NVME, S3's default checksum since 2025."""
    crc = 0xFFFFFFFFFFFFFFFF
    t = _CRC64NVME
    for b in data:
        crc = t[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFFFFFFFFFF


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


_SIMPLE: dict[str, Callable[[bytes], str]] = {
    "content-md5": lambda d: _b64(hashlib.md5(d).digest()),
    "x-ms-blob-content-md5": lambda d: _b64(hashlib.md5(d).digest()),
    "x-amz-checksum-crc32": lambda d: _b64(zlib.crc32(d).to_bytes(4, "big")),
    "x-amz-checksum-crc32c": lambda d: _b64(crc32c(d).to_bytes(4, "big")),
    "x-amz-checksum-crc64nvme": lambda d: _b64(crc64nvme(d).to_bytes(8, "big")),
    "x-amz-checksum-sha1": lambda d: _b64(hashlib.sha1(d).digest()),
    "x-amz-checksum-sha256": lambda d: _b64(hashlib.sha256(d).digest()),
}

_DIGEST_ALGS: dict[str, Callable[[bytes], bytes]] = {
    "sha-256": lambda d: hashlib.sha256(d).digest(),
    "sha-512": lambda d: hashlib.sha512(d).digest(),
    "md5": lambda d: hashlib.md5(d).digest(),
    "sha": lambda d: hashlib.sha1(d).digest(),
}

#: Spellings of a CRC-32 seen in ``Content-CRC32``, most usual first (8 lower-case hex).
_CRC32_SPELLINGS: tuple[Callable[[int], str], ...] = (
    lambda c: f"{c:08x}",
    lambda c: f"{c:08X}",
    lambda c: f"{c:x}",
    lambda c: f"{c:X}",
    lambda c: str(c),
    lambda c: f"0x{c:08x}",
    lambda c: f"0x{c:x}",
    lambda c: _b64(c.to_bytes(4, "big")),
)


def crc32_spelling(value: str, body: bytes) -> Callable[[int], str] | None:
    """The spelling in which `value` states the CRC-32 of `body`, or None if it does not."""
    v = value.strip()
    c = zlib.crc32(body)
    return next((f for f in _CRC32_SPELLINGS if f(c) == v), None)


#: Header names this module knows how to recompute (lowercase).
HASH_HEADERS = frozenset(_SIMPLE) | {"x-goog-hash", "content-digest", "repr-digest", "digest",
                                     "content-crc32"}


def _goog_hash(value: str, body: bytes) -> str | None:
    parts = []
    for item in value.split(","):
        k, sep, _v = item.strip().partition("=")
        if not sep:
            return None
        alg = k.strip().lower()
        if alg == "crc32c":
            parts.append(f"{k.strip()}={_b64(crc32c(body).to_bytes(4, 'big'))}")
        elif alg == "md5":
            parts.append(f"{k.strip()}={_b64(hashlib.md5(body).digest())}")
        else:
            return None
    return ",".join(parts)


def _sf_digest(value: str, body: bytes) -> str | None:
    """RFC 9530 Content-Digest / Repr-Digest: ``sha-256=:b64:, sha-512=:b64:``."""
    out = []
    for item in value.split(","):
        m = re.fullmatch(r"\s*([a-z0-9-]+)=:([A-Za-z0-9+/=]*):\s*", item)
        if not m or m.group(1) not in ("sha-256", "sha-512"):
            return None
        out.append(f"{m.group(1)}=:{_b64(_DIGEST_ALGS[m.group(1)](body))}:")
    return ", ".join(out)


def _legacy_digest(value: str, body: bytes) -> str | None:
    """RFC 3230 ``Digest: SHA-256=b64``."""
    out = []
    for item in value.split(","):
        k, sep, _v = item.strip().partition("=")
        if not sep or k.lower() not in _DIGEST_ALGS:
            return None
        out.append(f"{k}={_b64(_DIGEST_ALGS[k.lower()](body))}")
    return ",".join(out)


def compute(name: str, old_value: str, body: bytes) -> str | None:
    """The value header `name` (shaped like `old_value`) would have for `body`; None if unknown."""
    lname = name.lower()
    if lname in _SIMPLE:
        return _SIMPLE[lname](body)
    if lname == "content-crc32":
        v = old_value.strip()
        c = zlib.crc32(body)
        if re.fullmatch(r"[0-9a-f]{8}", v):
            return f"{c:08x}"
        if re.fullmatch(r"[0-9A-F]{8}", v):
            return f"{c:08X}"
        if re.fullmatch(r"[A-Za-z0-9+/]{6}==", v):
            return _b64(c.to_bytes(4, "big"))
        if v.isdigit():
            return str(c)
        return f"{c:x}" if re.fullmatch(r"[0-9a-f]{1,8}", v) else None
    if lname == "x-goog-hash":
        return _goog_hash(old_value, body)
    if lname in ("content-digest", "repr-digest"):
        return _sf_digest(old_value, body)
    if lname == "digest":
        return _legacy_digest(old_value, body)
    return None


def _norm(v: str) -> str:
    return re.sub(r"\s+", "", v)


def signed_headers(url: str, headers: Sequence[tuple[str, str]]) -> set[str]:
    """Lowercase names of headers covered by a request signature we cannot redo."""
    out: set[str] = set()
    for k, v in headers:
        lk = k.lower()
        if lk == "authorization":
            m = re.search(r"SignedHeaders=([^,\s]+)", v, re.I)
            if m:
                out |= {h.strip().lower() for h in m.group(1).split(";")}
            if re.match(r"\s*SharedKey(Lite)?\s", v, re.I):
                # Azure SharedKey signs Content-MD5 and every x-ms-* header
                out |= {"content-md5"} | {h.lower() for h, _ in headers if h.lower().startswith("x-ms-")}
        elif lk in ("signature-input",):
            out |= {t.lower() for t in re.findall(r'"([^"]+)"', v)}
    try:
        query = parse_qsl(urlsplit(url).query, keep_blank_values=True)
    except ValueError:
        query = []
    for k, v in query:
        if k.lower() in ("x-amz-signedheaders", "x-goog-signedheaders"):
            out |= {h.strip().lower() for h in v.split(";")}
    return out


def recompute(url: str, headers: Sequence[tuple[str, str]], old_body: bytes,
              new_body: bytes) -> tuple[dict[str, str], list[str]]:
    """Headers to set for the new body, and blockers for what cannot be fixed."""
    set_headers: dict[str, str] = {}
    blockers: list[str] = []
    if new_body == old_body:
        return set_headers, blockers
    covered = signed_headers(url, headers)
    for name, value in headers:
        lname = name.lower()
        if lname == "x-amz-content-sha256":
            v = value.strip().upper()
            if v == "UNSIGNED-PAYLOAD" or v == "STREAMING-UNSIGNED-PAYLOAD-TRAILER":
                continue
            blockers.append("body hash covered by AWS SigV4 signature (x-amz-content-sha256)")
            continue
        if lname not in HASH_HEADERS:
            continue
        if lname == "content-crc32":
            if value.strip().lower() == "ignore":
                continue
            spell = crc32_spelling(value, old_body)
            if spell is None:
                blockers.append("content-crc32 does not state the CRC-32 of the body as received; "
                                "cannot recompute it")
            elif lname in covered:
                blockers.append("content-crc32 is covered by a request signature; cannot recompute it")
            else:
                set_headers[name] = spell(zlib.crc32(new_body))
            continue
        old_expected = compute(name, value, old_body)
        if old_expected is None:
            blockers.append(f"{lname} uses an algorithm we cannot recompute")
            continue
        if _norm(old_expected) != _norm(value):
            blockers.append(f"{lname} does not hash the body as received (compressed or chunked?); "
                            "cannot recompute it")
            continue
        if lname in covered:
            blockers.append(f"{lname} is covered by a request signature; cannot recompute it")
            continue
        new_value = compute(name, value, new_body)
        if new_value is not None:
            set_headers[name] = new_value
    return set_headers, blockers
