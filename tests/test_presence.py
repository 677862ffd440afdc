"""The presence rules, without sockets or servers."""

from __future__ import annotations

from dataclasses import replace

import pytest

from lobby.rules.mediastate import MediaState
from lobby.rules.presence import (
    CallChanged,
    Joined,
    Left,
    MediaChanged,
    Outcome,
    Participant,
    Presence,
    RoomClosed,
)


def person(pid: str, user: str = "alice") -> Participant:
    return Participant(pid, user, user.title(), "PUBLISHER")


def snapshot(presence: Presence[str]) -> dict[str, list[str]]:
    return {room: [p.id for p in people] for room, people in presence.rooms()}


def test_join_announces_and_lists_the_participant() -> None:
    presence: Presence[str] = Presence()
    outcome = presence.join("s1", person("p1"), "A", "k1", "g1")
    assert outcome == Outcome(events=(Joined("A", person("p1")),))
    assert snapshot(presence) == {"A": ["p1"]}
    member = presence.member_of("s1")
    assert member is not None
    assert member.grant == "g1"
    assert member.room == "A"


def test_rooms_list_participants_in_join_order() -> None:
    presence: Presence[str] = Presence()
    presence.join("s1", person("p1"), "A", "k1", "g1")
    presence.join("s2", person("p2", "bob"), "A", "k2", "g2")
    presence.join("s3", person("p3"), "B", "k3", "g3")
    assert snapshot(presence) == {"A": ["p1", "p2"], "B": ["p3"]}


def test_leave_of_the_last_participant_closes_the_room_and_revokes() -> None:
    presence: Presence[str] = Presence()
    presence.join("s1", person("p1"), "A", "k1", "g1")
    outcome = presence.leave("s1")
    assert outcome.events == (Left("A", person("p1"), "left"), RoomClosed("A"))
    assert outcome.revoke == ("g1",)
    assert outcome.close_rooms == ("A",)
    assert snapshot(presence) == {}
    assert len(presence) == 0
    assert presence.by_key("k1") is None


def test_leave_keeps_a_room_with_others_open() -> None:
    presence: Presence[str] = Presence()
    presence.join("s1", person("p1"), "A", "k1", "g1")
    presence.join("s2", person("p2"), "A", "k2", "g2")
    outcome = presence.leave("s1")
    assert outcome.events == (Left("A", person("p1"), "left"),)
    assert outcome.close_rooms == ()
    assert snapshot(presence) == {"A": ["p2"]}


def test_leave_without_a_participant_changes_nothing() -> None:
    presence: Presence[str] = Presence()
    assert presence.leave("nobody") == Outcome()


def test_joining_another_room_switches_in_one_step() -> None:
    presence: Presence[str] = Presence()
    presence.join("s1", person("p1"), "A", "k1", "g1")
    outcome = presence.join("s1", person("p2"), "B", "k2", "g2")
    assert outcome.events == (
        Left("A", person("p1"), "switched"),
        RoomClosed("A"),
        Joined("B", person("p2")),
    )
    assert outcome.revoke == ("g1",)
    assert outcome.close_rooms == ("A",)
    assert snapshot(presence) == {"B": ["p2"]}


def test_ids_and_keys_must_be_new() -> None:
    presence: Presence[str] = Presence()
    presence.join("s1", person("p1"), "A", "k1", "g1")
    with pytest.raises(ValueError, match="new"):
        presence.join("s2", person("p1"), "A", "k9", "g9")
    with pytest.raises(ValueError, match="new"):
        presence.join("s2", person("p9"), "A", "k1", "g9")


def test_a_disconnected_participant_stays_listed_until_it_expires() -> None:
    presence: Presence[str] = Presence()
    presence.join("s1", person("p1"), "A", "k1", "g1")
    member = presence.disconnect("s1")
    assert member is not None
    assert member.away
    assert snapshot(presence) == {"A": ["p1"]}
    assert presence.member_of("s1") is None
    outcome = presence.expire("p1")
    assert outcome.events == (Left("A", person("p1"), "disconnected"), RoomClosed("A"))
    assert outcome.revoke == ("g1",)
    assert snapshot(presence) == {}


def test_disconnect_of_a_socket_without_participant_is_nothing() -> None:
    presence: Presence[str] = Presence()
    assert presence.disconnect("s1") is None


def test_resume_within_grace_cancels_the_expiry() -> None:
    presence: Presence[str] = Presence()
    presence.join("s1", person("p1"), "A", "k1", "g1")
    presence.disconnect("s1")
    member = presence.by_key("k1")
    assert member is not None
    assert presence.resume("s2", member) is None
    assert presence.expire("p1") == Outcome()  # the late timer finds it held again
    assert presence.member_of("s2") is member
    assert snapshot(presence) == {"A": ["p1"]}


def test_resume_takes_a_participant_from_a_socket_that_still_holds_it() -> None:
    presence: Presence[str] = Presence()
    presence.join("s1", person("p1"), "A", "k1", "g1")
    member = presence.by_key("k1")
    assert member is not None
    assert presence.resume("s2", member) == "s1"
    assert presence.member_of("s1") is None
    assert presence.member_of("s2") is member
    assert presence.leave("s1") == Outcome()  # the old socket holds nothing any more


def test_expire_of_an_unknown_participant_is_nothing() -> None:
    presence: Presence[str] = Presence()
    assert presence.expire("p404") == Outcome()


def test_replace_grant_returns_the_stale_one() -> None:
    presence: Presence[str] = Presence()
    presence.join("s1", person("p1"), "A", "k1", "g1")
    member = presence.member_of("s1")
    assert member is not None
    assert presence.replace_grant(member, "g2") == "g1"
    assert presence.leave("s1").revoke == ("g2",)


def test_lookups() -> None:
    presence: Presence[str] = Presence()
    presence.join("s1", person("p1"), "A", "k1", "g1")
    assert presence.has_room("A")
    assert not presence.has_room("B")
    found = presence.member("p1")
    assert found is not None
    assert found.participant == person("p1")
    assert presence.member("p2") is None


def test_restored_participants_are_listed_away_until_resumed_or_expired() -> None:
    presence: Presence[str] = Presence()
    presence.restore(person("p1"), "A", "k1", "g1")
    presence.restore(person("p2", "bob"), "A", "k2", "g2")
    assert snapshot(presence) == {"A": ["p1", "p2"]}
    member = presence.by_key("k1")
    assert member is not None
    assert member.away
    assert presence.resume("s1", member) is None
    assert presence.expire("p1") == Outcome()
    outcome = presence.expire("p2")
    assert outcome.events == (Left("A", person("p2", "bob"), "disconnected"),)
    assert outcome.revoke == ("g2",)
    with pytest.raises(ValueError, match="new"):
        presence.restore(person("p1"), "B", "k9", "g9")


def test_a_room_is_full_at_its_limit_counting_away_members_but_not_oneself() -> None:
    presence: Presence[str] = Presence()
    presence.join("s1", person("p1"), "A", "k1", "g1")
    presence.join("s2", person("p2", "bob"), "A", "k2", "g2")
    assert presence.size("A") == 2
    assert presence.size("nowhere") == 0
    assert presence.is_full("A", 2, "s3")
    assert not presence.is_full("A", 3, "s3")
    assert not presence.is_full("A", 0, "s3")  # 0: no limit
    assert not presence.is_full("B", 1, "s3")
    # Already in the room: a second join of the same socket takes no extra seat.
    assert not presence.is_full("A", 2, "s1")
    presence.disconnect("s2")  # away: still holds its seat
    assert presence.is_full("A", 2, "s3")
    presence.expire("p2")
    assert not presence.is_full("A", 2, "s3")


# Call states


def in_room(*pids: str) -> Presence[str]:
    """A presence with one participant per id in room A, socket `s<id>`, grant `g<id>`."""
    presence: Presence[str] = Presence()
    for pid in pids:
        presence.join(f"s{pid}", person(pid), "A", f"k{pid}", f"g{pid}")
    return presence


def calls(presence: Presence[str]) -> dict[str, str]:
    return {p.id: p.call for _, people in presence.rooms() for p in people}


def test_a_participant_starts_connecting_and_the_media_server_puts_it_in_the_call() -> None:
    presence = in_room("p1")
    assert calls(presence) == {"p1": "connecting"}
    outcome = presence.media_joined("p1", "PA_1")
    connected = replace(person("p1"), call="connected")
    assert outcome == Outcome(events=(CallChanged("A", connected),))
    assert calls(presence) == {"p1": "connected"}
    assert presence.media_joined("p1", "PA_1") == Outcome()  # no change, no event


def test_leaving_the_call_with_the_lobby_socket_open_is_dropped() -> None:
    presence = in_room("p1")
    presence.media_joined("p1", "PA_1")
    outcome = presence.media_left("p1", "PA_1")
    assert [e.participant.call for e in outcome.events if isinstance(e, CallChanged)] == ["dropped"]
    assert outcome.revoke == ()  # only a state: the participant stays in the room
    assert calls(presence) == {"p1": "dropped"}


def test_news_about_an_older_connection_changes_nothing() -> None:
    presence = in_room("p1")
    presence.media_joined("p1", "PA_old")
    presence.media_joined("p1", "PA_new")  # the reloaded page came first
    assert presence.media_left("p1", "PA_old") == Outcome()
    assert calls(presence) == {"p1": "connected"}
    presence.media_left("p1", "PA_new")
    assert calls(presence) == {"p1": "dropped"}


def test_a_fresh_grant_makes_news_of_the_stale_connection_meaningless() -> None:
    presence = in_room("p1")
    member = presence.member("p1")
    assert member is not None
    presence.media_joined("p1", "PA_old")
    presence.replace_grant(member, "g1-fresh")
    assert presence.media_left("p1", "PA_old") == Outcome()  # we removed it ourselves
    assert calls(presence) == {"p1": "connected"}


def test_an_away_member_keeps_its_state_when_the_media_server_says_it_left() -> None:
    presence = in_room("p1")
    presence.media_joined("p1", "PA_1")
    presence.disconnect("sp1")  # its page is reloading
    assert presence.media_left("p1", "PA_1") == Outcome()
    assert presence.media_left("p1") == Outcome()
    assert calls(presence) == {"p1": "connected"}


def test_news_about_unknown_participants_changes_nothing() -> None:
    presence = in_room("p1")
    assert presence.media_joined("p_nobody", "PA_1") == Outcome()
    assert presence.media_left("p_nobody", "PA_1") == Outcome()
    assert calls(presence) == {"p1": "connecting"}


def test_a_page_reports_its_own_call_and_a_socket_without_participant_changes_nothing() -> None:
    presence = in_room("p1")
    assert len(presence.report_call("sp1", "connected").events) == 1
    assert presence.report_call("sp1", "connected") == Outcome()
    assert presence.report_call("s_elsewhere", "dropped") == Outcome()
    assert calls(presence) == {"p1": "connected"}
    presence.report_call("sp1", "dropped")
    assert calls(presence) == {"p1": "dropped"}


def test_a_page_reports_its_media_once_per_change_and_it_survives_a_reload() -> None:
    presence = in_room("p1")
    muted = MediaState(camera=True, microphone=False)
    [event] = presence.report_media("sp1", muted).events
    assert isinstance(event, MediaChanged)
    assert event.participant.media == muted
    assert presence.report_media("sp1", muted) == Outcome()
    assert presence.report_media("s_elsewhere", MediaState()) == Outcome()
    presence.disconnect("sp1")  # a reload keeps what the page said until it says anew
    member = presence.member("p1")
    assert member is not None
    assert member.participant.media == muted


def test_reconcile_puts_listed_members_in_the_call_and_drops_missing_ones() -> None:
    presence = in_room("p1", "p2", "p3", "p4")
    presence.media_joined("p2", "PA_2")
    presence.media_joined("p3", "PA_3")
    presence.media_joined("p4", "PA_4")
    presence.disconnect("sp4")  # reloading: stays as it is
    outcome = presence.reconcile("A", {"p1": "PA_1"})
    changed = {
        e.participant.id: e.participant.call for e in outcome.events if isinstance(e, CallChanged)
    }
    assert changed == {"p1": "connected", "p2": "dropped", "p3": "dropped"}
    assert calls(presence) == {
        "p1": "connected",
        "p2": "dropped",
        "p3": "dropped",
        "p4": "connected",
    }
    # The sid the list gave is now the current one.
    assert presence.media_left("p1", "PA_1").events


def test_reconcile_leaves_a_member_still_connecting_alone() -> None:
    presence = in_room("p1")
    assert presence.reconcile("A", {}) == Outcome()  # its join may be in flight
    assert presence.reconcile("B", {"p1": None}) == Outcome()  # another room's list
    assert calls(presence) == {"p1": "connecting"}


def test_the_call_state_is_part_of_every_later_event_of_the_participant() -> None:
    presence = in_room("p1")
    presence.media_joined("p1", "PA_1")
    [left, closed] = presence.leave("sp1").events
    assert isinstance(left, Left)
    assert left.participant.call == "connected"
    assert closed == RoomClosed("A")
