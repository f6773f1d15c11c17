"""`exifguard inspect` and `exifguard scrub` as a person uses them."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from exifguard.cli import main
from support import canary

MARKER = "CANARY-cli-7f3a"


def _photo(orientation: int = 6) -> bytes:
    exif = Image.Exif()
    exif[0x010F] = MARKER + "-make"
    exif[0x0112] = orientation
    exif[0x8825] = {1: "N", 2: (52.0, 31.0, 12.0), 3: "E", 4: (13.0, 24.0, 36.0)}
    buf = io.BytesIO()
    Image.new("RGB", (32, 16), (200, 40, 40)).save(buf, "JPEG", exif=exif.tobytes(), comment=MARKER.encode())
    return buf.getvalue()


@pytest.fixture()
def photo(tmp_path: Path) -> Path:
    p = tmp_path / "IMG_20240102_030405.jpg"
    p.write_bytes(_photo())
    return p


def test_inspect_lists_names_not_values(photo: Path, capsys) -> None:
    assert main(["inspect", str(photo)]) == 0
    out = capsys.readouterr().out
    assert "GPSLatitude" in out and "location" in out and "Make" in out
    assert MARKER not in out
    assert "kept: orientation" in out or "orientation" in out


def test_inspect_show_values_escapes_control_chars(tmp_path: Path, capsys) -> None:
    exif = Image.Exif()
    exif[0x010F] = "Evil\x1b[31mMake"
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "JPEG", exif=exif.tobytes())
    p = tmp_path / "x.jpg"
    p.write_bytes(buf.getvalue())
    assert main(["inspect", "--show-values", str(p)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out
    assert "Evil\\x1b[31mMake" in out


def test_inspect_json(photo: Path, capsys) -> None:
    assert main(["inspect", "--json", str(photo)]) == 0
    docs = json.loads(capsys.readouterr().out)
    assert docs[0]["format"] == "JPEG"
    assert "location" in docs[0]["categories"]
    assert MARKER not in json.dumps(docs)


def test_scrub_single_file_length_preserving(photo: Path, tmp_path: Path) -> None:
    out = tmp_path / "clean.jpg"
    assert main(["scrub", str(photo), "-o", str(out)]) == 0
    data = out.read_bytes()
    assert len(data) == photo.stat().st_size
    assert canary.find(data, MARKER.encode()) == []
    assert Image.open(out).getexif().get(0x0112) == 6


def test_scrub_compact_is_not_larger(photo: Path, tmp_path: Path) -> None:
    out = tmp_path / "small.jpg"
    assert main(["scrub", "--compact", str(photo), "-o", str(out)]) == 0
    assert out.stat().st_size < photo.stat().st_size
    assert canary.find(out.read_bytes(), MARKER.encode()) == []


def test_scrub_several_into_directory_with_one_bad_file(photo: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "notes.jpg"
    bad.write_bytes(b"this is not an image")
    trunc = tmp_path / "cut.jpg"
    trunc.write_bytes(_photo()[:40])
    outdir = tmp_path / "out"
    rc = main(["scrub", str(photo), str(bad), str(trunc), "-o", str(outdir)])
    assert rc == 1
    err = capsys.readouterr().err
    assert "notes.jpg" in err and "not an image" in err and "nothing written" in err
    assert "cut.jpg" in err
    assert sorted(p.name for p in outdir.iterdir()) == [photo.name]  # no partial files
    assert canary.find((outdir / photo.name).read_bytes(), MARKER.encode()) == []


def test_scrub_in_place_keeps_mode(photo: Path) -> None:
    os.chmod(photo, 0o640)
    before = photo.stat().st_size
    assert main(["scrub", "--in-place", str(photo)]) == 0
    assert photo.stat().st_size == before
    assert stat.S_IMODE(photo.stat().st_mode) == 0o640
    assert canary.find(photo.read_bytes(), MARKER.encode()) == []
    assert not [p for p in photo.parent.iterdir() if p.name.startswith(".exifguard-")]


def test_scrub_refuses_output_equal_to_input(photo: Path, capsys) -> None:
    assert main(["scrub", str(photo), "-o", str(photo)]) == 2
    assert "--in-place" in capsys.readouterr().err


def test_missing_file_is_a_clear_error(tmp_path: Path, capsys) -> None:
    assert main(["inspect", str(tmp_path / "nope.jpg")]) == 1
    assert "No such file" in capsys.readouterr().err


def test_console_script_runs(photo: Path) -> None:
    exe = Path(sys.executable).with_name("exifguard")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "exifguard.cli"]
    proc = subprocess.run([*cmd, "inspect", str(photo)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "GPS" in proc.stdout


def test_oversized_file_is_refused_before_reading(tmp_path: Path, capsys) -> None:
    """Regression: the whole file used to be read into memory before any size check."""
    big = tmp_path / "huge.jpg"
    with big.open("wb") as fh:  # sparse: costs no disk space
        fh.write(_photo()[:64])
        fh.truncate(512 * 1024 * 1024 + 1)
    out = tmp_path / "out.jpg"
    assert main(["scrub", str(big), "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "too large" in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_fifo_empty_file_and_directory_are_one_line_errors(tmp_path: Path, capsys) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)  # reading it would block forever
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    folder = tmp_path / "folder.jpg"
    folder.mkdir()
    outdir = tmp_path / "out"
    assert main(["scrub", str(fifo), str(empty), str(folder), "-o", str(outdir)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3
    assert "not a regular file" in err[0] and "empty" in err[1] and "directory" in err[2]
    assert list(outdir.iterdir()) == []


def test_in_place_follows_a_symlink_and_cleans_its_target(photo: Path, tmp_path: Path) -> None:
    """Regression: --in-place on a symlink replaced the link with a clean file and left the
    metadata in the file it pointed to."""
    link = tmp_path / "link.jpg"
    link.symlink_to(photo)
    assert main(["scrub", "--in-place", str(link)]) == 0
    assert link.is_symlink()
    assert not canary.find(photo.read_bytes(), MARKER.encode())


def test_fsync_only_when_an_existing_file_is_replaced(photo: Path, tmp_path: Path, monkeypatch) -> None:
    """A crash must not leave an empty file where a photo was; new copies need no fsync."""
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    out = tmp_path / "clean.jpg"
    assert main(["scrub", "-q", str(photo), "-o", str(out)]) == 0
    assert synced == []
    assert main(["scrub", "-q", str(photo), "-o", str(out)]) == 0  # replaces clean.jpg
    assert len(synced) == 1
    assert main(["scrub", "-q", "--in-place", str(photo)]) == 0
    assert len(synced) == 2


# ---- rough edges of the first hour (issue 12) ----------------------------------------------
def test_scrub_one_file_into_a_folder_named_with_a_trailing_slash(photo: Path, tmp_path: Path) -> None:
    outdir = tmp_path / "cleaned"
    assert main(["scrub", str(photo), "-o", str(outdir) + os.sep]) == 0
    assert outdir.is_dir(), "a trailing slash means a folder, not a file named 'cleaned'"
    assert canary.find((outdir / photo.name).read_bytes(), MARKER.encode()) == []
    # and the next run with two inputs into the same folder works
    other = tmp_path / "second.jpg"
    other.write_bytes(_photo())
    assert main(["scrub", str(photo), str(other), "-o", str(outdir)]) == 0
    assert sorted(p.name for p in outdir.iterdir()) == sorted([photo.name, other.name])


def test_scrub_one_file_into_an_existing_folder(photo: Path, tmp_path: Path) -> None:
    outdir = tmp_path / "existing"
    outdir.mkdir()
    assert main(["scrub", str(photo), "-o", str(outdir)]) == 0
    assert (outdir / photo.name).is_file()


def test_scrub_into_a_missing_folder_names_the_folder_not_the_input(photo: Path, tmp_path: Path,
                                                                    capsys) -> None:
    dest = tmp_path / "missing" / "clean.jpg"
    assert main(["scrub", str(photo), "-o", str(dest)]) == 2
    err = capsys.readouterr().err
    assert "output folder" in err and "missing" in err and "does not exist" in err
    assert photo.name not in err, "the input is fine: do not blame it"
    assert not dest.parent.exists()


def test_clean_copy_has_the_input_mode_bits(photo: Path, tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        os.chmod(photo, 0o644)
        out = tmp_path / "clean.jpg"
        assert main(["scrub", str(photo), "-o", str(out)]) == 0
        assert stat.S_IMODE(out.stat().st_mode) == 0o644
        outdir = tmp_path / "dir"
        os.chmod(photo, 0o640)
        assert main(["scrub", str(photo), "-o", str(outdir) + "/"]) == 0
        assert stat.S_IMODE((outdir / photo.name).stat().st_mode) == 0o640
    finally:
        os.umask(old)


def test_inspect_does_not_list_a_kept_orientation_as_removed(photo: Path, tmp_path: Path, capsys) -> None:
    png = tmp_path / "o.png"
    exif = Image.Exif()
    exif[0x010F] = MARKER
    exif[0x0112] = 6
    Image.new("RGB", (8, 8)).save(png, exif=exif.tobytes())
    assert main(["inspect", str(photo), str(png)]) == 0
    out = capsys.readouterr().out
    assert "kept: orientation" in out
    assert "Orientation" not in out, out  # removed lines use tag names; kept says "orientation"
    assert main(["inspect", "--json", str(photo), str(png)]) == 0
    for doc in json.loads(capsys.readouterr().out):
        assert all("Orientation" not in r["tags"] for r in doc["removed"]), doc
        assert any(r["tags"] for r in doc["removed"])


def test_scrub_no_orientation_still_reports_orientation_removed(photo: Path) -> None:
    from exifguard.cli.files import as_reported
    from exifguard.engine import ScrubOptions, scrub
    r = as_reported(scrub(photo.read_bytes(), options=ScrubOptions(keep_orientation=False)))
    assert "orientation" not in [k.what for k in r.kept]
    assert "Orientation" in r.tags  # really removed: still listed
