"""The request handler (`lobby.handler`) over a real hub, with fake sockets and fake media.

No server and no sockets: each test connects `FakeSocket`s, hands the handler parsed
frames and reads what it wrote back. Races are staged with `FakeMedia.hold`, and grace
periods are short; where a test must show that something did *not* happen after a grace
period, another participant whose grace began later is the witness: once its `left`
arrives, every earlier timer has run.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from lobby.cluster import commands
from lobby.cluster.local import LocalPresence
from lobby.cluster.seam import Applied, Cleaner, Listener
from lobby.handler import RequestHandler
from lobby.hub import Hub
from lobby.media.breaker import Breaker
from lobby.rules.grants import Grant, Identity
from lobby.rules.presence import Participant
from lobby.rules.protocol import CloseCode, parse
from lobby.store import sqlite as database
from lobby.store.roster import Entry, Roster
from lobby.store.sqlite import SQLiteDatabase as Database
from tests.conftest import until
from tests.fakes import FakeMedia, FakeSocket, Message, Refused, fake_socket

ROLES = {"alice": "PUBLISHER", "bob": "PUBLISHER", "sub": "SUBSCRIBER", "mod": "MODERATOR"}
REFS = itertools.count(1)
HandlerFactory = Callable[..., RequestHandler]


@pytest.fixture
def media() -> FakeMedia:
    return FakeMedia()


@pytest.fixture
async def make_handler(media: FakeMedia) -> AsyncIterator[HandlerFactory]:
    """Request handlers over `media` (or `backend=`) and a fresh hub; drained after the test."""
    made: list[RequestHandler] = []

    def make(*, backend: Any = None, grace: float = 30.0, **options: Any) -> RequestHandler:
        handler = RequestHandler(backend or media, Hub(), grace=grace, **options)
        made.append(handler)
        return handler

    yield make
    media.release_all()
    for handler in made:
        await handler.drain()
        await handler.calls.media.aclose()


@pytest.fixture
def handler(make_handler: HandlerFactory) -> RequestHandler:
    return make_handler()


def connect(handler: RequestHandler, user: str = "alice", session: str = "") -> FakeSocket:
    """A new socket of `user` (in session `s-<user>` unless told), its welcome taken."""
    socket = fake_socket(user, ROLES[user], session or f"s-{user}")
    handler.connect(socket.conn)
    [welcome] = socket.take()
    assert welcome["type"] == "welcome"
    return socket


def welcome(handler: RequestHandler, user: str = "bob") -> Message:
    """What a socket opened now would be told."""
    socket = fake_socket(user, ROLES[user])
    handler.connect(socket.conn)
    handler.disconnect(socket.conn)
    [message] = socket.take()
    return message


def send(handler: RequestHandler, socket: FakeSocket, kind: str, **fields: object) -> int:
    """Hand the handler one frame from `socket`, as the endpoint does; returns its ref."""
    ref = next(REFS)
    handler.handle(socket.conn, parse(json.dumps({"type": kind, "ref": ref, **fields})))
    return ref


async def join(
    handler: RequestHandler, socket: FakeSocket, room: str, nickname: str = ""
) -> Message:
    """Join `room`; returns the `token` reply, the first thing written after the request.

    What `socket` was told before is dropped; the `joined` broadcast stays to be read.
    """
    socket.take()
    ref = send(handler, socket, "join", room=room, nickname=nickname or socket.conn.user)
    token = await socket.expect("token")
    assert token["ref"] == ref
    return token


def rooms(handler: RequestHandler) -> dict[str, list[str]]:
    """Every room with the nicknames in it, as presence holds them."""
    return {room: [p.nickname for p in people] for room, people in handler.presence.rooms()}


def types(messages: list[Message]) -> list[str]:
    return [m["type"] for m in messages]


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


# Connecting


async def test_welcome_tells_who_you_are_and_the_whole_lobby(make_handler: HandlerFactory) -> None:
    handler = make_handler()
    assert welcome(handler, "alice") == {
        "type": "welcome",
        "user": {"name": "alice", "role": "PUBLISHER"},
        "media": {"kind": "fake", "user": "alice"},  # the back end's page_config for the user
        "room_size": None,
        "rooms": [],
    }
    alice = connect(handler, "alice")
    token = await join(handler, alice, "TUTORIAL", "Alice")
    assert welcome(handler, "bob")["rooms"] == [
        {"name": "TUTORIAL", "participants": [token["participant"]], "locked": False}
    ]
    assert welcome(make_handler(room_size=3), "sub")["room_size"] == 3
    assert handler.hub.get(alice.conn.id) is alice.conn


# Joining and leaving


async def test_a_join_gives_the_token_to_the_requester_only_and_tells_everyone(
    handler: RequestHandler, media: FakeMedia
) -> None:
    alice, bob = connect(handler, "alice"), connect(handler, "bob")
    token = await join(handler, alice, "R1", "Alice")
    [grant] = media.connections.values()
    me = token["participant"]
    assert token["token"] == grant.token
    assert token["room"] == "R1"
    assert (me["user"], me["nickname"], me["role"]) == ("alice", "Alice", "PUBLISHER")
    assert me["id"].startswith("p_")
    assert len(token["resume_key"]) >= 32
    joined = {"type": "joined", "room": "R1", "participant": me}
    assert alice.take() == [joined]
    assert bob.take() == [joined]  # and nothing secret
    assert media.identities == [Identity(me["id"], "alice", "Alice", "PUBLISHER")]
    assert media.calls == ["grant R1"]
    assert rooms(handler) == {"R1": ["Alice"]}


async def test_the_grant_is_for_the_participant_with_its_role(
    handler: RequestHandler, media: FakeMedia
) -> None:
    sub, mod = connect(handler, "sub"), connect(handler, "mod")
    watcher = (await join(handler, sub, "R1", "Watcher"))["participant"]
    moderator = (await join(handler, mod, "R1"))["participant"]
    assert media.identities == [
        Identity(watcher["id"], "sub", "Watcher", "SUBSCRIBER"),
        Identity(moderator["id"], "mod", "mod", "MODERATOR"),
    ]
    assert watcher["role"] == "SUBSCRIBER"


async def test_joining_another_room_leaves_the_first(
    handler: RequestHandler, media: FakeMedia
) -> None:
    alice, bob = connect(handler, "alice"), connect(handler, "bob")
    first = await join(handler, alice, "A")
    second = await join(handler, alice, "B")
    assert bob.take() == [
        {"type": "joined", "room": "A", "participant": first["participant"]},
        {"type": "left", "room": "A", "participant": first["participant"], "reason": "switched"},
        {"type": "room_closed", "room": "A"},
        {"type": "joined", "room": "B", "participant": second["participant"]},
    ]
    await media.called("close_room A")
    assert media.calls == ["grant A", "grant B", "revoke con_1", "close_room A"]
    assert media.rooms == {"B"}
    assert rooms(handler) == {"B": ["alice"]}


async def test_joining_the_same_room_again_is_an_error(handler: RequestHandler) -> None:
    alice = connect(handler, "alice")
    await join(handler, alice, "A")
    alice.take()
    ref = send(handler, alice, "join", room="A", nickname="again")
    [error] = alice.take()
    assert (error["type"], error["code"], error["ref"]) == ("error", "already_joined", ref)
    assert error["message"] == "You are already in room A."


async def test_two_tabs_of_one_user_are_two_participants(handler: RequestHandler) -> None:
    tab1, tab2 = connect(handler, "alice"), connect(handler, "alice")
    one = await join(handler, tab1, "R1", "Laptop")
    two = await join(handler, tab2, "R1", "Phone")
    assert one["participant"]["id"] != two["participant"]["id"]
    assert one["resume_key"] != two["resume_key"]
    tab2.take()
    send(handler, tab1, "leave")
    [left] = tab2.take()
    assert left["participant"]["nickname"] == "Laptop"  # the other tab stays
    assert rooms(handler) == {"R1": ["Phone"]}


async def test_ping_pong_and_a_leave_outside_a_room_is_a_harmless_ok(
    handler: RequestHandler, media: FakeMedia
) -> None:
    alice, bob = connect(handler, "alice"), connect(handler, "bob")
    ping = send(handler, alice, "ping")
    leave = send(handler, alice, "leave")
    assert alice.take() == [{"type": "pong", "ref": ping}, {"type": "ok", "ref": leave}]
    assert bob.take() == []
    await handler.drain()
    assert media.calls == []


async def test_a_leave_tells_everyone_and_cleans_up(
    handler: RequestHandler, media: FakeMedia
) -> None:
    alice, bob = connect(handler, "alice"), connect(handler, "bob")
    me = (await join(handler, alice, "R1"))["participant"]
    alice.take()
    bob.take()
    ref = send(handler, alice, "leave")
    left = {"type": "left", "room": "R1", "participant": me, "reason": "left"}
    closed = {"type": "room_closed", "room": "R1"}
    assert alice.take() == [{"type": "ok", "ref": ref}, left, closed]
    assert bob.take() == [left, closed]
    await media.called("close_room R1")
    assert media.calls == ["grant R1", "revoke con_1", "close_room R1"]
    assert (media.connections, media.rooms) == ({}, set())


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "bad_request"),
        ("[]", "bad_request"),
        ('{"no":"type"}', "bad_request"),
        ('{"type":"dance","ref":9}', "unknown_type"),
        ('{"type":"join","ref":1}', "bad_request"),
        ('{"type":"join","room":"no spaces","nickname":"A","ref":1}', "invalid_room"),
        ('{"type":"join","room":"' + "x" * 65 + '","nickname":"A"}', "invalid_room"),
        ('{"type":"join","room":"ok","nickname":"   ","ref":1}', "invalid_nickname"),
        ('{"type":"join","room":"ok","nickname":"' + "n" * 41 + '"}', "invalid_nickname"),
        ('{"type":"resume","ref":1}', "bad_request"),
        ("[" * 2000 + "]" * 2000, "bad_request"),  # deeply nested, under the size limit
        ('{"a":' * 600 + "1" + "}" * 600, "bad_request"),
        ('{"type":"ping","ref":' + "9" * 4000 + "}", "bad_request"),
    ],
)
async def test_bad_frames_get_an_error_and_the_socket_stays_usable(
    handler: RequestHandler, frame: str, code: str
) -> None:
    alice = connect(handler, "alice")
    handler.handle(alice.conn, parse(frame))
    [error] = alice.take()
    assert (error["type"], error["code"]) == ("error", code)
    assert error["message"]
    await join(handler, alice, "still-works")


# Requests in flight


async def test_a_second_request_while_one_is_in_flight_is_busy(
    handler: RequestHandler, media: FakeMedia
) -> None:
    alice = connect(handler, "alice")
    gate = media.hold("grant")
    first = send(handler, alice, "join", room="R1", nickname="A")
    await gate.reached()
    second = send(handler, alice, "join", room="R2", nickname="A")
    third = send(handler, alice, "resume", key="k" * 32)
    busy = alice.take()
    assert [(e["code"], e["ref"]) for e in busy] == [("busy", second), ("busy", third)]
    gate.release()
    token = await alice.expect("token")
    assert (token["ref"], token["room"]) == (first, "R1")
    assert media.calls == ["grant R1"]


async def test_leave_during_a_join_cancels_it_and_revokes_its_grant(
    handler: RequestHandler, media: FakeMedia
) -> None:
    alice, bob = connect(handler, "alice"), connect(handler, "bob")
    gate = media.hold("grant")
    join_ref = send(handler, alice, "join", room="R1", nickname="A")
    await gate.reached()
    leave_ref = send(handler, alice, "leave")
    cancelled, ok = alice.take()
    assert (cancelled["code"], cancelled["ref"]) == ("cancelled", join_ref)
    assert ok == {"type": "ok", "ref": leave_ref}
    gate.release()  # the grant is made after all: it is revoked, and nobody sees a join
    await media.called("close_room R1")
    assert media.calls == ["grant R1", "revoke con_1", "close_room R1"]
    assert media.connections == {}
    assert (alice.take(), bob.take()) == ([], [])
    assert len(handler.presence) == 0


async def test_leave_during_a_token_refresh_cancels_it_and_revokes_every_grant_once(
    handler: RequestHandler, media: FakeMedia
) -> None:
    alice, bob = connect(handler, "alice"), connect(handler, "bob")
    token = await join(handler, alice, "R1")
    handler.disconnect(alice.conn)
    again = connect(handler, "alice")
    gate = media.hold("grant")
    resume = send(handler, again, "resume", key=token["resume_key"], token=True)
    await gate.reached()  # the stale grant is revoked, the fresh one on its way
    bob.take()
    leave = send(handler, again, "leave")
    cancelled, ok, left, closed = again.take()
    assert (cancelled["code"], cancelled["ref"], ok["ref"]) == ("cancelled", resume, leave)
    assert (left["reason"], closed["type"]) == ("left", "room_closed")
    assert bob.take() == [left, closed]
    gate.release()
    await until(lambda: media.calls.count("close_room R1") == 1 and not media.connections)
    assert media.calls[:4] == ["grant R1", "revoke con_1", "grant R1", "revoke con_2"]
    assert again.take() == []


async def test_a_socket_closed_during_its_join_leaves_no_ghost(
    handler: RequestHandler, media: FakeMedia
) -> None:
    alice, bob = connect(handler, "alice"), connect(handler, "bob")
    gate = media.hold("grant")
    send(handler, alice, "join", room="R1", nickname="A")
    await gate.reached()
    handler.disconnect(alice.conn)  # while the media server is still making the grant
    gate.release()
    await media.called("close_room R1")
    assert media.calls == ["grant R1", "revoke con_1", "close_room R1"]
    assert bob.take() == []
    assert len(handler.presence) == 0


async def test_two_joins_at_once_into_a_new_room_are_seen_in_the_same_order_by_all(
    handler: RequestHandler, media: FakeMedia
) -> None:
    alice, bob, mod = connect(handler, "alice"), connect(handler, "bob"), connect(handler, "mod")
    first, second = media.hold("grant"), media.hold("grant")
    send(handler, alice, "join", room="NEW", nickname="A")
    send(handler, bob, "join", room="NEW", nickname="B")
    await second.reached()
    second.release()  # bob's grant comes back first
    b = (await bob.expect("token"))["participant"]["id"]
    first.release()
    a = (await alice.until("token"))["participant"]["id"]
    for socket in (alice, bob, mod):
        seen = [m["participant"]["id"] for m in socket.writer.messages if m["type"] == "joined"]
        assert seen == [b, a]
    assert rooms(handler) == {"NEW": ["B", "A"]}
    assert len(media.connections) == 2


async def test_a_join_waits_while_its_room_is_being_closed(
    handler: RequestHandler, media: FakeMedia
) -> None:
    alice, bob = connect(handler, "alice"), connect(handler, "bob")
    await join(handler, alice, "R1")
    closing = media.hold("close_room")
    send(handler, alice, "leave")
    await closing.reached()
    bob.take()
    ref = send(handler, bob, "join", room="R1", nickname="B")
    await asyncio.sleep(0)  # the join has started, and waits
    assert media.calls == ["grant R1", "revoke con_1", "close_room R1"]
    closing.release()
    token = await bob.expect("token")
    assert (token["ref"], token["room"]) == (ref, "R1")
    assert media.calls == ["grant R1", "revoke con_1", "close_room R1", "grant R1"]
    assert media.rooms == {"R1"}  # a fresh session, with bob's connection only
    assert list(media.connections) == ["con_2"]


async def test_a_takeover_drops_the_old_sockets_join_in_flight(
    handler: RequestHandler, media: FakeMedia
) -> None:
    alice, bob = connect(handler, "alice"), connect(handler, "bob")
    token = await join(handler, alice, "R1")
    gate = media.hold("grant")
    send(handler, alice, "join", room="R2", nickname="A")
    await gate.reached()
    duplicate = connect(handler, "alice")
    send(handler, duplicate, "resume", key=token["resume_key"])
    gate.release()
    await media.called("close_room R2")
    assert media.calls == ["grant R1", "grant R2", "revoke con_2", "close_room R2"]
    assert [m["type"] for m in alice.take()] == ["joined", "taken_over"]
    assert [m["type"] for m in bob.take()] == ["joined"]
    assert rooms(handler) == {"R1": ["alice"]}


# Going away and coming back


async def test_a_closed_tab_leaves_after_the_grace_period(
    make_handler: HandlerFactory, media: FakeMedia
) -> None:
    handler = make_handler(grace=0.05)
    alice, bob = connect(handler, "alice"), connect(handler, "bob")
    me = (await join(handler, alice, "R1"))["participant"]
    bob.take()
    loop = asyncio.get_running_loop()
    closed_at = loop.time()
    handler.disconnect(alice.conn)
    assert bob.take() == []  # away, not gone: still listed
    assert welcome(handler)["rooms"] == [{"name": "R1", "participants": [me], "locked": False}]
    assert handler.hub.get(alice.conn.id) is None
    left = await bob.expect("left")
    assert loop.time() - closed_at >= 0.05 * 0.99
    assert left == {"type": "left", "room": "R1", "participant": me, "reason": "disconnected"}
    assert await bob.expect("room_closed") == {"type": "room_closed", "room": "R1"}
    await media.called("close_room R1")
    assert media.calls == ["grant R1", "revoke con_1", "close_room R1"]


async def test_resume_within_grace_is_silent_for_everyone(
    make_handler: HandlerFactory, media: FakeMedia
) -> None:
    handler = make_handler(grace=0.05)
    alice, witness, mod = (
        connect(handler, "alice"),
        connect(handler, "bob"),
        connect(handler, "mod"),
    )
    token = await join(handler, alice, "R1")
    await join(handler, witness, "R1")
    handler.disconnect(alice.conn)
    handler.disconnect(witness.conn)  # its grace ends after alice's would have
    again = connect(handler, "alice")
    ref = send(handler, again, "resume", key=token["resume_key"])
    assert again.take() == [
        {"type": "resumed", "ref": ref, "room": "R1", "participant": token["participant"]}
    ]
    mod.take()
    left = await mod.expect("left")
    assert left["participant"]["user"] == "bob"
    assert mod.take() == []  # no `left` for alice, and R1 stays
    await media.called("revoke con_2")
    assert media.calls == ["grant R1", "grant R1", "revoke con_2"]
    # ...and the participant still works normally afterwards.
    send(handler, again, "leave")
    assert (await mod.expect("left"))["participant"] == token["participant"]


async def test_resume_with_token_gives_a_fresh_one_and_revokes_the_stale_first(
    handler: RequestHandler, media: FakeMedia
) -> None:
    alice = connect(handler, "alice")
    token = await join(handler, alice, "R1")
    handler.disconnect(alice.conn)
    again = connect(handler, "alice")
    ref = send(handler, again, "resume", key=token["resume_key"], token=True)
    resumed = await again.expect("resumed")
    assert resumed == {
        "type": "resumed",
        "ref": ref,
        "room": "R1",
        "participant": token["participant"],
        "token": media.connections["con_2"].token,
    }
    assert resumed["token"] != token["token"]
    assert media.calls == ["grant R1", "revoke con_1", "grant R1"]  # the stale one first
    assert list(media.connections) == ["con_2"]


async def test_resume_takes_over_from_a_socket_not_yet_gone(handler: RequestHandler) -> None:
    alice = connect(handler, "alice")
    token = await join(handler, alice, "R1")
    alice.take()
    duplicate = connect(handler, "alice")
    send(handler, duplicate, "resume", key=token["resume_key"])
    assert types(duplicate.take()) == ["resumed"]
    assert alice.take() == [
        {"type": "taken_over", "room": "R1", "participant": token["participant"]}
    ]
    # The old socket holds nothing now: its leave changes nothing.
    send(handler, alice, "leave")
    assert types(alice.take()) == ["ok"]
    assert duplicate.take() == []
    member = handler.presence.member_of(handler.socket_of(duplicate.conn))
    assert member is not None
    assert member.participant.id == token["participant"]["id"]


@pytest.mark.parametrize("key", ["no-such-key", None])
async def test_resume_with_a_bad_key_fails(handler: RequestHandler, key: str | None) -> None:
    alice, bob = connect(handler, "alice"), connect(handler, "bob")
    token = await join(handler, alice, "R1")
    bob.take()
    # bob may not take alice's participant, even with her key
    ref = send(handler, bob, "resume", key=key or token["resume_key"])
    [error] = bob.take()
    assert (error["type"], error["code"], error["ref"]) == ("error", "resume_failed", ref)
    assert alice.take() == [{"type": "joined", "room": "R1", "participant": token["participant"]}]


async def test_resume_from_a_socket_holding_another_participant_fails(
    handler: RequestHandler,
) -> None:
    tab1, tab2 = connect(handler, "alice"), connect(handler, "alice")
    token = await join(handler, tab1, "R1")
    await join(handler, tab2, "R2")
    tab2.take()
    send(handler, tab2, "resume", key=token["resume_key"])
    [error] = tab2.take()
    assert error["code"] == "resume_failed"
    assert rooms(handler) == {"R1": ["alice"], "R2": ["alice"]}


async def test_resume_after_the_grace_period_fails(make_handler: HandlerFactory) -> None:
    handler = make_handler(grace=0.01)
    alice, bob = connect(handler, "alice"), connect(handler, "bob")
    token = await join(handler, alice, "R1")
    handler.disconnect(alice.conn)
    bob.take()
    await bob.expect("left")
    again = connect(handler, "alice")
    send(handler, again, "resume", key=token["resume_key"])
    [error] = again.take()
    assert error["code"] == "resume_failed"


# The media server failing


async def test_a_failed_join_answers_the_media_error_and_changes_nothing(
    handler: RequestHandler, media: FakeMedia
) -> None:
    alice, bob = connect(handler, "alice"), connect(handler, "bob")
    await join(handler, alice, "A")
    alice.take()
    bob.take()
    refused = Refused("The video service said no; please try again.")
    media.fail("grant", error=refused)
    ref = send(handler, alice, "join", room="B", nickname="alice")
    assert await alice.expect("error") == {
        "type": "error",
        "ref": ref,
        "code": refused.code,
        "message": refused.message,
    }
    assert rooms(handler) == {"A": ["alice"]}  # still where she was
    assert bob.take() == []
    await media.called("close_room B")  # whatever the media server made for B is closed
    media.mend()
    await join(handler, alice, "B")  # and the socket is not stuck


async def test_resume_with_token_while_the_media_fails_keeps_the_participant(
    make_handler: HandlerFactory, media: FakeMedia
) -> None:
    handler = make_handler(grace=0.05)
    alice, witness, mod = (
        connect(handler, "alice"),
        connect(handler, "bob"),
        connect(handler, "mod"),
    )
    token = await join(handler, alice, "R1")
    await join(handler, witness, "R1")
    handler.disconnect(alice.conn)
    handler.disconnect(witness.conn)
    again = connect(handler, "alice")
    media.fail("grant")
    ref = send(handler, again, "resume", key=token["resume_key"], token=True)
    error = await again.until("error")
    assert (error["code"], error["ref"]) == ("media_unavailable", ref)
    mod.take()
    assert (await mod.expect("left"))["participant"]["user"] == "bob"
    assert mod.take() == []  # alice was resumed: no `left` for her
    media.mend()  # she can ask again once the media server is back
    send(handler, again, "resume", key=token["resume_key"], token=True)
    resumed = await again.until("resumed")
    assert resumed["token"] == media.connections["con_3"].token
    assert media.calls == [
        "grant R1",
        "grant R1",
        "revoke con_1",  # the stale one went at the first attempt
        "grant R1",
        "revoke con_2",  # the witness, expired
        "grant R1",
    ]


async def test_while_the_media_server_is_down_joins_fail_fast_without_asking_it(
    make_handler: HandlerFactory, media: FakeMedia
) -> None:
    breaker = Breaker(media, first_probe=60.0)
    handler = make_handler(backend=breaker, recovered=breaker.recovered)
    alice = connect(handler, "alice")
    media.fail("grant")
    send(handler, alice, "join", room="R1", nickname="A")
    assert (await alice.expect("error"))["code"] == "media_unavailable"
    asked = list(media.calls)
    send(handler, alice, "join", room="R2", nickname="A")
    error = await alice.expect("error")
    assert (error["code"], "try again" in error["message"]) == ("media_unavailable", True)
    assert media.calls == asked == ["grant R1"]  # not even asked, nor to close R1


async def test_connections_not_deleted_during_an_outage_are_deleted_when_it_ends(
    make_handler: HandlerFactory, media: FakeMedia, caplog: pytest.LogCaptureFixture
) -> None:
    breaker = Breaker(media, first_probe=0.01, max_probe=0.01)
    handler = make_handler(backend=breaker, recovered=breaker.recovered)
    alice, bob = connect(handler, "alice"), connect(handler, "bob")
    await join(handler, alice, "R1")
    await join(handler, bob, "R1")
    bob.take()
    media.fail("revoke", "check")
    with caplog.at_level(logging.WARNING, logger="lobby.media.calls"):
        send(handler, alice, "leave")
        assert types(bob.take()) == ["left"]  # the lobby does not wait for the media server
        await until(lambda: handler.calls.unfinished == 1)
    assert "could not delete connection con_1 in room R1; will retry" in caplog.text
    media.mend()
    await until(lambda: handler.calls.unfinished == 0)
    assert list(media.connections) == ["con_2"]
    assert media.calls.count("revoke con_1") == 2


async def test_a_failed_revoke_is_logged_and_the_close_after_it_fails_fast(
    make_handler: HandlerFactory, media: FakeMedia, caplog: pytest.LogCaptureFixture
) -> None:
    breaker = Breaker(media, first_probe=60.0)
    handler = make_handler(backend=breaker, recovered=breaker.recovered)
    alice, bob = connect(handler, "alice"), connect(handler, "bob")
    await join(handler, alice, "R1")
    bob.take()
    media.fail("revoke")
    with caplog.at_level(logging.WARNING, logger="lobby.media.calls"):
        send(handler, alice, "leave")
        assert types(bob.take()) == ["left", "room_closed"]
        await until(lambda: handler.calls.unfinished == 2)
    assert "could not delete connection con_1 in room R1" in caplog.text
    assert "could not close the media session of room R1" in caplog.text
    assert media.calls == ["grant R1", "revoke con_1"]  # the close was not even tried


async def test_a_bug_answers_internal_error_and_frees_the_socket(
    handler: RequestHandler, media: FakeMedia, caplog: pytest.LogCaptureFixture
) -> None:
    alice = connect(handler, "alice")
    media.fail("grant", error=KeyError("a bug"), times=1)
    with caplog.at_level(logging.ERROR, logger="lobby.flows.joining"):
        ref = send(handler, alice, "join", room="R1", nickname="A")
        error = await alice.expect("error")
    assert error == {
        "type": "error",
        "ref": ref,
        "code": "internal_error",
        "message": "Something went wrong on our side.",
    }
    [record] = [r for r in caplog.records if r.name == "lobby.flows.joining"]
    assert record.exc_info is not None
    assert "a bug" not in error["message"]
    await join(handler, alice, "R1")  # not busy: the failed request is gone


# Limits


async def test_joins_per_user_per_minute_are_limited(make_handler: HandlerFactory) -> None:
    handler = make_handler(joins_per_minute=3)
    alice, bob = connect(handler, "alice"), connect(handler, "bob")
    for room in ("A", "B", "C"):
        token = await join(handler, alice, room)
    alice.take()
    ref = send(handler, alice, "join", room="D", nickname="A")
    [error] = alice.take()
    assert (error["code"], error["ref"]) == ("rate_limited", ref)
    wait = re.fullmatch(r"Too many joins; try again in (\d+) s\.", error["message"])
    assert wait is not None
    assert 58 <= int(wait[1]) <= 60
    await join(handler, bob, "D")  # per user
    # A token refresh costs the media server as much: it counts too.
    handler.disconnect(alice.conn)
    again = connect(handler, "alice")
    send(handler, again, "resume", key=token["resume_key"], token=True)
    [error] = again.take()
    assert error["code"] == "rate_limited"


async def test_a_full_room_answers_room_full_and_away_members_keep_their_seat(
    make_handler: HandlerFactory,
) -> None:
    handler = make_handler(room_size=2)
    alice, bob, mod = connect(handler, "alice"), connect(handler, "bob"), connect(handler, "mod")
    await join(handler, alice, "R1")
    await join(handler, bob, "R1")
    mod.take()
    ref = send(handler, mod, "join", room="R1", nickname="M")
    [error] = mod.take()
    assert error == {
        "type": "error",
        "ref": ref,
        "code": "room_full",
        "message": "Room R1 is full (2 people); try again later.",
    }
    handler.disconnect(alice.conn)  # away: keeps the seat
    send(handler, mod, "join", room="R1", nickname="M")
    assert mod.take()[0]["code"] == "room_full"
    await join(handler, mod, "R2")  # other rooms are open


async def test_two_joins_for_the_last_seat_one_wins_and_the_other_is_revoked(
    make_handler: HandlerFactory, media: FakeMedia
) -> None:
    handler = make_handler(room_size=1)
    alice, bob = connect(handler, "alice"), connect(handler, "bob")
    first, second = media.hold("grant"), media.hold("grant")
    send(handler, alice, "join", room="R1", nickname="A")
    ref = send(handler, bob, "join", room="R1", nickname="B")
    await second.reached()  # both passed the first check: the room was empty
    first.release()
    await alice.expect("token")
    second.release()
    error = await bob.until("error")  # checked again once the grant came back
    assert (error["code"], error["ref"]) == ("room_full", ref)
    await media.called("revoke con_2")
    assert rooms(handler) == {"R1": ["A"]}
    assert list(media.connections) == ["con_1"]
    assert "close_room R1" not in media.calls


# Peer-to-peer signalling


def hello(link: str = "l1") -> dict[str, object]:
    return {"kind": "hello", "link": link, "peer_link": None}


async def test_signals_go_to_one_peer_of_the_room_stamped_with_the_sender(
    make_handler: HandlerFactory,
) -> None:
    handler = make_handler(backend=FakeMedia(peer_to_peer=True))
    alice, bob, mod = connect(handler, "alice"), connect(handler, "bob"), connect(handler, "mod")
    a = (await join(handler, alice, "A"))["participant"]["id"]
    b = (await join(handler, bob, "A"))["participant"]["id"]
    for socket in (alice, bob, mod):
        socket.take()
    send(handler, alice, "signal", to=b, data=hello(), **{"from": "p_spoofed"})
    assert bob.take() == [{"type": "signal", "from": a, "data": hello()}]
    assert (alice.take(), mod.take()) == ([], [])  # no reply, nobody else
    ref = send(handler, mod, "signal", to=a, data=hello())  # mod is in no room
    [error] = mod.take()
    assert (error["code"], error["ref"]) == ("unknown_peer", ref)
    handler.disconnect(bob.conn)  # away: signals to it are dropped
    send(handler, alice, "signal", to=b, data=hello())
    assert alice.take() == []


async def test_with_openvidu_a_signal_is_an_unknown_type(
    handler: RequestHandler, media: FakeMedia
) -> None:
    alice, bob = connect(handler, "alice"), connect(handler, "bob")
    await join(handler, alice, "A")
    b = (await join(handler, bob, "A"))["participant"]["id"]
    alice.take()
    bob.take()
    ref = send(handler, alice, "signal", to=b, data=hello())
    [error] = alice.take()
    assert error == {
        "type": "error",
        "ref": ref,
        "code": "unknown_type",
        "message": "This server's calls use OpenVidu: no 'signal'.",
    }
    assert bob.take() == []


# Sessions ending, restarts, shutdown


async def test_end_session_removes_its_participants_now_and_closes_its_sockets(
    handler: RequestHandler, media: FakeMedia
) -> None:
    tab1, tab2 = connect(handler, "alice", "s1"), connect(handler, "alice", "s1")
    other, bob = connect(handler, "alice", "s2"), connect(handler, "bob")
    me = (await join(handler, tab1, "R1"))["participant"]
    await join(handler, other, "R1")
    gate = media.hold("grant")
    send(handler, tab2, "join", room="R2", nickname="A")  # in flight as the session ends
    await gate.reached()
    bob.take()
    handler.end_session("s1", CloseCode.SESSION_ENDED, "session ended")
    assert bob.take() == [{"type": "left", "room": "R1", "participant": me, "reason": "left"}]
    assert tab1.closer.closes == tab2.closer.closes == [(4001, "session ended")]
    assert other.conn.open
    gate.release()  # the join of the closed socket comes back: revoked, nobody sees it
    await media.called("close_room R2")
    assert media.calls == [
        "grant R1",
        "grant R1",
        "grant R2",
        "revoke con_1",
        "revoke con_3",
        "close_room R2",
    ]
    assert bob.take() == []
    assert rooms(handler) == {"R1": ["alice"]}


def roster_with(db: Database, *entries: tuple[Participant, str, str, str]) -> Roster:
    """A roster holding (participant, room, resume key, connection id) from a last run."""
    roster = Roster(db)
    for participant, room, key, connection_id in entries:
        roster.save(Entry(participant, room, digest(key), Grant(room, connection_id, "")))
    return roster


async def test_restore_gives_back_the_last_runs_participants_until_their_grace_ends(
    make_handler: HandlerFactory, media: FakeMedia
) -> None:
    kept = Participant("p_kept", "alice", "Alice", "PUBLISHER")
    gone = Participant("p_gone", "mod", "Mod", "MODERATOR")
    db = database.connect(":memory:")
    roster = roster_with(db, (kept, "R1", "key-kept", "con_k"), (gone, "R2", "key-gone", "con_g"))
    handler = make_handler(roster=roster, grace=0.05)
    assert handler.restore() == 2
    bob = connect(handler, "bob")
    assert welcome(handler)["rooms"] == [
        {
            "name": "R1",
            "participants": [
                {
                    "id": "p_kept",
                    "user": "alice",
                    "nickname": "Alice",
                    "role": "PUBLISHER",
                    "call": "connecting",
                    "media": None,
                }
            ],
            "locked": False,
        },
        {
            "name": "R2",
            "participants": [
                {
                    "id": "p_gone",
                    "user": "mod",
                    "nickname": "Mod",
                    "role": "MODERATOR",
                    "call": "connecting",
                    "media": None,
                }
            ],
            "locked": False,
        },
    ]
    back = connect(handler, "alice")
    send(handler, back, "resume", key="key-kept")
    assert types(back.take()) == ["resumed"]
    # mod never comes back: after the grace period it is gone, on the media server too.
    left = await bob.expect("left")
    assert (left["participant"]["id"], left["reason"]) == ("p_gone", "disconnected")
    assert await bob.expect("room_closed") == {"type": "room_closed", "room": "R2"}
    assert bob.take() == []  # alice stayed, silently (her grace began first)
    await media.called("close_room R2")
    assert media.calls == ["revoke con_g", "close_room R2"]
    assert [e.participant for e in roster.load()] == [kept]


async def test_without_a_roster_there_is_nothing_to_restore(handler: RequestHandler) -> None:
    assert handler.restore() == 0
    assert rooms(handler) == {}


async def test_the_roster_follows_joins_grants_and_leaves(
    make_handler: HandlerFactory, media: FakeMedia
) -> None:
    db = database.connect(":memory:")
    roster = Roster(db)
    handler = make_handler(roster=roster)
    alice = connect(handler, "alice")
    token = await join(handler, alice, "R1", "Alice")
    me = Participant(token["participant"]["id"], "alice", "Alice", "PUBLISHER")
    key = digest(token["resume_key"])
    assert roster.load() == [Entry(me, "R1", key, Grant("R1", "con_1", ""))]
    handler.disconnect(alice.conn)
    again = connect(handler, "alice")
    gate = media.hold("grant")
    send(handler, again, "resume", key=token["resume_key"], token=True)
    await gate.reached()  # the stale connection is revoked, the fresh one not made yet
    assert roster.load() == [Entry(me, "R1", key, None)]  # so a crash now revokes nothing twice
    gate.release()
    fresh = await again.expect("resumed")
    assert roster.load() == [Entry(me, "R1", key, Grant("R1", "con_2", ""))]
    stored = "\n".join(db.iterdump())
    for secret in (token["resume_key"], token["token"], fresh["token"]):
        assert secret not in stored  # a digest of the key; no token at all
    send(handler, again, "leave")
    assert roster.load() == []


async def test_drain_waits_for_joins_in_flight_and_cancels_grace_timers(
    make_handler: HandlerFactory, media: FakeMedia
) -> None:
    handler = make_handler(grace=0.02)
    alice, bob, observer = (
        connect(handler, "alice"),
        connect(handler, "bob"),
        connect(handler, "sub"),
    )
    await join(handler, alice, "R1")
    handler.disconnect(alice.conn)  # away, its grace timer running
    gate = media.hold("grant")
    bob.take()
    send(handler, bob, "join", room="R2", nickname="B")
    await gate.reached()
    draining = asyncio.create_task(handler.drain())
    await asyncio.sleep(0)
    assert not draining.done()
    gate.release()
    await draining
    assert bob.take()[0]["type"] == "token"  # the join in flight was finished
    # A witness whose grace starts now: when it has gone, alice's timer would have run.
    witness = connect(handler, "mod")
    await join(handler, witness, "R3")
    handler.disconnect(witness.conn)
    observer.take()
    left = await observer.until("left")
    assert left["participant"]["user"] == "mod"
    assert rooms(handler) == {"R1": ["alice"], "R2": ["B"]}  # alice kept for the next run


async def test_a_resume_cancels_its_grace_timer_so_drain_leaves_none_behind(
    make_handler: HandlerFactory,
) -> None:
    handler = make_handler(grace=0.02)
    alice, observer = connect(handler, "alice"), connect(handler, "sub")
    token = await join(handler, alice, "R1")
    handler.disconnect(alice.conn)
    again = connect(handler, "alice")
    send(handler, again, "resume", key=token["resume_key"])
    handler.disconnect(again.conn)  # a second reload: one grace timer, the new one
    await handler.drain()
    witness = connect(handler, "mod")  # its grace starts after every timer of alice's
    await join(handler, witness, "R3")
    handler.disconnect(witness.conn)
    observer.take()
    assert (await observer.until("left"))["participant"]["user"] == "mod"
    assert rooms(handler) == {"R1": ["alice"]}


# Call states


async def test_a_pages_report_of_its_call_is_told_to_everyone_without_a_reply(
    handler: RequestHandler,
) -> None:
    alice, bob = connect(handler, "alice"), connect(handler, "bob")
    token = await join(handler, alice, "R1")
    me = token["participant"]
    assert me["call"] == "connecting"
    alice.take(), bob.take()
    send(handler, alice, "call_state", call="connected")
    changed = {"type": "call_state", "room": "R1", "participant": me["id"], "call": "connected"}
    assert alice.take() == [changed]  # the event only: no reply to the report itself
    assert bob.take() == [changed]
    send(handler, alice, "call_state", call="connected")  # no change: no event
    assert alice.take() == bob.take() == []
    [room] = welcome(handler)["rooms"]
    assert room["participants"][0]["call"] == "connected"


async def test_a_report_from_a_socket_in_no_room_changes_nothing(handler: RequestHandler) -> None:
    alice, bob = connect(handler, "alice"), connect(handler, "bob")
    await join(handler, bob, "R1")
    alice.take(), bob.take()
    send(handler, alice, "call_state", call="dropped")  # raced a leave: normal
    assert alice.take() == bob.take() == []
    [room] = welcome(handler)["rooms"]
    assert room["participants"][0]["call"] == "connecting"


async def test_a_report_without_a_valid_state_is_a_bad_request(handler: RequestHandler) -> None:
    alice = connect(handler, "alice")
    await join(handler, alice, "R1")
    alice.take()
    ref = send(handler, alice, "call_state", call="connecting")
    [error] = alice.take()
    assert (error["type"], error["code"], error["ref"]) == ("error", "bad_request", ref)
    [room] = welcome(handler)["rooms"]
    assert room["participants"][0]["call"] == "connecting"


async def test_reports_are_ignored_when_the_media_server_tells_call_states(
    make_handler: HandlerFactory,
) -> None:
    handler = make_handler(calls_from_media=True)
    alice = connect(handler, "alice")
    await join(handler, alice, "R1")
    alice.take()
    send(handler, alice, "call_state", call="connected")
    assert alice.take() == []
    [room] = welcome(handler)["rooms"]
    assert room["participants"][0]["call"] == "connecting"


# Media reports

SHARING = {"camera": True, "microphone": False, "screen": True}


async def test_a_media_report_is_told_to_everyone_once_and_kept_for_newcomers(
    handler: RequestHandler,
) -> None:
    alice, bob = connect(handler, "alice"), connect(handler, "bob")
    token = await join(handler, alice, "R1")
    me = token["participant"]
    assert me["media"] is None  # unknown until the page says
    alice.take(), bob.take()
    send(handler, alice, "media", **SHARING)
    changed = {"type": "media", "room": "R1", "participant": me["id"], "media": SHARING}
    assert alice.take() == [changed]  # the event only: no reply to the report itself
    assert bob.take() == [changed]
    send(handler, alice, "media", **SHARING)  # no change: no event
    assert alice.take() == bob.take() == []
    [room] = welcome(handler)["rooms"]
    assert room["participants"][0]["media"] == SHARING


async def test_a_viewer_claiming_to_send_is_not_allowed_and_may_say_it_sends_nothing(
    handler: RequestHandler,
) -> None:
    viewer, bob = connect(handler, "sub"), connect(handler, "bob")
    await join(handler, viewer, "R1")
    viewer.take(), bob.take()
    for claim in ({"camera": True}, {"microphone": True}, {"screen": True}):
        ref = send(handler, viewer, "media", **{**NOTHING, **claim})
        [error] = viewer.take()
        assert (error["type"], error["code"], error["ref"]) == ("error", "not_allowed", ref)
    assert bob.take() == []
    send(handler, viewer, "media", **NOTHING)
    assert types(bob.take()) == ["media"]


async def test_a_media_report_outside_a_room_or_malformed_changes_nothing(
    handler: RequestHandler,
) -> None:
    alice, bob = connect(handler, "alice"), connect(handler, "bob")
    await join(handler, bob, "R1")
    alice.take(), bob.take()
    send(handler, alice, "media", **SHARING)  # raced a leave: normal, silent
    assert alice.take() == bob.take() == []
    ref = send(handler, bob, "media", camera="yes", microphone=True, screen=False)
    [error] = bob.take()
    assert (error["type"], error["code"], error["ref"]) == ("error", "bad_request", ref)
    [room] = welcome(handler)["rooms"]
    assert room["participants"][0]["media"] is None


NOTHING = {"camera": False, "microphone": False, "screen": False}


async def test_a_socket_that_never_asked_for_a_participant_closes_without_a_command(
    make_handler: HandlerFactory,
) -> None:
    """Only a join or a resume of the socket can give it a participant (with Redis, one
    may be in the log ahead of its close): a socket that asked for neither holds nobody."""
    heard: list[Applied] = []

    def store(listener: Listener, cleaner: Cleaner, _: object) -> LocalPresence:
        def both(applied: Applied) -> None:
            heard.append(applied)
            listener(applied)

        return LocalPresence(grace=30.0, listener=both, cleaner=cleaner, instance="here")

    handler = make_handler(store=store)
    watcher = connect(handler, "bob")
    handler.disconnect(watcher.conn)
    assert heard == []
    alice = connect(handler, "alice")
    await join(handler, alice, "R1")
    handler.disconnect(alice.conn)
    assert [type(a.command).__name__ for a in heard] == ["Reserve", "Join", "Disconnect"]
    assert heard[-1].command == commands.Disconnect("here:" + str(alice.conn.id))


async def test_every_change_of_presence_is_a_command_of_the_store(
    make_handler: HandlerFactory,
) -> None:
    heard: list[Applied] = []

    def store(listener: Listener, cleaner: Cleaner, _: object) -> LocalPresence:
        def both(applied: Applied) -> None:
            heard.append(applied)
            listener(applied)

        return LocalPresence(grace=0.05, listener=both, cleaner=cleaner, instance="here")

    handler = make_handler(store=store)
    alice = connect(handler, "alice")
    await join(handler, alice, "R1")
    send(handler, alice, "call_state", call="connected")
    send(handler, alice, "media", **SHARING)
    handler.disconnect(alice.conn)
    await until(lambda: type(heard[-1].command).__name__ == "MediaClosed")
    kinds = [type(a.command).__name__ for a in heard]
    # The join reserves its room first, and the media session closes through the log:
    # across instances, that order keeps a close from landing under a join.
    assert kinds == [
        *("Reserve", "Join", "ReportCall", "ReportMedia", "Disconnect", "Expire"),
        *("CloseMedia", "MediaClosed"),
    ]
    assert heard[1].command.socket == "here:" + str(alice.conn.id)  # type: ignore[union-attr]


async def test_a_reset_resends_welcomes_and_each_room_socket_its_chat_history(
    make_handler: HandlerFactory,
) -> None:
    resets: list[Callable[[], None]] = []

    def store(listener: Listener, cleaner: Cleaner, reset: Callable[[], None]) -> LocalPresence:
        resets.append(reset)  # what a Redis store calls after reloading its replica
        return LocalPresence(grace=30, listener=listener, cleaner=cleaner)

    handler = make_handler(store=store)
    alice = connect(handler, "alice")
    await join(handler, alice, "R1")
    bob = connect(handler, "bob")
    send(handler, alice, "chat", text="kept")
    alice.take()
    bob.take()
    [reset] = resets
    reset()
    welcome_again, history = alice.take()
    assert welcome_again["type"] == "welcome"
    assert history["type"] == "chat_history"
    assert [m["text"] for m in history["messages"]] == ["kept"]
    assert [m["type"] for m in bob.take()] == ["welcome"]  # in no room: no history
