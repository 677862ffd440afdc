"""The wire format: client frames in, server frames out.

`parse` turns one text frame into a typed request or a `ProtocolError` (never an
exception); `lobby.rules.render` turns events and replies into the JSON text sent
on the socket.
`docs/protocol.md` is the contract; `tests/test_docs.py` keeps the two in step
through `CLIENT_TYPES`, `SERVER_TYPES`, `ERROR_CODES` and `CloseCode`.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from lobby.rules import chat, mediastate, signalling
from lobby.rules.mediastate import MediaState
from lobby.rules.presence import (
    CallState,
)

Ref = str | int | float | None

CLIENT_TYPES = (
    "join",
    "leave",
    "resume",
    "ping",
    "signal",
    "call_state",
    "kick",
    "close_room",
    "lock_room",
    "media",
    "chat",
)
SERVER_TYPES = (
    "welcome",
    "token",
    "resumed",
    "joined",
    "left",
    "room_closed",
    "taken_over",
    "call_state",
    "media",
    "signal",
    "kicked",
    "room_locked",
    "chat",
    "chat_history",
    "ok",
    "pong",
    "error",
)
ERROR_CODES = (
    "bad_request",
    "unknown_type",
    "invalid_room",
    "invalid_nickname",
    "already_joined",
    "busy",
    "cancelled",
    "media_unavailable",
    "resume_failed",
    "room_full",
    "invalid_signal",
    "unknown_peer",
    "not_allowed",
    "invalid_chat",
    "not_in_room",
    "rate_limited",
    "cluster_unavailable",
    "not_found",
    "banned",
    "room_locked",
    "room_closed",
    "internal_error",
)


class CloseCode(IntEnum):
    """Every close code the server sends or a client may see (`docs/protocol.md`)."""

    NORMAL = 1000
    GOING_AWAY = 1001
    FLOODING = 1008
    TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    RESTARTING = 1012
    SESSION_ENDED = 4001
    TOO_SLOW = 4008


MAX_REF_LENGTH = 64
MAX_SAFE_INTEGER = 2**53 - 1
MAX_NICKNAME = 40
# Combining marks stack on the character before them: a few make accents and
# Indic or Thai vowels, dozens make a name that bleeds over the rows around it.
MAX_MARKS_IN_A_ROW = 4
MAX_MARKS = 12
# Letters and symbols that draw nothing: a nickname of these alone looks blank
# (the Hangul fillers and the braille blank; invisible marks count as marks).
BLANKS = frozenset("\u115f\u1160\u3164\uffa0\u2800")
NICKNAME_RULE = (
    "Nicknames are 1 to 40 printable characters with at least one visible, "
    f"and at most {MAX_MARKS_IN_A_ROW} combining marks in a row ({MAX_MARKS} in all)."
)
ROOM_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_PARTICIPANT_ID = 64
MAX_REASON = 200


@dataclass(frozen=True, slots=True)
class Join:
    ref: Ref
    room: str
    nickname: str


@dataclass(frozen=True, slots=True)
class Leave:
    ref: Ref


@dataclass(frozen=True, slots=True)
class Resume:
    ref: Ref
    key: str
    token: bool


@dataclass(frozen=True, slots=True)
class Ping:
    ref: Ref


@dataclass(frozen=True, slots=True)
class Signal:
    """Signalling for participant `to`; `data` holds only the fields we checked."""

    ref: Ref
    to: str
    data: dict[str, object]
    sends_media: bool  # a description whose audio or video would go out


@dataclass(frozen=True, slots=True)
class CallReport:
    """The page's report of its own call: in it, or its media connection lost."""

    ref: Ref
    call: CallState


@dataclass(frozen=True, slots=True)
class Chat:
    """A chat message for the sender's room; `text` is trimmed and checked."""

    ref: Ref
    text: str


# What a page may report: `connecting` is the server's own starting point.
REPORTABLE: tuple[CallState, ...] = ("connected", "dropped")


@dataclass(frozen=True, slots=True)
class Kick:
    """A moderator removes `participant` from `room`; `reason` is trimmed, maybe empty."""

    ref: Ref
    room: str
    participant: str
    reason: str


@dataclass(frozen=True, slots=True)
class CloseRoom:
    ref: Ref
    room: str


@dataclass(frozen=True, slots=True)
class LockRoom:
    ref: Ref
    room: str
    locked: bool


Moderation = Kick | CloseRoom | LockRoom


@dataclass(frozen=True, slots=True)
class MediaReport:
    """The page's report of what it sends: camera, microphone, a shared screen."""

    ref: Ref
    media: MediaState


Request = (
    Join
    | Leave
    | Resume
    | Ping
    | Signal
    | CallReport
    | Kick
    | CloseRoom
    | LockRoom
    | MediaReport
    | Chat
)


@dataclass(frozen=True, slots=True)
class ProtocolError:
    """A request that cannot be served, with a stable code and a human sentence."""

    code: str
    message: str
    ref: Ref = None


def parse(text: str) -> Request | ProtocolError:
    """Parse one client frame; anything malformed becomes a `ProtocolError`."""
    try:
        frame = json.loads(text)
    except (ValueError, RecursionError):
        return ProtocolError("bad_request", "Frames must be JSON objects.")
    if not isinstance(frame, dict):
        return ProtocolError("bad_request", "Frames must be JSON objects.")
    ref = frame.get("ref")
    if not _valid_ref(ref):
        return ProtocolError(
            "bad_request", "'ref' must be a string of up to 64 characters or a number."
        )
    kind = frame.get("type")
    if not isinstance(kind, str):
        return ProtocolError("bad_request", "Frames need a string 'type'.", ref)
    if kind == "join":
        return _parse_join(frame, ref)
    if kind == "leave":
        return Leave(ref)
    if kind == "resume":
        return _parse_resume(frame, ref)
    if kind == "ping":
        return Ping(ref)
    if kind == "signal":
        return _parse_signal(frame, ref)
    if kind == "call_state":
        return _parse_call_report(frame, ref)
    if kind in ("kick", "close_room", "lock_room"):
        return _parse_moderation(kind, frame, ref)
    if kind == "media":
        checked = mediastate.check(frame)
        if isinstance(checked, str):
            return ProtocolError("bad_request", checked, ref)
        return MediaReport(ref, checked)
    if kind == "chat":
        return _parse_chat(frame, ref)
    shown = kind if len(kind) <= 32 else kind[:32] + "…"
    return ProtocolError("unknown_type", f"Unknown message type {shown!r}.", ref)


def _valid_ref(ref: object) -> bool:
    if ref is None:
        return True
    if isinstance(ref, str):  # echoed back, so it must be sendable: no lone surrogates
        return len(ref) <= MAX_REF_LENGTH and signalling.is_utf8(ref)
    if isinstance(ref, bool):  # an int subclass, but `true` is no request number
        return False
    if isinstance(ref, int):  # what a JavaScript number holds exactly
        return abs(ref) <= MAX_SAFE_INTEGER
    return isinstance(ref, float) and math.isfinite(ref)


def _parse_join(frame: dict[str, Any], ref: Ref) -> Join | ProtocolError:
    room, nickname = frame.get("room"), frame.get("nickname")
    if not isinstance(room, str) or not isinstance(nickname, str):
        return ProtocolError(
            "bad_request", "'join' needs string fields 'room' and 'nickname'.", ref
        )
    if not valid_room(room):
        return ProtocolError(
            "invalid_room", "Room names are 1 to 64 letters, digits, '_' or '-'.", ref
        )
    cleaned = clean_nickname(nickname)
    if cleaned is None:
        return ProtocolError("invalid_nickname", NICKNAME_RULE, ref)
    return Join(ref, room, cleaned)


def _parse_resume(frame: dict[str, Any], ref: Ref) -> Resume | ProtocolError:
    key, token = frame.get("key"), frame.get("token", False)
    if not isinstance(key, str) or not key or len(key) > 128 or not key.isascii():
        return ProtocolError("bad_request", "'resume' needs the string 'key' from your token.", ref)
    if not isinstance(token, bool):
        return ProtocolError("bad_request", "'token' must be true or false.", ref)
    return Resume(ref, key, token)


def _parse_signal(frame: dict[str, Any], ref: Ref) -> Signal | ProtocolError:
    to, data = frame.get("to"), frame.get("data")
    if not isinstance(to, str) or not 0 < len(to) <= MAX_PARTICIPANT_ID or not to.isascii():
        return ProtocolError("bad_request", "'signal' needs the participant id 'to'.", ref)
    if not isinstance(data, dict):
        return ProtocolError("invalid_signal", "'signal' needs an object 'data'.", ref)
    checked = signalling.check(data)
    if isinstance(checked, str):
        return ProtocolError("invalid_signal", checked, ref)
    return Signal(ref, to, checked, signalling.sends_media(checked))


def _parse_call_report(frame: dict[str, Any], ref: Ref) -> CallReport | ProtocolError:
    call = frame.get("call")
    for state in REPORTABLE:  # the literal itself, so the type is the narrow one
        if call == state:
            return CallReport(ref, state)
    return ProtocolError(
        "bad_request", "'call_state' needs 'call': \"connected\" or \"dropped\".", ref
    )


def _parse_moderation(kind: str, frame: dict[str, Any], ref: Ref) -> Moderation | ProtocolError:
    room = frame.get("room")
    if not isinstance(room, str):
        return ProtocolError("bad_request", f"'{kind}' needs the string field 'room'.", ref)
    if not valid_room(room):
        return ProtocolError(
            "invalid_room", "Room names are 1 to 64 letters, digits, '_' or '-'.", ref
        )
    if kind == "close_room":
        return CloseRoom(ref, room)
    if kind == "lock_room":
        locked = frame.get("locked")
        if not isinstance(locked, bool):
            return ProtocolError("bad_request", "'lock_room' needs 'locked': true or false.", ref)
        return LockRoom(ref, room, locked)
    to, reason = frame.get("participant"), frame.get("reason", "")
    if not isinstance(to, str) or not 0 < len(to) <= MAX_PARTICIPANT_ID or not to.isascii():
        return ProtocolError("bad_request", "'kick' needs the participant id 'participant'.", ref)
    cleaned = None if not isinstance(reason, str) else clean_reason(reason)
    if cleaned is None:
        return ProtocolError(
            "bad_request",
            f"'reason' must be a string of up to {MAX_REASON} printable characters.",
            ref,
        )
    return Kick(ref, room, to, cleaned)


def clean_reason(reason: str) -> str | None:
    """A kick's reason with outer spaces trimmed (maybe empty), or None if unacceptable."""
    cleaned = reason.strip()
    if len(cleaned) <= MAX_REASON and cleaned.isprintable() and _legible(cleaned or "x"):
        return cleaned
    return None


def _parse_chat(frame: dict[str, Any], ref: Ref) -> Chat | ProtocolError:
    text = frame.get("text")
    if not isinstance(text, str):
        return ProtocolError("bad_request", "'chat' needs a string 'text'.", ref)
    cleaned = chat.clean_text(text)
    if cleaned is None:
        return ProtocolError("invalid_chat", chat.CHAT_RULE, ref)
    return Chat(ref, cleaned)


def valid_room(room: str) -> bool:
    return ROOM_PATTERN.fullmatch(room) is not None


def clean_nickname(nickname: str) -> str | None:
    """The nickname with outer spaces trimmed, or None when it is not acceptable.

    `isprintable` already refuses control and format characters (Cf: zero-width
    spaces, direction overrides) and every space but U+0020.
    """
    cleaned = nickname.strip()
    if 1 <= len(cleaned) <= MAX_NICKNAME and cleaned.isprintable() and _legible(cleaned):
        return cleaned
    return None


def _legible(text: str) -> bool:
    """Something visible, and combining marks few enough not to smear over the page."""
    visible = False
    in_a_row = in_all = 0
    for char in text:
        if unicodedata.category(char) in ("Mn", "Me"):
            in_a_row += 1
            in_all += 1
            if in_a_row > MAX_MARKS_IN_A_ROW or in_all > MAX_MARKS:
                return False
        else:
            in_a_row = 0
            visible = visible or (char != " " and char not in BLANKS)
    return visible
