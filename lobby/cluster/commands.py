"""Presence changes as values: what an instance asks for, in the log every replica applies.

A command names sockets by their cluster-wide id (`"<instance>:<conn id>"`) and
grants only by their revoke handle (the media connection id): the log is shared,
so it never carries a call token or a resume key in clear (keys are digests).

Pure: stdlib only. `encode`/`decode` give the JSON text a log entry holds.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any, Final

from lobby.rules import mediastate
from lobby.rules.mediastate import MediaState
from lobby.rules.presence import CallState, LeaveReason, Participant

Handle = str | None  # a grant's revoke handle (media connection id); None: no grant now


@dataclass(frozen=True, slots=True)
class Join:
    """A new participant held by `socket` enters `room` (at most `limit` people; 0: none)."""

    socket: str
    participant: Participant
    room: str
    resume_key: str  # a digest
    handle: Handle
    limit: int = 0
    # How many times a moderator had closed `room` when the join began (its issuer's
    # replica): a join still in flight across a close is refused by every replica.
    closes: int = 0
    # The `Reserve` this join follows ("": none): refused if that reservation ended
    # meanwhile (its instance declared down, Redis lost it), as the room may have closed.
    reservation: str = ""


@dataclass(frozen=True, slots=True)
class Leave:
    socket: str
    reason: LeaveReason = "left"


@dataclass(frozen=True, slots=True)
class Disconnect:
    """`socket` closed: its participant is away until resumed or expired."""

    socket: str


@dataclass(frozen=True, slots=True)
class Resume:
    socket: str
    resume_key: str  # a digest
    user: str


@dataclass(frozen=True, slots=True)
class Expire:
    """The grace period of an away participant ended; a no-op if it came back meanwhile.

    `since` is when it went away (ms), as the expiry duty read it: if it came back and
    went away again before this applies, its new grace period is left alone.
    """

    participant_id: str
    since: int | None = None  # None: whenever


@dataclass(frozen=True, slots=True)
class ReplaceGrant:
    """The participant held by `socket` now holds `handle`; the stale grant is revoked."""

    socket: str
    participant_id: str
    handle: Handle


@dataclass(frozen=True, slots=True)
class InstanceDown:
    """`instance`'s lease lapsed: the participants its sockets held are away."""

    instance: str


@dataclass(frozen=True, slots=True)
class Reassert:
    """An instance puts back a participant it knows (after Redis lost its data, or after
    being declared down while alive): added if unknown, its socket attached if it is away."""

    participant: Participant
    room: str
    resume_key: str
    handle: Handle
    socket: str | None
    media_sid: str | None = None  # the media server's id of its current connection


@dataclass(frozen=True, slots=True)
class MediaJoined:
    """The media server says the participant is in the call, with connection `sid`."""

    participant_id: str
    sid: str | None = None


@dataclass(frozen=True, slots=True)
class MediaLeft:
    """The media server says connection `sid` of the participant left the call."""

    participant_id: str
    sid: str | None = None


@dataclass(frozen=True, slots=True)
class Reconcile:
    """The media server's list of `room`'s call: (participant id, sid) pairs.

    A tuple, not a dict, so that a command stays hashable like every other.
    """

    room: str
    present: tuple[tuple[str, str | None], ...]


@dataclass(frozen=True, slots=True)
class ReportCall:
    """The page on `socket` reports its own call state."""

    socket: str
    call: CallState


@dataclass(frozen=True, slots=True)
class Kick:
    """Moderator `by` removes `participant_id` from `room` at once; its user may not join
    `room` again for `ban` ms, counted from the log entry's time."""

    by: str  # the moderator's user name
    room: str
    participant_id: str
    reason: str
    ban: int


@dataclass(frozen=True, slots=True)
class CloseRoom:
    """Moderator `by` removes everyone from `room`."""

    by: str
    room: str


@dataclass(frozen=True, slots=True)
class LockRoom:
    """Moderator `by` locks (only moderators may join) or unlocks the occupied `room`."""

    by: str
    room: str
    locked: bool


@dataclass(frozen=True, slots=True)
class ReportMedia:
    """The page on `socket` reports what it sends (camera, microphone, screen)."""

    socket: str
    media: MediaState


@dataclass(frozen=True, slots=True)
class Chat:
    """The participant held by `socket` says `text` (checked already) to its room.

    `at` (ISO 8601, UTC) is the issuing instance's clock when the message came: the
    same on every replica because the log carries it.
    """

    socket: str
    text: str
    at: str


@dataclass(frozen=True, slots=True)
class Reserve:
    """A join from `socket` is on its way into `room`: its media session must stay open
    (`lobby.cluster.reservations`). Ended by the `Join` naming it or by `Unreserve`."""

    reservation: str
    room: str
    socket: str


@dataclass(frozen=True, slots=True)
class Unreserve:
    """The join of `reservation` will not come (its grant failed or was given back)."""

    reservation: str


@dataclass(frozen=True, slots=True)
class CloseMedia:
    """`instance` would close `room`'s media session: granted only if, when this applies,
    nobody is in the room or on the way in. Followed by `MediaClosed`."""

    room: str
    instance: str


@dataclass(frozen=True, slots=True)
class MediaClosed:
    """The close `CloseMedia` granted to `instance` is done (or given up): joins may
    reserve again."""

    room: str
    instance: str


@dataclass(frozen=True, slots=True)
class Gone:
    """These participants are gone for good, their grants revoked already: removed
    without a revoke if present, and never re-asserted (a replica that had not applied
    their removal when Redis lost its data must not bring them back)."""

    participants: tuple[str, ...]


Command = (
    Join
    | Leave
    | Disconnect
    | Resume
    | Expire
    | ReplaceGrant
    | InstanceDown
    | Reassert
    | MediaJoined
    | MediaLeft
    | Reconcile
    | ReportCall
    | Kick
    | CloseRoom
    | LockRoom
    | ReportMedia
    | Chat
    | Reserve
    | Unreserve
    | CloseMedia
    | MediaClosed
    | Gone
)

OPS: Final[dict[str, type[Command]]] = {
    "join": Join,
    "leave": Leave,
    "disconnect": Disconnect,
    "resume": Resume,
    "expire": Expire,
    "replace_grant": ReplaceGrant,
    "instance_down": InstanceDown,
    "reassert": Reassert,
    "media_joined": MediaJoined,
    "media_left": MediaLeft,
    "reconcile": Reconcile,
    "report_call": ReportCall,
    "kick": Kick,
    "close_room": CloseRoom,
    "lock_room": LockRoom,
    "report_media": ReportMedia,
    "chat": Chat,
    "reserve": Reserve,
    "unreserve": Unreserve,
    "close_media": CloseMedia,
    "media_closed": MediaClosed,
    "gone": Gone,
}
_NAMES: Final[dict[type[Command], str]] = {kind: name for name, kind in OPS.items()}


def instance_of(socket: str) -> str:
    """The instance that holds `socket`: the part before the first colon."""
    return socket.partition(":")[0]


def encode(command: Command) -> str:
    return json.dumps({"op": _NAMES[type(command)], **asdict(command)}, separators=(",", ":"))


def decode(text: str | bytes) -> Command:
    """The command `encode` wrote; ValueError for anything else."""
    try:
        data = json.loads(text)
        kind = OPS[data.pop("op")]
        values: dict[str, Any] = {f.name: data[f.name] for f in fields(kind)}
        if "participant" in values:
            values["participant"] = participant_from_json(values["participant"])
        if "media" in values:
            values["media"] = mediastate.from_json(values["media"])
        if "participants" in values:
            values["participants"] = tuple(values["participants"])
        if "present" in values:
            values["present"] = tuple((pid, sid) for pid, sid in values["present"])
        return kind(**values)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"not a presence command: {text!r:.200}") from exc


def participant_from_json(data: dict[str, Any]) -> Participant:
    """A `Participant` from its `asdict` form (its media a nested dict, or absent)."""
    return Participant(**{**data, "media": mediastate.from_json(data.get("media"))})
