"""LiveKitBackend: its tokens, checked by the official `TokenVerifier`; its RoomService calls,
against the LiveKit stand-in over real HTTP."""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import time
from collections.abc import AsyncIterator

import jwt
import pytest
from livekit import api
from livekit.api.access_token import Claims
from starlette.responses import PlainTextResponse

from lobby.app import SecurityHeaders, media_backend
from lobby.config import Settings
from lobby.media.calls import Calls
from lobby.media.livekit import (
    LiveKitAuthError,
    LiveKitBackend,
    LiveKitError,
    LiveKitProtocolError,
    LiveKitServerError,
    LiveKitTimeout,
    LiveKitUnreachable,
)
from lobby.media.seam import InCall, MediaError
from lobby.rules.grants import Identity
from lobby.web import assets
from tests.livekit_standin import Call, LiveKitStandin, running_standin
from tests.log_secrets import SECRETS
from tests.openvidu_standin import closed_port_url

KEY, SECRET = "APIlobby", "S3cret_never_logged-0123456789-0123456789"
SECRETS.register(SECRET)
ALICE = Identity(participant_id="p-alice", user="alice", nickname="Alice", role="PUBLISHER")
BOB = Identity(participant_id="p-bob", user="bob", nickname="Bob", role="SUBSCRIBER")
LOGGER = "lobby.media.livekit"


@pytest.fixture
async def standin() -> AsyncIterator[LiveKitStandin]:
    async with running_standin(KEY, SECRET) as server:
        yield server


@pytest.fixture
async def backend(standin: LiveKitStandin) -> AsyncIterator[LiveKitBackend]:
    client = LiveKitBackend(standin.ws_url, standin.url, KEY, SECRET, timeout=2)
    yield client
    await client.aclose()


def verify(token: str, *, leeway: float = 0) -> Claims:
    return api.TokenVerifier(KEY, SECRET, leeway=datetime.timedelta(seconds=leeway)).verify(token)


# -- tokens -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("identity", "publishes"),
    [(ALICE, True), (BOB, False), (Identity("p-mod", "mod", "Mo", "MODERATOR"), True)],
)
async def test_a_grant_is_a_token_for_exactly_that_room_signed_here(
    standin, backend, identity, publishes
):
    grant = await backend.grant("room1", identity)

    claims = verify(grant.token)
    assert (grant.room, grant.connection_id) == ("room1", identity.participant_id)
    assert (claims.identity, claims.name) == (identity.participant_id, identity.nickname)
    assert json.loads(claims.metadata) == {"user": identity.user, "role": identity.role}
    assert claims.video == api.VideoGrants(
        room_join=True,
        room="room1",
        can_publish=publishes,
        can_publish_data=publishes,
        can_subscribe=True,
    )
    assert standin.calls == []  # minted locally: no network call


async def test_a_token_is_signed_with_the_secret_and_issued_by_the_key(backend):
    grant = await backend.grant("room1", ALICE)
    with pytest.raises(jwt.InvalidSignatureError):
        api.TokenVerifier(KEY, "another-secret-0123456789-0123456789").verify(grant.token)
    with pytest.raises(jwt.InvalidIssuerError):
        api.TokenVerifier("another-key", SECRET).verify(grant.token)


async def test_a_token_lives_for_the_ttl():
    backend = LiveKitBackend("ws://lk", "http://lk", KEY, SECRET, token_ttl=1)
    grant = await backend.grant("room1", ALICE)
    verify(grant.token)  # valid now, without any leeway
    # exp is whole seconds: expired within two seconds of minting, not six hours (the SDK's).
    deadline = time.monotonic() + 3
    while True:
        try:
            verify(grant.token)
        except jwt.ExpiredSignatureError:
            break
        assert time.monotonic() < deadline, "the token outlived its TTL"
        await asyncio.sleep(0.05)  # polling a clock: no event says "expired"


def test_the_page_connects_to_the_browser_url():
    backend = LiveKitBackend("wss://lk.example", "http://lk.internal:7880", KEY, SECRET)
    assert backend.page_config("alice") == {"kind": "livekit", "url": "wss://lk.example"}
    assert backend.peer_to_peer is False


# -- RoomService ------------------------------------------------------------------------


async def test_revoke_removes_the_participant_with_a_grant_for_that_room_only(standin, backend):
    grant = await backend.grant("room1", ALICE)
    standin.join("room1", grant.connection_id)
    standin.join("room1", "p-bob")

    await backend.revoke(grant)

    assert standin.calls == [
        Call(
            "RemoveParticipant",
            {"room": "room1", "identity": "p-alice"},
            api.VideoGrants(room_admin=True, room="room1"),
            200,
        )
    ]
    assert list(standin.rooms["room1"].participants) == ["p-bob"]


async def test_revoking_one_already_gone_is_fine(standin, backend, caplog):
    grant = await backend.grant("room1", ALICE)
    await backend.revoke(grant)  # no such room
    standin.join("room1", "p-bob")
    await backend.revoke(grant)  # no such participant

    assert [(c.method, c.status, c.code) for c in standin.calls] == [
        ("RemoveParticipant", 404, "not_found")
    ] * 2
    assert not [r for r in caplog.records if r.name == LOGGER]


async def test_close_room_deletes_it_and_tolerates_a_gone_one(standin, backend, caplog):
    standin.join("room1", "p-alice")
    await backend.close_room("room1")
    await backend.close_room("room1")

    assert standin.rooms == {}
    assert standin.calls == [
        Call("DeleteRoom", {"room": "room1"}, api.VideoGrants(room_create=True), 200),
        Call("DeleteRoom", {"room": "room1"}, api.VideoGrants(room_create=True), 404, "not_found"),
    ]
    assert not [r for r in caplog.records if r.name == LOGGER]


async def test_check_lists_rooms(standin, backend):
    await backend.check()
    assert standin.calls == [Call("ListRooms", {}, api.VideoGrants(room_list=True), 200)]


async def test_the_settings_build_a_backend_that_talks_to_the_configured_server(standin):
    settings = Settings(
        media="livekit",
        livekit_url=standin.ws_url,
        livekit_api_url=standin.url,
        livekit_api_key=KEY,
        livekit_api_secret=SECRET,
        livekit_token_ttl=30,
    )
    backend = media_backend(settings)
    try:
        await backend.check()
        grant = await backend.grant("room1", ALICE)
    finally:
        await backend.aclose()
    assert isinstance(backend, LiveKitBackend)
    assert backend.page_config("alice") == {"kind": "livekit", "url": standin.ws_url}
    assert verify(grant.token).identity == "p-alice"
    assert [c.status for c in standin.calls] == [200]


# -- failures ---------------------------------------------------------------------------


async def test_down_is_unreachable_at_once(caplog):
    url = closed_port_url()
    backend = LiveKitBackend("ws://lk", url, KEY, SECRET)
    started = time.monotonic()
    with pytest.raises(LiveKitUnreachable) as caught:
        await backend.check()
    await backend.aclose()

    assert time.monotonic() - started < 2
    assert caught.value.outage
    assert str(caught.value) == f"LiveKit unreachable at {url}: connection refused"
    assert [r.getMessage() for r in caplog.records if r.name == LOGGER] == [str(caught.value)]


async def test_a_wrong_secret_is_an_auth_error(standin, caplog):
    backend = LiveKitBackend(standin.ws_url, standin.url, KEY, "not-the-secret-" + SECRET)
    with pytest.raises(LiveKitAuthError) as caught:
        await backend.revoke(await backend.grant("room1", ALICE))
    await backend.aclose()

    assert caught.value.outage
    assert caught.value.message == (
        "The video service is not set up correctly; please tell the administrator."
    )
    assert standin.calls[0].status == 401
    [record] = [r for r in caplog.records if r.name == LOGGER]
    assert record.levelno == logging.ERROR
    assert record.getMessage() == (
        "LiveKit refused our token (HTTP 401 unauthenticated: permissions denied) on "
        f"RemoveParticipant at {standin.url}; check LIVEKIT_API_KEY and LIVEKIT_API_SECRET"
    )
    assert "not-the-secret" not in caplog.text


@pytest.mark.parametrize(
    ("fault", "kind", "outage", "logged"),
    [
        (401, LiveKitAuthError, True, "refused our token (HTTP 401 unauthenticated"),
        (500, LiveKitServerError, True, "answered HTTP 500 internal: fault injected by the test"),
        (503, LiveKitServerError, True, "answered HTTP 503 unavailable"),
        (400, LiveKitProtocolError, False, "answered unexpected HTTP 400 internal"),
        (403, LiveKitProtocolError, False, "answered unexpected HTTP 403 permission_denied"),
        ("slow", LiveKitTimeout, True, "timed out after 0.3s on DeleteRoom at"),
        ("reset", LiveKitUnreachable, True, "broke the connection during DeleteRoom at"),
    ],
)
async def test_faults_become_media_errors(standin, caplog, fault, kind, outage, logged):
    standin.fault, standin.delay = fault, 5
    backend = LiveKitBackend(standin.ws_url, standin.url, KEY, SECRET, timeout=0.3)
    with pytest.raises(kind) as caught:
        await backend.close_room("room1")
    await backend.aclose()

    error = caught.value
    assert isinstance(error, LiveKitError)
    assert isinstance(error, MediaError)
    assert (error.code, error.outage) == ("media_unavailable", outage)
    assert "LiveKit" not in error.message  # users see a plain sentence
    assert str(error) == error.detail
    assert logged in error.detail
    [record] = [r for r in caplog.records if r.name == LOGGER]
    assert record.getMessage() == error.detail
    assert record.levelno >= logging.WARNING
    # The request reached the stand-in and ended there: nothing is left running.
    await standin.wait_for(lambda: len(standin.calls) == 1)
    assert standin.calls[0].method == "DeleteRoom"


async def test_a_short_secret_is_said_once_not_at_every_token(caplog):
    backend = LiveKitBackend("ws://lk", "http://lk", "devkey", "secret")
    for _ in range(3):  # filterwarnings=error: PyJWT's short-key warning would fail this
        await backend.grant("room1", ALICE)
    assert [r.getMessage() for r in caplog.records if r.name == LOGGER] == [
        "LIVEKIT_API_SECRET is shorter than 32 bytes: fine for the LiveKit dev server, "
        "guessable anywhere else"
    ]


async def test_no_log_line_or_error_ever_shows_the_secret_or_a_token(standin, caplog):
    caplog.set_level(logging.DEBUG)
    backend = LiveKitBackend(standin.ws_url, standin.url, KEY, SECRET, timeout=0.3)
    grant = await backend.grant("room1", ALICE)
    standin.join("room1", "p-alice")
    await backend.check()
    await backend.revoke(grant)
    errors: list[Exception] = []
    for fault in (401, 500, "reset", "slow"):
        standin.fault = fault
        with pytest.raises(LiveKitError) as caught:
            await backend.revoke(grant)
        errors.append(caught.value)
    await backend.aclose()

    texts = [caplog.text, *(r.getMessage() for r in caplog.records), *map(str, errors)]
    texts += [e.message for e in errors if isinstance(e, MediaError)]
    for text in texts:
        assert SECRET not in text
        assert grant.token not in text
        assert "Bearer" not in text
    assert len([r for r in caplog.records if r.name == LOGGER]) == len(errors)


# -- the server around it -------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("wss://lk.example:7443", "wss://lk.example:7443 https://lk.example:7443"),
        ("ws://localhost:7880", "ws://localhost:7880 http://localhost:7880"),
    ],
)
def test_pages_may_connect_to_the_livekit_server_and_nowhere_else(url, allowed):
    settings = Settings(media="livekit", livekit_url=url, livekit_api_url="http://lk.internal")
    csp = dict(SecurityHeaders(PlainTextResponse("x"), settings).headers)
    assert f"connect-src 'self' {allowed};" in csp[b"content-security-policy"].decode()


def test_the_pages_for_livekit_calls_load_livekit_client():
    # `lobby serve` checks this first (tests/test_assets.py shows it refusing a missing file).
    library = assets.FOR_MEDIA["livekit"]
    assert (library.name, library.url) == (
        "livekit-client",
        f"/static/vendor/livekit-client-{library.version}.umd.js",
    )
    assets.require("livekit")  # fetched by `make vendor`: nothing to refuse


async def test_participants_are_listed_with_their_sids_and_a_grant_for_that_room_only(
    standin, backend
):
    alice = standin.join("room1", "p-alice")
    standin.join("room2", "p-bob")
    listed = await backend.participants("room1")
    assert listed == [InCall("p-alice", alice.sid, True)]
    assert await backend.participants("nowhere") == []  # not_found: nobody in it
    admin = api.VideoGrants(room_admin=True, room="room1")
    assert standin.calls[0] == Call("ListParticipants", {"room": "room1"}, admin, 200)


async def test_a_fresh_grant_for_a_reloaded_page_is_never_removed_by_the_stale_ones_retry(
    standin, backend
):
    # LiveKit names a participant by its identity, which a reloaded page keeps: a retried
    # RemoveParticipant for its stale token would throw out the page's new connection.
    recovered = asyncio.Event()
    calls = Calls(backend, occupied=lambda room: True, recovered=recovered)
    stale = await calls.grant("room1", ALICE)
    assert not isinstance(stale, MediaError)
    await standin.connect("room1", stale.connection_id)
    standin.fault = 503
    await calls.revoke(stale)  # LiveKit is failing: kept for a retry
    assert calls.unfinished == 1
    standin.fault = None
    fresh = await calls.grant("room1", ALICE)  # the resumed page's token: same identity
    assert not isinstance(fresh, MediaError)
    assert fresh.connection_id == stale.connection_id
    new = await standin.connect("room1", fresh.connection_id)
    assert calls.unfinished == 0  # the stale removal is no longer owed
    recovered.set()  # a retry round would run now, if one were due
    await calls.drain()
    assert [c.method for c in standin.calls] == ["RemoveParticipant"]  # the failed one only
    assert list(standin.rooms["room1"].participants.values()) == [new]
