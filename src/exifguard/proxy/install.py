"""Commands that install or remove the CA certificate in the trust stores browsers use.

Pure command *builders*: each returns `Step`s (argv lists) so `--dry-run` can print
exactly what would run, and tests can check them without touching a real store.

Targets:
  nss      Chrome/Chromium on Linux (sql:$HOME/.pki/nssdb, ~/.local/share/pki/nssdb and snap
           Chromium's ~/snap/chromium/current/.pki/nssdb),
           Firefox profiles (per-profile NSS db), or one db given with --nssdb DIR
  system   Linux system store (Debian/Ubuntu update-ca-certificates, Fedora update-ca-trust);
           needs root; used by curl, OpenSSL and Python, not by Chrome
  macos    per-user login keychain (`security add-trusted-cert`)
  windows  per-user Root store (`certutil -user -addstore Root`)
"""

from __future__ import annotations

import glob
import os
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

NICKNAME = "exifguard CA"  # certutil: no ':' allowed in nicknames
SYSTEM_NAME = "exifguard.crt"


@dataclass(frozen=True)
class Step:
    argv: tuple[str, ...]
    why: str
    root: bool = False
    may_fail: bool = False
    """e.g. deleting an old copy that may not be there."""

    def shell(self) -> str:
        return shlex.join(self.argv)


def chrome_nssdbs(home: Path) -> list[Path]:
    """Chrome/Chromium's NSS databases.  Snap Chromium (Ubuntu's only Chromium) keeps its
    own under ~/snap/chromium/current: the confined browser cannot read ~/.pki."""
    return [home / ".pki" / "nssdb", home / ".local" / "share" / "pki" / "nssdb",
            home / "snap" / "chromium" / "current" / ".pki" / "nssdb"]


def firefox_profiles(home: Path) -> list[Path]:
    pats = [".mozilla/firefox/*", "snap/firefox/common/.mozilla/firefox/*",
            ".var/app/org.mozilla.firefox/.mozilla/firefox/*"]
    out: list[Path] = []
    for p in pats:
        for d in sorted(glob.glob(str(home / p))):
            if Path(d, "cert9.db").exists():
                out.append(Path(d))
    return out


def nss_targets(home: Path) -> list[Path]:
    """NSS dbs to use: existing Chrome dbs and Firefox profiles; ~/.pki/nssdb if none exist."""
    found = [d for d in chrome_nssdbs(home) if (d / "cert9.db").exists()]
    found += firefox_profiles(home)
    return found or [chrome_nssdbs(home)[0]]


def nss_install(db: Path, cert: Path) -> list[Step]:
    sql = f"sql:{db}"
    steps: list[Step] = []
    if not (db / "cert9.db").exists():
        steps.append(Step(("mkdir", "-p", str(db)), f"create NSS database directory {db}"))
        steps.append(Step(("certutil", "-N", "-d", sql, "--empty-password"), f"create NSS database {db}"))
    steps.append(Step(("certutil", "-D", "-d", sql, "-n", NICKNAME), "remove an older exifguard CA",
                      may_fail=True))
    steps.append(Step(("certutil", "-A", "-d", sql, "-t", "C,,", "-n", NICKNAME, "-i", str(cert)),
                      f"trust the exifguard CA for websites in {db}"))
    return steps


def nss_uninstall(db: Path) -> list[Step]:
    return [Step(("certutil", "-D", "-d", f"sql:{db}", "-n", NICKNAME),
                 f"remove the exifguard CA from {db}", may_fail=True)]


def system_install(cert: Path) -> list[Step]:
    if Path("/etc/pki/ca-trust/source/anchors").is_dir() and not Path("/usr/sbin/update-ca-certificates").exists():
        dest = f"/etc/pki/ca-trust/source/anchors/{SYSTEM_NAME}"
        return [Step(("sudo", "cp", str(cert), dest), "copy the CA into the system anchors", root=True),
                Step(("sudo", "update-ca-trust"), "rebuild the system trust store", root=True)]
    dest = f"/usr/local/share/ca-certificates/{SYSTEM_NAME}"
    return [Step(("sudo", "cp", str(cert), dest), "copy the CA into the system store", root=True),
            Step(("sudo", "update-ca-certificates"), "rebuild the system trust store", root=True)]


def system_uninstall() -> list[Step]:
    if Path("/etc/pki/ca-trust/source/anchors").is_dir() and not Path("/usr/sbin/update-ca-certificates").exists():
        return [Step(("sudo", "rm", "-f", f"/etc/pki/ca-trust/source/anchors/{SYSTEM_NAME}"), "remove",
                     root=True),
                Step(("sudo", "update-ca-trust"), "rebuild the system trust store", root=True)]
    return [Step(("sudo", "rm", "-f", f"/usr/local/share/ca-certificates/{SYSTEM_NAME}"), "remove", root=True),
            Step(("sudo", "update-ca-certificates", "--fresh"), "rebuild the system trust store", root=True)]


def macos_install(cert: Path, home: Path) -> list[Step]:
    kc = str(home / "Library" / "Keychains" / "login.keychain-db")
    return [Step(("security", "add-trusted-cert", "-r", "trustRoot", "-p", "ssl", "-k", kc, str(cert)),
                 "trust the exifguard CA for websites (login keychain; macOS asks to confirm)")]


def macos_uninstall(subject: str, home: Path) -> list[Step]:
    kc = str(home / "Library" / "Keychains" / "login.keychain-db")
    return [Step(("security", "delete-certificate", "-c", subject, kc), "remove the exifguard CA",
                 may_fail=True)]


def windows_install(cer: Path) -> list[Step]:
    return [Step(("certutil", "-user", "-addstore", "Root", str(cer)),
                 "trust the exifguard CA (current user's Root store; Chrome and Edge use it)")]


def windows_uninstall(subject: str) -> list[Step]:
    return [Step(("certutil", "-user", "-delstore", "Root", subject), "remove the exifguard CA",
                 may_fail=True)]


def default_target() -> str:
    if sys.platform == "darwin":
        return "macos"
    if sys.platform.startswith("win"):
        return "windows"
    return "nss"


def plan(action: str, target: str, *, cert: Path, cer: Path, subject: str,
         nssdbs: list[Path] | None = None, home: Path | None = None) -> list[Step]:
    """All steps for install/uninstall on one target."""
    home = home or Path.home()
    if target == "auto":
        target = default_target()
    if target == "nss":
        dbs = nssdbs or nss_targets(home)
        steps: list[Step] = []
        for db in dbs:
            steps += nss_install(db, cert) if action == "install" else nss_uninstall(db)
        return steps
    if target == "system":
        return system_install(cert) if action == "install" else system_uninstall()
    if target == "macos":
        return macos_install(cert, home) if action == "install" else macos_uninstall(subject, home)
    if target == "windows":
        return windows_install(cer) if action == "install" else windows_uninstall(subject)
    raise ValueError(f"unknown target {target!r}: use auto, nss, system, macos or windows")


def system_installed() -> bool:
    """Is there an exifguard CA file in the system store (either distro layout)?"""
    return any(Path(d, SYSTEM_NAME).exists() for d in ("/usr/local/share/ca-certificates",
                                                       "/etc/pki/ca-trust/source/anchors"))


def run_steps(steps: list[Step], *, dry_run: bool, out=print, failed: list[Step] | None = None) -> int:
    """Run (or print) the steps; returns a process exit code.

    A `may_fail` step that fails does not stop the run; it is appended to `failed`
    when given, so a caller can tell "removed" from "there was nothing to remove".
    """
    import subprocess
    for s in steps:
        if dry_run:
            out(s.shell())
            continue
        if shutil.which(s.argv[0]) is None and s.argv[0] != "mkdir":
            out(f"exifguard: {s.argv[0]} not found; run this yourself:\n  {s.shell()}")
            if s.argv[0] == "certutil" and sys.platform.startswith("linux"):
                out("  (certutil comes with libnss3-tools: sudo apt install libnss3-tools)")
            return 1
        out(f"$ {s.shell()}")
        if s.argv[0] == "mkdir":
            os.makedirs(s.argv[-1], exist_ok=True)
            continue
        proc = subprocess.run(list(s.argv), capture_output=True, text=True)
        if proc.returncode != 0 and not s.may_fail:
            out(f"exifguard: failed ({proc.returncode}): {proc.stderr.strip()}")
            return proc.returncode
        if proc.returncode != 0 and failed is not None:
            failed.append(s)
    return 0
