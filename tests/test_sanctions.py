"""Locks, bans and close counts (`lobby.rules.sanctions`), and the presence rules that set them."""

from __future__ import annotations

from lobby.rules.presence import Left, Participant, Presence, RoomClosed, RoomLocked
from lobby.rules.sanctions import Sanctions

ALICE = Participant("p1", "alice", "Alice", "PUBLISHER")
BOB = Participant("p2", "bob", "Bob", "PUBLISHER")


def test_a_ban_holds_until_its_time_and_expired_ones_are_forgotten() -> None:
    sanctions = Sanctions()
    sanctions.ban("R", "alice", until=1_000, now=0)
    sanctions.ban("S", "bob", until=500, now=0)
    assert sanctions.banned("R", "alice", 999)
    assert not sanctions.banned("R", "alice", 1_000)
    assert not sanctions.banned("S", "alice", 10)  # another room
    sanctions.ban("R", "alice", until=800, now=600)  # a shorter ban never shortens one
    assert sanctions.bans == {("R", "alice"): 1_000}  # bob's, over at 600, is gone


def test_closes_are_counted_per_room() -> None:
    sanctions = Sanctions()
    sanctions.closed("R")
    sanctions.closed("R")
    assert (sanctions.closes_of("R"), sanctions.closes_of("S")) == (2, 0)


def presence_with(*people: Participant) -> Presence[str]:
    presence: Presence[str] = Presence()
    for n, person in enumerate(people):
        presence.join(f"s{n}", person, "R", f"k{n}", f"g{n}")
    return presence


def test_kick_removes_with_its_reason_and_bans_the_user() -> None:
    presence = presence_with(ALICE, BOB)
    outcome = presence.kick("p1", now=10, until=310)
    assert outcome.events == (Left("R", ALICE, "kicked"),)
    assert outcome.revoke == ("g0",)
    assert presence.sanctions.banned("R", "alice", 309)
    assert presence.kick("p1", now=11, until=400).events == ()  # gone already


def test_close_removes_everyone_then_closes_the_room() -> None:
    presence = presence_with(ALICE, BOB)
    presence.lock("R", True)
    outcome = presence.close("R")
    assert outcome.events == (
        Left("R", ALICE, "closed"),
        Left("R", BOB, "closed"),
        RoomClosed("R"),
    )
    assert outcome.close_rooms == ("R",)
    assert presence.sanctions.closes_of("R") == 1
    assert presence.sanctions.locked == set()  # the emptied room forgot its lock


def test_lock_is_for_occupied_rooms_and_tells_only_changes() -> None:
    presence = presence_with(ALICE)
    assert presence.lock("S", True).events == ()
    assert presence.lock("R", True).events == (RoomLocked("R", True),)
    assert presence.lock("R", True).events == ()
    assert presence.lock("R", False).events == (RoomLocked("R", False),)
    assert presence.sanctions.locked == set()
