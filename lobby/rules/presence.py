"""The presence rules: rooms, participants, and how they come and go.

Pure and synchronous: no sockets, no asyncio, no media server. Each operation
changes the state and returns an `Outcome` describing what the world must be
told (events for every lobby socket) and what must be cleaned up (media grants
to revoke, media rooms to close). The caller carries those out.

A participant belongs to at most one socket. When its socket goes away it is
*away*: still listed in its room, so a reload or a network blip causes no
flicker, until either a new socket of the same user resumes it with its key or
the caller's grace timer calls `expire`.

Each participant also has a *call state* (`CallState`): `connecting` from its
join until its call is confirmed, `connected` while it is in the call, `dropped`
when its browser lost the media connection while its lobby socket stayed open.
The media server's word (`media_joined`, `media_left`, `reconcile`) or the page's
own (`report_call`) changes it; a `CallChanged` event goes out only when it
actually changes. A member whose socket is away keeps its state when the media
server says it left: its page is reloading and will join the call again, and a
"dropped" in between would only flicker.

Its *media* (`MediaState`: camera, microphone, screen) is unknown (None) until
its page reports it (`report_media`); a `MediaChanged` event goes out only when
it changes.

The grant type `G` (what the media back end needs to revoke a connection) is
opaque here.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Generic, Literal, TypeVar

from lobby.rules.mediastate import MediaState
from lobby.rules.sanctions import Sanctions

G = TypeVar("G")
SocketId = Hashable
LeaveReason = Literal["left", "switched", "disconnected", "kicked", "closed"]
CallState = Literal["connecting", "connected", "dropped"]
CALL_STATES: tuple[CallState, ...] = ("connecting", "connected", "dropped")


@dataclass(frozen=True, slots=True)
class Participant:
    id: str
    user: str
    nickname: str
    role: str
    call: CallState = "connecting"
    media: MediaState | None = None  # what its page last said it sends


@dataclass(frozen=True, slots=True)
class Joined:
    room: str
    participant: Participant


@dataclass(frozen=True, slots=True)
class Left:
    room: str
    participant: Participant
    reason: LeaveReason


@dataclass(frozen=True, slots=True)
class RoomClosed:
    room: str


@dataclass(frozen=True, slots=True)
class CallChanged:
    """A participant's call state changed; `participant.call` is the new one."""

    room: str
    participant: Participant


@dataclass(frozen=True, slots=True)
class RoomLocked:
    """A moderator locked or unlocked a room (only moderators may join a locked one)."""

    room: str
    locked: bool


@dataclass(frozen=True, slots=True)
class MediaChanged:
    """A participant's media changed; `participant.media` is the new one."""

    room: str
    participant: Participant


Event = Joined | Left | RoomClosed | CallChanged | RoomLocked | MediaChanged


@dataclass(frozen=True, slots=True)
class Outcome(Generic[G]):
    """What an operation changed: events in order, grants to revoke, rooms to close."""

    events: tuple[Event, ...] = ()
    revoke: tuple[G, ...] = ()
    close_rooms: tuple[str, ...] = ()

    def __add__(self, other: Outcome[G]) -> Outcome[G]:
        return Outcome(
            self.events + other.events,
            self.revoke + other.revoke,
            self.close_rooms + other.close_rooms,
        )


@dataclass(slots=True)
class Member(Generic[G]):
    """A participant's private record: where it is, who holds it, how to revoke it."""

    participant: Participant
    room: str
    resume_key: str
    grant: G
    socket: SocketId | None = field(default=None)
    # The media server's id of the participant's current connection (LiveKit's `sid`),
    # so that news about an older connection of the same participant changes nothing.
    media_sid: str | None = field(default=None)

    @property
    def away(self) -> bool:
        return self.socket is None


class Presence(Generic[G]):
    """Every room and participant of one lobby."""

    def __init__(self) -> None:
        # room name -> participant id -> member; dicts keep join order.
        self._rooms: dict[str, dict[str, Member[G]]] = {}
        self._members: dict[str, Member[G]] = {}
        self._by_socket: dict[SocketId, str] = {}
        self._by_key: dict[str, str] = {}
        # Locks, bans and close counts of the moderators (lobby.flows.moderation).
        self.sanctions = Sanctions()

    # Reading

    def rooms(self) -> Iterator[tuple[str, list[Participant]]]:
        """Every non-empty room with its participants in join order."""
        for name, members in self._rooms.items():
            yield name, [m.participant for m in members.values()]

    def member_of(self, socket: SocketId) -> Member[G] | None:
        pid = self._by_socket.get(socket)
        return None if pid is None else self._members[pid]

    def member(self, participant_id: str) -> Member[G] | None:
        return self._members.get(participant_id)

    def by_key(self, resume_key: str) -> Member[G] | None:
        pid = self._by_key.get(resume_key)
        return None if pid is None else self._members[pid]

    def resumable(self, socket: SocketId, resume_key: str, user: str) -> Member[G] | None:
        """The participant `socket` may take back with `resume_key`, or None.

        Only a participant of the socket's own user, and only if the socket holds
        no other participant (it must leave that one first).
        """
        member = self.by_key(resume_key)
        held = self.member_of(socket)
        if member is None or member.participant.user != user:
            return None
        return member if held is None or held is member else None

    def members_in(self, room: str) -> list[Member[G]]:
        """The members of `room` in join order (none for an unknown room)."""
        return list(self._rooms.get(room, {}).values())

    def has_room(self, room: str) -> bool:
        return room in self._rooms

    def size(self, room: str) -> int:
        """Participants in `room`, away ones included (they keep their seat)."""
        return len(self._rooms.get(room, ()))

    def is_full(self, room: str, limit: int, socket: SocketId) -> bool:
        """Would one more participant from `socket` take `room` past `limit` (0: none)?

        The socket's own participant does not count when it is already in `room`.
        """
        if not limit:
            return False
        mine = self.member_of(socket)
        return self.size(room) - (mine is not None and mine.room == room) >= limit

    def __len__(self) -> int:
        return len(self._members)

    @property
    def room_count(self) -> int:
        """Rooms with at least one participant (empty ones are forgotten)."""
        return len(self._rooms)

    # Changing

    def join(
        self, socket: SocketId, participant: Participant, room: str, resume_key: str, grant: G
    ) -> Outcome[G]:
        """Put a new participant held by `socket` into `room`.

        A socket holds one participant: if it already held one, that one leaves
        first (reason `switched`), so a room switch is a single step for everyone.
        """
        if participant.id in self._members or resume_key in self._by_key:
            raise ValueError("participant id and resume key must be new")
        outcome: Outcome[G] = self.leave(socket, "switched")
        member = Member(participant, room, resume_key, grant, socket)
        self._members[participant.id] = member
        self._rooms.setdefault(room, {})[participant.id] = member
        self._by_socket[socket] = participant.id
        self._by_key[resume_key] = participant.id
        return outcome + Outcome(events=(Joined(room, participant),))

    def restore(self, participant: Participant, room: str, resume_key: str, grant: G) -> None:
        """Put back a participant known from before a restart, away until resumed or expired."""
        if participant.id in self._members or resume_key in self._by_key:
            raise ValueError("participant id and resume key must be new")
        member = Member(participant, room, resume_key, grant)
        self._members[participant.id] = member
        self._rooms.setdefault(room, {})[participant.id] = member
        self._by_key[resume_key] = participant.id

    def leave(self, socket: SocketId, reason: LeaveReason = "left") -> Outcome[G]:
        """Remove the participant `socket` holds, if any, at once."""
        member = self.member_of(socket)
        return Outcome() if member is None else self._remove(member, reason)

    def disconnect(self, socket: SocketId) -> Member[G] | None:
        """`socket` went away: its participant (returned) is away, waiting for `expire`."""
        pid = self._by_socket.pop(socket, None)
        if pid is None:
            return None
        member = self._members[pid]
        member.socket = None
        return member

    def expire(self, participant_id: str) -> Outcome[G]:
        """The grace period ended: remove the participant unless it was resumed."""
        member = self._members.get(participant_id)
        if member is None or not member.away:
            return Outcome()
        return self._remove(member, "disconnected")

    def resume(self, socket: SocketId, member: Member[G]) -> SocketId | None:
        """Hand `member` to `socket`; returns the socket that held it before, if any.

        The caller has checked that `socket` may (`resumable`).
        """
        previous = member.socket
        if previous is not None:
            del self._by_socket[previous]
        member.socket = socket
        self._by_socket[socket] = member.participant.id
        return previous

    def replace_grant(self, member: Member[G], grant: G) -> G:
        """Give `member` a fresh grant; returns the stale one, for revoking.

        News about the stale connection must change nothing from now on: forget its sid.
        """
        stale, member.grant = member.grant, grant
        member.media_sid = None
        return stale

    # Moderation

    def kick(self, participant_id: str, now: int, until: int) -> Outcome[G]:
        """Remove a participant at once (reason `kicked`), its user banned from the room
        until `until` (ms, `now` being the time of the kick)."""
        member = self._members.get(participant_id)
        if member is None:
            return Outcome()
        self.sanctions.ban(member.room, member.participant.user, until, now)
        return self._remove(member, "kicked")

    def close(self, room: str) -> Outcome[G]:
        """Remove everyone from `room` (reason `closed`); the last `Left` closes it."""
        outcome: Outcome[G] = Outcome()
        for member in self.members_in(room):
            outcome += self._remove(member, "closed")
        self.sanctions.closed(room)
        return outcome

    def lock(self, room: str, locked: bool) -> Outcome[G]:
        """Lock or unlock an occupied room; an event only when that changes something."""
        if not self.has_room(room) or (room in self.sanctions.locked) == locked:
            return Outcome()
        if locked:
            self.sanctions.locked.add(room)
        else:
            self.sanctions.locked.discard(room)
        return Outcome(events=(RoomLocked(room, locked),))

    # Call states

    def media_joined(self, participant_id: str, sid: str | None = None) -> Outcome[G]:
        """The media server says the participant is in the call, with connection `sid`."""
        member = self._members.get(participant_id)
        if member is None:
            return Outcome()
        member.media_sid = sid
        return self._set_call(member, "connected")

    def media_left(self, participant_id: str, sid: str | None = None) -> Outcome[G]:
        """The media server says connection `sid` of the participant left the call.

        Nothing changes for a connection that is not the member's current one (a
        reloaded page's new one came first, or none was seen yet), nor for a member
        that is away (its page is reloading: it will join again, or the grace period
        ends its stay).
        """
        member = self._members.get(participant_id)
        if member is None or member.away:
            return Outcome()
        if sid is not None and sid != member.media_sid:
            return Outcome()
        return self._set_call(member, "dropped")

    def report_call(self, socket: SocketId, call: CallState) -> Outcome[G]:
        """The page on `socket` reports its own call; nothing if it holds no participant."""
        member = self.member_of(socket)
        return Outcome() if member is None else self._set_call(member, call)

    def report_media(self, socket: SocketId, media: MediaState) -> Outcome[G]:
        """The page on `socket` reports what it sends; nothing if it holds no participant."""
        member = self.member_of(socket)
        if member is None or member.participant.media == media:
            return Outcome()
        member.participant = replace(member.participant, media=media)
        return Outcome(events=(MediaChanged(member.room, member.participant),))

    def reconcile(self, room: str, present: Mapping[str, str | None]) -> Outcome[G]:
        """Correct `room`'s states from the media server's list: participant id -> sid.

        Listed members are in the call. A member the list lacks dropped out if it was
        in the call; one still `connecting` may have its join in flight, and an away
        one is reloading, so both stay as they are.
        """
        outcome: Outcome[G] = Outcome()
        for member in self.members_in(room):
            pid = member.participant.id
            if pid in present:
                member.media_sid = present[pid]
                outcome += self._set_call(member, "connected")
            elif not member.away and member.participant.call == "connected":
                outcome += self._set_call(member, "dropped")
        return outcome

    def _set_call(self, member: Member[G], call: CallState) -> Outcome[G]:
        if member.participant.call == call:
            return Outcome()
        member.participant = replace(member.participant, call=call)
        return Outcome(events=(CallChanged(member.room, member.participant),))

    def _remove(self, member: Member[G], reason: LeaveReason) -> Outcome[G]:
        pid = member.participant.id
        del self._members[pid]
        del self._by_key[member.resume_key]
        if member.socket is not None:
            del self._by_socket[member.socket]
        room = self._rooms[member.room]
        del room[pid]
        events: tuple[Event, ...] = (Left(member.room, member.participant, reason),)
        closed: tuple[str, ...] = ()
        if not room:
            del self._rooms[member.room]
            self.sanctions.locked.discard(member.room)  # an emptied room forgets its lock
            events += (RoomClosed(member.room),)
            closed = (member.room,)
        return Outcome(events, (member.grant,), closed)
