"""The lobby socket end to end: real uvicorn, real `websockets` clients, the OpenVidu stand-in."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import socket
import sys
from pathlib import Path

import pytest
import websockets
from websockets.exceptions import InvalidStatus

from lobby.media.breaker import Breaker
from lobby.store.db import connect
from lobby.store.users import UserStore
from tests.conftest import CHEAP_HASHER, PASSWORD, Client, Lobby, LobbyFactory, until
from tests.openvidu_standin import OpenViduStandin, closed_port_url

TOKEN = re.compile(
    r"^ws://127\.0\.0\.1:\d+\?sessionId=(?P<room>[\w-]+)&token=tok_[A-Z][A-Za-z0-9]{15}$"
)


def paths(standin: OpenViduStandin, method: str | None = None) -> list[str]:
    return [f"{c.method} {c.path}" for c in standin.calls if method in (None, c.method)]


def token_connection_id(standin: OpenViduStandin) -> str:
    """The id of the connection the stand-in created (from its recorded DELETE)."""
    [delete] = [c.path for c in standin.calls if c.method == "DELETE" and "/connection/" in c.path]
    return delete.rsplit("/", 1)[1]


def when_connection_requested(standin: OpenViduStandin) -> asyncio.Event:
    """Set while our `POST …/connection` is in flight at the stand-in."""
    arrived = asyncio.Event()

    def hook(method: str, path: str) -> None:
        if method == "POST" and path.endswith("/connection"):
            arrived.set()

    standin.on_request = hook
    return arrived


# The handshake


async def test_welcome_tells_who_you_are_and_the_whole_lobby(lobby: Lobby) -> None:
    alice = await lobby.client("alice")
    assert alice.welcome == {
        "type": "welcome",
        "user": {"name": "alice", "role": "PUBLISHER"},
        "media": {"kind": "openvidu"},
        "room_size": None,
        "rooms": [],
    }
    await alice.join("TUTORIAL", "Alice")
    bob = await lobby.client("bob")
    [room] = bob.welcome["rooms"]
    assert room["name"] == "TUTORIAL"
    assert [(p["user"], p["nickname"], p["role"]) for p in room["participants"]] == [
        ("alice", "Alice", "PUBLISHER")
    ]
    assert set(room["participants"][0]) == {"id", "user", "nickname", "role"}


async def test_anonymous_socket_is_refused_at_the_handshake(lobby: Lobby) -> None:
    with pytest.raises(InvalidStatus) as refused:
        await websockets.connect(lobby.ws_url, origin=websockets.Origin(lobby.http))
    assert refused.value.response.status_code == 403


async def test_forged_session_cookie_is_refused(lobby: Lobby) -> None:
    with pytest.raises(InvalidStatus) as refused:
        await websockets.connect(
            lobby.ws_url,
            origin=websockets.Origin(lobby.http),
            additional_headers={"Cookie": "lobby_session=made-up"},
        )
    assert refused.value.response.status_code == 403


@pytest.mark.parametrize("origin", ["http://evil.example", "https://127.0.0.1:1", None])
async def test_cross_origin_socket_is_refused_even_with_a_valid_session(
    lobby: Lobby, origin: str | None
) -> None:
    cookie = await lobby.login("alice")
    with pytest.raises(InvalidStatus) as refused:
        await websockets.connect(
            lobby.ws_url,
            origin=websockets.Origin(origin) if origin else None,
            additional_headers={"Cookie": f"lobby_session={cookie}"},
        )
    assert refused.value.response.status_code == 403


async def test_an_allowed_extra_origin_may_connect(make_lobby: LobbyFactory) -> None:
    lobby = await make_lobby(allowed_origins=("https://app.example.com",))
    cookie = await lobby.login("alice")
    socket = await websockets.connect(
        lobby.ws_url,
        origin=websockets.Origin("https://app.example.com"),
        additional_headers={"Cookie": f"lobby_session={cookie}"},
    )
    assert json.loads(await socket.recv())["type"] == "welcome"
    await socket.close()


# Joining and leaving


async def test_two_users_see_each_others_join_and_leave(
    lobby: Lobby, standin: OpenViduStandin
) -> None:
    alice, bob = await lobby.client("alice"), await lobby.client("bob")
    token = await alice.join("TUTORIAL", "Alice")
    match = TOKEN.match(token["token"])
    assert match is not None
    assert match["room"] == "TUTORIAL"
    me = token["participant"]
    assert me["user"] == "alice"
    assert me["nickname"] == "Alice"
    assert me["id"].startswith("p_")
    assert await alice.expect("joined") == {"type": "joined", "room": "TUTORIAL", "participant": me}
    assert await bob.expect("joined") == {"type": "joined", "room": "TUTORIAL", "participant": me}

    ref = await alice.request({"type": "leave"})
    assert await alice.expect("ok") == {"type": "ok", "ref": ref}
    for client in (alice, bob):
        assert await client.expect("left") == {
            "type": "left",
            "room": "TUTORIAL",
            "participant": me,
            "reason": "left",
        }
        assert await client.expect("room_closed") == {"type": "room_closed", "room": "TUTORIAL"}
    await standin.wait_for(lambda: "DELETE /openvidu/api/sessions/TUTORIAL" in paths(standin))
    connection_id = token_connection_id(standin)
    assert connection_id.startswith("con_")
    assert paths(standin) == [
        "POST /openvidu/api/sessions",
        "POST /openvidu/api/sessions/TUTORIAL/connection",
        f"DELETE /openvidu/api/sessions/TUTORIAL/connection/{connection_id}",
        "DELETE /openvidu/api/sessions/TUTORIAL",
    ]


async def test_the_token_reaches_only_the_requester(lobby: Lobby) -> None:
    alice, bob = await lobby.client("alice"), await lobby.client("bob")
    token = await alice.join("R1")
    seen = await bob.expect("joined")
    assert token["token"] not in json.dumps(seen)
    assert token["resume_key"] not in json.dumps(seen)
    await bob.nothing()


async def test_the_connection_carries_role_and_user(lobby: Lobby, standin: OpenViduStandin) -> None:
    sub = await lobby.client("sub")
    token = await sub.join("R1", "Watcher")
    [created] = [c for c in standin.calls if c.path.endswith("/connection")]
    assert created.method == "POST"
    assert created.status == 200
    assert created.json["role"] == "SUBSCRIBER"
    assert json.loads(created.json["data"])["serverData"] == "sub"
    assert token["participant"]["role"] == "SUBSCRIBER"
    mod = await lobby.client("mod")
    await mod.join("R1")
    assert [c.json["role"] for c in standin.calls if c.path.endswith("/connection")] == [
        "SUBSCRIBER",
        "MODERATOR",
    ]


async def test_second_join_into_a_room_makes_only_a_connection(
    lobby: Lobby, standin: OpenViduStandin
) -> None:
    alice, bob = await lobby.client("alice"), await lobby.client("bob")
    await alice.join("R1")
    await bob.join("R1")
    statuses = [c.status for c in standin.calls if c.path == "/openvidu/api/sessions"]
    assert statuses == [200]
    assert len(standin.sessions["R1"].connections) == 2


async def test_joining_another_room_leaves_the_first(
    lobby: Lobby, standin: OpenViduStandin
) -> None:
    alice, bob = await lobby.client("alice"), await lobby.client("bob")
    first = await alice.join("A")
    await bob.expect("joined")
    second = await alice.join("B")
    assert await bob.expect("left") == {
        "type": "left",
        "room": "A",
        "participant": first["participant"],
        "reason": "switched",
    }
    assert await bob.expect("room_closed") == {"type": "room_closed", "room": "A"}
    joined = await bob.expect("joined")
    assert joined["room"] == "B"
    assert joined["participant"] == second["participant"]
    await standin.wait_for(lambda: "DELETE /openvidu/api/sessions/A" in paths(standin))
    assert "B" in standin.sessions
    assert "A" not in standin.sessions


async def test_joining_the_same_room_again_is_an_error(lobby: Lobby) -> None:
    alice = await lobby.client("alice")
    await alice.join("A")
    await alice.expect("joined")
    ref = await alice.request({"type": "join", "room": "A", "nickname": "again"})
    error = await alice.expect("error")
    assert error["code"] == "already_joined"
    assert error["ref"] == ref


async def test_leave_outside_a_room_is_a_harmless_ok(
    lobby: Lobby, standin: OpenViduStandin
) -> None:
    alice = await lobby.client("alice")
    ref = await alice.request({"type": "leave"})
    assert await alice.expect("ok") == {"type": "ok", "ref": ref}
    await alice.nothing()
    assert standin.calls == []


async def test_ping_pong(lobby: Lobby) -> None:
    alice = await lobby.client("alice")
    ref = await alice.request({"type": "ping"})
    assert await alice.expect("pong") == {"type": "pong", "ref": ref}


# Going away and coming back


async def test_a_closed_tab_leaves_after_the_grace_period(
    lobby: Lobby, standin: OpenViduStandin
) -> None:
    alice, bob = await lobby.client("alice"), await lobby.client("bob")
    token = await alice.join("R1")
    await bob.expect("joined")
    loop = asyncio.get_running_loop()
    closed_at = loop.time()
    await alice.close()
    left = await bob.expect("left", timeout=lobby.settings.reconnect_grace + 2)
    waited = loop.time() - closed_at
    assert left == {
        "type": "left",
        "room": "R1",
        "participant": token["participant"],
        "reason": "disconnected",
    }
    assert waited >= lobby.settings.reconnect_grace * 0.9
    assert await bob.expect("room_closed") == {"type": "room_closed", "room": "R1"}
    await standin.wait_for(lambda: "DELETE /openvidu/api/sessions/R1" in paths(standin))
    deletes = paths(standin, "DELETE")
    assert deletes[0].startswith("DELETE /openvidu/api/sessions/R1/connection/con_")
    assert deletes[1] == "DELETE /openvidu/api/sessions/R1"


async def test_resume_within_grace_is_silent_for_everyone(
    lobby: Lobby, standin: OpenViduStandin
) -> None:
    alice, bob = await lobby.client("alice"), await lobby.client("bob")
    token = await alice.join("R1")
    await alice.expect("joined")
    await bob.expect("joined")
    await alice.close()
    again = await lobby.client("alice", cookie=alice.cookie)
    assert again.welcome["rooms"][0]["participants"] == [token["participant"]]
    ref = await again.request({"type": "resume", "key": token["resume_key"]})
    assert await again.expect("resumed") == {
        "type": "resumed",
        "ref": ref,
        "room": "R1",
        "participant": token["participant"],
    }
    await bob.nothing(within=lobby.settings.reconnect_grace + 0.5)  # grace passes, no `left`
    assert paths(standin, "DELETE") == []
    # ...and the participant still works normally afterwards.
    await again.request({"type": "leave"})
    await again.expect("ok")
    assert (await bob.expect("left"))["reason"] == "left"


async def test_resume_with_token_gives_a_fresh_one_and_deletes_the_stale(
    lobby: Lobby, standin: OpenViduStandin
) -> None:
    alice = await lobby.client("alice")
    token = await alice.join("R1")
    [old_id] = standin.sessions["R1"].connections
    await alice.close()
    again = await lobby.client("alice", cookie=alice.cookie)
    ref = await again.request({"type": "resume", "key": token["resume_key"], "token": True})
    resumed = await again.expect("resumed")
    assert resumed["ref"] == ref
    assert resumed["participant"] == token["participant"]
    assert TOKEN.match(resumed["token"])
    assert resumed["token"] != token["token"]
    assert paths(standin, "DELETE") == [f"DELETE /openvidu/api/sessions/R1/connection/{old_id}"]
    [new_id] = standin.sessions["R1"].connections
    assert new_id != old_id


async def test_resume_takes_over_from_a_socket_not_yet_gone(lobby: Lobby) -> None:
    alice = await lobby.client("alice")
    token = await alice.join("R1")
    await alice.expect("joined")
    duplicate = await lobby.client("alice", cookie=alice.cookie)
    await duplicate.request({"type": "resume", "key": token["resume_key"]})
    await duplicate.expect("resumed")
    assert await alice.expect("taken_over") == {
        "type": "taken_over",
        "room": "R1",
        "participant": token["participant"],
    }
    # The old socket holds nothing now: its leave changes nothing.
    await alice.request({"type": "leave"})
    await alice.expect("ok")
    await duplicate.nothing()


@pytest.mark.parametrize("key", ["no-such-key", None])
async def test_resume_with_a_bad_key_fails(lobby: Lobby, key: str | None) -> None:
    alice, bob = await lobby.client("alice"), await lobby.client("bob")
    token = await alice.join("R1")
    # bob may not take alice's participant, even with her key
    ref = await bob.request({"type": "resume", "key": key or token["resume_key"]})
    while (reply := await bob.recv())["type"] == "joined":
        pass
    assert reply["type"] == "error"
    assert reply["code"] == "resume_failed"
    assert reply["ref"] == ref


async def test_resume_after_the_grace_period_fails(lobby: Lobby) -> None:
    alice, bob = await lobby.client("alice"), await lobby.client("bob")
    token = await alice.join("R1")
    await bob.expect("joined")
    await alice.close()
    await bob.expect("left", timeout=3)
    again = await lobby.client("alice", cookie=alice.cookie)
    await again.request({"type": "resume", "key": token["resume_key"]})
    assert (await again.expect("error"))["code"] == "resume_failed"


# Logout


async def test_logout_closes_the_sessions_sockets_and_removes_its_participant(
    lobby: Lobby, standin: OpenViduStandin
) -> None:
    import httpx

    alice, bob = await lobby.client("alice"), await lobby.client("bob")
    token = await alice.join("R1")
    await bob.expect("joined")
    async with httpx.AsyncClient(
        base_url=lobby.http, cookies={"lobby_session": alice.cookie}
    ) as http:
        page = await http.get("/lobby")
        from tests.conftest import csrf_from

        reply = await http.post("/logout", data={"csrf_token": csrf_from(page.text)})
        assert reply.status_code == 303
    left = await bob.expect("left")
    assert left["participant"] == token["participant"]
    assert left["reason"] == "left"
    assert await alice.close_code() == 4001
    with pytest.raises(InvalidStatus):  # the old cookie is dead
        await lobby.client("alice", cookie=alice.cookie)


# OpenVidu trouble


async def test_a_session_openvidu_dropped_is_recreated(
    lobby: Lobby, standin: OpenViduStandin
) -> None:
    alice, bob = await lobby.client("alice"), await lobby.client("bob")
    await alice.join("R1")

    # OpenVidu closes the session (which the lobby knows it made) just before our
    # "create connection".
    def drop(method: str, path: str) -> None:
        if method == "POST" and path.endswith("/R1/connection") and standin.on_request:
            standin.on_request = None
            standin.drop_session("R1")

    standin.calls.clear()
    standin.on_request = drop
    token = await bob.join("R1")
    assert TOKEN.match(token["token"])
    assert [(c.method, c.path, c.status) for c in standin.calls] == [
        ("POST", "/openvidu/api/sessions/R1/connection", 404),
        ("POST", "/openvidu/api/sessions", 200),
        ("POST", "/openvidu/api/sessions/R1/connection", 200),
    ]


@pytest.mark.parametrize("fault", ["down", 401, 500, 503, "slow", "reset"])
async def test_openvidu_failures_answer_media_unavailable_and_the_lobby_lives_on(
    make_lobby: LobbyFactory,
    standin: OpenViduStandin,
    fault: object,
    caplog: pytest.LogCaptureFixture,
) -> None:
    overrides: dict[str, object] = {"openvidu_timeout": 0.5}
    if fault == "down":
        overrides["openvidu_url"] = closed_port_url()
    lobby = await make_lobby(**overrides)
    alice, bob = await lobby.client("alice"), await lobby.client("bob")
    if fault != "down":
        standin.fault = fault  # type: ignore[assignment]
        standin.delay = 2.0
    loop = asyncio.get_running_loop()
    started = loop.time()
    with caplog.at_level(logging.WARNING):
        ref = await alice.request({"type": "join", "room": "R1", "nickname": "A"})
        error = await alice.expect("error", timeout=5)
    assert error["code"] == "media_unavailable"
    assert error["ref"] == ref
    # A sentence for people: what to do, never the operator's details.
    hint = "administrator" if fault == 401 else "try again"
    assert hint in error["message"]
    assert "HTTP" not in error["message"]
    assert loop.time() - started < 3
    await bob.nothing()  # nobody saw a join
    assert any(r.name.startswith("lobby.media.openvidu") for r in caplog.records)
    assert all("MY_SECRET" not in r.getMessage() for r in caplog.records)
    # the lobby still works: pings, and joins once OpenVidu is back
    await alice.request({"type": "ping"})
    await alice.expect("pong")
    if fault != "down":
        standin.fault = None  # OpenVidu is back: the lobby notices by itself
        breaker = lobby.state.media
        assert isinstance(breaker, Breaker)
        await until(lambda: not breaker.down)
        await alice.join("R1")
        assert (await bob.expect("joined"))["room"] == "R1"


async def test_a_401_says_the_secret_was_rejected(
    lobby: Lobby, standin: OpenViduStandin, caplog: pytest.LogCaptureFixture
) -> None:
    alice = await lobby.client("alice")
    standin.fault = 401
    with caplog.at_level(logging.WARNING):
        await alice.request({"type": "join", "room": "R1", "nickname": "A"})
        await alice.expect("error")
    assert any("secret" in r.getMessage().lower() for r in caplog.records)


async def test_leave_during_a_slow_join_cancels_it_and_deletes_the_connection(
    make_lobby: LobbyFactory, standin: OpenViduStandin
) -> None:
    lobby = await make_lobby(openvidu_timeout=3.0)
    alice, bob = await lobby.client("alice"), await lobby.client("bob")
    standin.fault, standin.delay = "slow", 0.3
    in_flight = when_connection_requested(standin)
    join_ref = await alice.request({"type": "join", "room": "R1", "nickname": "A"})
    await asyncio.wait_for(in_flight.wait(), 5)
    leave_ref = await alice.request({"type": "leave"})
    cancelled = await alice.expect("error")
    assert cancelled["code"] == "cancelled"
    assert cancelled["ref"] == join_ref
    assert await alice.expect("ok") == {"type": "ok", "ref": leave_ref}
    standin.fault = None
    # The connection made for the cancelled join is deleted, and nobody saw it.
    await standin.wait_for(lambda: "DELETE" in [c.method for c in standin.calls])
    created = [c for c in standin.calls if c.method == "POST" and c.path.endswith("/connection")]
    assert [c.status for c in created] == [200]
    assert paths(standin, "DELETE")[0].startswith("DELETE /openvidu/api/sessions/R1/connection/")
    await bob.nothing()
    await alice.nothing()
    assert len(lobby.state.handler.presence) == 0


async def test_a_socket_closed_during_its_join_leaves_no_ghost(
    make_lobby: LobbyFactory, standin: OpenViduStandin
) -> None:
    lobby = await make_lobby(openvidu_timeout=3.0)
    alice, bob = await lobby.client("alice"), await lobby.client("bob")
    standin.fault, standin.delay = "slow", 0.3
    in_flight = when_connection_requested(standin)
    await alice.request({"type": "join", "room": "R1", "nickname": "A"})
    await asyncio.wait_for(in_flight.wait(), 5)
    await alice.close()  # while OpenVidu is still making the connection
    standin.fault = None
    await standin.wait_for(
        lambda: any(c.method == "DELETE" and "/connection/" in c.path for c in standin.calls),
        timeout=5,
    )
    await standin.wait_for(lambda: "DELETE /openvidu/api/sessions/R1" in paths(standin))
    await bob.nothing()
    assert len(lobby.state.handler.presence) == 0


async def test_a_second_join_while_one_is_in_flight_is_busy(
    make_lobby: LobbyFactory, standin: OpenViduStandin
) -> None:
    lobby = await make_lobby(openvidu_timeout=3.0)
    alice = await lobby.client("alice")
    standin.fault, standin.delay = "slow", 0.3
    first = await alice.request({"type": "join", "room": "R1", "nickname": "A"})
    second = await alice.request({"type": "join", "room": "R2", "nickname": "A"})
    busy = await alice.expect("error")
    assert busy["code"] == "busy"
    assert busy["ref"] == second
    standin.fault = None
    token = await alice.expect("token", timeout=5)
    assert token["ref"] == first
    assert token["room"] == "R1"


# Bad input: an error reply, and the socket stays usable


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
        (b"\x00binary", "bad_request"),
        ("[" * 2000 + "]" * 2000, "bad_request"),  # deeply nested, under the size limit
        ('{"a":' * 600 + "1" + "}" * 600, "bad_request"),
        ('{"type":"ping","ref":' + "9" * 4000 + "}", "bad_request"),
    ],
)
async def test_bad_frames_get_an_error_and_the_socket_stays_usable(
    lobby: Lobby, frame: str | bytes, code: str
) -> None:
    alice = await lobby.client("alice")
    await alice.socket.send(frame)
    error = await alice.expect("error")
    assert error["code"] == code
    assert error["message"]
    await alice.join("still-works")


async def test_a_frame_over_4_kib_closes_the_socket_with_1009(lobby: Lobby) -> None:
    alice = await lobby.client("alice")
    await alice.send({"type": "ping", "pad": "x" * 4100})
    assert await alice.close_code() == 1009


async def test_a_frame_of_exactly_4_kib_is_fine(lobby: Lobby) -> None:
    alice = await lobby.client("alice")
    frame = json.dumps({"type": "ping", "ref": 1, "pad": ""})
    frame = frame.replace('"pad": ""', '"pad": "' + "x" * (4096 - len(frame)) + '"')
    assert len(frame.encode()) == 4096
    await alice.send(frame)
    assert (await alice.expect("pong"))["ref"] == 1


async def raw_socket(lobby: Lobby, cookie: str, *, rcvbuf: int | None = None) -> socket.socket:
    """A hand-made WebSocket client that completes the handshake and then does nothing."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:  # before connect, so the TCP window stays small
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", lobby.live.port))
    await loop.sock_sendall(
        sock,
        (
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{lobby.live.port}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Sec-WebSocket-Version: 13\r\nOrigin: {lobby.http}\r\n"
            f"Cookie: lobby_session={cookie}\r\n\r\n"
        ).encode(),
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += await loop.sock_recv(sock, 1)  # byte by byte: leave the frames unread
    assert b" 101 " in head
    return sock


async def test_a_client_that_stops_reading_is_cut_off_and_nobody_waits(lobby: Lobby) -> None:
    """Fill the stuck client's kernel buffers for real, then its bounded user-space one."""
    bob = await lobby.client("bob")
    stuck = await raw_socket(lobby, await lobby.login("alice"), rcvbuf=4096)
    hub = lobby.state.hub
    await until(lambda: len(hub) == 2)
    payload = "x" * 1000
    rounds, per_round = 80, 100  # 8 MB: far past the ~2.5 MB loopback buffers plus 1 MiB
    for round_ in range(rounds):
        for i in range(per_round):
            hub.broadcast(json.dumps({"type": "pong", "ref": round_ * per_round + i, "p": payload}))
        for i in range(per_round):  # bob keeps up and gets everything, in order
            assert (await bob.recv())["ref"] == round_ * per_round + i
    await until(lambda: len(hub) == 1, timeout=10)  # the stuck one is cut and forgotten
    [left] = list(hub)
    assert left.user == "bob"
    await bob.request({"type": "ping"})
    await bob.expect("pong")
    stuck.close()


async def test_a_slow_reader_gets_close_code_4008(lobby: Lobby) -> None:
    alice = await lobby.client("alice")
    conn = next(iter(lobby.state.hub))
    big = "y" * 60_000
    for i in range(100):  # 6 MB in one go: more than the kernel takes at once, plus 1 MiB
        conn.send(json.dumps({"type": "pong", "ref": i, "p": big}))
    assert await alice.close_code() == 4008


async def test_healthz(lobby: Lobby) -> None:
    import httpx

    alice: Client = await lobby.client("alice")
    await alice.join("R1")
    async with httpx.AsyncClient(base_url=lobby.http) as http:
        reply = await http.get("/healthz")
    assert reply.status_code == 200
    assert reply.json() == {
        "status": "ok",
        "sockets": 1,
        "participants": 1,
        "demo": False,
        "media": "openvidu",
    }


async def test_a_silent_client_is_found_by_pings_and_removed_after_grace(
    make_lobby: LobbyFactory, standin: OpenViduStandin
) -> None:
    """A tab that vanished without a close frame (half-open TCP): pings find it."""
    lobby = await make_lobby(ping_interval=0.2, ping_timeout=0.2)
    bob = await lobby.client("bob")
    cookie = await lobby.login("alice")
    # A raw client: handshake, join, then silence. It never answers a ping.
    reader, writer = await asyncio.open_connection("127.0.0.1", lobby.live.port)
    writer.write(
        b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\nOrigin: %s\r\nCookie: lobby_session=%s\r\n\r\n"
        % (lobby.live.port, lobby.http.encode(), cookie.encode())
    )
    assert b" 101 " in await reader.readuntil(b"\r\n\r\n")
    payload = json.dumps({"type": "join", "room": "R1", "nickname": "ghost"}).encode()
    mask = b"\x01\x02\x03\x04"
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    writer.write(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
    await writer.drain()
    joined = await bob.expect("joined")
    loop = asyncio.get_running_loop()
    started = loop.time()
    left = await bob.expect("left", timeout=5)
    assert left["participant"] == joined["participant"]
    assert left["reason"] == "disconnected"
    # ping interval + timeout + grace, give or take scheduling
    assert loop.time() - started >= lobby.settings.reconnect_grace
    await standin.wait_for(lambda: "DELETE" in [c.method for c in standin.calls])
    writer.close()


async def test_resume_with_token_while_openvidu_fails_keeps_the_participant(
    lobby: Lobby, standin: OpenViduStandin
) -> None:
    alice, bob = await lobby.client("alice"), await lobby.client("bob")
    token = await alice.join("R1")
    await bob.expect("joined")
    await alice.close()
    again = await lobby.client("alice", cookie=alice.cookie)
    standin.fault = 500
    ref = await again.request({"type": "resume", "key": token["resume_key"], "token": True})
    error = await again.expect("error")
    assert error["code"] == "media_unavailable"
    assert error["ref"] == ref
    await bob.nothing(within=lobby.settings.reconnect_grace + 0.3)  # resumed: no `left`
    standin.fault = None  # it can ask again once OpenVidu is back
    breaker = lobby.state.media
    assert isinstance(breaker, Breaker)
    await until(lambda: not breaker.down)
    await again.request({"type": "resume", "key": token["resume_key"], "token": True})
    assert TOKEN.match((await again.expect("resumed"))["token"])


async def test_a_failed_delete_is_logged_and_the_lobby_goes_on(
    lobby: Lobby, standin: OpenViduStandin, caplog: pytest.LogCaptureFixture
) -> None:
    alice, bob = await lobby.client("alice"), await lobby.client("bob")
    await alice.join("R1")
    await bob.expect("joined")
    standin.fault = 500
    with caplog.at_level(logging.WARNING, logger="lobby"):
        await alice.request({"type": "leave"})
        assert (await bob.expect("left"))["reason"] == "left"
        await bob.expect("room_closed")

        def logged(text: str) -> bool:
            return any(
                text in r.getMessage() for r in caplog.records if r.name == "lobby.media.calls"
            )

        # The connection delete failed (500); the session close then failed fast.
        await until(lambda: logged("could not delete connection"))
        await until(lambda: logged("could not close the media session of room R1"))
    assert [c.method for c in standin.calls].count("DELETE") == 1


async def test_a_join_waits_while_its_room_is_being_closed(
    lobby: Lobby, standin: OpenViduStandin
) -> None:
    """The last leave closes the OpenVidu session; a join arriving meanwhile must not get a
    token for the session being deleted."""
    alice, bob = await lobby.client("alice"), await lobby.client("bob")
    await alice.join("R1")
    arrivals: list[tuple[str, int]] = []
    closing = asyncio.Event()

    def hook(method: str, path: str) -> None:
        arrivals.append((f"{method} {path}", len(standin.calls)))
        if (method, path) == ("DELETE", "/openvidu/api/sessions/R1"):
            closing.set()

    standin.on_request = hook
    standin.fault, standin.delay = "slow", 0.2
    await alice.request({"type": "leave"})
    await asyncio.wait_for(closing.wait(), 5)
    ref = await bob.request({"type": "join", "room": "R1", "nickname": "B"})
    standin.fault = None
    token = await bob.until("token")
    assert token["ref"] == ref
    done_before = dict(arrivals)["POST /openvidu/api/sessions"]
    assert "DELETE /openvidu/api/sessions/R1" in [
        f"{c.method} {c.path}" for c in standin.calls[:done_before]
    ]
    assert [c.status for c in standin.calls if c.path == "/openvidu/api/sessions"][-1] == 200
    assert len(standin.sessions["R1"].connections) == 1


class BrokenMedia:
    """A media back end with a bug in it (raises something that is not a MediaError)."""

    peer_to_peer = False

    def page_config(self, user: str) -> dict[str, object]:
        return {"kind": "openvidu"}

    async def grant(self, room: str, identity: object) -> object:
        raise KeyError("a bug")

    async def revoke(self, grant: object) -> None: ...

    async def close_room(self, room: str) -> None: ...

    async def aclose(self) -> None: ...


async def test_a_bug_answers_internal_error_and_the_socket_stays_usable(
    make_lobby: LobbyFactory, caplog: pytest.LogCaptureFixture
) -> None:
    lobby = await make_lobby(backend=BrokenMedia())
    alice = await lobby.client("alice")
    with caplog.at_level(logging.ERROR, logger="lobby"):
        ref = await alice.request({"type": "join", "room": "R1", "nickname": "A"})
        error = await alice.expect("error")
    assert error == {
        "type": "error",
        "ref": ref,
        "code": "internal_error",
        "message": "Something went wrong on our side.",
    }
    assert any(r.exc_info for r in caplog.records)
    await alice.request({"type": "ping"})
    await alice.expect("pong")


# Limits


async def test_a_burst_is_fine_a_flood_is_refused_and_a_sustained_flood_closed(
    make_lobby: LobbyFactory,
) -> None:
    lobby = await make_lobby(message_rate=1.0, message_burst=5)
    alice = await lobby.client("alice")
    for i in range(5):  # the burst
        await alice.send({"type": "ping", "ref": i})
    assert [(await alice.expect("pong"))["ref"] for _ in range(5)] == list(range(5))
    await alice.send({"type": "ping", "ref": 99})
    refused = await alice.expect("error")
    assert refused["code"] == "rate_limited"
    for i in range(10):  # keeps flooding after being told
        await alice.send({"type": "ping", "ref": i})
    assert await alice.close_code() == 1008


async def test_a_user_may_hold_only_so_many_sockets(make_lobby: LobbyFactory) -> None:
    lobby = await make_lobby(max_sockets_per_user=2)
    cookie = await lobby.login("alice")
    tabs = [await lobby.client("alice", cookie=cookie) for _ in range(2)]
    with pytest.raises(InvalidStatus) as refused:
        await lobby.client("alice", cookie=cookie)
    assert refused.value.response.status_code == 429
    assert b"Too many open lobby tabs" in refused.value.response.body
    assert len(lobby.state.hub) == 2
    await lobby.client("bob")  # others are not affected
    await tabs[0].close()
    await until(lambda: lobby.state.hub.sockets_of("alice") == 1)
    await lobby.client("alice", cookie=cookie)  # a closed tab frees its place


async def test_the_process_cap_answers_503_before_anything_else(
    make_lobby: LobbyFactory, caplog: pytest.LogCaptureFixture
) -> None:
    lobby = await make_lobby(max_sockets=2)
    await lobby.client("alice")
    await lobby.client("bob")
    uvicorn_log = logging.getLogger("uvicorn.error")  # it does not propagate to caplog's
    uvicorn_log.addHandler(caplog.handler)
    try:
        with pytest.raises(InvalidStatus) as refused:  # even without any session: no work done
            await websockets.connect(lobby.ws_url, origin=websockets.Origin(lobby.http))
        await until(lambda: len(lobby.live.server.server_state.tasks) == 2)
    finally:
        uvicorn_log.removeHandler(caplog.handler)
    assert refused.value.response.status_code == 503
    assert b"full" in refused.value.response.body
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # an expected refusal


async def test_joins_per_user_per_minute_are_limited(make_lobby: LobbyFactory) -> None:
    lobby = await make_lobby(joins_per_minute=3)
    alice, bob = await lobby.client("alice"), await lobby.client("bob")
    for room in ("A", "B", "C"):
        await alice.join(room)
    ref = await alice.request({"type": "join", "room": "D", "nickname": "A"})
    error = await alice.until("error")
    assert error["code"] == "rate_limited"
    assert error["ref"] == ref
    assert "try again in" in error["message"]
    await bob.join("D")  # per user


# OpenVidu outages: fail fast, recover by itself, finish the clean-up it missed


async def test_while_openvidu_is_down_joins_fail_fast_without_calling_it(
    make_lobby: LobbyFactory, standin: OpenViduStandin
) -> None:
    lobby = await make_lobby(openvidu_timeout=0.5)
    alice = await lobby.client("alice")
    standin.fault, standin.delay = "slow", 5.0
    await alice.request({"type": "join", "room": "R1", "nickname": "A"})
    assert (await alice.expect("error", timeout=3))["code"] == "media_unavailable"
    asked: list[str] = []
    standin.on_request = lambda method, path: asked.append(path)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await alice.request({"type": "join", "room": "R2", "nickname": "A"})
    assert (await alice.expect("error"))["code"] == "media_unavailable"
    assert loop.time() - started < 0.2  # no timeout waited
    assert asked == []  # OpenVidu was not even asked


async def test_connections_not_deleted_during_an_outage_are_deleted_when_it_ends(
    lobby: Lobby, standin: OpenViduStandin
) -> None:
    alice, bob = await lobby.client("alice"), await lobby.client("bob")
    await alice.join("R1")
    await bob.join("R1")
    [alice_connection, _] = standin.sessions["R1"].connections
    standin.fault = 500
    await alice.request({"type": "leave"})
    await alice.until("ok")
    assert (await bob.until("left"))["reason"] == "left"  # the lobby does not wait for OpenVidu
    await standin.wait_for(lambda: any(c.status == 500 for c in standin.calls))
    standin.fault = None
    deleted = f"DELETE /openvidu/api/sessions/R1/connection/{alice_connection}"
    await standin.wait_for(
        lambda: any(f"{c.method} {c.path}" == deleted and c.status == 204 for c in standin.calls),
        timeout=10,
    )
    assert list(standin.sessions["R1"].connections) != [alice_connection]
    await until(lambda: lobby.state.handler.calls.unfinished == 0)


# Sessions ended elsewhere


@pytest.mark.parametrize("command", [["passwd", "alice", "--password-stdin"], ["remove", "alice"]])
async def test_a_password_change_or_removal_by_the_cli_closes_that_users_sockets(
    make_lobby: LobbyFactory, tmp_path: Path, command: list[str]
) -> None:
    path = str(tmp_path / "lobby.sqlite3")
    users = UserStore(connect(path), hasher=CHEAP_HASHER)
    for name in ("alice", "bob"):
        users.add(name, "PUBLISHER", PASSWORD)
    lobby = await make_lobby(users=users)
    alice, bob = await lobby.client("alice"), await lobby.client("bob")
    token = await alice.join("R1")
    await bob.until("joined")
    # Another process: the `lobby` command, on the same database file.
    env = {**os.environ, "LOBBY_DATABASE": path}
    cli = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lobby",
        "users",
        *command,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.DEVNULL,
    )
    await cli.communicate(b"a new password\n")
    assert cli.returncode == 0
    assert await alice.close_code(timeout=5) == 4001
    left = await bob.expect("left")
    assert left["participant"] == token["participant"]
    assert left["reason"] == "left"
    await bob.expect("room_closed")
    with pytest.raises(InvalidStatus):  # the old cookie is refused
        await lobby.client("alice", cookie=alice.cookie)
    await bob.request({"type": "ping"})
    await bob.expect("pong")  # bob's session is untouched


# Races


async def test_two_users_creating_the_same_room_at_once_share_one_session(
    lobby: Lobby, standin: OpenViduStandin
) -> None:
    alice, bob = await lobby.client("alice"), await lobby.client("bob")
    both = await asyncio.gather(alice.join("NEW"), bob.join("NEW"))
    assert {t["room"] for t in both} == {"NEW"}
    assert list(standin.sessions) == ["NEW"]
    assert len(standin.sessions["NEW"].connections) == 2
    creates = sorted(c.status or 0 for c in standin.calls if c.path == "/openvidu/api/sessions")
    assert creates == [200, 409]
    orders = []
    for client in (alice, bob):  # both see both joins, in the same order
        seen = [await client.until("joined"), await client.until("joined")]
        orders.append([j["participant"]["id"] for j in seen])
    assert orders[0] == orders[1]
    assert sorted(orders[0]) == sorted(t["participant"]["id"] for t in both)


async def test_two_tabs_of_one_user_are_two_participants(lobby: Lobby) -> None:
    cookie = await lobby.login("alice")
    tab1 = await lobby.client("alice", cookie=cookie)
    tab2 = await lobby.client("alice", cookie=cookie)
    one = await tab1.join("R1", "Laptop")
    two = await tab2.join("R1", "Phone")
    assert one["participant"]["id"] != two["participant"]["id"]
    assert one["resume_key"] != two["resume_key"]
    await tab1.request({"type": "leave"})
    await tab1.until("ok")
    left = await tab2.until("left")
    assert left["participant"]["nickname"] == "Laptop"  # the other tab stays
    bob = await lobby.client("bob")
    [room] = bob.welcome["rooms"]
    assert [p["nickname"] for p in room["participants"]] == ["Phone"]


# Restarts


async def test_presence_survives_a_restart_and_the_absent_are_cleaned_up(
    make_lobby: LobbyFactory, standin: OpenViduStandin, tmp_path: Path
) -> None:
    path = str(tmp_path / "lobby.sqlite3")
    users = UserStore(connect(path), hasher=CHEAP_HASHER)
    for name in ("alice", "bob", "mod"):
        users.add(name, "PUBLISHER", PASSWORD)
    first = await make_lobby(users=users)
    alice, mod = await first.client("alice"), await first.client("mod")
    kept = await alice.join("R1", "Alice")
    gone = await mod.join("R2", "Mod")
    [gone_connection] = standin.sessions["R2"].connections
    await first.live.__aexit__(None, None, None)  # stop: sockets closed with 1012
    assert await alice.close_code() == 1012

    second = await make_lobby(users=UserStore(connect(path), hasher=CHEAP_HASHER))
    bob = await second.client("bob")
    listed = {r["name"]: r["participants"] for r in bob.welcome["rooms"]}
    assert listed == {"R1": [kept["participant"]], "R2": [gone["participant"]]}
    back = await second.client("alice", cookie=alice.cookie)
    await back.request({"type": "resume", "key": kept["resume_key"]})
    assert (await back.expect("resumed"))["participant"] == kept["participant"]
    # mod never comes back: after the grace period it is gone, on OpenVidu too.
    left = await bob.expect("left", timeout=second.settings.reconnect_grace + 2)
    assert left["participant"] == gone["participant"]
    assert left["reason"] == "disconnected"
    assert await bob.expect("room_closed") == {"type": "room_closed", "room": "R2"}
    await standin.wait_for(lambda: "DELETE /openvidu/api/sessions/R2" in paths(standin))
    assert f"DELETE /openvidu/api/sessions/R2/connection/{gone_connection}" in paths(standin)
    await bob.nothing(within=0.3)  # alice stayed, silently
    assert [p.id for _, ps in second.state.handler.presence.rooms() for p in ps] == [
        kept["participant"]["id"]
    ]


# Secrets


async def test_tokens_and_the_openvidu_secret_never_reach_logs_pages_or_errors(
    make_lobby: LobbyFactory, standin: OpenViduStandin, caplog: pytest.LogCaptureFixture
) -> None:
    import httpx

    lobby = await make_lobby()
    caplog.set_level(logging.INFO, logger="websockets.client")  # the test's side of the socket
    with caplog.at_level(logging.DEBUG):  # everything else: ours, uvicorn's, httpx's
        alice = await lobby.client("alice")
        token = await alice.join("R1")
        await alice.close()
        again = await lobby.client("alice", cookie=alice.cookie)
        await again.request({"type": "resume", "key": token["resume_key"], "token": True})
        fresh = (await again.until("resumed"))["token"]
        standin.fault = 401
        await again.request({"type": "join", "room": "R2", "nickname": "x"})
        error = await again.until("error")
        async with httpx.AsyncClient(
            base_url=lobby.http, cookies={"lobby_session": alice.cookie}
        ) as http:
            pages = [(await http.get(p)).text for p in ("/", "/lobby", "/healthz")]
    # (The session cookie is not on the list: the test's own HTTP client logs its
    # Set-Cookie header at DEBUG. The server never logs it.)
    secrets = ["MY_SECRET", token["token"], fresh, token["resume_key"]]
    secrets += [t.split("token=")[1] for t in (token["token"], fresh)]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "rejected the secret" in logged  # the log did say what was wrong...
    for secret in secrets:  # ...without saying any secret
        assert secret not in logged
        assert secret not in json.dumps(error)
        assert all(secret not in page for page in pages)


async def test_a_flooder_ignoring_the_close_is_dropped(make_lobby: LobbyFactory) -> None:
    lobby = await make_lobby(message_rate=1.0, message_burst=5)
    sock = await raw_socket(lobby, await lobby.login("alice"))
    loop = asyncio.get_running_loop()
    payload = b'{"type":"ping"}'
    mask = b"\x00\x00\x00\x00"  # a zero mask leaves the payload as it is
    frame = bytes([0x81, 0x80 | len(payload)]) + mask + payload
    started = loop.time()
    with contextlib.suppress(ConnectionError):  # keeps sending, never reads the close
        while loop.time() - started < 10:
            await loop.sock_sendall(sock, frame * 50)
    dropped = loop.time() - started
    assert dropped < 5  # the 1008 plus a short linger, not uvicorn's 10 s close timeout
    sock.close()
