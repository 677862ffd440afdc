"""Moderation over the real socket (`lobby.flows.moderation`): kick, close_room, lock_room, their
refusals, joins in flight, the audit rows; one lobby against the OpenVidu stand-in, and two
instances sharing presence through a real Redis."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from lobby.store.audit import AuditLog
from tests.conftest import PASSWORD, Client, Lobby, LobbyFactory, make_users, until
from tests.livekit_standin import running_standin as running_livekit
from tests.openvidu_standin import OpenViduStandin
from tests.redis_server import RedisServer
from tests.test_cluster_app import connection_of, pair, revokes
from tests.test_webhooks import KEY, SECRET, livekit_lobby


async def answer(client: Client, frame: dict[str, Any]) -> dict[str, Any]:
    """Send `frame`; the reply (`ok` or `error`) to it, other frames kept for later."""
    ref = await client.request(frame)
    skipped: list[dict[str, Any]] = []
    while (message := await client.recv())["type"] not in ("ok", "error"):
        skipped.append(message)
    client.backlog[:0] = skipped
    assert message["ref"] == ref, message
    return message


async def refused(client: Client, frame: dict[str, Any], code: str) -> dict[str, Any]:
    reply = await answer(client, frame)
    assert (reply["type"], reply["code"]) == ("error", code), reply
    return reply


def kick(room: str, participant: Any, **extra: Any) -> dict[str, Any]:
    return {"type": "kick", "room": room, "participant": participant, **extra}


def close(room: str) -> dict[str, Any]:
    return {"type": "close_room", "room": room}


def lock(room: str, locked: Any = True) -> dict[str, Any]:
    return {"type": "lock_room", "room": room, "locked": locked}


async def joined(client: Client, room: str, nickname: str | None = None) -> str:
    """Join `room` and see our own `joined`; our participant id."""
    token = await client.join(room, nickname)
    await client.until("joined")
    pid: str = token["participant"]["id"]
    return pid


async def test_a_kick_removes_at_once_tells_the_page_why_and_bans_the_user(
    lobby: Lobby, standin: OpenViduStandin
) -> None:
    alice, mod, bob = [await lobby.client(n) for n in ("alice", "mod", "bob")]
    token = await alice.join("R1", "Alice")
    pid = token["participant"]["id"]
    for client in (alice, mod, bob):
        await client.until("joined")
    connection = connection_of(standin, pid)

    reply = await answer(mod, kick("R1", pid, reason="  Off topic, again  "))
    assert reply == {"type": "ok", "ref": reply["ref"]}
    assert await alice.recv() == {
        "type": "kicked",
        "room": "R1",
        "by": "mod",
        "reason": "Off topic, again",
    }
    for client in (alice, mod, bob):
        left = await client.expect("left")
        assert (left["participant"]["id"], left["reason"]) == (pid, "kicked")
        assert await client.expect("room_closed") == {"type": "room_closed", "room": "R1"}
    # Its OpenVidu connection is deleted (which disconnects its browser), once, and the
    # emptied session closed.
    await standin.wait_for(lambda: revokes(standin, connection) == 1)
    await standin.wait_for(lambda: "R1" not in standin.sessions)
    assert lobby.state.handler.presence.member(pid) is None

    # Its page cannot quietly come back, nor join that room again; other rooms are fine.
    await refused(alice, {"type": "resume", "key": token["resume_key"]}, "resume_failed")
    banned = await refused(alice, {"type": "join", "room": "R1", "nickname": "A"}, "banned")
    assert "R1" in banned["message"]
    again = await lobby.client("alice")  # another tab of the same user: banned all the same
    await refused(again, {"type": "join", "room": "R1", "nickname": "A"}, "banned")
    assert (await alice.join("R2"))["room"] == "R2"
    assert (await bob.join("R1"))["room"] == "R1"


async def test_kicking_an_away_participant_ends_its_grace_and_its_resume(
    make_lobby: LobbyFactory, standin: OpenViduStandin
) -> None:
    lobby = await make_lobby(reconnect_grace=30.0)
    alice, mod = await lobby.client("alice"), await lobby.client("mod")
    token = await alice.join("R1")
    pid = token["participant"]["id"]
    connection = connection_of(standin, pid)
    await mod.until("joined")
    await alice.close()
    await until(lambda: pid in dict(lobby.state.handler.store.replica.away()))

    assert (await answer(mod, kick("R1", pid)))["type"] == "ok"
    left = await mod.expect("left")
    assert (left["participant"]["id"], left["reason"]) == (pid, "kicked")
    back = await lobby.client("alice")
    await refused(back, {"type": "resume", "key": token["resume_key"]}, "resume_failed")
    await standin.wait_for(lambda: revokes(standin, connection) == 1)


async def test_with_no_ban_a_kicked_user_may_join_again_at_once(make_lobby: LobbyFactory) -> None:
    lobby = await make_lobby(kick_ban=0)
    alice, mod = await lobby.client("alice"), await lobby.client("mod")
    pid = await joined(alice, "R1")
    assert (await answer(mod, kick("R1", pid)))["type"] == "ok"
    await alice.until("kicked")
    assert (await alice.join("R1"))["room"] == "R1"


async def test_every_refusal_of_a_kick_changes_nothing(lobby: Lobby) -> None:
    alice, bob, mod, sub = [await lobby.client(n) for n in ("alice", "bob", "mod", "sub")]
    alice_id = await joined(alice, "R1")
    await joined(bob, "R2")
    mod_id = await joined(mod, "R1")
    other_mod = await lobby.client("mod")
    presence = lobby.state.handler.presence
    before = list(presence.rooms())

    for who in (alice, bob, sub):  # no moderator: whoever and wherever they are
        reply = await refused(who, kick("R1", alice_id), "not_allowed")
        assert "moderator" in reply["message"].lower()
    await refused(mod, kick("R1", mod_id), "not_allowed")  # yourself
    await refused(other_mod, kick("R1", mod_id), "not_allowed")  # yourself, another tab
    await refused(other_mod, kick("R2", alice_id), "not_found")  # in another room
    await refused(mod, kick("R1", "p_nobody"), "not_found")
    await refused(mod, kick("NOPE", alice_id), "not_found")
    await refused(mod, kick("bad room!", alice_id), "invalid_room")
    await refused(mod, {"type": "kick", "room": "R1"}, "bad_request")
    await refused(mod, kick("R1", 7), "bad_request")
    await refused(mod, kick("R1", alice_id, reason=5), "bad_request")
    await refused(mod, kick("R1", alice_id, reason="x" * 201), "bad_request")
    await refused(mod, kick("R1", alice_id, reason="a\nb"), "bad_request")
    assert list(presence.rooms()) == before
    # A reason of exactly 200 characters, once trimmed, is fine.
    assert (await answer(mod, kick("R1", alice_id, reason=" " + "y" * 200 + " ")))["type"] == "ok"
    assert (await alice.until("kicked"))["reason"] == "y" * 200


async def test_another_moderator_cannot_be_kicked(make_lobby: LobbyFactory) -> None:
    users = make_users()
    users.add("mod2", "MODERATOR", PASSWORD)
    lobby = await make_lobby(users=users)
    mod, mod2 = await lobby.client("mod"), await lobby.client("mod2")
    mod2_id = await joined(mod2, "R1")
    reply = await refused(mod, kick("R1", mod2_id), "not_allowed")
    assert "close the room" in reply["message"]


async def test_close_room_removes_everyone_and_closes_the_session(
    lobby: Lobby, standin: OpenViduStandin
) -> None:
    alice, bob, mod = [await lobby.client(n) for n in ("alice", "bob", "mod")]
    ids = [await joined(alice, "R1"), await joined(bob, "R1")]
    other = await joined(await lobby.client("sub"), "R2")
    connections = [connection_of(standin, pid) for pid in ids]

    await refused(alice, close("R1"), "not_allowed")
    await refused(mod, close("EMPTY"), "not_found")
    await refused(mod, {"type": "close_room"}, "bad_request")
    assert (await answer(mod, close("R1")))["type"] == "ok"
    for client in (alice, bob, mod):
        lefts = [await client.until("left"), await client.until("left")]
        assert [(m["participant"]["id"], m["reason"]) for m in lefts] == [
            (ids[0], "closed"),
            (ids[1], "closed"),
        ]
        assert await client.until("room_closed") == {"type": "room_closed", "room": "R1"}
    await standin.wait_for(lambda: all(revokes(standin, c) == 1 for c in connections))
    await standin.wait_for(lambda: "R1" not in standin.sessions)
    assert [name for name, _ in lobby.state.handler.presence.rooms()] == ["R2"]
    assert lobby.state.handler.presence.member(other) is not None
    # Closing is no ban: the room opens afresh for whoever joins next.
    assert (await alice.join("R1"))["room"] == "R1"


async def test_a_locked_room_takes_only_moderators_and_forgets_the_lock_when_it_empties(
    lobby: Lobby,
) -> None:
    alice, bob, mod, sub = [await lobby.client(n) for n in ("alice", "bob", "mod", "sub")]
    await joined(alice, "R1")
    await refused(mod, lock("EMPTY"), "not_found")
    await refused(mod, lock("R1", "yes"), "bad_request")
    await refused(mod, {"type": "lock_room", "room": "R1"}, "bad_request")
    await refused(bob, lock("R1"), "not_allowed")
    await refused(sub, lock("R1"), "not_allowed")

    assert (await answer(mod, lock("R1")))["type"] == "ok"
    for client in (alice, bob, mod, sub):
        assert await client.until("room_locked") == {
            "type": "room_locked",
            "room": "R1",
            "locked": True,
        }
    assert (await lobby.client("sub")).welcome["rooms"][0]["locked"] is True
    reply = await refused(bob, {"type": "join", "room": "R1", "nickname": "Bob"}, "room_locked")
    assert "only moderators" in reply["message"]
    # Locking again changes nothing: `ok`, and no event.
    bob.backlog.clear()  # the joins and the lock seen above
    assert (await answer(mod, lock("R1")))["type"] == "ok"
    await bob.nothing()
    # Moderators still get in; whoever is inside stays.
    mod_id = await joined(mod, "R1")

    assert (await answer(mod, lock("R1", False)))["type"] == "ok"
    assert (await bob.until("room_locked"))["locked"] is False
    await joined(bob, "R1")
    assert (await answer(mod, lock("R1")))["type"] == "ok"
    for client in (alice, bob):
        await answer(client, {"type": "leave"})
    assert (await answer(mod, {"type": "leave"}))["type"] == "ok"
    await until(lambda: not lobby.state.handler.presence.has_room("R1"))
    assert lobby.state.handler.presence.sanctions.locked == set()
    assert mod_id
    assert (await bob.join("R1"))["room"] == "R1"
    assert (await lobby.client("sub")).welcome["rooms"][0]["locked"] is False


@pytest.mark.parametrize("action", ["lock", "close"])
async def test_a_join_in_flight_when_the_room_is_locked_or_closed_is_refused_and_revoked(
    lobby: Lobby, standin: OpenViduStandin, action: str
) -> None:
    alice, bob, mod = [await lobby.client(n) for n in ("alice", "bob", "mod")]
    await joined(alice, "R1")
    granting = asyncio.Event()

    def seen(method: str, path: str) -> None:
        if method == "POST" and path.endswith("/R1/connection"):
            granting.set()

    standin.on_request = seen
    standin.fault, standin.delay = "slow", 0.4  # the grant stays in flight meanwhile
    ref = await bob.request({"type": "join", "room": "R1", "nickname": "Bob"})
    await asyncio.wait_for(granting.wait(), 5)
    frame = lock("R1") if action == "lock" else close("R1")
    assert (await answer(mod, frame))["type"] == "ok"
    code = "room_locked" if action == "lock" else "room_closed"
    error = await bob.until("error")
    assert (error["ref"], error["code"]) == (ref, code)
    standin.fault = None
    # The connection made for bob (it exists: the refusal came after the grant) is deleted.
    await standin.wait_for(
        lambda: (
            not any(
                '"bob"' in c.server_data
                for session in standin.sessions.values()
                for c in session.connections.values()
            )
        )
    )
    people = [p.user for _, room in lobby.state.handler.presence.rooms() for p in room]
    assert "bob" not in people


async def test_a_kicked_sockets_join_in_flight_elsewhere_is_dropped_and_revoked(
    lobby: Lobby, standin: OpenViduStandin
) -> None:
    alice, mod = await lobby.client("alice"), await lobby.client("mod")
    pid = await joined(alice, "R1")
    granting = asyncio.Event()

    def seen(method: str, path: str) -> None:
        if method == "POST" and path.endswith("/R2/connection"):
            granting.set()

    standin.on_request = seen
    standin.fault, standin.delay = "slow", 0.4
    await alice.request({"type": "join", "room": "R2", "nickname": "Alice"})
    await asyncio.wait_for(granting.wait(), 5)
    assert (await answer(mod, kick("R1", pid)))["type"] == "ok"
    assert (await alice.expect("kicked"))["room"] == "R1"
    standin.fault = None
    # The R2 connection, made after all, is deleted; alice is nowhere, and was told nothing.
    await standin.wait_for(
        lambda: any(
            c.method == "DELETE" and "/sessions/R2" in c.path and c.status == 204
            for c in standin.calls
        )
    )
    assert not lobby.state.handler.presence.has_room("R2")
    assert [m["type"] for m in [await alice.recv(), await alice.recv()]] == [
        "left",
        "room_closed",
    ]
    await alice.nothing()


async def test_moderation_counts_against_the_message_rate(make_lobby: LobbyFactory) -> None:
    lobby = await make_lobby(message_rate=1, message_burst=3)
    mod = await lobby.client("mod")
    for _ in range(6):
        await mod.send(lock("NOPE"))
    replies = [await mod.expect("error") for _ in range(6)]
    codes = [r["code"] for r in replies]
    assert codes[:3] == ["not_found"] * 3
    assert "rate_limited" in codes[3:]


async def test_each_action_that_took_effect_is_audited(lobby: Lobby) -> None:
    alice, mod = await lobby.client("alice"), await lobby.client("mod")
    pid = await joined(alice, "R1")
    await joined(await lobby.client("bob"), "R2")
    await answer(mod, lock("R1"))
    await answer(mod, lock("R1", False))
    await refused(mod, kick("R1", "p_nobody", reason="nope"), "not_found")  # not audited
    await refused(alice, close("R2"), "not_allowed")  # not audited
    await answer(mod, kick("R1", pid, reason="Spam"))
    await answer(mod, close("R2"))
    audit = AuditLog(lobby.state.db)
    await until(lambda: len(audit.since()) == 4)
    rows = [(r.actor, r.action, r.room, r.target, r.reason) for r in audit.since()]
    assert rows == [
        ("mod", "lock_room", "R1", "", ""),
        ("mod", "unlock_room", "R1", "", ""),
        ("mod", "kick", "R1", "alice", "Spam"),
        ("mod", "close_room", "R2", "", ""),
    ]


# Several instances: one Redis log


async def test_across_instances_kicks_locks_and_bans_hold_and_revoke_once(
    make_lobby: LobbyFactory, own_redis: RedisServer, standin: OpenViduStandin
) -> None:
    a, b = await pair(make_lobby, own_redis)
    alice = await a.client("alice")
    mod = await b.client("mod")
    bob_on_a = await a.client("bob")
    token = await alice.join("R1")
    pid = token["participant"]["id"]
    connection = connection_of(standin, pid)
    await mod.until("joined")

    # A lock on b refuses a join on a.
    assert (await answer(mod, lock("R1")))["type"] == "ok"
    await bob_on_a.until("room_locked")
    await refused(bob_on_a, {"type": "join", "room": "R1", "nickname": "Bob"}, "room_locked")
    welcome = (await a.client("sub")).welcome
    assert welcome["rooms"][0]["locked"] is True

    # A kick from b reaches the page on a, which is then banned on both instances.
    assert (await answer(mod, kick("R1", pid, reason="bye")))["type"] == "ok"
    assert (await alice.until("kicked")) == {
        "type": "kicked",
        "room": "R1",
        "by": "mod",
        "reason": "bye",
    }
    left = await alice.until("left")
    assert left["reason"] == "kicked"
    await standin.wait_for(lambda: revokes(standin, connection) == 1)
    await refused(alice, {"type": "join", "room": "R1", "nickname": "A"}, "banned")
    alice_on_b = await b.client("alice")
    await refused(alice_on_b, {"type": "join", "room": "R1", "nickname": "A"}, "banned")
    await refused(alice_on_b, {"type": "resume", "key": token["resume_key"]}, "resume_failed")
    # Every replica agrees: the room emptied, its lock is gone.
    for presence in (a.state.handler.presence, b.state.handler.presence):
        await until(lambda presence=presence: not presence.has_room("R1"))  # type: ignore[misc]
        assert presence.sanctions.locked == set()
    assert revokes(standin, connection) == 1
    # The audit rows are the issuer's: written once, on b (each test lobby has its own
    # database here; instances sharing one would see them all).
    await until(lambda: len(AuditLog(b.state.db).since()) == 2)
    assert [r.action for r in AuditLog(b.state.db).since()] == ["lock_room", "kick"]
    assert AuditLog(a.state.db).since() == []


# Other media back ends


async def test_with_livekit_a_kick_removes_the_participant_from_its_room(
    make_lobby: LobbyFactory,
) -> None:
    async with running_livekit(KEY, SECRET) as livekit:
        lobby = await livekit_lobby(make_lobby, livekit)
        alice, bob, mod = [await lobby.client(n) for n in ("alice", "bob", "mod")]
        alice_id, bob_id = await joined(alice, "R1"), await joined(bob, "R1")
        livekit.join("R1", alice_id)
        livekit.join("R1", bob_id)
        assert (await answer(mod, kick("R1", alice_id)))["type"] == "ok"
        assert (await alice.until("kicked"))["by"] == "mod"
        await until(lambda: list(livekit.rooms["R1"].participants) == [bob_id])
        removed = [c.request for c in livekit.calls if c.method == "RemoveParticipant"]
        assert removed == [{"room": "R1", "identity": alice_id}]


async def test_peer_to_peer_the_kicked_one_is_dropped_by_its_peers(
    make_lobby: LobbyFactory,
) -> None:
    lobby = await make_lobby(media="p2p")
    alice, bob, mod = [await lobby.client(n) for n in ("alice", "bob", "mod")]
    alice_id, bob_id = await joined(alice, "R1"), await joined(bob, "R1")
    assert (await answer(mod, kick("R1", bob_id, reason="bye")))["type"] == "ok"
    left = await alice.until("left")  # alice's page closes its connection to bob on it
    assert (left["participant"]["id"], left["reason"]) == (bob_id, "kicked")
    await bob.until("kicked")
    # bob can no longer signal alice: he is in no room.
    hello = {"kind": "hello", "link": "k3f9", "peer_link": None}
    await bob.send({"type": "signal", "to": alice_id, "data": hello})
    assert (await bob.until("error"))["code"] == "unknown_peer"
