"""Several `lobby serve` processes sharing one Redis and one SQLite user database.

`Instance` is one process on a fixed loopback port (so it comes back where it was):
`start()` waits until /healthz answers, `kill()` is a SIGKILL (a crash: no drain, no
lease given back), `start()` again is the restart. Its output goes to a file (a pipe
nobody reads would fill and stall it) that `log()` returns for failure messages.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import httpx

from lobby.store.db import connect
from lobby.store.users import UserStore
from tests.conftest import CHEAP_HASHER, PASSWORD, csrf_from
from tests.live import free_port
from tests.log_secrets import SECRETS
from tests.test_server import lobby_env

SECRET_KEY = "test-secret-key-0123456789"


def user_database(path: Path, names: list[str]) -> str:
    """A SQLite file with `names` as publishers (password PASSWORD); its path."""
    db = connect(str(path))
    users = UserStore(db, hasher=CHEAP_HASHER)
    for name in names:
        users.add(name, "PUBLISHER", PASSWORD)
    db.close()
    return str(path)


class Instance:
    def __init__(self, name: str, env: dict[str, str], logs: Path) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"
        self.env = lobby_env(LOBBY_SECRET_KEY=SECRET_KEY, **env)
        self.logs = logs
        self.proc: asyncio.subprocess.Process | None = None
        self.starts = 0

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self, timeout: float = 30.0) -> None:
        self.starts += 1
        out = (self.logs / f"{self.name}.{self.starts}.log").open("wb")
        self.proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "lobby", "serve", "--port", str(self.port)),
            env=self.env,
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )
        out.close()
        async with asyncio.timeout(timeout), httpx.AsyncClient(base_url=self.url) as http:
            while True:
                if self.proc.returncode is not None:
                    raise RuntimeError(f"{self.name} exited:\n{self.log()}")
                try:
                    if (await http.get("/healthz")).status_code == 200:
                        return
                except httpx.TransportError:
                    await asyncio.sleep(0.05)  # polling for readiness

    async def kill(self) -> None:
        """SIGKILL: gone at once, as a crash would be."""
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                await self.kill()
        for path in self.logs.glob(f"{self.name}.*.log"):
            SECRETS.add_output(path.read_text())  # checked for secrets at the end of the run

    def output(self) -> str:
        """What this process (its latest start) has printed so far."""
        path = self.logs / f"{self.name}.{self.starts}.log"
        return path.read_text() if path.exists() else ""

    def log(self) -> str:
        """The end of `output()`, for failure messages."""
        return self.output()[-4000:]


async def login(base_url: str, name: str, **client: object) -> str:
    """Log `name` in through the form; the session cookie's value (any instance accepts it:
    the sessions are in the shared database)."""
    async with httpx.AsyncClient(base_url=base_url, **client) as http:  # type: ignore[arg-type]
        token = csrf_from((await http.get("/")).text)
        reply = await http.post(
            "/login", data={"user": name, "pass": PASSWORD, "csrf_token": token}
        )
        assert reply.status_code == 303, reply.text
        cookie = next(v for k, v in reply.cookies.items() if k.endswith("lobby_session"))
        SECRETS.register(cookie, token)
        return cookie
