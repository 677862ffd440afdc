"""The lobby under test: one `python -m lobby serve` process per case, and what it costs.

`Bench` gives each case a fresh process (its own copy of the provisioned database, the
case's settings on top of the defaults) and stops it afterwards whatever happened;
`Server` reads its memory and CPU from /proc; `LogStats` sums up its log.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.hostile.accounts import provision
from bench.hostile.figures import now
from bench.hostile.raw_client import Msg
from bench.hostile.tcp import raw_connect
from bench.procs import ROOT, cpu_split, free_port, rss_kib
from tests.openvidu_standin import OpenViduStandin


@dataclass
class Server:
    """A `python -m lobby serve` process."""

    name: str
    port: int
    proc: asyncio.subprocess.Process
    log: Path

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss(self) -> int:
        return rss_kib(self.proc.pid)

    def cpu(self) -> float:
        """User + system CPU time of every thread."""
        return sum(cpu_split(self.proc.pid))

    async def readyz(self) -> Msg:
        """`/readyz` as loopback sees it: the counts too. Not raised for a 503: a failing
        check (the media server in a hostile run) does not make the counts wrong."""
        async with httpx.AsyncClient(base_url=self.http, timeout=30) as http:
            reply = await http.get("/readyz")
            answer: Msg = reply.json()
            return answer

    async def healthz_latency(self) -> float:
        """Seconds for a fresh connection to get a whole `/healthz` answer (raw: no client
        library set-up in the number)."""
        loop = asyncio.get_running_loop()
        began = now()
        sock = await raw_connect(self.port)
        try:
            request = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            await loop.sock_sendall(sock, (request + "Connection: close\r\n\r\n").encode())
            answer = b""
            while chunk := await loop.sock_recv(sock, 4096):
                answer += chunk
        finally:
            sock.close()
        if not answer.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"/healthz answered {answer[:40]!r}")
        return now() - began

    async def settled_rss(self, wait: float = 0.5) -> int:
        await asyncio.sleep(wait)
        return self.rss()


class RssPeak:
    """Samples a server's RSS in the background; `peak` is the largest seen."""

    def __init__(self, server: Server, every: float = 0.02) -> None:
        self.server = server
        self.every = every
        self.peak = server.rss()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(OSError):
                self.peak = max(self.peak, self.server.rss())
            await asyncio.sleep(self.every)

    async def __aenter__(self) -> RssPeak:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class Bench:
    """What every case gets: the stand-in, the provisioned cookies, and fresh servers."""

    def __init__(self, tmp: Path, standin: OpenViduStandin) -> None:
        self.tmp = tmp
        self.standin = standin
        self.template = tmp / "template.sqlite3"
        self.cookies = provision(self.template)
        self.secret_key = secrets.token_urlsafe(32)
        self.logs: dict[str, LogStats] = {}  # per server; a case may take its own out

    @contextlib.asynccontextmanager
    async def server(self, name: str, **settings: str) -> AsyncIterator[Server]:
        """A fresh lobby process (own database copy) with `settings` on top of the defaults."""
        database_path = self.tmp / f"{name}.sqlite3"
        shutil.copyfile(self.template, database_path)
        self.standin.reset()
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LOBBY_", "OPENVIDU_"))}
        env.update(
            LOBBY_DATABASE=str(database_path),
            LOBBY_SECRET_KEY=self.secret_key,
            OPENVIDU_URL=self.standin.url,
            OPENVIDU_SECRET="MY_SECRET",
            LOBBY_HOST="127.0.0.1",
            LOBBY_PORT=str(port),
            LOBBY_LOG_LEVEL="warning",
            PYTHONUNBUFFERED="1",
        )
        env.update(settings)
        log = self.tmp / f"{name}.log"
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "lobby",
                "serve",
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        server = Server(name, port, proc, log)
        try:
            await _ready(server)
            yield server
        finally:
            await _stop(server)
            self.logs[name] = LogStats.of(server.log)

    def log_findings(self) -> list[str]:
        return [
            f"`{name}` server: {log.errors:,} ERROR line(s) and {log.tracebacks:,} "
            f"traceback(s) in its log, first: `{log.first_error}` … `{log.first_exception}`"
            for name, log in self.logs.items()
            if log.errors or log.tracebacks
        ]


@dataclass
class LogStats:
    size: int
    lines: int
    errors: int
    tracebacks: int
    first_error: str
    first_exception: str  # the last line of the first traceback

    @classmethod
    def of(cls, path: Path) -> LogStats:
        text = path.read_text(errors="replace")
        lines = text.splitlines()
        errors = [line for line in lines if line.startswith("ERROR") or " ERROR " in line]
        starts = [i for i, line in enumerate(lines) if line.startswith("Traceback")]
        exception = ""
        if starts:
            rest = lines[starts[0] + 1 :]
            exception = next((line for line in rest if not line.startswith(" ")), "")
        return cls(
            len(text.encode()),
            len(lines),
            len(errors),
            len(starts),
            errors[0] if errors else "",
            exception,
        )


async def _ready(server: Server, within: float = 20.0) -> None:
    deadline = now() + within
    async with httpx.AsyncClient(base_url=server.http) as http:
        while now() < deadline:
            if server.proc.returncode is not None:
                tail = server.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the lobby exited with {server.proc.returncode}:\n{tail}")
            with contextlib.suppress(httpx.TransportError):
                if (await http.get("/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.05)
    raise RuntimeError(f"the lobby did not answer /healthz within {within:g} s")


async def _stop(server: Server) -> None:
    """SIGTERM (uvicorn's graceful shutdown), SIGKILL if it takes over 10 s."""
    if server.proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        server.proc.terminate()
    try:
        await asyncio.wait_for(server.proc.wait(), 10)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            server.proc.kill()
        await server.proc.wait()
