"""The one WebSocket endpoint, `/ws`: check session and Origin, then read and write.

Each socket runs a reader (this coroutine) and a writer task that drains the
connection's outbox; whichever ends first ends the other, and the participant
is handed to the grace period exactly once, in `finally`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from urllib.parse import urlsplit

from starlette.websockets import WebSocket, WebSocketDisconnect

from lobby import protocol
from lobby.hub import Conn
from lobby.state import state_of

log = logging.getLogger("lobby.ws")


def origin_allowed(websocket: WebSocket, allowed: tuple[str, ...]) -> bool:
    """Only our own pages (or configured ones) may open a cookie-authenticated socket."""
    origin = websocket.headers.get("origin", "").rstrip("/")
    if not origin:
        return False
    if origin in allowed:
        return True
    parts = urlsplit(origin)
    scheme = "https" if websocket.url.scheme == "wss" else "http"
    host = websocket.headers.get("host", "")
    return parts.scheme == scheme and parts.netloc.lower() == host.lower() and bool(host)


async def lobby_socket(websocket: WebSocket) -> None:
    state = state_of(websocket)
    current = state.auth.current(websocket)
    if current is None or not origin_allowed(websocket, state.settings.allowed_origins):
        await websocket.close()  # before accept: uvicorn answers HTTP 403
        return
    session_id, user = current
    await websocket.accept()
    conn = Conn(user.name, user.role, session_id)
    state.rooms.connect(conn)
    writer = asyncio.create_task(_write(websocket, conn))
    try:
        await _read(websocket, conn, state.settings.max_frame_bytes)
    except Exception:
        log.exception("socket of %s failed", user.name)
        conn.close(1011, "internal error")
    finally:
        state.rooms.disconnect(conn)
        conn.close(1000)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(writer, 1.0)


async def _read(websocket: WebSocket, conn: Conn, max_bytes: int) -> None:
    rooms = state_of(websocket).rooms
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        if not conn.open:
            continue  # closing: drain until the peer's close arrives
        text = message.get("text")
        if text is None:
            rooms.handle(
                conn,
                protocol.ProtocolError(
                    "bad_request", "Binary frames are not accepted; send JSON text."
                ),
            )
            continue
        # uvicorn enforces the limit already (ws_max_size); this guards other servers.
        if len(text) > max_bytes or (len(text) * 4 > max_bytes and len(text.encode()) > max_bytes):
            conn.close(1009, "frame too big")
            continue
        rooms.handle(conn, protocol.parse(text))


async def _write(websocket: WebSocket, conn: Conn) -> None:
    try:
        while (batch := await conn.take()) is not None:
            for text in batch:
                await websocket.send_text(text)
        await websocket.close(conn.close_code or 1000, conn.close_reason)
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass  # the peer is gone; the reader notices and cleans up
