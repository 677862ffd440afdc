"""`python -m bench.livekit_stub PORT`: LiveKit's RoomService, every call answered at once.

A LiveKit join makes no call: the lobby signs the token itself. It calls RoomService
only around it: RemoveParticipant when someone leaves, DeleteRoom when a room empties,
ListRooms for `/healthz`. This stand-in answers every POST to
`/twirp/livekit.RoomService/<Method>` that carries a bearer token with 200 and an empty
body, which is an empty message of any type (no rooms; nobody left to remove). It runs
on the OpenVidu stub's sockets and keeps the same log (`bench.openvidu_stub`), so the
bench sees any call that falls inside a join.

It checks no token and keeps no rooms: `tests/livekit_standin.py` is the faithful
stand-in; this one is only fast, and known.
"""

from __future__ import annotations

import sys
from typing import Any

import uvloop

from bench.openvidu_stub import Http, serve

PREFIX = "/twirp/livekit.RoomService/"


class RoomService:
    def __init__(self) -> None:
        self.log: list[tuple[str, str, str, int, int, int]] = []
        self.connections: set[Http] = set()

    def handle(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, Any]:
        if not headers.get("authorization", "").startswith("Bearer "):
            return 401, None
        return (200, None) if method == "POST" and path.startswith(PREFIX) else (404, None)


if __name__ == "__main__":
    uvloop.run(serve(RoomService(), int(sys.argv[1])))
