"""A stateful property test of the presence core, driven the way `lobby.handler` drives it.

Hypothesis runs random sequences of connect / join (and so switch) / leave /
disconnect / grace expiry / resume / token refresh / a moderator's kick, room
close and lock against one `Presence`, next
to a plain model of what should be true, starting from a restart that restored
some participants away. After every step it checks that each
participant is in exactly one room, no empty room is listed, every grant is
revoked exactly once after its participant is gone (or it was replaced), and
every open socket's view (its welcome snapshot plus every broadcast event,
applied in order) equals the server's rooms, participants in join order, and
its locked rooms.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from lobby.rules.presence import (
    Event,
    Joined,
    LeaveReason,
    Left,
    Member,
    Outcome,
    Participant,
    Presence,
    RoomClosed,
    RoomLocked,
)

ROOMS = ("A", "B", "C")
USERS = ("alice", "bob")
MAX_OPEN = 5  # open sockets at a time

View = dict[str, list[Participant]]


@dataclass
class Socket:
    user: str
    view: View | None  # None once closed: the hub sends it nothing more
    locked: set[str] = field(default_factory=set)  # rooms it was told are locked


@dataclass
class Expected:
    """The model's record of one participant."""

    participant: Participant
    room: str
    key: str
    grant: str
    socket: int | None


def apply_event(view: View, event: Event, locked: set[str]) -> None:
    """What a page does with an event (static/lobby.js and presence.js keep the same list)."""
    if isinstance(event, RoomLocked):
        assert event.room in view, f"{event} for a room that is not listed"
        assert (event.room in locked) != event.locked, f"{event} that changes nothing"
        (locked.add if event.locked else locked.discard)(event.room)
    elif isinstance(event, Joined):
        people = view.setdefault(event.room, [])
        assert event.participant not in people, f"{event} for someone already listed"
        people.append(event.participant)
    elif isinstance(event, Left):
        assert event.participant in view.get(event.room, []), f"{event} for someone not listed"
        view[event.room].remove(event.participant)
    else:
        assert view.get(event.room) == [], f"{event} for a room that is not empty"
        del view[event.room]
        locked.discard(event.room)  # the room goes with its lock


class PresenceMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.presence: Presence[str] = Presence()
        self.ids = itertools.count(1)
        self.sockets: dict[int, Socket] = {}
        self.members: dict[str, Expected] = {}  # by participant id
        self.rooms: dict[str, list[str]] = {}  # participant ids in join order
        self.keys: dict[str, str] = {}  # every resume key ever issued -> participant id
        self.timers: set[str] = set()  # grace timers started and not yet fired
        self.created: set[str] = set()  # every grant ever made
        self.revoked: Counter[str] = Counter()
        self.locked: set[str] = set()

    # The model

    def open_sockets(self) -> list[int]:
        return [sid for sid, sock in self.sockets.items() if sock.view is not None]

    def holding(self) -> list[int]:
        return [sid for sid in self.open_sockets() if self.held_by(sid) is not None]

    def held_by(self, sid: int) -> Expected | None:
        return next((e for e in self.members.values() if e.socket == sid), None)

    def remove(self, pid: str, reason: LeaveReason) -> Outcome[str]:
        """Take `pid` out of the model; the outcome presence must report for it."""
        gone = self.members.pop(pid)
        people = self.rooms[gone.room]
        people.remove(pid)
        events: tuple[Event, ...] = (Left(gone.room, gone.participant, reason),)
        if people:
            return Outcome(events, (gone.grant,))
        del self.rooms[gone.room]
        self.locked.discard(gone.room)
        return Outcome((*events, RoomClosed(gone.room)), (gone.grant,), (gone.room,))

    def apply(self, outcome: Outcome[str], expected: Outcome[str]) -> None:
        """Check an outcome, revoke its grants and broadcast its events to every open socket."""
        assert outcome == expected
        self.revoked.update(outcome.revoke)
        for sid in self.open_sockets():
            socket = self.sockets[sid]
            assert socket.view is not None
            for event in outcome.events:
                apply_event(socket.view, event, socket.locked)

    # Steps, with the calls and checks `lobby.handler.RequestHandler` makes

    def do_connect(self, user: str) -> int:
        sid = next(self.ids)
        welcome = {name: list(people) for name, people in self.presence.rooms()}
        self.sockets[sid] = Socket(user, welcome, set(self.presence.sanctions.locked))
        return sid

    def do_disconnect(self, sid: int) -> None:
        held = self.held_by(sid)
        self.sockets[sid].view = None
        member = self.presence.disconnect(sid)
        if held is None:
            assert member is None
        else:
            assert member is not None
            assert member.participant == held.participant
            assert member.away
            held.socket = None
            self.timers.add(held.participant.id)
        assert self.presence.disconnect(sid) is None  # nothing left to hand over

    def do_resume(self, sid: int, key: str, token: bool) -> None:
        user = self.sockets[sid].user
        member = self.presence.by_key(key)
        held = self.presence.member_of(sid)
        refused = (
            member is None
            or member.participant.user != user
            or (held is not None and held is not member)
        )
        pid = self.keys.get(key)
        target = None if pid is None else self.members.get(pid)
        mine = self.held_by(sid)
        assert refused == (
            target is None
            or target.participant.user != user
            or (mine is not None and mine is not target)
        )
        if member is None or target is None or refused:
            return
        assert self.presence.resume(sid, member) == target.socket  # it gets `taken_over`
        target.socket = sid
        if token:  # a fresh media connection; the caller revokes the stale one, once
            fresh = f"g{next(self.ids)}"
            self.created.add(fresh)
            stale = self.presence.replace_grant(member, fresh)
            assert stale == target.grant
            self.revoked[stale] += 1
            target.grant = fresh

    # Rules

    @initialize(
        restored=st.lists(st.tuples(st.sampled_from(USERS), st.sampled_from(ROOMS)), max_size=4)
    )
    def restart(self, restored: list[tuple[str, str]]) -> None:
        """The last run's participants come back away, each with a grace timer.

        As `RequestHandler.restore` does.
        """
        for user, room in restored:
            n = next(self.ids)
            participant = Participant(f"p{n}", user, f"{user.title()} {n}", "PUBLISHER")
            self.presence.restore(participant, room, f"k{n}", f"g{n}")
            self.members[participant.id] = Expected(participant, room, f"k{n}", f"g{n}", None)
            self.rooms.setdefault(room, []).append(participant.id)
            self.keys[f"k{n}"] = participant.id
            self.created.add(f"g{n}")
            self.timers.add(participant.id)

    @precondition(lambda self: len(self.open_sockets()) < MAX_OPEN)
    @rule(user=st.sampled_from(USERS))
    def connect(self, user: str) -> None:
        self.do_connect(user)

    @precondition(lambda self: bool(self.open_sockets()))
    @rule(data=st.data(), room=st.sampled_from(ROOMS))
    def join(self, data: st.DataObject, room: str) -> None:
        sid = data.draw(st.sampled_from(self.open_sockets()), label="socket")
        held = self.held_by(sid)
        if held is not None and held.room == room:
            return  # `already_joined`: presence is not asked
        n = next(self.ids)
        user = self.sockets[sid].user
        participant = Participant(f"p{n}", user, f"{user.title()} {n}", "PUBLISHER")
        key, grant = f"k{n}", f"g{n}"
        expected: Outcome[str] = Outcome()
        if held is not None:
            expected = self.remove(held.participant.id, "switched")
        self.members[participant.id] = Expected(participant, room, key, grant, sid)
        self.rooms.setdefault(room, []).append(participant.id)
        self.keys[key] = participant.id
        self.created.add(grant)
        outcome = self.presence.join(sid, participant, room, key, grant)
        self.apply(outcome, expected + Outcome(events=(Joined(room, participant),)))

    @precondition(lambda self: bool(self.open_sockets()))
    @rule(data=st.data())
    def leave(self, data: st.DataObject) -> None:
        sid = data.draw(st.sampled_from(self.open_sockets()), label="socket")
        held = self.held_by(sid)
        expected: Outcome[str] = Outcome()
        if held is not None:
            expected = self.remove(held.participant.id, "left")
        self.apply(self.presence.leave(sid), expected)

    @precondition(lambda self: bool(self.open_sockets()))
    @rule(data=st.data())
    def disconnect(self, data: st.DataObject) -> None:
        self.do_disconnect(data.draw(st.sampled_from(self.open_sockets()), label="socket"))

    @precondition(lambda self: bool(self.timers))
    @rule(data=st.data())
    def grace_timer_fires(self, data: st.DataObject) -> None:
        """A timer fires, maybe after its participant was resumed (then nothing happens)."""
        pid = data.draw(st.sampled_from(sorted(self.timers)), label="participant")
        self.timers.discard(pid)
        self.expire(pid)

    @rule(data=st.data())
    def stale_expiry(self, data: st.DataObject) -> None:
        """`expire` of a participant long gone, still held, or never seen."""
        pid = data.draw(st.sampled_from(["p0", *sorted(self.keys.values())]), label="participant")
        self.expire(pid)

    def expire(self, pid: str) -> None:
        target = self.members.get(pid)
        expected: Outcome[str] = Outcome()
        if target is not None and target.socket is None:
            expected = self.remove(pid, "disconnected")
        self.apply(self.presence.expire(pid), expected)

    @precondition(lambda self: bool(self.open_sockets()))
    @rule(data=st.data(), token=st.booleans())
    def resume(self, data: st.DataObject, token: bool) -> None:
        """Any key from any socket: own, another user's, already gone, or unknown."""
        sid = data.draw(st.sampled_from(self.open_sockets()), label="socket")
        user = self.sockets[sid].user
        own = sorted(e.key for e in self.members.values() if e.participant.user == user)
        choices = [st.sampled_from(["k0", *sorted(self.keys)])]
        if own:
            choices.append(st.sampled_from(own))
        self.do_resume(sid, data.draw(st.one_of(choices), label="key"), token)

    @precondition(lambda self: bool(self.holding()) and len(self.open_sockets()) < MAX_OPEN)
    @rule(data=st.data(), token=st.booleans())
    def reload(self, data: st.DataObject, token: bool) -> None:
        """A page reloads: its socket closes and a new socket of the same user resumes."""
        sid = data.draw(st.sampled_from(self.holding()), label="socket")
        held = self.held_by(sid)
        assert held is not None
        self.do_disconnect(sid)
        self.do_resume(self.do_connect(self.sockets[sid].user), held.key, token)
        assert self.members[held.participant.id].socket is not None

    @precondition(lambda self: bool(self.members))
    @rule(data=st.data())
    def kick(self, data: st.DataObject) -> None:
        """A moderator kicks anyone, held or away: gone at once, grace timer or not."""
        pid = data.draw(st.sampled_from(sorted(self.members)), label="participant")
        self.apply(self.presence.kick(pid, now=0, until=1), self.remove(pid, "kicked"))

    @rule(room=st.sampled_from(ROOMS))
    def close_room(self, room: str) -> None:
        expected: Outcome[str] = Outcome()
        for pid in list(self.rooms.get(room, [])):
            expected += self.remove(pid, "closed")
        self.apply(self.presence.close(room), expected)

    @rule(room=st.sampled_from(ROOMS), locked=st.booleans())
    def lock_room(self, room: str, locked: bool) -> None:
        expected: Outcome[str] = Outcome()
        if room in self.rooms and (room in self.locked) != locked:
            (self.locked.add if locked else self.locked.discard)(room)
            expected = Outcome(events=(RoomLocked(room, locked),))
        self.apply(self.presence.lock(room, locked), expected)

    # Invariants

    @invariant()
    def every_open_socket_sees_the_locked_rooms(self) -> None:
        assert self.presence.sanctions.locked == self.locked
        for sid in self.open_sockets():
            assert self.sockets[sid].locked == self.locked, f"socket {sid}"

    @invariant()
    def rooms_are_listed_in_join_order_and_never_empty(self) -> None:
        listed = [(name, [p.id for p in people]) for name, people in self.presence.rooms()]
        assert listed == list(self.rooms.items())
        assert all(people for _, people in listed)
        ids = [pid for _, people in listed for pid in people]
        assert len(ids) == len(set(ids)) == len(self.presence) == len(self.members)
        for name in ROOMS:
            assert self.presence.has_room(name) == (name in self.rooms)

    @invariant()
    def every_open_socket_sees_the_servers_rooms(self) -> None:
        listed = list(self.presence.rooms())
        for sid in self.open_sockets():
            view = self.sockets[sid].view
            assert view is not None
            assert list(view.items()) == listed, f"socket {sid}"

    @invariant()
    def lookups_find_exactly_the_current_members(self) -> None:
        for pid, expected in self.members.items():
            member = self.presence.member(pid)
            assert member is not None
            assert self.presence.by_key(expected.key) is member
            assert record(member) == (
                expected.participant,
                expected.room,
                expected.key,
                expected.grant,
                expected.socket,
            )
        for key, pid in self.keys.items():
            if pid not in self.members:
                assert self.presence.by_key(key) is None
                assert self.presence.member(pid) is None
        assert self.presence.by_key("k0") is None

    @invariant()
    def a_socket_holds_at_most_one_participant_and_vice_versa(self) -> None:
        holders = [e.socket for e in self.members.values() if e.socket is not None]
        assert len(holders) == len(set(holders))
        for sid, sock in self.sockets.items():
            held = self.held_by(sid)
            member = self.presence.member_of(sid)
            if held is None or sock.view is None:
                assert held is None
                assert member is None
            else:
                assert member is self.presence.member(held.participant.id)

    @invariant()
    def every_grant_is_revoked_once_when_its_participant_is_gone(self) -> None:
        live = [
            member.grant
            for _, people in self.presence.rooms()
            for p in people
            if (member := self.presence.member(p.id)) is not None
        ]
        assert len(live) == len(self.presence)
        assert len(live) == len(set(live))
        assert all(count == 1 for count in self.revoked.values()), self.revoked
        assert self.revoked.keys().isdisjoint(live)
        assert self.created == self.revoked.keys() | set(live)


def record(member: Member[str]) -> tuple[Participant, str, str, str, object]:
    return member.participant, member.room, member.resume_key, member.grant, member.socket


def test_presence_keeps_every_socket_in_step() -> None:
    run_state_machine_as_test(
        PresenceMachine,
        settings=settings(
            max_examples=150,
            stateful_step_count=40,
            deadline=None,
            database=None,
            print_blob=True,
        ),
    )
