"""The pages' files: the vendored library the page loads is the one the fetch script writes,
and a wheel installed in a fresh venv serves the pages and static files from itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.conftest import Lobby, LobbyFactory, csrf_from
from tests.live import free_port
from tests.test_server import lobby_env

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = json.loads((ROOT / "static" / "vendor.json").read_text())


def script_urls(html: str) -> list[str]:
    return re.findall(r'<script[^>]* src="([^"]+)"', html)


@pytest.mark.parametrize(
    ("media", "library"), [("openvidu", "openvidu-browser"), ("livekit", "livekit-client")]
)
async def test_the_page_loads_the_file_the_fetch_script_writes(
    make_lobby: LobbyFactory, media: str, library: str
) -> None:
    lobby: Lobby = await make_lobby(media=media)
    cookie = await lobby.login("alice")
    async with httpx.AsyncClient(base_url=lobby.http, cookies={"lobby_session": cookie}) as http:
        page = await http.get("/lobby")
        [url, _] = script_urls(page.text)  # the call's library, then lobby.js
        served = await http.get(url)
    # The script's own list of what it writes, from a real run of it.
    script = await asyncio.create_subprocess_exec(
        sys.executable,
        ROOT / "scripts" / "vendor.py",
        "--list",
        library,
        stdout=asyncio.subprocess.PIPE,
    )
    listed, _ = await asyncio.wait_for(script.communicate(), 30)
    assert script.returncode == 0
    assert listed.decode().splitlines() == [url.removeprefix("/")]
    assert served.status_code == 200, f"{url}: fetch it with `make vendor`"
    sha256 = MANIFEST[library]["sha256"]
    assert hashlib.sha256(served.content).hexdigest() == sha256


async def test_peer_to_peer_pages_load_no_library(make_lobby: LobbyFactory) -> None:
    lobby: Lobby = await make_lobby(media="p2p")
    cookie = await lobby.login("alice")
    async with httpx.AsyncClient(base_url=lobby.http, cookies={"lobby_session": cookie}) as http:
        page = await http.get("/lobby")
    assert script_urls(page.text) == ["/static/lobby.js"]


# --- the wheel, installed ------------------------------------------------------------------


def uv() -> str:
    """uv as the Makefile finds it: on the PATH, else the copy `make install` bootstrapped."""
    found = shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")
    assert Path(found).exists(), "no uv on the PATH nor in .tools/bin: run `make install`"
    return found


def run(*command: str | Path, cwd: Path = ROOT) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    done = subprocess.run(
        [str(c) for c in command],
        cwd=cwd,
        env=env | {"UV_PYTHON_DOWNLOADS": "never"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}{done.stderr}"
    return done.stdout


def install_wheel(tmp: Path) -> Path:
    """Build the wheel and install it into a fresh venv with the lock's versions; its bin/."""
    run(uv(), "build", "--wheel", "--quiet", "--out-dir", tmp / "dist", ROOT)
    [wheel] = (tmp / "dist").glob("lobby-*.whl")
    pins = tmp / "pins.txt"
    run(
        uv(), "export", "--frozen", "--no-dev", "--no-emit-project", "--no-hashes", "-q", "-o", pins
    )
    run(uv(), "venv", "--quiet", "--python", sys.executable, tmp / "venv")
    python = tmp / "venv" / "bin" / "python"
    run(uv(), "pip", "install", "--quiet", "--python", python, "--constraints", pins, wheel)
    return python.parent


@contextmanager
def serving(lobby: Path, cwd: Path, env: dict[str, str]) -> Iterator[httpx.Client]:
    """`lobby serve --demo` run from `cwd`, once it answers; prints its output on a failure."""
    port = free_port()
    log = cwd / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [lobby, "serve", "--demo", "--port", str(port)],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if http.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "lobby serve did not answer in 30 s"
                try:
                    proc.wait(0.05)  # also the pause between tries
                except subprocess.TimeoutExpired:
                    continue
                raise AssertionError(f"lobby serve exited with {proc.returncode}")
            yield http
    except BaseException:
        print(f"--- lobby serve's output:\n{log.read_text()}")
        raise
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_the_installed_wheel_serves_its_own_pages_and_files(tmp_path: Path) -> None:
    bin_dir = install_wheel(tmp_path)
    venv = bin_dir.parent
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    found = run(
        bin_dir / "python",
        "-c",
        "import lobby; from lobby.web import assets; "
        "print(lobby.__file__, assets.TEMPLATES, assets.STATIC, sep='\\n')",
        cwd=elsewhere,
    )
    for path in map(Path, found.splitlines()):
        assert path.is_relative_to(venv), path
        assert not path.is_relative_to(ROOT), path

    # OpenVidu at an address where nothing listens: the pages load openvidu-browser anyway.
    env = lobby_env(
        LOBBY_DATABASE=str(elsewhere / "lobby.sqlite3"),
        LOBBY_MEDIA="openvidu",
        OPENVIDU_URL=f"http://127.0.0.1:{free_port()}",
    )
    env.pop("PYTHONPATH", None)
    with serving(bin_dir / "lobby", elsewhere, env) as http:
        login = http.get("/")
        assert login.status_code == 200
        token = csrf_from(login.text)
        http.post("/login", data={"user": "publisher1", "pass": "pass", "csrf_token": token})
        page = http.get("/lobby")
        assert page.status_code == 200
        [library, script] = script_urls(page.text)
        assert script == "/static/lobby.js"
        assert http.get(script).content == (ROOT / "static" / "lobby.js").read_bytes()
        bundle = http.get(library)
        assert bundle.status_code == 200
        sha256 = MANIFEST["openvidu-browser"]["sha256"]
        assert hashlib.sha256(bundle.content).hexdigest() == sha256
        # The wheel carries every library `make vendor` fetched: LiveKit's too.
        livekit = MANIFEST["livekit-client"]
        name = livekit["file"].replace("{version}", livekit["version"])
        other = http.get(f"/static/vendor/{name}")
        assert hashlib.sha256(other.content).hexdigest() == livekit["sha256"]

    # A wheel built without the bundle: the server says so at start instead of serving 404s.
    [installed] = venv.glob(f"lib/python*/site-packages/lobby{library}")
    installed.unlink()
    refused = subprocess.run(
        [bin_dir / "lobby", "serve", "--demo"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2, refused.stderr
    version = MANIFEST["openvidu-browser"]["version"]
    assert refused.stderr == (
        f"lobby: the openvidu back end needs openvidu-browser {version} in its pages, "
        f"but {installed.resolve()} is missing: "
        "in a checkout, run `make vendor` (it needs npm), and build a wheel only after\n"
    )


def test_the_stylesheet_closes_every_block_it_opens() -> None:
    """A lost `}` (a merge, a hasty edit) is no syntax error to a browser: with CSS
    nesting it quietly turns every later rule into a nested one that matches nothing."""
    text = re.sub(r"/\*.*?\*/", "", (ROOT / "static" / "style.css").read_text(), flags=re.S)
    depth = 0
    for number, line in enumerate(text.splitlines(), 1):
        depth += line.count("{") - line.count("}")
        assert depth >= 0, f"style.css: a '}}' with no block open, line {number} (comments out)"
    assert depth == 0, f"style.css: {depth} block(s) never closed"
