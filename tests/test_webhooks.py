"""The webhook endpoints over real HTTP: LiveKit's (from the LiveKit stand-in, signed as the
server signs them) and OpenVidu 2's (from the OpenVidu stand-in), turned into `call_state`
events on every socket; every refusal changes nothing."""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from livekit.api import AccessToken
from livekit.protocol.models import ParticipantInfo

from lobby.media.livekit import LiveKitBackend
from lobby.web.webhooks import MAX_BODY
from tests.conftest import Client, Lobby, LobbyFactory
from tests.livekit_standin import LiveKitStandin, running_standin
from tests.openvidu_standin import OpenViduStandin

KEY, SECRET = "APIlobby", "webhook-secret-0123456789-0123456789"
OPENVIDU_SECRET = "openvidu-webhook-secret-0123"


@pytest.fixture
async def livekit() -> AsyncIterator[LiveKitStandin]:
    async with running_standin(KEY, SECRET) as standin:
        yield standin


async def livekit_lobby(make_lobby: LobbyFactory, livekit: LiveKitStandin, **kw: Any) -> Lobby:
    """A lobby whose calls run on the LiveKit stand-in, which sends it its webhooks."""
    backend = LiveKitBackend(livekit.ws_url, livekit.url, KEY, SECRET, timeout=2)
    lobby: Lobby = await make_lobby(
        media="livekit",
        backend=backend,
        livekit_url=livekit.ws_url,
        livekit_api_url=livekit.url,
        livekit_api_key=KEY,
        livekit_api_secret=SECRET,
        call_reconcile_interval=0,
        **kw,
    )
    livekit.webhook_urls.append(lobby.http + "/webhooks/livekit")
    return lobby


async def in_room(lobby: Lobby, room: str = "R1") -> tuple[Client, Client, str]:
    """Alice in `room` and Bob watching from the lobby, both past the join's frames."""
    alice, bob = await lobby.client("alice"), await lobby.client("bob")
    pid: str = (await alice.join(room))["participant"]["id"]
    await alice.until("joined")
    await bob.until("joined")
    return alice, bob, pid


def call_of(lobby: Lobby, pid: str) -> str:
    member = lobby.state.handler.presence.member(pid)
    assert member is not None
    return member.participant.call


async def post(lobby: Lobby, path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=lobby.http) as http:
        return await http.post(path, content=body, headers=headers)


# -- LiveKit ------------------------------------------------------------------------------


async def test_a_livekit_webhook_becomes_a_call_state_event_on_every_socket(
    make_lobby: LobbyFactory, livekit: LiveKitStandin
) -> None:
    lobby = await livekit_lobby(make_lobby, livekit)
    alice, bob, pid = await in_room(lobby)

    await livekit.connect("R1", pid)
    connected = {"type": "call_state", "room": "R1", "participant": pid, "call": "connected"}
    assert await alice.recv() == connected
    assert await bob.recv() == connected
    await livekit.disconnect("R1", pid, aborted=True)
    for client in (alice, bob):
        assert await client.recv() == {**connected, "call": "dropped"}
    assert [d.status for d in livekit.deliveries] == [200, 200]
    # A socket opened now sees the state in the participant itself.
    carol = await lobby.client("mod")
    [room] = carol.welcome["rooms"]
    assert room["participants"][0]["call"] == "dropped"


async def test_a_reloaded_pages_new_connection_before_the_old_ones_leave_stays_in_the_call(
    make_lobby: LobbyFactory, livekit: LiveKitStandin
) -> None:
    lobby = await livekit_lobby(make_lobby, livekit)
    _alice, bob, pid = await in_room(lobby)
    await livekit.connect("R1", pid)
    await bob.until("call_state")
    await livekit.connect("R1", pid)  # joined (new sid), then left (old sid, DUPLICATE_IDENTITY)
    assert [d.event for d in livekit.deliveries] == [
        "participant_joined",
        "participant_joined",
        "participant_left",
    ]
    await bob.nothing()
    assert call_of(lobby, pid) == "connected"


async def test_a_member_whose_socket_is_away_keeps_its_state(
    make_lobby: LobbyFactory, livekit: LiveKitStandin
) -> None:
    lobby = await livekit_lobby(make_lobby, livekit, reconnect_grace=30)
    alice, bob, pid = await in_room(lobby)
    await livekit.connect("R1", pid)
    await bob.until("call_state")
    await alice.close()  # the page reloads: its socket and its call go together
    await livekit.disconnect("R1", pid)
    await bob.nothing()
    assert call_of(lobby, pid) == "connected"


async def test_news_about_unknown_rooms_and_participants_is_answered_and_ignored(
    make_lobby: LobbyFactory, livekit: LiveKitStandin
) -> None:
    lobby = await livekit_lobby(make_lobby, livekit)
    _alice, bob, pid = await in_room(lobby)
    await livekit.connect("R1", "p_stranger")
    await livekit.connect("ELSEWHERE", pid)
    info = ParticipantInfo(identity=pid, sid="PA_x")
    await livekit.send_webhook("track_published", "R1", info)  # not about call states
    assert [d.status for d in livekit.deliveries] == [200, 200, 200]
    await bob.nothing()
    assert call_of(lobby, pid) == "connecting"


async def test_livekit_webhooks_are_also_taken_where_openvidu_3_sends_them(
    make_lobby: LobbyFactory, livekit: LiveKitStandin
) -> None:
    lobby = await livekit_lobby(make_lobby, livekit)
    livekit.webhook_urls[:] = [lobby.http + "/livekit/webhook"]
    _, bob, pid = await in_room(lobby)
    await livekit.connect("R1", pid)
    assert (await bob.recv())["call"] == "connected"


def joined_body(livekit: LiveKitStandin, pid: str) -> bytes:
    body, _ = livekit.signed_webhook(
        "participant_joined", "R1", ParticipantInfo(identity=pid, sid="PA_1")
    )
    return body


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ("unsigned", 401),
        ("bearer", 401),
        ("wrong secret", 401),
        ("stale", 401),
        ("no sha256", 401),
        ("tampered", 401),
        ("not json", 400),
        ("not an event", 400),
        ("a list", 400),
        ("nobody joined", 400),
        ("not utf-8", 400),
        ("oversized", 413),
    ],
)
async def test_refused_livekit_webhooks_change_nothing(
    make_lobby: LobbyFactory,
    livekit: LiveKitStandin,
    caplog: pytest.LogCaptureFixture,
    case: str,
    status: int,
) -> None:
    lobby = await livekit_lobby(make_lobby, livekit)
    _alice, bob, pid = await in_room(lobby)
    body = joined_body(livekit, pid)
    headers = livekit.webhook_headers(body)
    if case == "unsigned":
        del headers["Authorization"]
    elif case == "bearer":  # LiveKit sends the bare JWT; a "Bearer" one is no LiveKit's
        headers["Authorization"] = "Bearer " + headers["Authorization"]
    elif case == "wrong secret":
        headers = livekit.webhook_headers(body, secret="not-the-secret-0123456789-0123456789")
    elif case == "stale":  # past its expiry and the minute of leeway
        headers = livekit.webhook_headers(body, ttl=datetime.timedelta(minutes=-2))
    elif case == "no sha256":
        headers["Authorization"] = AccessToken(KEY, SECRET).to_jwt()  # valid, signs no body
    elif case == "tampered":
        body = body.replace(pid.encode(), b"p_other")
    elif case == "not json":
        body = b"participant_joined " + pid.encode()
        headers = livekit.webhook_headers(body)
    elif case == "not an event":
        body = json.dumps({"event": 5}).encode()
        headers = livekit.webhook_headers(body)
    elif case == "a list":
        body = b"[]"
        headers = livekit.webhook_headers(body)
    elif case == "nobody joined":  # a string where the participant object goes
        body = json.dumps({"event": "participant_joined", "participant": pid}).encode()
        headers = livekit.webhook_headers(body)
    elif case == "not utf-8":
        body = b'{"event": "\xff"}'
        headers = livekit.webhook_headers(body)
    elif case == "oversized":
        padded = json.loads(body) | {"id": "x" * MAX_BODY}
        body = json.dumps(padded).encode()
        headers = livekit.webhook_headers(body)
    with caplog.at_level(logging.WARNING, "lobby.web.webhooks"):
        answer = await post(lobby, "/webhooks/livekit", body, headers)
    assert answer.status_code == status
    await bob.nothing()
    assert call_of(lobby, pid) == "connecting"
    [record] = [r for r in caplog.records if r.name == "lobby.web.webhooks"]
    assert record.levelno == logging.WARNING
    token = headers.get("Authorization", "").removeprefix("Bearer ")
    assert not token or token not in caplog.text
    assert SECRET not in caplog.text


async def test_a_body_streamed_past_the_bound_is_refused_without_a_length(
    make_lobby: LobbyFactory, livekit: LiveKitStandin
) -> None:
    lobby = await livekit_lobby(make_lobby, livekit)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(MAX_BODY // 1024 + 2):
            yield b" " * 1024

    async with httpx.AsyncClient(base_url=lobby.http) as http:
        answer = await http.post("/webhooks/livekit", content=chunks())
    assert answer.status_code == 413


async def test_webhooks_take_only_posts(make_lobby: LobbyFactory, livekit: LiveKitStandin) -> None:
    lobby = await livekit_lobby(make_lobby, livekit)
    async with httpx.AsyncClient(base_url=lobby.http) as http:
        for path in ("/webhooks/livekit", "/livekit/webhook"):
            assert (await http.get(path)).status_code == 405


async def test_livekit_webhooks_are_off_without_livekit(
    lobby: Lobby, livekit: LiveKitStandin
) -> None:
    body = b'{"event": "room_started"}'
    answer = await post(lobby, "/webhooks/livekit", body, livekit.webhook_headers(body))
    assert answer.status_code == 404


# -- OpenVidu 2 ---------------------------------------------------------------------------


async def openvidu_lobby(make_lobby: LobbyFactory, standin: OpenViduStandin) -> Lobby:
    lobby: Lobby = await make_lobby(
        openvidu_webhook_secret=OPENVIDU_SECRET, call_reconcile_interval=0
    )
    standin.webhook_url = lobby.http + "/webhooks/openvidu"
    standin.webhook_headers = {"Authorization": f"Bearer {OPENVIDU_SECRET}"}
    return lobby


def connection_of(lobby: Lobby, pid: str) -> str:
    member = lobby.state.handler.presence.member(pid)
    assert member is not None
    assert member.grant is not None
    return member.grant.connection_id


async def test_openvidu_webhooks_become_call_state_events(
    make_lobby: LobbyFactory, standin: OpenViduStandin
) -> None:
    lobby = await openvidu_lobby(make_lobby, standin)
    alice, bob, pid = await in_room(lobby)
    connection = connection_of(lobby, pid)
    standin.activate("R1", connection)  # a browser joined with the token
    for client in (alice, bob):
        assert (await client.until("call_state"))["call"] == "connected"
    standin.leave("R1", connection)
    for client in (alice, bob):
        assert (await client.until("call_state"))["call"] == "dropped"
    assert [(w.event, w.status) for w in standin.webhooks] == [
        ("participantJoined", 200),
        ("participantLeft", 200),
    ]
    # The page's own word counts no more: OpenVidu tells.
    await alice.send({"type": "call_state", "call": "connected"})
    await bob.nothing()


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        ({}, {"event": "participantJoined"}, 401),
        ({"Authorization": "Bearer not-the-secret"}, {"event": "participantJoined"}, 401),
        ({"Authorization": OPENVIDU_SECRET}, {"event": "participantJoined"}, 401),
        ({"Authorization": f"Bearer {OPENVIDU_SECRET}"}, "not json", 400),
        ({"Authorization": f"Bearer {OPENVIDU_SECRET}"}, ["participantJoined"], 400),
        ({"Authorization": f"Bearer {OPENVIDU_SECRET}"}, {"event": "participantJoined"}, 400),
        (
            {"Authorization": f"Bearer {OPENVIDU_SECRET}"},
            {"event": "x", "pad": "x" * MAX_BODY},
            413,
        ),
        ({"Authorization": f"Bearer {OPENVIDU_SECRET}"}, {"event": "sessionCreated"}, 200),
    ],
)
async def test_openvidu_webhooks_need_the_secret_and_an_event(
    make_lobby: LobbyFactory,
    standin: OpenViduStandin,
    caplog: pytest.LogCaptureFixture,
    headers: dict[str, str],
    body: Any,
    status: int,
) -> None:
    lobby = await openvidu_lobby(make_lobby, standin)
    _alice, bob, pid = await in_room(lobby)
    if isinstance(body, dict) and body.get("event") == "participantJoined" and status == 401:
        body |= {"sessionId": "R1", "connectionId": connection_of(lobby, pid)}
    content = body.encode() if isinstance(body, str) else json.dumps(body).encode()
    with caplog.at_level(logging.WARNING, "lobby.web.webhooks"):
        answer = await post(lobby, "/webhooks/openvidu", content, headers)
    assert answer.status_code == status
    await bob.nothing()
    assert call_of(lobby, pid) == "connecting"
    assert OPENVIDU_SECRET not in caplog.text


async def test_openvidu_webhooks_are_off_without_their_secret(
    lobby: Lobby, standin: OpenViduStandin
) -> None:
    alice, bob, _pid = await in_room(lobby)
    body = {"event": "participantJoined", "sessionId": "R1", "connectionId": "con_x"}
    answer = await post(lobby, "/webhooks/openvidu", json.dumps(body).encode(), {})
    assert answer.status_code == 404
    # Without them the page's report is what counts.
    await alice.send({"type": "call_state", "call": "connected"})
    assert (await bob.recv())["call"] == "connected"
