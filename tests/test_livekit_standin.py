"""The LiveKit stand-in, checked against the official client (`livekit.api.LiveKitAPI`).

If the official client can talk to the stand-in and gets the answers and errors a
LiveKit server gives, the back end's tests against the stand-in mean something.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import httpx
import jwt
import pytest
import websockets
from livekit import api
from livekit.protocol.models import DisconnectReason, ParticipantInfo
from livekit.protocol.room import (
    CreateRoomRequest,
    DeleteRoomRequest,
    ListParticipantsRequest,
    ListRoomsRequest,
    RoomParticipantIdentity,
)

from tests.live import LiveServer, Recorder
from tests.livekit_standin import WEBHOOK_TYPE, Call, LiveKitStandin, running_standin

KEY, SECRET = "APIstandin", "standin-secret-0123456789-0123456789"


@pytest.fixture
async def standin() -> AsyncIterator[LiveKitStandin]:
    async with running_standin(KEY, SECRET) as server:
        yield server


@pytest.fixture
async def lkapi(standin: LiveKitStandin) -> AsyncIterator[api.LiveKitAPI]:
    client = api.LiveKitAPI(standin.url, KEY, SECRET, failover=False)
    yield client
    await client.aclose()


def token(*, video: api.VideoGrants, secret: str = SECRET) -> str:
    return api.AccessToken(KEY, secret).with_grants(video).to_jwt()


async def test_rooms_are_created_listed_and_deleted_with_the_grants_the_client_sends(
    standin, lkapi
):
    room = await lkapi.room.create_room(CreateRoomRequest(name="room1"))
    listed = await lkapi.room.list_rooms(ListRoomsRequest())
    await lkapi.room.delete_room(DeleteRoomRequest(room="room1"))
    after = await lkapi.room.list_rooms(ListRoomsRequest(names=["room1"]))

    assert room.name == "room1"
    assert room.sid.startswith("RM_")
    assert [r.name for r in listed.rooms] == ["room1"]
    assert list(after.rooms) == []
    assert standin.calls == [
        Call("CreateRoom", {"name": "room1"}, api.VideoGrants(room_create=True), 200),
        Call("ListRooms", {}, api.VideoGrants(room_list=True), 200),
        Call("DeleteRoom", {"room": "room1"}, api.VideoGrants(room_create=True), 200),
        Call("ListRooms", {"names": ["room1"]}, api.VideoGrants(room_list=True), 200),
    ]


async def test_participants_who_joined_are_listed_and_removed(standin, lkapi):
    standin.join("room1", "p-alice", name="Alice", metadata='{"user": "alice"}')
    standin.join("room1", "p-bob")

    listed = await lkapi.room.list_participants(ListParticipantsRequest(room="room1"))
    alice = await lkapi.room.get_participant(
        RoomParticipantIdentity(room="room1", identity="p-alice")
    )
    await lkapi.room.remove_participant(RoomParticipantIdentity(room="room1", identity="p-alice"))

    assert [p.identity for p in listed.participants] == ["p-alice", "p-bob"]
    assert (alice.name, alice.metadata, alice.state) == (
        "Alice",
        '{"user": "alice"}',
        ParticipantInfo.ACTIVE,
    )
    assert list(standin.rooms["room1"].participants) == ["p-bob"]
    admin = api.VideoGrants(room_admin=True, room="room1")
    assert [(c.method, c.grants, c.status) for c in standin.calls] == [
        ("ListParticipants", admin, 200),
        ("GetParticipant", admin, 200),
        ("RemoveParticipant", admin, 200),
    ]
    assert standin.calls[2].request == {"room": "room1", "identity": "p-alice"}


async def test_unknown_rooms_and_participants_are_not_found(standin, lkapi):
    standin.join("room1", "p-alice")
    attempts = [
        lkapi.room.remove_participant(RoomParticipantIdentity(room="room1", identity="p-x")),
        lkapi.room.remove_participant(RoomParticipantIdentity(room="nope", identity="p-alice")),
        lkapi.room.list_participants(ListParticipantsRequest(room="nope")),
        lkapi.room.delete_room(DeleteRoomRequest(room="nope")),
    ]
    for attempt in attempts:
        with pytest.raises(api.ServerError) as caught:
            await attempt
        assert (caught.value.code, caught.value.status) == ("not_found", 404)
    assert [(c.status, c.code) for c in standin.calls] == [(404, "not_found")] * 4
    assert list(standin.rooms["room1"].participants) == ["p-alice"]


async def test_a_wrong_secret_is_unauthenticated(standin):
    wrong = api.LiveKitAPI(standin.url, KEY, "not-the-secret-" + SECRET, failover=False)
    try:
        with pytest.raises(api.ServerError) as caught:
            await wrong.room.list_rooms(ListRoomsRequest())
    finally:
        await wrong.aclose()
    assert (caught.value.code, caught.value.status) == ("unauthenticated", 401)
    assert standin.calls == [Call("ListRooms", {}, None, 401, "unauthenticated")]


@pytest.mark.parametrize(
    ("video", "call"),
    [
        # An admin of another room, or a room creator, may not remove from room1.
        (api.VideoGrants(room_admin=True, room="room2"), "remove"),
        (api.VideoGrants(room_create=True, room_list=True), "remove"),
        (api.VideoGrants(room_list=True), "delete"),
        (api.VideoGrants(room_admin=True, room="room1"), "delete"),
        (api.VideoGrants(room_create=True), "list"),
        (api.VideoGrants(room_admin=True, room="room2"), "participants"),
        (api.VideoGrants(room_admin=True), "participants"),  # no room named
    ],
)
async def test_each_method_needs_its_own_grant(standin, video, call):
    standin.join("room1", "p-alice")
    client = api.LiveKitAPI.with_token(token(video=video), standin.url, failover=False)
    requests: dict[str, Callable[[], Awaitable[object]]] = {
        "remove": lambda: client.room.remove_participant(
            RoomParticipantIdentity(room="room1", identity="p-alice")
        ),
        "delete": lambda: client.room.delete_room(DeleteRoomRequest(room="room1")),
        "list": lambda: client.room.list_rooms(ListRoomsRequest()),
        "participants": lambda: client.room.list_participants(
            ListParticipantsRequest(room="room1")
        ),
    }
    try:
        with pytest.raises(api.ServerError) as caught:
            await requests[call]()
    finally:
        await client.aclose()
    assert (caught.value.code, caught.value.status) == ("unauthenticated", 401)
    assert list(standin.rooms["room1"].participants) == ["p-alice"]  # nothing happened


async def test_the_client_given_the_browsers_ws_url_reaches_the_same_server(standin):
    client = api.LiveKitAPI(standin.ws_url, KEY, SECRET, failover=False)
    try:
        await client.room.list_rooms(ListRoomsRequest())
    finally:
        await client.aclose()
    assert [c.status for c in standin.calls] == [200]


async def test_json_bodies_are_answered_in_json_and_other_routes_are_twirp_errors(standin):
    admin = token(video=api.VideoGrants(room_list=True))
    headers = {"Authorization": f"Bearer {admin}"}
    standin.join("room1", "p-alice")
    async with httpx.AsyncClient(base_url=standin.url, headers=headers) as http:
        listed = await http.post("/twirp/livekit.RoomService/ListRooms", json={})
        unknown = await http.post("/twirp/livekit.RoomService/Teleport", json={})
        typeless = await http.post("/twirp/livekit.RoomService/ListRooms", content=b"x")
        malformed = await http.post(
            "/twirp/livekit.RoomService/ListRooms",
            content=b"\xff\xff",
            headers={"Content-Type": "application/protobuf"},
        )
    assert listed.status_code == 200
    assert [r["name"] for r in listed.json()["rooms"]] == ["room1"]
    assert (unknown.status_code, unknown.json()["code"]) == (404, "bad_route")
    assert (typeless.status_code, typeless.json()["code"]) == (404, "bad_route")
    assert (malformed.status_code, malformed.json()["code"]) == (400, "malformed")


@pytest.mark.parametrize(("fault", "code"), [(500, "internal"), (503, "unavailable")])
async def test_status_faults_are_twirp_errors(standin, lkapi, fault, code):
    standin.fault = fault
    with pytest.raises(api.ServerError) as caught:
        await lkapi.room.list_rooms(ListRoomsRequest())
    assert (caught.value.code, caught.value.status) == (code, fault)


async def test_a_slow_answer_is_left_when_the_caller_gives_up(standin, lkapi):
    standin.fault, standin.delay = "slow", 5
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await lkapi.room.list_rooms(ListRoomsRequest())
    await standin.wait_for(lambda: len(standin.calls) == 1)
    assert standin.calls[0].status is None  # no answer: the client hung up first


async def test_the_sdks_own_timeout_does_not_bound_a_call(standin):
    """Why lobby.media.livekit bounds each call itself: the SDK passes `timeout=None` per
    request, which aiohttp reads as no limit, overriding the session's `ClientTimeout`."""
    standin.fault, standin.delay = "slow", 0.5
    client = api.LiveKitAPI(
        standin.url, KEY, SECRET, timeout=aiohttp.ClientTimeout(total=0.05), failover=False
    )
    try:
        listed = await client.room.list_rooms(ListRoomsRequest())
    finally:
        await client.aclose()
    assert list(listed.rooms) == []
    assert [c.status for c in standin.calls] == [200]


async def test_a_reset_breaks_the_answer_midway(standin, lkapi):
    standin.fault = "reset"
    with pytest.raises(aiohttp.ClientPayloadError):
        await lkapi.room.list_rooms(ListRoomsRequest())
    assert [c.status for c in standin.calls] == [200]


# -- the browser's side: livekit-client's signalling socket ------------------------------


def join_token(room: str | None, identity: str = "p_1") -> str:
    grants = api.VideoGrants(room_join=room is not None, room=room or "")
    return api.AccessToken(KEY, SECRET).with_identity(identity).with_grants(grants).to_jwt()


async def test_signalling_upgrades_are_recorded_checked_and_closed(standin):
    good, no_join = join_token("room1"), join_token(None)

    async with websockets.connect(
        f"{standin.ws_url}/rtc/v1?access_token={good}&auto_subscribe=1"
    ) as ws:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    for bad in (no_join, "not-a-jwt"):
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(f"{standin.ws_url}/rtc?access_token={bad}")
        assert refused.value.response.status_code == 403
    async with httpx.AsyncClient(base_url=standin.url) as http:
        valid = await http.get("/rtc/v1/validate", params={"access_token": good})
        invalid = await http.get("/rtc/validate", params={"access_token": no_join})

    # Accepted, then closed at once: there is no LiveKit signalling to speak.
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1011
    assert (valid.status_code, valid.text) == (200, "success")
    assert invalid.status_code == 401
    assert invalid.headers["access-control-allow-origin"] == "*"  # pages ask from their origin
    assert [(u.path, u.token, u.accepted, u.validate) for u in standin.upgrades] == [
        ("/rtc/v1", good, True, False),
        ("/rtc", no_join, False, False),
        ("/rtc", "not-a-jwt", False, False),
        ("/rtc/v1/validate", good, True, True),
        ("/rtc/validate", no_join, False, True),
    ]
    first = standin.upgrades[0].claims
    assert first is not None
    assert first.video is not None
    assert (first.identity, first.video.room) == ("p_1", "room1")
    assert standin.upgrades[2].claims is None
    assert standin.calls == []  # none of it is RoomService


# -- webhooks ---------------------------------------------------------------------------


class Receiver(Recorder):
    """An app server's LiveKit webhook endpoint."""

    def events(self, secret: str = SECRET) -> list[tuple[str, str, str]]:
        """(event, identity, disconnect reason) of each request, read by the official receiver."""
        receiver = api.WebhookReceiver(api.TokenVerifier(KEY, secret))
        read = [receiver.receive(body.decode(), h["authorization"]) for h, body in self.requests]
        return [
            (
                e.event,
                e.participant.identity,
                DisconnectReason.Name(e.participant.disconnect_reason),
            )
            for e in read
        ]


@pytest.fixture
async def receiver(standin: LiveKitStandin) -> AsyncIterator[Receiver]:
    app = Receiver()
    async with LiveServer(app) as server:
        standin.webhook_urls.append(server.http + "/livekit/webhook")
        yield app


async def test_webhooks_are_signed_as_livekit_signs_them_and_the_official_receiver_reads_them(
    standin, receiver
):
    joined = await standin.connect("room1", "p-alice", name="Alice")
    await standin.disconnect("room1", "p-alice", aborted=True)

    [(headers, body), _] = receiver.requests
    assert headers["content-type"] == WEBHOOK_TYPE
    assert not headers["authorization"].lower().startswith("bearer")
    claims = api.TokenVerifier(KEY, SECRET).verify(headers["authorization"])
    assert claims.sha256 == base64.b64encode(hashlib.sha256(body).digest()).decode()
    sent = json.loads(body)  # protojson: lowerCamelCase, int64 as strings, defaults left out
    assert sent["event"] == "participant_joined"
    assert sent["participant"]["sid"] == joined.sid
    assert sent["participant"]["joinedAt"] == str(joined.joined_at)
    assert isinstance(sent["createdAt"], str)
    assert "numDropped" not in sent
    assert receiver.events() == [
        ("participant_joined", "p-alice", "UNKNOWN_REASON"),
        ("participant_connection_aborted", "p-alice", "CLIENT_INITIATED"),
    ]
    assert [d.status for d in standin.deliveries] == [200, 200]
    with pytest.raises(jwt.InvalidSignatureError):
        receiver.events(secret="another-secret-0123456789-0123456789")


async def test_a_second_connection_of_one_identity_replaces_the_first_after_joining(
    standin, receiver
):
    first = await standin.connect("room1", "p-alice")
    second = await standin.connect("room1", "p-alice")
    assert [(d.event, d.sid) for d in standin.deliveries] == [
        ("participant_joined", first.sid),
        ("participant_joined", second.sid),
        ("participant_left", first.sid),
    ]
    assert receiver.events()[2] == ("participant_left", "p-alice", "DUPLICATE_IDENTITY")
    assert list(standin.rooms["room1"].participants.values()) == [second]


async def test_a_removed_participant_is_reported_left(standin, lkapi, receiver):
    await standin.connect("room1", "p-alice")
    await lkapi.room.remove_participant(RoomParticipantIdentity(room="room1", identity="p-alice"))
    await standin.wait_for(lambda: len(standin.deliveries) == 2)
    assert receiver.events()[1] == ("participant_left", "p-alice", "PARTICIPANT_REMOVED")
