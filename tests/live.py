"""Serve an ASGI app with a real uvicorn on a free loopback port, inside the test's loop."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn
from starlette.types import Receive, Scope, Send


def free_port() -> int:
    """A loopback port nothing listens on now (for servers the tests start themselves)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class QuietServer(uvicorn.Server):
    """A uvicorn server that leaves pytest's signal handlers alone."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class LiveServer:
    """`async with LiveServer(app) as srv:` serves `app` at `srv.http` / `srv.ws`.

    Extra keyword arguments go to `uvicorn.Config` (e.g. `ws_max_size`); pass a ready
    `config` instead to use the exact one production builds.
    """

    def __init__(self, app: Any = None, *, config: uvicorn.Config | None = None, **kw: Any) -> None:
        if config is None:
            kw.setdefault("log_level", "warning")
            kw.setdefault("lifespan", "on")
            config = uvicorn.Config(app, **kw)
        config.timeout_graceful_shutdown = config.timeout_graceful_shutdown or 2
        self.config = config
        self.port = 0
        self.http = ""
        self.ws = ""

    async def __aenter__(self) -> LiveServer:
        # Bind first and hand the socket to uvicorn: the port is known and free, no race.
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto
        # says TCP, and without it Nagle + delayed ACKs add ~40 ms to every request.
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.server = QuietServer(self.config)
        self.task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        while not self.server.started:
            if self.task.done():
                self.task.result()  # surface startup errors
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(0.005)
        self.http = f"http://127.0.0.1:{self.port}"
        self.ws = f"ws://127.0.0.1:{self.port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.should_exit = True
        await asyncio.wait_for(self.task, 15)
        self.sock.close()


class Recorder:
    """An ASGI app answering 200 to every request and recording its headers and body.

    What a webhook receiver sees, for checking what a stand-in sends.
    """

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.requests.append((headers, body))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})
