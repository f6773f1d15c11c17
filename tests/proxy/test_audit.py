import hashlib
import os
import stat

from exifguard.engine.report import Category, Kept, Removal, ScrubResult
from exifguard.proxy.audit import AuditLog, ImageRecord, format_summary, read_records, strip_query, summarise
from exifguard.proxy.logline import describe_removed, escape, human_size, image_line

GPS = Removal("APP1 Exif", 2, 900, ("GPSLatitude", "GPSLongitude", "Make", "Model", "DateTimeOriginal",
                                     "CreateDate", "ModifyDate", "GPSDateStamp", "BodySerialNumber",
                                     "LensSerialNumber"),
              frozenset({Category.LOCATION, Category.DEVICE, Category.TIME, Category.IDENTITY}),
              values=(("GPSLatitude", "48.85"), ("Make", "Canon\x1b[31m")))
THUMB = Removal("EXIF thumbnail", 400, 300, (), frozenset({Category.THUMBNAIL}))
RESULT = ScrubResult(b"\xff\xd8clean\xff\xd9", "JPEG", (GPS, THUMB), (Kept("orientation"), Kept("colour profile")),
                     3_100_000)


def record(**kw):
    base = dict(host="claude.ai", path="/api/x/upload-file?sig=SECRET&se=1", method="POST", request_id="f1",
                carrier="multipart part 'file'", format="JPEG", input_bytes=3_100_000, action="stripped",
                result=RESULT, filename="IMG_20240102_030405.jpg")
    base.update(kw)
    return ImageRecord(**base)


def test_audit_record_shape_mode_and_no_values_by_default(tmp_path):
    p = tmp_path / "sub" / "audit.jsonl"
    log = AuditLog(p)
    log.write(record())
    log.write(record(action="blocked", result=None, error="JPEG: truncated"))
    log.close()
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600
    raw = p.read_text()
    assert "SECRET" not in raw and "sig=" not in raw
    assert "48.85" not in raw and "Canon" not in raw and "IMG_2024" not in raw
    recs = read_records(p)
    assert len(recs) == 2
    r = recs[0]
    assert set(r) >= {"time", "host", "path", "carrier", "format", "input_bytes", "output_bytes", "removed",
                      "categories", "tags", "kept", "action", "sha256"}
    assert r["path"] == "/api/x/upload-file"
    assert r["sha256"] == hashlib.sha256(RESULT.data).hexdigest()
    assert r["categories"] == ["device", "identity", "location", "thumbnail", "time"]
    assert r["removed"][0]["tags"][0] == "GPSLatitude" and "values" not in r["removed"][0]
    assert r["kept"] == ["orientation", "colour profile"]
    assert recs[1]["action"] == "blocked" and recs[1]["sha256"] is None and recs[1]["error"] == "JPEG: truncated"


def test_values_only_when_opted_in_and_control_chars_escaped(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text("")
    os.chmod(p, 0o644)
    log = AuditLog(p, with_values=True)
    log.write(record(host="claude.ai\x1b[2J\n", carrier="part '\u202efile'"))
    log.close()
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600  # an existing looser file is tightened
    raw = p.read_bytes()
    assert raw.count(b"\n") == 1 and b"\x1b" not in raw and "\u202e".encode() not in raw
    assert b"\\u001b" in raw
    r = read_records(p)[0]
    assert r["removed"][0]["values"]["GPSLatitude"] == "48.85"
    assert r["filename"] == "IMG_20240102_030405.jpg"


def test_summary_and_report_text(tmp_path):
    p = tmp_path / "a.jsonl"
    log = AuditLog(p)
    for i in range(12):
        log.write(record(request_id=f"r{i // 2}"))
    log.write(record(action="blocked", result=None, error="x", host="grok.com"))
    log.write(record(selftest=True))
    log.close()
    s = summarise(read_records(p))
    assert s["images"] == 13 and s["uploads"] == 7
    assert s["actions"]["stripped"] == 12 and s["actions"]["blocked"] == 1
    assert s["by_category"]["location"] == 12
    assert s["by_site"]["claude.ai"]["images"] == 12
    text = format_summary(s)
    assert "12 images would have revealed a location" in text
    assert summarise(read_records(p), include_selftest=True)["images"] == 14


def test_log_line_content():
    line = image_line(host="claude.ai", action="stripped", fmt="JPEG", size=3_100_000,
                      removed=RESULT.removed, kept=RESULT.kept)
    assert line.startswith("exifguard: claude.ai image (JPEG, 3.1 MB) — removed location (GPS), device (Make, Model)")
    assert "3 timestamps" in line and "2 serial numbers" in line and "thumbnail" in line
    assert line.endswith("; kept orientation, colour profile")
    assert "48.85" not in line and "Canon" not in line
    audit = image_line(host="claude.ai", action="audit", fmt="JPEG", size=10, removed=RESULT.removed)
    assert "would remove location" in audit and "sent unchanged" in audit
    blocked = image_line(host="x\x1b]0;pwn\x07", action="blocked", fmt=None, size=5, error="bad\nline")
    assert "\x1b" not in blocked and "\n" not in blocked and "\x07" not in blocked and "BLOCKED" in blocked
    assert "bad\\x0aline" in blocked
    withvals = image_line(host="h", action="stripped", fmt="JPEG", size=1, removed=(GPS,), values=GPS.values)
    assert "GPSLatitude=48.85" in withvals and "\x1b" not in withvals
    assert image_line(host="h", action="stripped", fmt="PNG", size=1).endswith("no private metadata found")


def test_helpers():
    assert strip_query("/a/b?c=d#e") == "/a/b"
    assert human_size(999) == "999 bytes" and human_size(1500) == "1.5 KB"
    assert escape("a\u2028b\x00") == "a\\u2028b\\x00"
    assert describe_removed([Removal("COM", 0, 5, (), frozenset({Category.TEXT}))]) == "text (COM)"


def test_report_says_selftest_uploads_are_not_counted(tmp_path):
    """Before: right after `exifguard selftest`, report said "0 image(s)" and nothing else."""
    p = tmp_path / "a.jsonl"
    log = AuditLog(p)
    log.write(record(request_id="s1", selftest=True))
    log.write(record(request_id="s2", selftest=True))
    log.close()
    s = summarise(read_records(p))
    assert s["images"] == 0 and s["selftest_uploads_not_counted"] == 2
    text = format_summary(s)
    assert "2 test upload(s) from selftest or the check page not counted; --include-selftest counts them" in text
    s = summarise(read_records(p), include_selftest=True)
    assert s["images"] == 2 and s["selftest_uploads_not_counted"] == 0
    assert "selftest" not in format_summary(s)


def test_append_on_a_full_disk_leaves_no_torn_record(tmp_path, monkeypatch):
    """write(2) stores part of a record and returns a short count, then ENOSPC: the file is cut
    back to where the record began, the error is raised, and the next record is intact."""
    import errno
    import os as os_mod

    import pytest

    from exifguard.proxy import audit as audit_mod
    log = audit_mod.AuditLog(tmp_path / "a.jsonl")
    log.append(b'{"n":1}\n')
    real_write = os_mod.write
    calls = {"n": 0}

    def full(fd, data):
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, bytes(data)[:3])  # a short write, no error
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(audit_mod.os, "write", full)
    with pytest.raises(OSError):
        log.append(b'{"n":2}\n')
    monkeypatch.setattr(audit_mod.os, "write", real_write)
    log.append(b'{"n":3}\n')
    log.close()
    assert (tmp_path / "a.jsonl").read_bytes() == b'{"n":1}\n{"n":3}\n'
