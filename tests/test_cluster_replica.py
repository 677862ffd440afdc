"""The replica: commands applied to the pure presence rules, checked at apply time."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace

from lobby.cluster.commands import (
    Chat,
    CloseMedia,
    CloseRoom,
    Command,
    Disconnect,
    Expire,
    Gone,
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
)
from lobby.cluster.replica import NOT_IN_ROOM, Rejection, Replica, Result, slot
from lobby.rules.chat import HISTORY, ChatLine
from lobby.rules.grants import Grant
from lobby.rules.mediastate import MediaState
from lobby.rules.presence import (
    CallChanged,
    Joined,
    Left,
    Outcome,
    Participant,
    Presence,
    RoomClosed,
    RoomLocked,
)

SHARING = MediaState(camera=True, microphone=False, screen=True)


def person(pid: str, user: str = "alice") -> Participant:
    return Participant(pid, user, user.title(), "PUBLISHER")


def joined(replica: Replica, pid: str, socket: str, room: str = "R", limit: int = 0) -> None:
    user = "alice" if pid.endswith("1") else "bob"
    result = replica.apply(Join(socket, person(pid, user), room, "k" + pid, "h" + pid, limit), 1)
    assert result.rejected is None


def rooms(replica: Replica) -> dict[str, list[str]]:
    return {room: [p.id for p in people] for room, people in replica.presence.rooms()}


def test_join_keeps_only_the_revoke_handle() -> None:
    replica = Replica()
    result = replica.apply(Join("a:1", person("p1"), "R", "k1", "h1"), 5)
    assert result.outcome.events == (Joined("R", person("p1")),)
    member = replica.presence.member("p1")
    assert member is not None
    assert member.grant == Grant("R", "h1", "")


def test_a_join_into_a_full_room_is_rejected_and_changes_nothing() -> None:
    replica = Replica()
    joined(replica, "p1", "a:1", limit=1)
    result = replica.apply(Join("b:1", person("p2", "bob"), "R", "kp2", "hp2", 1), 2)
    assert result.rejected == Rejection("room_full", "Room R is full (1 people); try again later.")
    assert rooms(replica) == {"R": ["p1"]}


def test_a_duplicate_participant_or_key_is_rejected() -> None:
    replica = Replica()
    joined(replica, "p1", "a:1")
    again = replica.apply(Join("a:2", person("p1"), "S", "other", None), 2)
    same_key = replica.apply(Join("a:2", person("p9"), "S", "kp1", None), 2)
    assert again.rejected is not None
    assert same_key.rejected is not None
    assert again.rejected.code == same_key.rejected.code == "duplicate"


def test_disconnect_marks_away_with_the_entry_time_and_expire_removes() -> None:
    replica = Replica()
    joined(replica, "p1", "a:1")
    assert replica.apply(Disconnect("a:1"), 100).participant == person("p1")
    assert list(replica.away()) == [("p1", 100)]
    result = replica.apply(Expire("p1", 100), 200)
    assert result.outcome.events == (Left("R", person("p1"), "disconnected"), RoomClosed("R"))
    assert result.outcome.revoke == (slot("hp1", "R"),)
    assert list(replica.away()) == []


def test_expire_of_a_resumed_or_newly_away_participant_is_a_no_op() -> None:
    replica = Replica()
    joined(replica, "p1", "a:1")
    replica.apply(Disconnect("a:1"), 100)
    replica.apply(Resume("b:1", "kp1", "alice"), 150)
    assert replica.apply(Expire("p1", 100), 160).outcome.revoke == ()
    replica.apply(Disconnect("b:1"), 170)
    assert replica.apply(Expire("p1", 100), 180).outcome.revoke == ()  # an older away
    assert rooms(replica) == {"R": ["p1"]}
    assert replica.apply(Expire("p1", 170), 190).outcome.revoke == (slot("hp1", "R"),)


def test_resume_reports_the_socket_it_took_over_and_refuses_other_users() -> None:
    replica = Replica()
    joined(replica, "p1", "a:1")
    taken = replica.apply(Resume("b:4", "kp1", "alice"), 2)
    assert taken.taken_over == "a:1"
    refused = replica.apply(Resume("b:5", "kp1", "mallory"), 3)
    assert refused.rejected is not None
    assert refused.rejected.code == "resume_failed"
    member = replica.presence.member_of("b:4")
    assert member is not None
    assert member.participant.id == "p1"


def test_replace_grant_revokes_the_stale_one_only_for_the_holding_socket() -> None:
    replica = Replica()
    joined(replica, "p1", "a:1")
    result = replica.apply(ReplaceGrant("a:1", "p1", "fresh"), 2)
    assert result.outcome.revoke == (slot("hp1", "R"),)
    assert replica.apply(ReplaceGrant("a:1", "p1", None), 3).outcome.revoke == (slot("fresh", "R"),)
    assert replica.apply(ReplaceGrant("a:1", "p1", "x"), 4).outcome.revoke == ()
    stranger = replica.apply(ReplaceGrant("b:1", "p1", "y"), 5)
    assert stranger.rejected is not None


def test_leave_of_a_switching_socket_revokes_the_old_grant() -> None:
    replica = Replica()
    joined(replica, "p1", "a:1", room="R")
    result = replica.apply(Join("a:1", person("p3"), "S", "k3", "h3"), 2)
    assert result.outcome.events[0] == Left("R", person("p1"), "switched")
    assert result.outcome.revoke == (slot("hp1", "R"),)
    assert replica.apply(Leave("a:1"), 3).outcome.revoke == (slot("h3", "S"),)


def test_instance_down_makes_its_sockets_participants_away() -> None:
    replica = Replica()
    joined(replica, "p1", "a:1")
    joined(replica, "p2", "b:1")
    assert replica.owners() == {"a", "b"}
    replica.apply(InstanceDown("a"), 50)
    assert list(replica.away()) == [("p1", 50)]
    assert replica.owners() == {"b"}


def test_reassert_adds_the_unknown_and_attaches_an_away_participant_once() -> None:
    replica = Replica()
    added = replica.apply(Reassert(person("p1"), "R", "k1", "h1", None), 10)
    assert added.outcome.events == (Joined("R", person("p1")),)
    assert list(replica.away()) == [("p1", 10)]
    attached = replica.apply(Reassert(person("p1"), "R", "k1", "h1", "a:1"), 11)
    assert attached.outcome.events == ()
    assert list(replica.away()) == []
    stolen = replica.apply(Reassert(person("p1"), "R", "k1", "h1", "b:1"), 12)
    assert stolen.outcome.events == ()
    member = replica.presence.member("p1")
    assert member is not None
    assert member.socket == "a:1"  # a held participant stays with its socket
    clash = replica.apply(Reassert(person("p9"), "R", "k1", None, None), 13)
    assert clash.outcome.events == ()  # the key is someone else's


def test_a_snapshot_rebuilds_the_same_replica() -> None:
    replica = Replica()
    joined(replica, "p1", "a:1", room="R")
    joined(replica, "p2", "b:1", room="S")
    replica.apply(Join("b:2", person("p3", "bob"), "R", "k3", None), 3)
    replica.apply(Disconnect("b:1"), 40)
    copy = Replica.from_snapshot(replica.snapshot())
    assert copy.snapshot() == replica.snapshot()
    assert rooms(copy) == {"R": ["p1", "p3"], "S": ["p2"]}
    assert list(copy.away()) == [("p2", 40)]


def call(replica: Replica, pid: str) -> tuple[str, str | None]:
    member = replica.presence.member(pid)
    assert member is not None
    return member.participant.call, member.media_sid


def test_call_states_change_as_in_the_pure_rules() -> None:
    replica = Replica()
    joined(replica, "p1", "a:1")
    joined(replica, "p2", "a:2")
    first = replica.apply(MediaJoined("p1", "S1"), 2)
    assert first.outcome.events == (CallChanged("R", replace(person("p1"), call="connected")),)
    assert call(replica, "p1") == ("connected", "S1")
    assert replica.apply(MediaJoined("p1", "S1"), 3).outcome.events == ()  # no change, no event
    assert replica.apply(MediaLeft("p1", "S0"), 4).outcome.events == ()  # an older connection
    replica.apply(MediaLeft("p1", "S1"), 5)
    assert call(replica, "p1") == ("dropped", "S1")
    replica.apply(Reconcile("R", (("p1", "S2"), ("p2", "S3"))), 6)
    assert call(replica, "p1") == ("connected", "S2")
    assert call(replica, "p2") == ("connected", "S3")
    replica.apply(ReportCall("a:2", "dropped"), 7)
    assert call(replica, "p2")[0] == "dropped"
    assert replica.apply(ReportCall("a:9", "dropped"), 8).outcome.events == ()


def test_call_states_match_the_pure_rules_step_by_step() -> None:
    replica, pure = Replica(), Presence[None]()
    for pid, socket in (("p1", "a:1"), ("p2", "a:2")):
        joined(replica, pid, socket)
        user = "alice" if pid.endswith("1") else "bob"
        pure.join(socket, person(pid, user), "R", "k" + pid, None)
    steps: list[tuple[Command, Callable[[], Outcome[None]]]] = [
        (MediaJoined("p1", "S1"), lambda: pure.media_joined("p1", "S1")),
        (Reconcile("R", (("p2", "S2"),)), lambda: pure.reconcile("R", {"p2": "S2"})),
        (MediaLeft("p2", "S2"), lambda: pure.media_left("p2", "S2")),
        (ReportCall("a:1", "dropped"), lambda: pure.report_call("a:1", "dropped")),
        (ReportMedia("a:2", SHARING), lambda: pure.report_media("a:2", SHARING)),
        (ReportMedia("a:2", SHARING), lambda: pure.report_media("a:2", SHARING)),
        (ReportMedia("a:9", SHARING), lambda: pure.report_media("a:9", SHARING)),
    ]
    for command, same in steps:
        assert replica.apply(command, 1).outcome.events == same().events


def test_a_snapshot_and_a_reassert_carry_call_states_and_sids() -> None:
    replica = Replica()
    joined(replica, "p1", "a:1")
    replica.apply(MediaJoined("p1", "S1"), 2)
    replica.apply(ReportMedia("a:1", SHARING), 2)
    copy = Replica.from_snapshot(json.loads(json.dumps(replica.snapshot())))
    assert copy.snapshot() == replica.snapshot()
    held = copy.presence.member("p1")
    assert held is not None
    assert held.participant.media == SHARING
    assert call(copy, "p1") == ("connected", "S1")
    member = replica.presence.member("p1")
    assert member is not None
    again = Replica()
    again.apply(Reassert(member.participant, "R", "kp1", "hp1", "a:1", member.media_sid), 3)
    assert call(again, "p1") == ("connected", "S1")
    assert again.apply(MediaLeft("p1", "S1"), 4).outcome.events != ()


# Moderation: checked at apply time, by the log entry's clock


def moderator(pid: str, user: str = "mod") -> Participant:
    return Participant(pid, user, "Mod", "MODERATOR")


def test_a_kick_removes_at_once_and_bans_until_the_log_time_plus_the_ban() -> None:
    replica = Replica()
    joined(replica, "p1", "a:1")
    joined(replica, "p2", "b:1")
    result = replica.apply(Kick("mod", "R", "p1", "spam", 300_000), 1_000)
    assert result.rejected is None
    assert result.outcome.events == (Left("R", person("p1"), "kicked"),)
    assert result.outcome.revoke == (Grant("R", "hp1", ""),)
    assert result.removed == ("a:1",)
    assert result.participant == person("p1")
    # Banned from R (whatever socket or instance asks) until 301 000 ms, not from S.
    again = Join("c:1", person("p3"), "R", "k3", None)
    assert replica.apply(again, 300_999).rejected == Rejection(
        "banned", "A moderator removed you from room R; you cannot join it again yet."
    )
    assert replica.apply(replace(again, room="S"), 2_000).rejected is None
    assert (
        replica.apply(replace(again, participant=person("p4"), resume_key="k4"), 301_000).rejected
        is None
    )


def test_kicks_that_change_nothing_are_refused() -> None:
    replica = Replica()
    joined(replica, "p1", "a:1", room="R")
    replica.apply(Join("m:1", moderator("m1"), "R", "km1", None), 1)
    replica.apply(Join("m:2", moderator("m2", "mod2"), "R", "km2", None), 1)
    before = replica.snapshot()
    refusals = [
        replica.apply(Kick("mod", "S", "p1", "", 1), 2),  # not in that room
        replica.apply(Kick("mod", "R", "p9", "", 1), 2),  # nobody
        replica.apply(Kick("mod", "R", "m1", "", 1), 2),  # yourself
        replica.apply(Kick("mod", "R", "m2", "", 1), 2),  # another moderator
        replica.apply(Kick("alice", "R", "p1", "", 1), 2),  # yourself (a moderator's check)
    ]
    assert [r.rejected.code if r.rejected else None for r in refusals] == [
        "not_found",
        "not_found",
        "not_allowed",
        "not_allowed",
        "not_allowed",
    ]
    assert replica.snapshot() == before


def test_kicking_an_away_participant_names_no_socket() -> None:
    replica = Replica()
    joined(replica, "p1", "a:1")
    replica.apply(Disconnect("a:1"), 5)
    result = replica.apply(Kick("mod", "R", "p1", "", 1), 6)
    assert result.removed == ()
    assert list(replica.away()) == []
    assert replica.apply(Resume("a:2", "kp1", "alice"), 7).rejected is not None


def test_close_room_removes_everyone_and_refuses_joins_that_began_before_it() -> None:
    replica = Replica()
    joined(replica, "p1", "a:1")
    joined(replica, "p2", "b:1")
    replica.apply(Disconnect("b:1"), 3)
    seen = replica.presence.sanctions.closes_of("R")
    in_flight = Join("c:1", person("p3"), "R", "k3", None, 0, seen)
    result = replica.apply(CloseRoom("mod", "R"), 4)
    assert result.outcome.events == (
        Left("R", person("p1"), "closed"),
        Left("R", person("p2", "bob"), "closed"),
        RoomClosed("R"),
    )
    assert result.outcome.close_rooms == ("R",)
    assert result.removed == ("a:1",)  # the away one has no socket to tell
    assert replica.apply(in_flight, 5).rejected == Rejection(
        "room_closed", "A moderator closed room R while you were joining it."
    )
    # A join that began after the close opens the room afresh.
    fresh = replace(in_flight, closes=replica.presence.sanctions.closes_of("R"))
    assert replica.apply(fresh, 6).rejected is None
    assert replica.apply(CloseRoom("mod", "Nobody"), 7).rejected == Rejection(
        "not_found", "There is nobody in room Nobody."
    )


def test_a_lock_refuses_all_but_moderators_until_unlocked_or_the_room_empties() -> None:
    replica = Replica()
    assert replica.apply(LockRoom("mod", "R", True), 1).rejected is not None  # nobody in R
    joined(replica, "p1", "a:1")
    result = replica.apply(LockRoom("mod", "R", True), 2)
    assert result.outcome.events == (RoomLocked("R", True),)
    assert replica.apply(LockRoom("mod", "R", True), 3).outcome.events == ()  # no change
    bob = Join("b:1", person("p2", "bob"), "R", "k2", None)
    assert replica.apply(bob, 4).rejected == Rejection(
        "room_locked", "A moderator locked room R: only moderators may join it now."
    )
    assert replica.apply(Join("m:1", moderator("m1"), "R", "km", None), 5).rejected is None
    copy = Replica.from_snapshot(replica.snapshot())  # the lock survives a snapshot
    assert "R" in copy.presence.sanctions.locked
    assert replica.apply(LockRoom("mod", "R", False), 6).outcome.events == (RoomLocked("R", False),)
    assert replica.apply(bob, 7).rejected is None
    replica.apply(LockRoom("mod", "R", True), 8)
    for socket in ("a:1", "b:1", "m:1"):
        replica.apply(Leave(socket), 9)
    assert "R" not in replica.presence.sanctions.locked  # the emptied room forgot it
    assert (
        replica.apply(replace(bob, participant=person("p5", "bob"), resume_key="k5"), 10).rejected
        is None
    )


def test_a_snapshot_keeps_locks_bans_and_close_counts_and_old_snapshots_still_load() -> None:
    replica = Replica()
    joined(replica, "p1", "a:1", room="R")
    joined(replica, "p2", "b:1", room="S")
    replica.apply(LockRoom("mod", "S", True), 2)
    replica.apply(Kick("mod", "R", "p1", "", 60_000), 3)
    replica.apply(CloseRoom("mod", "T"), 4)  # refused: counts nothing
    copy = Replica.from_snapshot(replica.snapshot())
    assert copy.snapshot() == replica.snapshot()
    assert copy.presence.sanctions.banned("R", "alice", 60_002)
    assert not copy.presence.sanctions.banned("R", "alice", 60_003)
    assert copy.presence.sanctions.locked == {"S"}
    old = Replica.from_snapshot(replica.snapshot()["members"])  # a bare list, as before
    assert rooms(old) == {"S": ["p2"]}
    assert old.presence.sanctions.locked == set()


# Room chat


def said(replica: Replica, socket: str, text: str, at: str = "2026-12-07T06:30:00.000Z") -> Result:
    return replica.apply(Chat(socket, text, at), 50)


def texts(replica: Replica, room: str = "R") -> list[str]:
    return [line.text for line in replica.chats.of(room)]


def test_a_chat_is_the_senders_line_in_its_room_and_kept() -> None:
    replica = Replica()
    joined(replica, "p1", "a:1")
    result = said(replica, "a:1", "hello", "2026-12-07T06:30:00.123Z")
    assert result.rejected is None
    assert result.outcome == Outcome()  # nothing for every socket: only the room hears it
    assert result.chat == ChatLine("R", person("p1"), "hello", "2026-12-07T06:30:00.123Z")
    assert replica.chats.of("R") == [result.chat]


def test_a_chat_from_a_socket_holding_nobody_is_rejected_and_not_kept() -> None:
    replica = Replica()
    joined(replica, "p1", "a:1")
    assert said(replica, "a:9", "hi").rejected == Rejection("not_in_room", NOT_IN_ROOM)
    replica.apply(Disconnect("a:1"), 60)  # away: its socket is gone, so is its voice
    assert said(replica, "a:1", "hi").rejected is not None
    assert texts(replica) == []


def test_history_keeps_the_last_fifty_of_each_room() -> None:
    replica = Replica()
    joined(replica, "p1", "a:1", room="R")
    joined(replica, "p2", "b:1", room="S")
    for n in range(HISTORY + 5):
        said(replica, "a:1", f"m{n}")
    said(replica, "b:1", "elsewhere")
    assert texts(replica, "R") == [f"m{n}" for n in range(5, HISTORY + 5)]
    assert texts(replica, "S") == ["elsewhere"]


def test_history_is_dropped_when_its_room_closes_however_it_closes() -> None:
    replica = Replica()
    joined(replica, "p1", "a:1", room="R")
    joined(replica, "p2", "b:1", room="S")
    joined(replica, "p3", "b:2", room="T")
    for socket in ("a:1", "b:1", "b:2"):
        said(replica, socket, "hi")
    replica.apply(Leave("a:1"), 60)  # R: its last one left
    replica.apply(Join("b:1", person("p4", "bob"), "U", "k4", None), 61)  # S: switched away
    replica.apply(Disconnect("b:2"), 62)
    assert texts(replica, "T") == ["hi"]  # away: the room lives, and so does its chat
    replica.apply(Expire("p3"), 63)  # T: expired
    assert list(replica.chats.rooms()) == []
    joined(replica, "p5", "a:2", room="R")
    assert texts(replica, "R") == []  # a room opened again starts empty


def test_history_is_kept_while_someone_stays() -> None:
    replica = Replica()
    joined(replica, "p1", "a:1")
    joined(replica, "p2", "b:1")
    said(replica, "a:1", "first")
    replica.apply(Leave("a:1"), 60)
    assert texts(replica) == ["first"]


def test_a_snapshot_carries_each_rooms_history() -> None:
    replica = Replica()
    joined(replica, "p1", "a:1", room="R")
    joined(replica, "p2", "b:1", room="R")
    joined(replica, "p3", "b:2", room="S")
    said(replica, "b:1", "one <i>")
    said(replica, "a:1", "two\nlines")
    said(replica, "b:2", "three")
    copy = Replica.from_snapshot(replica.snapshot())
    assert copy.chats.of("R") == replica.chats.of("R")
    assert copy.chats.of("S") == replica.chats.of("S")
    assert copy.snapshot() == replica.snapshot()


def test_a_reservation_and_a_media_close_exclude_each_other_in_log_order() -> None:
    replica = Replica()
    assert replica.apply(Reserve("r1", "R", "b:1"), 1).rejected is None
    assert replica.apply(CloseMedia("R", "a"), 2).rejected == Rejection(
        "occupied", "Someone is in the room."
    )
    joined_by = Join("b:1", person("p1"), "R", "k1", "h1", 0, reservation="r1")
    assert replica.apply(joined_by, 3).rejected is None  # the join ends its reservation
    replica.apply(Leave("b:1"), 4)
    assert replica.apply(CloseMedia("R", "a"), 5).rejected is None  # empty, nobody coming
    refused = replica.apply(Reserve("r2", "R", "b:1"), 6)
    assert refused.rejected is not None
    assert refused.rejected.code == "media_closing"
    replica.apply(MediaClosed("R", "b"), 7)  # another instance's word: not this close
    assert replica.reservations.closing("R")
    replica.apply(MediaClosed("R", "a"), 8)
    assert replica.apply(Reserve("r2", "R", "b:1"), 9).rejected is None


def test_a_join_whose_reservation_ended_is_refused_and_a_dead_instance_holds_nothing() -> None:
    replica = Replica()
    replica.apply(Reserve("r1", "R", "b:1"), 1)
    replica.apply(CloseMedia("S", "b"), 2)
    assert replica.owners() == {"b"}  # watched: its lapse ends both
    replica.apply(InstanceDown("b"), 3)
    assert replica.owners() == set()
    assert not replica.reservations.occupied("R")
    assert not replica.reservations.closing("S")
    late = replica.apply(Join("b:1", person("p1"), "R", "k1", "h1", 0, reservation="r1"), 4)
    assert late.rejected is not None
    assert late.rejected.code == "reservation_lost"  # R may have closed meanwhile
    assert rooms(replica) == {}


def test_a_snapshot_keeps_reservations_and_closes() -> None:
    replica = Replica()
    replica.apply(Reserve("r1", "R", "b:1"), 1)
    replica.apply(CloseMedia("S", "a"), 2)
    copy = Replica.from_snapshot(json.loads(json.dumps(replica.snapshot())))
    assert copy.snapshot() == replica.snapshot()
    assert copy.reservations.occupied("R")
    assert copy.reservations.closing("S")


def test_a_stale_re_assertion_of_a_removed_participant_revives_nobody() -> None:
    """Redis lost its data while the instance that issued p1's leave (and revoked p1's
    grant) had applied it and another had not: the lagging one re-asserts p1, the issuer
    says it is gone. Whatever their order in the new log, p1 stays gone and nothing
    asks for its grant to be revoked again."""
    ahead = Replica()
    joined(ahead, "p1", "a:1")
    left = ahead.apply(Leave("a:1"), 2)
    assert [g.connection_id for g in left.outcome.revoke if g] == ["hp1"]
    stale = Reassert(person("p1"), "R", "kp1", "hp1", None)
    gone = Gone(ahead.gone())
    orders: list[tuple[Command, Command]] = [(stale, gone), (gone, stale)]
    for order in orders:
        fresh = Replica()
        results = [fresh.apply(command, 10 + n) for n, command in enumerate(order)]
        assert all(not r.outcome.revoke for r in results)
        assert rooms(fresh) == {}
        expired = fresh.apply(Expire("p1"), 20)  # its grace period would have ended
        assert expired.outcome == Outcome()


def test_a_participant_removed_meanwhile_is_not_taken_back_by_its_instance() -> None:
    """An instance declared down while alive re-asserts its sockets' participants; one
    that expired in between (and was revoked) stays gone."""
    replica = Replica()
    joined(replica, "p1", "b:1")
    replica.apply(InstanceDown("b"), 2)
    assert replica.apply(Expire("p1"), 3).outcome.revoke != ()
    back = replica.apply(Reassert(person("p1"), "R", "kp1", "hp1", "b:1"), 4)
    assert back.outcome == Outcome()
    assert rooms(replica) == {}


def test_gone_removes_a_held_participant_without_a_revoke() -> None:
    """A join whose issuer gave up waiting (and revoked its grant) applied after all."""
    replica = Replica()
    joined(replica, "p1", "a:1")
    joined(replica, "p2", "a:2")
    result = replica.apply(Gone(("p1", "p2", "p9")), 3)
    assert result.outcome.revoke == ()
    assert [type(e).__name__ for e in result.outcome.events] == ["Left", "Left", "RoomClosed"]
    assert result.outcome.close_rooms == ("R",)
    assert rooms(replica) == {}
    assert set(replica.gone()) == {"p1", "p2", "p9"}
    copy = Replica.from_snapshot(replica.snapshot())
    assert copy.gone() == replica.gone()
