"""A lobby server that can stop and start again on the same port, like a restart.

The pages keep their URL (and so their cookies and origin) across the restart;
each start serves a fresh app over the same user store, so login sessions
survive the way they survive in the SQLite file of a real restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

from starlette.types import ASGIApp

from lobby.app import create_app, media_backend
from lobby.config import Settings
from lobby.server import uvicorn_config
from lobby.web.drain import drain
from tests.conftest import make_users, test_settings
from tests.live import QuietServer
from tests.openvidu_standin import OpenViduStandin


@contextlib.asynccontextmanager
async def restartable_lobby(
    standin: OpenViduStandin, **overrides: Any
) -> AsyncIterator[RestartableLobby]:
    """A started lobby on `standin` with the test settings changed by `overrides`; one user
    store (and roster) for every start, as a restart reads the same SQLite file."""
    settings = test_settings(standin, **overrides)
    users = make_users()
    server = RestartableLobby(
        lambda: create_app(settings, users=users, media=media_backend(settings)), settings
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


class RestartableLobby:
    """`await start()` / `await stop()`, any number of times, always at `http`."""

    def __init__(self, make_app: Callable[[], ASGIApp], settings: Settings) -> None:
        self.make_app = make_app
        self.settings = replace(settings, log_level="warning")
        self.port = 0
        self.http = ""
        self._server: QuietServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._sock: socket.socket | None = None
        self.app: ASGIApp | None = None

    async def start(self) -> None:
        # SO_REUSEADDR: the port is bindable again at once, despite connections in TIME_WAIT.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        self.http = f"http://127.0.0.1:{self.port}"
        self.app = self.make_app()
        server = QuietServer(uvicorn_config(self.app, self.settings))
        self._sock, self._server = sock, server
        self._task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            if self._task.done():
                self._task.result()  # surface startup errors
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(0.005)

    async def drain(self) -> None:
        """What SIGTERM does to `lobby serve` (`lobby.web.drain`), then stop."""
        if self.app is not None and self._server is not None:
            await drain(self.app.state.lobby)  # type: ignore[attr-defined]
        await self.stop()

    async def stop(self) -> None:
        if self._server is None or self._task is None or self._sock is None:
            return
        self._server.should_exit = True
        await asyncio.wait_for(self._task, 15)
        self._sock.close()
        self._server = self._task = self._sock = None
