"""One copy of the lobby's presence, changed only by applying commands in log order.

`Replica.apply` is deterministic: the same commands in the same order give every
replica the same state and every command the same `Result`, on every instance.
That is what lets each instance keep its own copy of the pure
`lobby.rules.presence.Presence` and still agree with the others. Checks that
depend on the state (a full room, a resume key of another user, a participant
already gone) happen here, at apply time, so two instances racing for the last
seat get the same answer everywhere: the command that comes first in the log wins,
the other is rejected on every replica alike.

Moderation (`Kick`, `CloseRoom`, `LockRoom`) is checked here too, at apply time: a
locked room or a ban refuses a `Join` on every replica alike, whichever instance
issued it and whenever its grant was made. A ban's time is the log entry's, so
every replica agrees when it ends.

Away participants carry the time they went away (`at`, milliseconds, taken from
the log entry, so every replica holds the same), which the expiry duty reads.

Pure: stdlib only. `snapshot`/`from_snapshot` give the JSON-ready form a Redis
snapshot stores.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from lobby.cluster.commands import (
    Chat,
    CloseMedia,
    CloseRoom,
    Command,
    Disconnect,
    Expire,
    Gone,
    Handle,
    InstanceDown,
    Join,
    Kick,
    Leave,
    LockRoom,
    MediaClosed,
    MediaJoined,
    MediaLeft,
    Reassert,
    Reconcile,
    ReplaceGrant,
    ReportCall,
    ReportMedia,
    Reserve,
    Resume,
    Unreserve,
    instance_of,
    participant_from_json,
)
from lobby.cluster.reservations import Reservations
from lobby.rules.chat import ChatLine, History
from lobby.rules.grants import Grant
from lobby.rules.presence import Joined, Left, Member, Outcome, Participant, Presence, RoomClosed
from lobby.rules.sanctions import Sanctions

# Refusals of moderation and of joins it prevents: codes of docs/protocol.md.
NOT_FOUND_PARTICIPANT = "That participant is not in room {room}."
NOT_FOUND_ROOM = "There is nobody in room {room}."
KICK_MODERATOR = "Moderators cannot be kicked; close the room instead."
KICK_YOURSELF = "You cannot kick yourself; use leave."
ROOM_LOCKED = "A moderator locked room {room}: only moderators may join it now."
BANNED = "A moderator removed you from room {room}; you cannot join it again yet."
CLOSED_MEANWHILE = "A moderator closed room {room} while you were joining it."

GONE_KEPT = 1000  # removed participants remembered, so a late re-assertion cannot revive one
Slot = Grant | None  # what presence holds per participant: a grant without its token
RESUME_FAILED = "That call can no longer be resumed; please join again."
NOT_IN_ROOM = "You are in no room: join one to chat."
MEDIA_CLOSING = "The room's call is being closed; joining again in a moment."
RESERVATION_LOST = "The lobby lost track of this join; please try again."


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a command changed nothing: a stable code and a sentence for the user."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class Result:
    """What applying one command did; the same on every replica."""

    outcome: Outcome[Slot] = field(default_factory=Outcome)
    rejected: Rejection | None = None
    participant: Participant | None = None  # whom it concerned (join, resume, disconnect)
    taken_over: str | None = None  # resume: the socket that held the participant before
    # kick, close_room: the sockets whose participants were removed (none for away ones).
    removed: tuple[str, ...] = ()
    chat: ChatLine | None = None  # a chat message, for the sockets of its room


def slot(handle: Handle, room: str) -> Slot:
    """The grant presence keeps for `handle`: enough to revoke, never the token."""
    return None if handle is None else Grant(room=room, connection_id=handle, token="")


class Replica:
    def __init__(self) -> None:
        self.presence: Presence[Slot] = Presence()
        self._away_since: dict[str, int] = {}  # participant id -> ms, for the away ones
        self.chats = History()  # each live room's last messages; dropped when it closes
        self.reservations = Reservations()
        self._gone: dict[str, None] = {}  # the last GONE_KEPT removed ids, oldest first

    # Reading

    def away(self) -> Iterator[tuple[str, int]]:
        """Every away participant's id and when it went away (ms)."""
        return iter(list(self._away_since.items()))

    def members(self) -> Iterator[Member[Slot]]:
        """Every member, room by room in join order."""
        for _, people in self.presence.rooms():
            for person in people:
                member = self.presence.member(person.id)
                if member is not None:
                    yield member

    def gone(self) -> tuple[str, ...]:
        """The participants removed lately (oldest first): re-asserting one does nothing."""
        return tuple(self._gone)

    def owners(self) -> set[str]:
        """Instances whose sockets hold participants, or with a join or a media close
        under way: each ends with its `InstanceDown` if the instance dies."""
        held = {instance_of(str(m.socket)) for m in self.members() if m.socket is not None}
        return held | self.reservations.instances()

    # Changing

    def apply(self, command: Command, at: int) -> Result:
        """Apply `command`, logged at `at` ms; never raises for a well-formed command."""
        match command:
            case Join():
                return self._join(command, at)
            case Leave(socket, reason):
                return self._removed(self.presence.leave(socket, reason))
            case Disconnect(socket):
                return self._disconnect(socket, at)
            case Resume():
                return self._resume(command)
            case Expire(participant_id, since):
                if since is not None and self._away_since.get(participant_id) != since:
                    return Result()
                return self._removed(self.presence.expire(participant_id))
            case ReplaceGrant():
                return self._replace_grant(command)
            case InstanceDown(instance):
                self.reservations.instance_down(instance)
                for member in list(self.members()):
                    if member.socket is not None and instance_of(str(member.socket)) == instance:
                        self._disconnect(str(member.socket), at)
                return Result()
            case Reassert():
                return self._reassert(command, at)
            case MediaJoined(participant_id, sid):
                return Result(self.presence.media_joined(participant_id, sid))
            case MediaLeft(participant_id, sid):
                return Result(self.presence.media_left(participant_id, sid))
            case Reconcile(room, present):
                return Result(self.presence.reconcile(room, dict(present)))
            case ReportCall(socket, call):
                return Result(self.presence.report_call(socket, call))
            case Kick():
                return self._kick(command, at)
            case CloseRoom(_, room):
                if not self.presence.has_room(room):
                    return _refuse("not_found", NOT_FOUND_ROOM, room)
                sockets = _sockets(self.presence.members_in(room))
                return replace(self._removed(self.presence.close(room)), removed=sockets)
            case LockRoom(_, room, locked):
                if not self.presence.has_room(room):
                    return _refuse("not_found", NOT_FOUND_ROOM, room)
                return Result(self.presence.lock(room, locked))
            case ReportMedia(socket, media):
                return Result(self.presence.report_media(socket, media))
            case Chat():
                return self._chat(command)
            case Reserve(reservation, room, socket):
                if self.reservations.reserve(reservation, room, socket):
                    return Result()
                return Result(rejected=Rejection("media_closing", MEDIA_CLOSING))
            case Unreserve(reservation):
                self.reservations.release(reservation)
                return Result()
            case CloseMedia(room, instance):
                if self.reservations.close(room, instance, self.presence.has_room(room)):
                    return Result()
                return Result(rejected=Rejection("occupied", "Someone is in the room."))
            case Gone(participants):
                return self._forget(participants)
            case MediaClosed(room, instance):
                self.reservations.closed(room, instance)
                return Result()

    def _join(self, c: Join, at: int) -> Result:
        p = self.presence
        held = self.reservations.take(c.reservation, c.room)
        if c.reservation and not held:
            return Result(rejected=Rejection("reservation_lost", RESERVATION_LOST))
        if p.member(c.participant.id) is not None or p.by_key(c.resume_key) is not None:
            return Result(rejected=Rejection("duplicate", "That participant is already here."))
        if p.is_full(c.room, c.limit, c.socket):
            message = f"Room {c.room} is full ({c.limit} people); try again later."
            return Result(rejected=Rejection("room_full", message))
        if p.sanctions.closes_of(c.room) > c.closes:
            return _refuse("room_closed", CLOSED_MEANWHILE, c.room)
        if c.room in p.sanctions.locked and c.participant.role != "MODERATOR":
            return _refuse("room_locked", ROOM_LOCKED, c.room)
        if p.sanctions.banned(c.room, c.participant.user, at):
            return _refuse("banned", BANNED, c.room)
        outcome = p.join(c.socket, c.participant, c.room, c.resume_key, slot(c.handle, c.room))
        return self._removed(outcome, participant=c.participant)

    def _kick(self, c: Kick, at: int) -> Result:
        member = self.presence.member(c.participant_id)
        if member is None or member.room != c.room:
            return _refuse("not_found", NOT_FOUND_PARTICIPANT, c.room)
        if member.participant.user == c.by:
            return Result(rejected=Rejection("not_allowed", KICK_YOURSELF))
        if member.participant.role == "MODERATOR":
            return Result(rejected=Rejection("not_allowed", KICK_MODERATOR))
        sockets = _sockets([member])
        outcome = self.presence.kick(c.participant_id, at, at + c.ban)
        return replace(self._removed(outcome, member.participant), removed=sockets)

    def _chat(self, c: Chat) -> Result:
        """Checked here, at its place in the log: the sender may have left meanwhile."""
        member = self.presence.member_of(c.socket)
        if member is None:
            return Result(rejected=Rejection("not_in_room", NOT_IN_ROOM))
        line = ChatLine(member.room, member.participant, c.text, c.at)
        self.chats.add(line)
        return Result(participant=member.participant, chat=line)

    def _removed(self, outcome: Outcome[Slot], participant: Participant | None = None) -> Result:
        """`outcome` of a change that may have removed participants: forget their away
        time, and the chat of the rooms it closed."""
        for event in outcome.events:
            if isinstance(event, Left):
                self._away_since.pop(event.participant.id, None)
                self._bury(event.participant.id)
            elif isinstance(event, RoomClosed):
                self.chats.drop(event.room)
        return Result(outcome, participant=participant)

    def _bury(self, pid: str) -> None:
        self._gone.pop(pid, None)
        self._gone[pid] = None
        if len(self._gone) > GONE_KEPT:
            del self._gone[next(iter(self._gone))]

    def _forget(self, participants: tuple[str, ...]) -> Result:
        """Remove `participants` with no revoke (theirs happened already); remember them."""
        outcome: Outcome[Slot] = Outcome()
        for pid in participants:
            member = self.presence.member(pid)
            if member is not None and member.socket is not None:
                outcome += self.presence.leave(member.socket, "left")
            elif member is not None:
                outcome += self.presence.expire(pid)
            self._bury(pid)
        result = self._removed(outcome)
        return Result(Outcome(result.outcome.events, (), result.outcome.close_rooms))

    def _disconnect(self, socket: str, at: int) -> Result:
        member = self.presence.disconnect(socket)
        if member is None:
            return Result()
        self._away_since[member.participant.id] = at
        return Result(participant=member.participant)

    def _resume(self, c: Resume) -> Result:
        member = self.presence.resumable(c.socket, c.resume_key, c.user)
        if member is None:
            return Result(rejected=Rejection("resume_failed", RESUME_FAILED))
        previous = self.presence.resume(c.socket, member)
        self._away_since.pop(member.participant.id, None)
        taken = None if previous is None or previous == c.socket else str(previous)
        return Result(participant=member.participant, taken_over=taken)

    def _replace_grant(self, c: ReplaceGrant) -> Result:
        member = self.presence.member(c.participant_id)
        if member is None or member.socket != c.socket:
            return Result(rejected=Rejection("resume_failed", RESUME_FAILED))
        stale = self.presence.replace_grant(member, slot(c.handle, member.room))
        revoke = () if stale is None else (stale,)
        return Result(Outcome(revoke=revoke), participant=member.participant)

    def _reassert(self, c: Reassert, at: int) -> Result:
        p = self.presence
        if c.participant.id in self._gone:  # removed and revoked: a stale replica's word
            return Result()
        member = p.member(c.participant.id)
        free = c.socket is not None and p.member_of(c.socket) is None
        if member is None:
            if p.by_key(c.resume_key) is not None:
                return Result()
            p.restore(c.participant, c.room, c.resume_key, slot(c.handle, c.room))
            self._away_since[c.participant.id] = at
            member = p.member(c.participant.id)
            if member is not None:
                member.media_sid = c.media_sid
            outcome: Outcome[Slot] = Outcome(events=(Joined(c.room, c.participant),))
        else:
            outcome = Outcome()
        if member is not None and member.away and free:
            p.resume(c.socket, member)
            self._away_since.pop(c.participant.id, None)
        return Result(outcome, participant=c.participant)

    # Snapshots

    def snapshot(self) -> dict[str, Any]:
        """Every member (in the order that rebuilds the same rooms), the joins on their way
        in and the media sessions being closed, the moderation state and each live room's
        chat, JSON-ready."""
        sanctions = self.presence.sanctions
        return {
            "members": self._members_snapshot(),
            "reservations": self.reservations.snapshot(),
            "gone": list(self._gone),
            "locked": sorted(sanctions.locked),
            "bans": [[room, user, end] for (room, user), end in sorted(sanctions.bans.items())],
            "closes": dict(sorted(sanctions.closes.items())),
            "chats": self._chats_snapshot(),
        }

    def _members_snapshot(self) -> list[dict[str, Any]]:
        return [
            {
                "participant": asdict(m.participant),
                "room": m.room,
                "resume_key": m.resume_key,
                "handle": None if m.grant is None else m.grant.connection_id,
                "socket": m.socket,
                "media_sid": m.media_sid,
                "away_since": self._away_since.get(m.participant.id),
            }
            for m in self.members()
        ]

    def _chats_snapshot(self) -> dict[str, list[dict[str, Any]]]:
        return {
            room: [{"sender": asdict(x.sender), "text": x.text, "at": x.at} for x in lines]
            for room in self.chats.rooms()
            if (lines := self.chats.of(room))
        }

    @classmethod
    def from_snapshot(cls, data: dict[str, Any] | list[dict[str, Any]]) -> Replica:
        """The replica `snapshot` saved (or a bare member list, as older lobbies saved)."""
        held: dict[str, Any] = {"members": data} if isinstance(data, list) else data
        replica = cls()
        replica.reservations = Reservations.from_snapshot(
            held.get("reservations", {"joins": {}, "closing": {}})
        )
        replica._gone = dict.fromkeys(held.get("gone", ()))
        p = replica.presence
        for m in held["members"]:
            person = participant_from_json(m["participant"])
            p.restore(person, m["room"], m["resume_key"], slot(m["handle"], m["room"]))
            member = p.member(person.id)
            if member is not None:
                member.media_sid = m.get("media_sid")
            if m["socket"] is not None and member is not None:
                p.resume(m["socket"], member)
            else:
                replica._away_since[person.id] = int(m["away_since"] or 0)
        p.sanctions = Sanctions(
            {room for room in held.get("locked", ()) if p.has_room(room)},
            {(room, user): int(end) for room, user, end in held.get("bans", ())},
            {room: int(n) for room, n in held.get("closes", {}).items()},
        )
        for room, lines in held.get("chats", {}).items():
            for x in lines:
                sender = participant_from_json(x["sender"])
                replica.chats.add(ChatLine(room, sender, x["text"], x["at"]))
        return replica


def _refuse(code: str, message: str, room: str) -> Result:
    return Result(rejected=Rejection(code, message.format(room=room)))


def _sockets(members: list[Member[Slot]]) -> tuple[str, ...]:
    return tuple(str(m.socket) for m in members if m.socket is not None)
