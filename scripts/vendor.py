#!/usr/bin/env python3
"""Fetch the browser libraries that `static/vendor.json` names into `static/vendor/`.

Each comes from the npm registry (`npm pack NAME@VERSION`) at the manifest's version and
lands only if its sha256 matches; it is never committed. A file already in place with the
right checksum is kept, so npm is needed only for what is missing. Standard library only:
`make` runs this before, and apart from, the project's virtual environment.

    python3 scripts/vendor.py [NAME ...]   fetch these libraries (default: all) if missing
    python3 scripts/vendor.py --list       print the files it writes, one a line

`lobby.web.assets` reads the same manifest to name the files in the pages.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "static" / "vendor.json"
VENDOR = ROOT / "static" / "vendor"
PROG = "scripts/vendor.py"


@dataclass(frozen=True, slots=True)
class Library:
    name: str  # the npm package
    version: str
    sha256: str  # of the file, not of npm's tarball
    in_tarball: str
    file: str  # its name under static/vendor/
    purpose: str

    @property
    def path(self) -> Path:
        return VENDOR / self.file


def libraries() -> list[Library]:
    libs = []
    for name, entry in json.loads(MANIFEST.read_text()).items():
        version = entry["version"]
        libs.append(
            Library(
                name,
                version,
                entry["sha256"],
                entry["in_tarball"].replace("{version}", version),
                entry["file"].replace("{version}", version),
                entry["purpose"],
            )
        )
    return libs


def sha256_of(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except FileNotFoundError:
        return None


def fetch(lib: Library) -> None:
    """`lib.path` from the npm registry, checked; SystemExit with one sentence if it cannot."""
    npm = shutil.which("npm")
    if npm is None:
        raise SystemExit(
            f"{PROG}: npm is needed to fetch {lib.name} {lib.version} ({lib.purpose}) from the "
            "npm registry, and it is not installed; install it (on Debian: apt-get install npm) "
            "and try again."
        )
    with tempfile.TemporaryDirectory() as tmp:
        packed = subprocess.run(
            [npm, "pack", "--silent", f"{lib.name}@{lib.version}"],
            cwd=tmp,
            capture_output=True,
            text=True,
        )
        if packed.returncode != 0:
            raise SystemExit(
                f"{PROG}: npm could not fetch {lib.name}@{lib.version}:\n{packed.stderr.strip()}"
            )
        tarball = Path(tmp) / packed.stdout.strip().splitlines()[-1]
        with tarfile.open(tarball) as archive:
            member = archive.extractfile(lib.in_tarball)
            if member is None:
                raise SystemExit(f"{PROG}: {lib.in_tarball} is not a file in {tarball.name}")
            data = member.read()
    got = hashlib.sha256(data).hexdigest()
    if got != lib.sha256:
        raise SystemExit(
            f"{PROG}: {lib.name} {lib.version} has sha256 {got}, not {lib.sha256} as "
            f"{MANIFEST.relative_to(ROOT)} says; not installed."
        )
    VENDOR.mkdir(parents=True, exist_ok=True)
    # Write beside it and rename: an interrupted fetch never leaves half a file in place.
    partial = lib.path.with_name(lib.path.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, lib.path)
    print(f"{PROG}: fetched {lib.path.relative_to(ROOT)}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Fetch the browser libraries of static/vendor.json."
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="npm package (default: all)")
    parser.add_argument("--list", action="store_true", help="print the files and exit")
    args = parser.parse_args(argv)
    libs = libraries()
    unknown = set(args.names) - {lib.name for lib in libs}
    if unknown:
        parser.error(f"not in {MANIFEST.relative_to(ROOT)}: {', '.join(sorted(unknown))}")
    chosen = [lib for lib in libs if not args.names or lib.name in args.names]
    for lib in chosen:
        if args.list:
            print(lib.path.relative_to(ROOT))
        elif sha256_of(lib.path) != lib.sha256:
            fetch(lib)
    return 0


if __name__ == "__main__":
    sys.exit(main())
