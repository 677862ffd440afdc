"""The one WebSocket endpoint, `/ws`: check session and Origin, then read and write.

Each socket is one coroutine, its reader; frames to it are written directly by
the hub (through the writer `lobby.web.uvicorn_adapter` puts in the scope), so no
writer task exists. When the reader ends, for any reason, the participant is
handed to the grace period exactly once, in `finally`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.responses import PlainTextResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from lobby import logs
from lobby.config import Settings
from lobby.handler import RequestHandler
from lobby.hub import FLOODED, WRITER_EXTENSION, Conn, FrameWriter
from lobby.rules import protocol, render
from lobby.rules.limits import TokenBucket
from lobby.rules.protocol import CloseCode
from lobby.store.db import UNAVAILABLE, Unavailable
from lobby.store.users import User
from lobby.web.state import state_of

log = logging.getLogger("lobby.web.socket")


async def lobby_socket(websocket: WebSocket) -> None:
    state = state_of(websocket)
    settings = state.settings
    # A draining instance takes no new sockets: the page tries again, elsewhere or later.
    if state.readiness.draining:
        await _deny(websocket, 503, "This server is restarting; please try again shortly.")
        return
    # The process cap comes first: a flood of handshakes costs no database work.
    if len(state.hub) >= settings.max_sockets:
        await _deny(websocket, 503, "This server is full; please try again shortly.")
        return
    try:
        current = state.auth.current(websocket)
    except Unavailable:  # the session cannot be checked: neither refused as unknown nor let in
        await _deny(websocket, 503, UNAVAILABLE)
        return
    writer = websocket.scope.get("extensions", {}).get(WRITER_EXTENSION)
    if writer is None:
        log.error("no direct frame writer: serve the app with lobby.server.uvicorn_config")
    if current is None or writer is None or not state.origins.socket_may_connect(websocket):
        await websocket.close()  # before accept: uvicorn answers HTTP 403
        return
    session_id, user = current
    # Counted for the whole cluster when instances share Redis (`lobby.cluster.quotas`).
    if not await state.sockets.admit(user.name):
        await _deny(websocket, 429, "Too many open lobby tabs; close some and reload.")
        return
    try:
        await _serve(websocket, session_id, user, writer)
    finally:
        state.sockets.release(user.name)


async def _serve(websocket: WebSocket, session_id: str, user: User, writer: FrameWriter) -> None:
    """An admitted socket, from its accept to its end."""
    state = state_of(websocket)
    await websocket.accept()
    closing: list[asyncio.Task[None]] = []  # a list: the smallest container, per socket

    def close(code: int, reason: str) -> None:
        # Closing is rare, so it may cost a task; sending never does.
        closing.append(asyncio.create_task(_close(websocket, code, reason)))

    conn = Conn(user.name, user.role, session_id, writer, close)
    # Every line logged about this socket, by us or the tasks its requests start, names it.
    with logs.bind(socket=conn.id, user=user.name):
        log.info("socket open")
        state.handler.connect(conn)
        try:
            await _read(websocket, conn, state.settings)
        except Exception:
            log.exception("socket of %s failed", user.name)
            conn.close(CloseCode.INTERNAL_ERROR, "internal error")
        finally:
            log.info(
                "socket closed (%s)",
                conn.close_code or "by the client",
                extra=_seat(state.handler, conn),
            )
            state.handler.disconnect(conn)
            if closing:
                await asyncio.wait(closing, timeout=1.0)


def _seat(handler: RequestHandler, conn: Conn) -> dict[str, str]:
    """The participant and room `conn` holds, as log ids (none when it is in no room)."""
    member = handler.presence.member_of(handler.socket_of(conn))
    return {} if member is None else {"participant": member.participant.id, "room": member.room}


async def _deny(websocket: WebSocket, status: int, message: str) -> None:
    """Refuse the upgrade with a real HTTP status and a sentence saying why."""
    await websocket.send_denial_response(PlainTextResponse(message, status_code=status))


async def _read(websocket: WebSocket, conn: Conn, settings: Settings) -> None:
    handler, metrics = state_of(websocket).handler, state_of(websocket).metrics
    clock = asyncio.get_running_loop().time
    bucket = TokenBucket(settings.message_rate, settings.message_burst, clock())
    max_bytes = settings.max_frame_bytes
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            if message.get(FLOODED):  # cut below the message level (lobby.web.uvicorn_adapter)
                metrics.flood_closed()
            return
        if not conn.open:
            continue  # closing: drain until the peer's close arrives
        if not bucket.take(clock()):
            if bucket.flooding:
                # Cut, not close: a flooder that ignores the close frame would
                # otherwise be read (and its frames thrown away) until uvicorn's
                # close timeout.
                conn.cut(CloseCode.FLOODING, "too many messages")
                metrics.flood_closed()
            else:
                metrics.rate_limited()
                conn.send(
                    render.error(
                        protocol.ProtocolError(
                            "rate_limited", "You are sending too fast; slow down."
                        )
                    )
                )
            continue
        text = message.get("text")
        if text is None:
            handler.handle(
                conn,
                protocol.ProtocolError(
                    "bad_request", "Binary frames are not accepted; send JSON text."
                ),
            )
            continue
        # uvicorn enforces the limit already (ws_max_size); this guards other servers.
        if len(text) > max_bytes or (len(text) * 4 > max_bytes and len(text.encode()) > max_bytes):
            conn.close(CloseCode.TOO_BIG, "frame too big")
            continue
        request = protocol.parse(text)
        if isinstance(request, protocol.Join):
            log.info("join requested", extra={"room": request.room})
        elif isinstance(request, protocol.Leave):
            log.info("leave requested", extra=_seat(handler, conn))
        handler.handle(conn, request)


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
        await websocket.close(code, reason)
