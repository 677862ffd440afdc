"""Where the pages' files are: the templates, the static files and the browser libraries.

A checkout (or its editable install) serves the repository's top-level `templates/` and
`static/`. A wheel carries the same two directories inside the package (pyproject.toml's
`force-include`), and the package's own copy wins, so an installed lobby never reads a
source tree that happens to lie beside it.

`static/vendor.json` names each browser library that comes from the npm registry: version,
checksum, the file in npm's tarball and its name under `static/vendor/`. `scripts/vendor.py`
fetches them there from the same manifest (never committed); a wheel carries those that were
fetched when it was built. `require` tells at start when the pages would load one that is
missing, instead of serving a page whose script answers 404.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lobby.web import MissingLibrary

PACKAGE = Path(__file__).resolve().parent.parent
STATIC_URL = "/static"


def _directory(name: str) -> Path:
    for place in (PACKAGE / name, PACKAGE.parent / name):
        if place.is_dir():
            return place
    raise FileNotFoundError(f"lobby's {name}/ is neither in {PACKAGE} nor beside it")


TEMPLATES = _directory("templates")
STATIC = _directory("static")


@dataclass(frozen=True, slots=True)
class Library:
    """A browser library from the npm registry, as `static/vendor.json` names it."""

    name: str
    version: str
    file: str  # its name under static/vendor/

    @property
    def path(self) -> Path:
        return STATIC / "vendor" / self.file

    @property
    def url(self) -> str:
        return f"{STATIC_URL}/vendor/{self.file}"


def libraries(manifest: Path = STATIC / "vendor.json") -> dict[str, Library]:
    """Every library of the manifest, by npm name."""
    found = {}
    for name, entry in json.loads(manifest.read_text()).items():
        version = entry["version"]
        found[name] = Library(name, version, entry["file"].replace("{version}", version))
    return found


LIBRARIES = libraries()
# The library the pages load for each kind of call (peer to peer needs none).
FOR_MEDIA = {"openvidu": LIBRARIES["openvidu-browser"], "livekit": LIBRARIES["livekit-client"]}


def require(media: str) -> None:
    """Raise `MissingLibrary` if the pages for `media` calls would load a file not here."""
    lib = FOR_MEDIA.get(media)
    if lib is None or lib.path.is_file():
        return
    raise MissingLibrary(
        f"the {media} back end needs {lib.name} {lib.version} in its pages, but {lib.path} is "
        "missing: in a checkout, run `make vendor` (it needs npm), and build a wheel only after"
    )
