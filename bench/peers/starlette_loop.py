"""The common Starlette tutorial broadcast: `for ws in clients: await ws.send_text(...)`.

Same frames as the lobby (a `welcome`, `token` for the requester, then `joined`
to everyone; `leave` answers `ok` and broadcasts `left` and `room_closed`;
`ping` answers `pong`), no authentication, no rooms. The event is encoded
once; each send is awaited in turn, as every tutorial does, so a recipient
whose buffers are full holds up the loop. The one deviation: a send to a socket
that has just gone away is skipped instead of ending the broadcaster's loop.

Served by uvicorn as the lobby is: uvloop, httptools, the default (sans-I/O)
WebSocket implementation, no compression, a 4096 backlog.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

clients: set[WebSocket] = set()


def dump(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"))


def participant(nickname: str) -> dict[str, str]:
    pid = "p_" + secrets.token_urlsafe(9)
    return {"id": pid, "user": "anonymous", "nickname": nickname, "role": "PUBLISHER"}


async def broadcast(text: str) -> None:
    for ws in list(clients):
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            await ws.send_text(text)


async def endpoint(ws: WebSocket) -> None:
    await ws.accept()
    await ws.send_text(dump({"type": "welcome", "user": {"name": "anonymous"}, "rooms": []}))
    clients.add(ws)
    me: dict[str, str] | None = None
    room = ""
    try:
        while True:
            msg = json.loads(await ws.receive_text())
            kind, ref = msg.get("type"), msg.get("ref")
            if kind == "join":
                me, room = participant(msg.get("nickname", "")), msg.get("room", "")
                token = f"ws://media?sessionId={room}&token=tok_{secrets.token_hex(8)}"
                await ws.send_text(
                    dump({"type": "token", "ref": ref, "room": room, "token": token})
                )
                await broadcast(dump({"type": "joined", "room": room, "participant": me}))
            elif kind == "leave":
                await ws.send_text(dump({"type": "ok", "ref": ref}))
                if me is not None:
                    left = {"type": "left", "room": room, "participant": me, "reason": "left"}
                    await broadcast(dump(left))
                    await broadcast(dump({"type": "room_closed", "room": room}))
                    me = None
            elif kind == "ping":
                await ws.send_text(dump({"type": "pong", "ref": ref}))
    except WebSocketDisconnect:
        pass
    finally:
        clients.discard(ws)


app = Starlette(routes=[WebSocketRoute("/ws", endpoint)])

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
