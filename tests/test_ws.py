"""The lobby socket through the real endpoint: real uvicorn, real `websockets` clients.

Only what needs the real stack is here: the handshake and its refusals, frame limits
and floods, clients that stop reading or vanish, sessions ended by logout or the CLI,
restarts, secrets in logs and pages, and a few paths end to end against the OpenVidu
stand-in that prove the pieces are wired together. The requests themselves, their
races and the clean-up are tested without sockets: `test_handler.py`, `test_calls.py`,
`test_breaker.py`, `test_hub.py`, `test_roster.py`.
"""

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
from websockets.http11 import Request
from websockets.server import ServerProtocol

from lobby.media.breaker import Breaker
from lobby.server import REDACT, redact
from lobby.store.db import connect
from lobby.store.users import UserStore
from tests.conftest import CHEAP_HASHER, PASSWORD, Lobby, LobbyFactory, until
from tests.openvidu_standin import OpenViduStandin, closed_port_url
from tests.raw_ws import PING, PONG, client_frame, logged_in_socket, read_frame

TOKEN = re.compile(
    r"^ws://127\.0\.0\.1:\d+\?sessionId=(?P<room>[\w-]+)&token=tok_[A-Z][A-Za-z0-9]{15}$"
)


def paths(standin: OpenViduStandin, method: str | None = None) -> list[str]:
    return [f"{c.method} {c.path}" for c in standin.calls if method in (None, c.method)]


def token_connection_id(standin: OpenViduStandin) -> str:
    """The id of the connection the stand-in created (from its recorded DELETE)."""
    [delete] = [c.path for c in standin.calls if c.method == "DELETE" and "/connection/" in c.path]
    return delete.rsplit("/", 1)[1]


# The handshake


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


async def handshake_status(
    lobby: Lobby,
    *,
    host: str,
    origin: str,
    cookie: str,
    cookie_name: str = "lobby_session",
    extra: str = "",
) -> int:
    """The status of a hand-made upgrade request: the Host and Origin exactly as given."""
    reader, writer = await asyncio.open_connection("127.0.0.1", lobby.live.port)
    writer.write(
        (
            f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Sec-WebSocket-Version: 13\r\nOrigin: {origin}\r\n{extra}"
            f"Cookie: {cookie_name}={cookie}\r\n\r\n"
        ).encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    writer.close()
    return int(head.split(b" ", 2)[1])


@pytest.mark.parametrize(
    "origin",
    [
        "http://[",  # urlsplit raised on it: a 500 and a traceback per handshake
        "http://127.0.0.1:{port}/evil",  # a path
        "http://127.0.0.1:{port}?x",  # a query
        "http://user@127.0.0.1:{port}",
        "http://127.0.0.1:{port}:80",
        "http://127.0.0.1:99999",
        "null",
        "",
    ],
)
async def test_a_malformed_origin_is_refused_without_a_traceback(
    lobby: Lobby, origin: str, caplog: pytest.LogCaptureFixture
) -> None:
    cookie = await lobby.login("alice")
    uvicorn_log = logging.getLogger("uvicorn.error")  # it does not propagate to caplog's
    uvicorn_log.addHandler(caplog.handler)
    try:
        status = await handshake_status(
            lobby,
            host=f"127.0.0.1:{lobby.live.port}",
            origin=origin.format(port=lobby.live.port),
            cookie=cookie,
        )
    finally:
        uvicorn_log.removeHandler(caplog.handler)
    assert status == 403
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    # the same request with our own origin is accepted: only the Origin was wrong
    ours = await handshake_status(
        lobby, host=f"127.0.0.1:{lobby.live.port}", origin=lobby.http, cookie=cookie
    )
    assert ours == 101


async def test_a_dns_rebinding_page_cannot_open_a_socket(lobby: Lobby) -> None:
    """evil.example now resolves to us: its page's Host and Origin agree, and both are foreign."""
    cookie = await lobby.login("alice")  # even with a valid session: the names decide
    port = lobby.live.port
    for host in (f"evil.example:{port}", "evil.example"):
        status = await handshake_status(lobby, host=host, origin=f"http://{host}", cookie=cookie)
        assert status == 400  # the Host is refused before the Origin is even looked at


@pytest.mark.parametrize("host", ["127.0.0.1", "LocalHost:{port}", "[::1]:{port}"])
async def test_a_socket_is_served_whatever_way_our_host_is_spelled(lobby: Lobby, host: str) -> None:
    """An exact Host goes straight to the endpoint (`LobbyApp`); any other spelling takes
    the whole middleware stack, whose Host check lets ours in all the same."""
    cookie = await lobby.login("alice")
    origin = f"http://127.0.0.1:{lobby.live.port}"
    host = host.format(port=lobby.live.port)
    assert await handshake_status(lobby, host=host, origin=origin, cookie=cookie) == 101


@pytest.mark.parametrize("host", ["evil.example:{port}x", "127.0.0.1.evil.example", ""])
async def test_a_host_the_quick_check_refuses_is_still_refused_by_the_stack(
    lobby: Lobby, host: str
) -> None:
    cookie = await lobby.login("alice")
    origin = f"http://127.0.0.1:{lobby.live.port}"
    host = host.format(port=lobby.live.port)
    assert await handshake_status(lobby, host=host, origin=origin, cookie=cookie) == 400


async def test_the_origin_must_be_our_public_url_not_the_host_we_are_reached_by(
    make_lobby: LobbyFactory,
) -> None:
    lobby = await make_lobby(public_origins=("https://lobby.example.com",))
    cookie = await lobby.login("alice", headers={"Host": "lobby.example.com"})
    proxied = {"host": "lobby.example.com", "cookie": cookie}
    assert await handshake_status(lobby, origin="https://lobby.example.com", **proxied) == 101
    for other in ("http://lobby.example.com", "https://lobby.example.com:8443", lobby.http):
        assert await handshake_status(lobby, origin=other, **proxied) == 403
    # the loopback names are no longer ours once a public URL is configured
    local = {"host": f"127.0.0.1:{lobby.live.port}", "cookie": cookie}
    assert await handshake_status(lobby, origin=lobby.http, **local) == 400


async def test_over_https_a_socket_reads_only_the_host_prefixed_cookie(
    make_lobby: LobbyFactory,
) -> None:
    """Behind a TLS proxy the session cookie is `__Host-lobby_session`; a plain `lobby_session`
    (which a sibling host or a plain-http page could plant) opens nothing."""
    lobby = await make_lobby(public_origins=("https://lobby.example.com",))
    session = await lobby.login("alice", headers={"Host": "lobby.example.com"})
    tls = {
        "host": "lobby.example.com",
        "origin": "https://lobby.example.com",
        "cookie": session,
        "extra": "X-Forwarded-Proto: https\r\n",
    }
    assert await handshake_status(lobby, cookie_name="__Host-lobby_session", **tls) == 101
    assert await handshake_status(lobby, cookie_name="lobby_session", **tls) == 403


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


# Frames: size, kind, rate


async def test_a_binary_frame_gets_an_error_and_the_socket_stays_usable(lobby: Lobby) -> None:
    alice = await lobby.client("alice")
    await alice.socket.send(b"\x00binary")
    error = await alice.expect("error")
    assert (error["code"], error["message"]) == (
        "bad_request",
        "Binary frames are not accepted; send JSON text.",
    )
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


# Clients that stop reading or vanish


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


# End to end against the OpenVidu stand-in


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


# Sessions ended by logout or elsewhere


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
    """At LOBBY_LOG_LEVEL=debug, every record of the server (ours, uvicorn's, websockets'
    through uvicorn's logger, httpx's) is free of cookies, resume keys, tokens, the
    password and the secrets (issue 17: websockets printed the upgrade's Cookie header
    and the start of every frame)."""
    import httpx

    lobby = await make_lobby(log_level="debug")
    caplog.set_level(logging.INFO, logger="websockets.client")  # the test's side of the socket
    # uvicorn's loggers do not propagate to the root logger, where caplog listens.
    uvicorn_loggers = [logging.getLogger(n) for n in ("uvicorn", "uvicorn.access")]
    for logger in uvicorn_loggers:
        logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.DEBUG):  # everything else: ours, uvicorn's, httpx's
            # The test's own HTTP client logs the Set-Cookie it receives at DEBUG
            # (httpcore); the server's OpenVidu calls (join, resume) stay at DEBUG.
            with caplog.at_level(logging.INFO, logger="httpcore"):
                cookie = await lobby.login("alice")
            alice = await lobby.client("alice", cookie=cookie)
            token = await alice.join("R1")
            await alice.close()
            again = await lobby.client("alice", cookie=cookie)
            await again.request({"type": "resume", "key": token["resume_key"], "token": True})
            fresh = (await again.until("resumed"))["token"]
            standin.fault = 401
            await again.request({"type": "join", "room": "R2", "nickname": "x"})
            error = await again.until("error")
            with caplog.at_level(logging.INFO, logger="httpcore"):
                async with httpx.AsyncClient(
                    base_url=lobby.http, cookies={"lobby_session": cookie}
                ) as http:
                    pages = [(await http.get(p)).text for p in ("/", "/lobby", "/healthz")]
    finally:
        for logger in uvicorn_loggers:
            logger.removeHandler(caplog.handler)
    secrets = ["MY_SECRET", token["token"], fresh, token["resume_key"], cookie, PASSWORD]
    secrets += [t.split("token=")[1] for t in (token["token"], fresh)]
    secrets += [lobby.settings.secret_key]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "rejected the secret" in logged  # the log did say what was wrong...
    # ...websockets' own lines were captured, through uvicorn's logger...
    assert any(
        r.name == "uvicorn.error" and r.getMessage() == "connection open" for r in caplog.records
    )
    # ...but not its dump of every header and frame...
    dumped = [r.getMessage() for r in caplog.records if r.name == "uvicorn.error"]
    assert not [m for m in dumped if m[:2] in ("< ", "> ")]
    for secret in secrets:  # ...and no secret anywhere
        assert secret not in logged
        assert secret not in json.dumps(error)
        assert all(secret not in page for page in pages)


class Kept(logging.Handler):
    """Keeps what it would print, after its filters."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_the_log_filter_blanks_what_a_websockets_dump_would_show() -> None:
    """Should a library dump headers and frames after all, `Redact` blanks the secrets.

    A real websockets `ServerProtocol` with a DEBUG logger (what uvicorn gives it at
    LOBBY_LOG_LEVEL=debug) reads an upgrade and a resume, and sends a token.
    """
    cookie, csrf, key = "SeSsIoNvAlUe-0123456789", "CsRfVaLuE-0123456789", "k" * 43
    kept = Kept()
    kept.addFilter(REDACT)
    logger = logging.getLogger("tests.redact")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(kept)
    try:
        conn = ServerProtocol(logger=logger)
        conn.receive_data(
            b"GET /ws HTTP/1.1\r\nHost: lobby\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            b"Cookie: lobby_session=%s; lobby_csrf=%s\r\n\r\n" % (cookie.encode(), csrf.encode())
        )
        [request] = conn.events_received()
        assert isinstance(request, Request)
        conn.send_response(conn.accept(request))
        payload = json.dumps({"type": "resume", "key": key, "token": True}).encode()
        conn.receive_data(bytes([0x81, 0x80 | len(payload)]) + b"\x00" * 4 + payload)
        conn.events_received()
        conn.send_text(
            json.dumps({"type": "token", "token": "wss://h?s=R1&token=tok_xyz"}).encode()
        )
    finally:
        logger.removeHandler(kept)
    logged = "\n".join(kept.lines)
    assert "< Cookie: [redacted]" in logged  # the dump was there...
    assert '"key": "[redacted]' in logged
    for secret in (cookie, csrf, key[:8], "tok_xyz"):  # ...without the secrets
        assert secret not in logged


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        ("< Cookie: lobby_session=abc; other=1", "< Cookie: [redacted]"),
        ("> set-cookie: lobby_session=abc; HttpOnly", "> set-cookie: [redacted]"),
        ("Authorization: Basic T1BFTlZJRFVBUFA6TVlfU0VDUkVU", "Authorization: [redacted]"),
        ("[(b'set-cookie', b'lobby_session=abc; Path=/')]", "[(b'set-cookie', b'[redacted]')]"),
        (
            "sent lobby_session=abc; lobby_csrf=def",
            "sent lobby_session=[redacted]; lobby_csrf=[redacted]",
        ),
        (
            "user=alice&pass=correct+horse&csrf_token=t",
            "user=alice&pass=[redacted]&csrf_token=[redacted]",
        ),
        ("wss://h/?sessionId=R1&token=tok_abc", "wss://h/?sessionId=R1&token=[redacted]"),
        ('{"type": "resume", "key": "abc', '{"type": "resume", "key": "[redacted]'),
        ('{\\"token\\": \\"wss://h\\"}', '{\\"token\\": \\"[redacted]\\"}'),
        ("GET /lobby HTTP/1.1 200", "GET /lobby HTTP/1.1 200"),
        ("sec-websocket-key: dGhl", "sec-websocket-key: dGhl"),
    ],
)
def test_redact_blanks_cookies_keys_tokens_and_passwords_only(line: str, shown: str) -> None:
    assert redact(line) == shown


async def test_a_client_that_stops_answering_pings_is_closed_and_one_that_answers_stays(
    make_lobby: LobbyFactory,
) -> None:
    """The hub's keepalive: a tab that stops reading (a lost network) is counted as gone."""
    lobby = await make_lobby(ping_interval=0.3, ping_timeout=0.3)
    alive = await lobby.client("alice")
    silent = await lobby.client("bob")
    hub = lobby.state.hub
    bob = next(c for c in hub if c.user == "bob")
    # websockets answers pings as it reads; a client that stops reading answers none.
    transport = silent.socket.transport
    transport.pause_reading()
    await until(lambda: bob.close_code is not None, timeout=0.3 + 0.3 + 1.0)
    assert bob.close_code == 1011
    await until(lambda: hub.sockets_of("bob") == 0)
    # Meanwhile alice answered several pings, and she is still there.
    await alive.nothing(within=1.0)
    assert hub.sockets_of("alice") == 1
    ref = await alive.request({"type": "ping"})
    assert (await alive.expect("pong"))["ref"] == ref
    transport.resume_reading()


async def test_pings_are_spread_over_the_interval_in_batches(make_lobby: LobbyFactory) -> None:
    """Sockets that connected together are pinged in several small batches, not all at once.

    A batch shares one ping payload, so the payloads tell the batches apart.
    """
    lobby = await make_lobby(ping_interval=0.8, ping_timeout=5)
    payloads: list[bytes] = []
    async with contextlib.AsyncExitStack() as stack:
        sockets = [await stack.enter_async_context(logged_in_socket(lobby)) for _ in range(8)]
        for reader, writer in sockets:
            opcode, payload = await read_frame(reader)
            assert opcode == PING
            writer.write(client_frame(PONG, payload))
            payloads.append(payload)
    batches = [payloads.count(p) for p in set(payloads)]
    assert len(batches) >= 3, payloads
    assert max(batches) <= 4, payloads
