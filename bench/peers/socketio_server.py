"""python-socketio as a reference: the same lobby frames as Socket.IO events.

`join` answers `token` to the requester and emits `joined` to everyone; `leave`
answers `ok` and emits `left` and `room_closed`; `ping` answers `pong`. Clients
connect straight over the WebSocket transport (`EIO=4&transport=websocket`).
Served by uvicorn as the lobby is (uvloop, httptools, sans-I/O WebSockets, no
compression, a 4096 backlog); Engine.IO pings are spaced out like the lobby's.
"""

from __future__ import annotations

import secrets
import sys
from typing import Any

import socketio  # type: ignore[import-untyped]  # no type hints
import uvicorn

sio = socketio.AsyncServer(
    async_mode="asgi", cors_allowed_origins="*", ping_interval=3600, ping_timeout=60
)
members: dict[str, tuple[str, dict[str, str]]] = {}


def participant(nickname: str) -> dict[str, str]:
    pid = "p_" + secrets.token_urlsafe(9)
    return {"id": pid, "user": "anonymous", "nickname": nickname, "role": "PUBLISHER"}


@sio.event  # type: ignore[untyped-decorator]
async def join(sid: str, data: dict[str, Any]) -> None:
    room, me = data.get("room", ""), participant(data.get("nickname", ""))
    members[sid] = (room, me)
    token = f"ws://media?sessionId={room}&token=tok_{secrets.token_hex(8)}"
    await sio.emit("token", {"ref": data.get("ref"), "room": room, "token": token}, to=sid)
    await sio.emit("joined", {"room": room, "participant": me})


@sio.event  # type: ignore[untyped-decorator]
async def leave(sid: str, data: dict[str, Any]) -> None:
    await sio.emit("ok", {"ref": data.get("ref")}, to=sid)
    if sid in members:
        room, me = members.pop(sid)
        await sio.emit("left", {"room": room, "participant": me, "reason": "left"})
        await sio.emit("room_closed", {"room": room})


@sio.event  # type: ignore[untyped-decorator]
async def ping(sid: str, data: dict[str, Any]) -> None:
    await sio.emit("pong", {"ref": data.get("ref")}, to=sid)


@sio.event  # type: ignore[untyped-decorator]
async def disconnect(sid: str, *args: Any) -> None:
    members.pop(sid, None)


app = socketio.ASGIApp(sio)

if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        backlog=4096,
        log_level="warning",
        lifespan="off",
        ws_per_message_deflate=False,
        ws_ping_interval=3600,
        ws_ping_timeout=60,
    )
