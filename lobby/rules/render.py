"""The server's frames: events and replies rendered to the JSON text sent on a socket.

Each is rendered once, whatever the number of recipients (`lobby.hub` frames it once
too). `docs/protocol.md` describes every one; `tests/test_protocol.py` checks them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from lobby.rules import mediastate
from lobby.rules.chat import ChatLine
from lobby.rules.presence import (
    CallChanged,
    Event,
    Joined,
    Left,
    MediaChanged,
    Participant,
    RoomLocked,
)
from lobby.rules.protocol import ProtocolError, Ref

# Compact separators and raw UTF-8: every byte is paid once per socket.


def _dump(obj: dict[str, object]) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def participant_json(p: Participant) -> dict[str, object]:
    return {
        "id": p.id,
        "user": p.user,
        "nickname": p.nickname,
        "role": p.role,
        "call": p.call,
        "media": mediastate.to_json(p.media),
    }


def event(event: Event) -> str:
    if isinstance(event, Joined):
        return _dump(
            {
                "type": "joined",
                "room": event.room,
                "participant": participant_json(event.participant),
            }
        )
    if isinstance(event, Left):
        return _dump(
            {
                "type": "left",
                "room": event.room,
                "participant": participant_json(event.participant),
                "reason": event.reason,
            }
        )
    if isinstance(event, CallChanged):
        p = event.participant
        return _dump(
            {"type": "call_state", "room": event.room, "participant": p.id, "call": p.call}
        )
    if isinstance(event, RoomLocked):
        return _dump({"type": "room_locked", "room": event.room, "locked": event.locked})
    if isinstance(event, MediaChanged):
        p = event.participant
        return _dump(
            {
                "type": "media",
                "room": event.room,
                "participant": p.id,
                "media": mediastate.to_json(p.media),
            }
        )
    return _dump({"type": "room_closed", "room": event.room})


def welcome(
    user: str,
    role: str,
    rooms: list[tuple[str, list[Participant]]],
    *,
    media: dict[str, object],
    room_size: int | None,
    locked: frozenset[str] = frozenset(),
) -> str:
    return _dump(
        {
            "type": "welcome",
            "user": {"name": user, "role": role},
            "media": media,
            "room_size": room_size,
            "rooms": [
                {
                    "name": name,
                    "participants": [participant_json(p) for p in people],
                    "locked": name in locked,
                }
                for name, people in rooms
            ],
        }
    )


def token(ref: Ref, room: str, token: str, p: Participant, resume_key: str) -> str:
    return _dump(
        {
            "type": "token",
            "ref": ref,
            "room": room,
            "token": token,
            "participant": participant_json(p),
            "resume_key": resume_key,
        }
    )


def resumed(ref: Ref, room: str, p: Participant, token: str | None) -> str:
    reply: dict[str, object] = {
        "type": "resumed",
        "ref": ref,
        "room": room,
        "participant": participant_json(p),
    }
    if token is not None:
        reply["token"] = token
    return _dump(reply)


def taken_over(room: str, p: Participant) -> str:
    return _dump({"type": "taken_over", "room": room, "participant": participant_json(p)})


def kicked(room: str, by: str, reason: str) -> str:
    return _dump({"type": "kicked", "room": room, "by": by, "reason": reason})


def signal(sender: str, data: Mapping[str, object]) -> str:
    return _dump({"type": "signal", "from": sender, "data": data})


def chat_json(line: ChatLine) -> dict[str, object]:
    return {
        "type": "chat",
        "room": line.room,
        "from": participant_json(line.sender),
        "text": line.text,
        "at": line.at,
    }


def chat(line: ChatLine) -> str:
    return _dump(chat_json(line))


def chat_history(room: str, lines: list[ChatLine]) -> str:
    return _dump({"type": "chat_history", "room": room, "messages": [chat_json(x) for x in lines]})


def ok(ref: Ref) -> str:
    return _dump({"type": "ok", "ref": ref})


def pong(ref: Ref) -> str:
    return _dump({"type": "pong", "ref": ref})


def error(error: ProtocolError) -> str:
    return _dump({"type": "error", "ref": error.ref, "code": error.code, "message": error.message})
