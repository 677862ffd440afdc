"""The graceful drain: on SIGTERM, hand the sockets back a few at a time, then stop.

Left to itself, uvicorn answers SIGTERM by closing every socket at once (1012),
and 15,000 tabs reconnect to the other instance in the same second. `Draining`
is uvicorn's server with SIGTERM intercepted first: `drain` makes `/readyz` fail
at once (the load balancer stops sending new clients), has the socket endpoint
refuse new handshakes with 503, and closes the open sockets in batches spread
evenly over `LOBBY_DRAIN_SECONDS`, each with close code 1012 and a reason saying
to reconnect. Only then does uvicorn's own shutdown run.

Participants are not removed: a closed socket leaves its participant away for the
grace period, as any dropped socket does, and the page resumes it on whichever
instance it reaches (after a restart, the roster gives it back). Pages wait a
random few seconds before reconnecting (static/socket.js), which spreads the
reconnects further. A second SIGTERM, or SIGINT, stops at once as before.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Sequence
from types import FrameType

import uvicorn
from starlette.applications import Starlette

from lobby.hub import Conn
from lobby.rules.protocol import CloseCode
from lobby.web.state import AppState

log = logging.getLogger("lobby.web.drain")

REASON = "server restarting; reconnect"
TICK = 0.05  # seconds between two batches at most: 20 batches a second


async def drain(state: AppState) -> None:
    """Fail readiness, refuse new sockets, close the open ones over `drain_seconds`."""
    state.readiness.draining = True
    conns = list(state.hub)
    seconds = state.settings.drain_seconds
    log.warning("draining: closing %d sockets over %gs", len(conns), seconds)
    await close_in_batches(conns, seconds)


async def close_in_batches(conns: Sequence[Conn], seconds: float, *, tick: float = TICK) -> None:
    """Close `conns` with 1012 in equal batches, the last one `seconds` after the first."""
    if not conns:
        return
    batches = max(1, min(len(conns), round(seconds / tick)))
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(batches):
        # On a schedule rather than sleep after sleep: a slow batch does not push the rest.
        await asyncio.sleep(max(0.0, start + i * seconds / max(1, batches - 1) - loop.time()))
        for conn in conns[i * len(conns) // batches : (i + 1) * len(conns) // batches]:
            conn.close(CloseCode.RESTARTING, REASON)


class Draining(uvicorn.Server):
    """uvicorn's server, with SIGTERM answered by `drain` before uvicorn's own shutdown."""

    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self.app = app
        self._drain: asyncio.Task[None] | None = None  # kept: the loop holds tasks weakly
        self._drain_asked = False
        self._loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        loop = self._loop
        if sig != signal.SIGTERM or self._drain_asked or not self.started or loop is None:
            super().handle_exit(sig, frame)
            return
        self._drain_asked = True
        # A signal handler runs between two bytecodes of the loop's thread: start the
        # drain from the loop itself.
        loop.call_soon_threadsafe(self._start_drain, sig)

    def _start_drain(self, sig: int) -> None:
        self._drain = asyncio.get_running_loop().create_task(self._drain_then_exit(sig))

    async def _drain_then_exit(self, sig: int) -> None:
        try:
            await drain(self.app.state.lobby)
        finally:
            super().handle_exit(sig, None)
