"""OpenViduBackend against the OpenVidu stand-in over real HTTP, and the stand-in itself."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator

import certifi
import httpx
import pytest

import lobby
from lobby.app import media_backend
from lobby.config import Settings
from lobby.media.openvidu import (
    OpenViduAuthError,
    OpenViduBackend,
    OpenViduError,
    OpenViduProtocolError,
    OpenViduServerError,
    OpenViduTimeout,
    OpenViduUnreachable,
    environment_proxy,
)
from lobby.media.seam import InCall, MediaError
from lobby.rules.grants import Identity
from tests.log_secrets import SECRETS
from tests.openvidu_standin import Call, OpenViduStandin, closed_port_url, running_standin

SECRET = "S3cret_never_logged"
SECRETS.register_openvidu_secret(SECRET)
SESSIONS = "/openvidu/api/sessions"
ALICE = Identity(participant_id="p-alice", user="alice", nickname="Alice", role="PUBLISHER")
BOB = Identity(participant_id="p-bob", user="bob", nickname="Bob", role="SUBSCRIBER")


def connection_body(identity: Identity) -> dict[str, str]:
    data = json.dumps({"serverData": identity.user, "participantId": identity.participant_id})
    return {"type": "WEBRTC", "role": identity.role, "data": data}


@pytest.fixture
async def standin() -> AsyncIterator[OpenViduStandin]:
    async with running_standin(SECRET) as server:
        yield server


@pytest.fixture
async def backend(standin: OpenViduStandin) -> AsyncIterator[OpenViduBackend]:
    client = OpenViduBackend(standin.url, SECRET, timeout=2)
    yield client
    await client.aclose()


@pytest.fixture
async def api(standin: OpenViduStandin) -> AsyncIterator[httpx.AsyncClient]:
    """A raw REST client, to check the stand-in itself."""
    async with httpx.AsyncClient(base_url=standin.url, auth=("OPENVIDUAPP", SECRET)) as client:
        yield client


# -- the happy paths, with the exact REST calls --------------------------------------


async def test_grant_creates_the_session_then_a_connection(standin, backend):
    grant = await backend.grant("room1", ALICE)

    assert standin.calls == [
        Call("POST", SESSIONS, {"customSessionId": "room1"}, 200),
        Call("POST", f"{SESSIONS}/room1/connection", connection_body(ALICE), 200),
    ]
    port = standin.url.rsplit(":", 1)[1]
    token = rf"ws://127\.0\.0\.1:{port}\?sessionId=room1&token=tok_[A-Z][A-Za-z0-9]{{15}}"
    assert re.fullmatch(token, grant.token)
    assert re.fullmatch(r"con_[A-Z][A-Za-z0-9]{9}", grant.connection_id)
    assert grant.room == "room1"
    connection = standin.sessions["room1"].connections[grant.connection_id]
    assert (connection.role, connection.token) == ("PUBLISHER", grant.token)
    assert json.loads(connection.server_data) == {"serverData": "alice", "participantId": "p-alice"}


async def test_second_grant_in_a_known_room_makes_only_its_connection(standin, backend):
    first = await backend.grant("room1", ALICE)
    second = await backend.grant("room1", BOB)

    assert [(c.method, c.path, c.status) for c in standin.calls[2:]] == [
        ("POST", f"{SESSIONS}/room1/connection", 200),
    ]
    assert first.connection_id != second.connection_id
    assert first.token != second.token


async def test_a_grant_in_a_room_another_process_created_takes_the_409_in_its_stride(
    standin, backend
):
    other = OpenViduBackend(standin.url, SECRET, timeout=2)
    try:
        await other.grant("room1", ALICE)
    finally:
        await other.aclose()
    await backend.grant("room1", BOB)

    assert [(c.method, c.path, c.status) for c in standin.calls[2:]] == [
        ("POST", SESSIONS, 409),
        ("POST", f"{SESSIONS}/room1/connection", 200),
    ]


async def test_two_grants_at_once_in_a_new_room_share_one_session(standin, backend):
    first, second = await asyncio.gather(backend.grant("room1", ALICE), backend.grant("room1", BOB))

    creates = sorted(c.status or 0 for c in standin.calls if c.path == SESSIONS)
    assert creates == [200, 409]  # both tried to create it; the second found it made
    assert list(standin.sessions) == ["room1"]
    connections = standin.sessions["room1"].connections
    assert set(connections) == {first.connection_id, second.connection_id}


async def test_a_known_session_openvidu_closed_by_itself_is_created_again(standin, backend):
    await backend.grant("room1", ALICE)
    standin.drop_session("room1")
    await backend.grant("room1", BOB)

    assert [(c.method, c.path, c.status) for c in standin.calls[2:]] == [
        ("POST", f"{SESSIONS}/room1/connection", 404),
        ("POST", SESSIONS, 200),
        ("POST", f"{SESSIONS}/room1/connection", 200),
    ]


async def test_a_room_closed_by_us_starts_with_its_session_again(standin, backend):
    await backend.grant("room1", ALICE)
    await backend.close_room("room1")
    await backend.grant("room1", BOB)

    assert [(c.method, c.path, c.status) for c in standin.calls[3:]] == [
        ("POST", SESSIONS, 200),
        ("POST", f"{SESSIONS}/room1/connection", 200),
    ]


async def test_a_base_url_with_a_path_prefix_keeps_it_on_every_call():
    """Connection URLs are parsed once per room and kept: they still start with the prefix."""
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(f"{request.method} {request.url}")
        if request.method == "DELETE":
            return httpx.Response(204)
        return httpx.Response(200, json={"id": "con_1", "token": "tok_1"})

    backend = OpenViduBackend(
        "https://proxy.test/ov/", SECRET, transport=httpx.MockTransport(answer)
    )
    await backend.grant("room 1", ALICE)
    await backend.grant("room 1", BOB)
    await backend.close_room("room 1")
    await backend.aclose()
    assert seen == [
        "POST https://proxy.test/ov/openvidu/api/sessions",
        "POST https://proxy.test/ov/openvidu/api/sessions/room%201/connection",
        "POST https://proxy.test/ov/openvidu/api/sessions/room%201/connection",
        "DELETE https://proxy.test/ov/openvidu/api/sessions/room%201",
    ]


@pytest.mark.parametrize(
    ("url", "env", "proxy"),
    [
        ("https://ov.example", {}, None),
        ("https://ov.example", {"HTTPS_PROXY": "http://p:3128"}, "http://p:3128"),
        (
            "https://ov.example",
            {"https_proxy": "http://low:1", "HTTPS_PROXY": "http://up:2"},
            "http://low:1",
        ),
        ("https://ov.example", {"HTTP_PROXY": "http://p:3128"}, None),  # another scheme's
        ("http://ov.example", {"ALL_PROXY": "socks5://p:1080"}, "socks5://p:1080"),
        ("https://ov.example", {"HTTPS_PROXY": "http://p", "NO_PROXY": "ov.example"}, None),
        ("https://ov.example", {"HTTPS_PROXY": "http://p", "no_proxy": "a.b, .example"}, None),
        (
            "https://ov.example:4443",
            {"HTTPS_PROXY": "http://p", "NO_PROXY": "ov.example:4443"},
            None,
        ),
        ("https://ov.example", {"HTTPS_PROXY": "http://p", "NO_PROXY": "*"}, None),
        (
            "https://ov.example",
            {"HTTPS_PROXY": "http://p", "NO_PROXY": "xov.example,other"},
            "http://p",
        ),
    ],
)
def test_the_environment_names_the_proxy_as_curl_reads_it(
    url: str, env: dict[str, str], proxy: str | None
) -> None:
    assert environment_proxy(httpx.URL(url), env) == proxy


async def test_calls_go_through_the_proxy_the_environment_names():
    """A real HTTP proxy on loopback: it sees absolute-form requests for the OpenVidu host."""
    seen: list[bytes] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            await answer(reader, writer)
        writer.close()

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while head := await reader.readuntil(b"\r\n\r\n"):
            seen.append(head.split(b"\r\n", 1)[0])
            length = re.search(rb"(?i)content-length: *(\d+)", head)
            await reader.readexactly(int(length.group(1)) if length else 0)
            body = b'{"id": "con_1", "token": "tok_1"}'
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
            writer.write(b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            await writer.drain()

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    backend = OpenViduBackend(
        "http://openvidu.internal:4443", SECRET, env={"HTTP_PROXY": f"http://127.0.0.1:{port}"}
    )
    try:
        grant = await backend.grant("room1", ALICE)
    finally:
        await backend.aclose()
        server.close()
    assert grant.token == "tok_1"
    assert seen == [
        b"POST http://openvidu.internal:4443/openvidu/api/sessions HTTP/1.1",
        b"POST http://openvidu.internal:4443/openvidu/api/sessions/room1/connection HTTP/1.1",
    ]


async def test_requests_carry_basic_auth_json_and_a_timeout_and_no_userinfo():
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "DELETE":
            return httpx.Response(204)
        return httpx.Response(200, json={"id": "con_1", "token": "tok_1"})

    backend = OpenViduBackend(
        "http://user:pw@ov.test:4443", SECRET, timeout=2.5, transport=httpx.MockTransport(answer)
    )
    grant = await backend.grant("room1", ALICE)
    await backend.revoke(grant)
    await backend.aclose()
    basic = "Basic " + base64.b64encode(f"OPENVIDUAPP:{SECRET}".encode()).decode()
    post, _, delete = seen
    assert str(post.url) == "http://ov.test:4443/openvidu/api/sessions"  # no userinfo
    assert dict(post.headers) == {  # ours, all of them: no cookie, no client defaults
        "host": "ov.test:4443",
        "authorization": basic,
        "accept": "application/json",
        "user-agent": f"lobby/{lobby.__version__}",
        "content-type": "application/json",
        "content-length": str(len(post.content)),
    }
    assert json.loads(post.content) == {"customSessionId": "room1"}
    assert delete.content == b""
    assert "content-type" not in delete.headers
    assert delete.headers["authorization"] == basic
    assert post.extensions["timeout"] == dict.fromkeys(("connect", "read", "write", "pool"), 2.5)


@pytest.mark.parametrize("role", ["PUBLISHER", "SUBSCRIBER", "MODERATOR"])
async def test_role_is_passed_through(standin, backend, role):
    identity = Identity("p1", "carol", "Carol", role)
    grant = await backend.grant("room1", identity)

    assert standin.calls[-1].json == connection_body(identity)
    assert standin.sessions["room1"].connections[grant.connection_id].role == role


async def test_session_closed_between_the_two_calls_is_created_again_once(standin, backend):
    dropped: list[str] = []

    def close_once(method: str, path: str) -> None:
        if path.endswith("/connection") and not dropped:
            dropped.append(path)
            standin.drop_session("room1")

    standin.on_request = close_once
    grant = await backend.grant("room1", ALICE)

    assert [(c.method, c.path, c.status) for c in standin.calls] == [
        ("POST", SESSIONS, 200),
        ("POST", f"{SESSIONS}/room1/connection", 404),
        ("POST", SESSIONS, 200),
        ("POST", f"{SESSIONS}/room1/connection", 200),
    ]
    assert grant.connection_id in standin.sessions["room1"].connections


async def test_session_closed_twice_in_a_row_is_an_error(standin, backend):
    def always_close(method: str, path: str) -> None:
        if path.endswith("/connection"):
            standin.drop_session("room1")

    standin.on_request = always_close
    with pytest.raises(OpenViduProtocolError, match="HTTP 404"):
        await backend.grant("room1", ALICE)
    assert [c.status for c in standin.calls] == [200, 404, 200, 404]


async def test_revoke_deletes_the_connection(standin, backend):
    grant = await backend.grant("room1", ALICE)
    await backend.revoke(grant)

    path = f"{SESSIONS}/room1/connection/{grant.connection_id}"
    assert standin.calls[-1] == Call("DELETE", path, None, 204)
    assert standin.sessions["room1"].connections == {}


async def test_revoke_of_a_gone_connection_or_session_is_fine(standin, backend):
    grant = await backend.grant("room1", ALICE)
    await backend.revoke(grant)
    await backend.revoke(grant)
    standin.drop_session("room1")
    await backend.revoke(grant)

    assert [c.status for c in standin.calls[2:]] == [204, 404, 400]


async def test_close_room_deletes_the_session_and_tolerates_a_closed_one(standin, backend):
    await backend.grant("room1", ALICE)
    await backend.close_room("room1")
    await backend.close_room("room1")

    assert standin.calls[2:] == [
        Call("DELETE", f"{SESSIONS}/room1", None, 204),
        Call("DELETE", f"{SESSIONS}/room1", None, 404),
    ]
    assert standin.sessions == {}


async def test_the_settings_build_a_backend_that_talks_to_the_configured_server(standin):
    settings = Settings(openvidu_url=standin.url, openvidu_secret=SECRET, openvidu_timeout=2)
    backend = media_backend(settings)
    try:
        grant = await backend.grant("room1", ALICE)
    finally:
        await backend.aclose()
    assert grant.connection_id in standin.sessions["room1"].connections


async def test_the_settings_may_name_a_ca_file():
    settings = Settings(openvidu_url="https://openvidu.example", openvidu_ca_file=certifi.where())
    backend = media_backend(settings)
    assert repr(backend) == "OpenViduBackend('https://openvidu.example')"
    await backend.aclose()


# -- failures ---------------------------------------------------------------------------


async def test_down_is_unreachable_at_once(caplog):
    url = closed_port_url()
    backend = OpenViduBackend(url, SECRET)
    started = time.monotonic()
    with pytest.raises(OpenViduUnreachable) as caught:
        await backend.grant("room1", ALICE)
    await backend.aclose()

    assert time.monotonic() - started < 2
    assert str(caught.value) == f"OpenVidu unreachable at {url}: connection refused"
    assert [r.getMessage() for r in caplog.records if r.name == "lobby.media.openvidu"] == [
        str(caught.value)
    ]


async def test_wrong_secret_is_an_auth_error(standin, caplog):
    backend = OpenViduBackend(standin.url, "not-the-secret")
    with pytest.raises(OpenViduAuthError) as caught:
        await backend.grant("room1", ALICE)
    await backend.aclose()

    assert standin.calls == [Call("POST", SESSIONS, {"customSessionId": "room1"}, 401)]
    assert caught.value.message == (
        "The video service is not set up correctly; please tell the administrator."
    )
    [record] = [r for r in caplog.records if r.name == "lobby.media.openvidu"]
    assert record.levelno == logging.ERROR
    assert f"OpenVidu rejected the secret (HTTP 401) at {standin.url}" in record.getMessage()
    assert "not-the-secret" not in caplog.text


@pytest.mark.parametrize(
    ("fault", "kind", "logged"),
    [
        (401, OpenViduAuthError, "rejected the secret (HTTP 401)"),
        (500, OpenViduServerError, "answered HTTP 500 to POST /openvidu/api/sessions"),
        (503, OpenViduServerError, "answered HTTP 503 to POST /openvidu/api/sessions"),
        ("slow", OpenViduTimeout, "timed out after 0.3s on POST /openvidu/api/sessions"),
        ("reset", OpenViduUnreachable, "broke the connection during POST /openvidu/api/sessions"),
    ],
)
async def test_faults_become_media_errors(standin, caplog, fault, kind, logged):
    standin.fault = fault
    standin.delay = 5
    backend = OpenViduBackend(standin.url, SECRET, timeout=0.3)
    with pytest.raises(kind) as caught:
        await backend.grant("room1", ALICE)
    await backend.aclose()

    error = caught.value
    assert isinstance(error, OpenViduError)
    assert isinstance(error, MediaError)
    assert error.code == "media_unavailable"
    assert "OpenVidu" not in error.message  # users see a plain sentence
    assert str(error) == error.detail
    assert logged in error.detail
    [record] = [r for r in caplog.records if r.name == "lobby.media.openvidu"]
    assert record.getMessage() == error.detail
    assert record.levelno >= logging.WARNING
    # The request reached the stand-in and ended there: nothing is left running.
    await standin.wait_for(lambda: len(standin.calls) == 1)
    assert standin.calls[0].path == SESSIONS


async def test_slow_request_is_dropped_when_the_client_gives_up(standin):
    standin.fault, standin.delay = "slow", 5
    backend = OpenViduBackend(standin.url, SECRET, timeout=0.3)
    with pytest.raises(OpenViduTimeout):
        await backend.close_room("room1")
    await backend.aclose()

    await standin.wait_for(lambda: len(standin.calls) == 1, timeout=2)
    assert standin.calls == [Call("DELETE", f"{SESSIONS}/room1", None, None)]


def respond(response: httpx.Response) -> httpx.MockTransport:
    """A transport that answers every request with `response`: malformed answers."""
    return httpx.MockTransport(lambda request: response)


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, json={"id": "con_A123456789"}),
        httpx.Response(200, json=["not", "an", "object"]),
        httpx.Response(200, text="<html>proxy page</html>"),
    ],
)
async def test_connection_without_id_and_token_is_a_protocol_error(response, caplog):
    backend = OpenViduBackend("http://ov.test", SECRET, transport=respond(response))
    with pytest.raises(OpenViduProtocolError, match="without a connection id and token"):
        await backend.grant("room1", ALICE)
    await backend.aclose()


async def test_unexpected_status_shows_openvidus_message():
    body = {"status": 400, "message": "Parameter 'customSessionId' is wrong"}
    backend = OpenViduBackend(
        "http://ov.test", SECRET, transport=respond(httpx.Response(400, json=body))
    )
    with pytest.raises(OpenViduProtocolError) as caught:
        await backend.grant("bad room", ALICE)
    await backend.aclose()
    assert str(caught.value) == (
        "OpenVidu answered unexpected HTTP 400 to POST /openvidu/api/sessions: "
        "Parameter 'customSessionId' is wrong"
    )


async def test_undecodable_body_is_a_protocol_error():
    gzip = {"content-encoding": "gzip"}
    garbled = httpx.Response(200, headers=gzip, stream=httpx.ByteStream(b"not gzip"))
    backend = OpenViduBackend("http://ov.test", SECRET, transport=respond(garbled))
    with pytest.raises(OpenViduProtocolError, match="unreadable answer to POST"):
        await backend.grant("room1", ALICE)
    await backend.aclose()


async def test_no_log_line_or_error_ever_shows_the_secret_or_a_token(standin, caplog):
    caplog.set_level(logging.DEBUG)
    backend = OpenViduBackend(standin.url, SECRET, timeout=0.3)
    grants = [await backend.grant("room1", ALICE), await backend.grant("room2", BOB)]
    await backend.revoke(grants[0])
    errors: list[OpenViduError] = []
    for fault in (401, 500, "slow", "reset"):
        standin.fault = fault
        with pytest.raises(OpenViduError) as caught:
            await backend.grant("room1", ALICE)
        errors.append(caught.value)
    await backend.aclose()
    wrong = OpenViduBackend(standin.url, "Wrong_secret_too")
    standin.fault = None
    with pytest.raises(OpenViduAuthError) as caught:
        await wrong.grant("room1", ALICE)
    errors.append(caught.value)
    await wrong.aclose()

    credentials = base64.b64encode(f"OPENVIDUAPP:{SECRET}".encode()).decode()
    secrets = [SECRET, "Wrong_secret_too", credentials, *(g.token for g in grants)]
    secrets += [g.token.rsplit("token=", 1)[1] for g in grants]
    texts = [caplog.text, *(r.getMessage() for r in caplog.records)]
    texts += [f"{e} {e.message} {e!r}" for e in errors] + [repr(backend)]
    assert len(caplog.records) > len(errors)  # the per-call debug lines are covered too
    for text in texts:
        for secret in secrets:
            assert secret not in text


# -- the stand-in itself -----------------------------------------------------------------


async def test_standin_requires_basic_auth(standin, api):
    async with httpx.AsyncClient(base_url=standin.url) as anonymous:
        assert (await anonymous.get(SESSIONS)).status_code == 401
        wrong = await anonymous.get(SESSIONS, auth=("OPENVIDUAPP", "nope"))
    assert wrong.status_code == 401
    assert wrong.headers["www-authenticate"].startswith("Basic")
    assert (await api.get(SESSIONS)).json() == {"numberOfElements": 0, "content": []}


async def test_standin_session_creation(api):
    created = await api.post(SESSIONS, json={"customSessionId": "room_1-A"})
    again = await api.post(SESSIONS, json={"customSessionId": "room_1-A"})
    generated = [await api.post(SESSIONS), await api.post(SESSIONS, json={})]
    bad = await api.post(SESSIONS, json={"customSessionId": "no spaces"})

    assert created.status_code == 200
    assert created.json()["id"] == created.json()["customSessionId"] == "room_1-A"
    assert created.json()["connections"] == {"numberOfElements": 0, "content": []}
    assert (again.status_code, again.content) == (409, b"")
    for response in generated:
        assert re.fullmatch(r"ses_[A-Z][A-Za-z0-9]{9}", response.json()["id"])
        assert response.json()["customSessionId"] == ""
    assert bad.status_code == 400
    assert bad.json()["path"] == SESSIONS
    assert "customSessionId" in bad.json()["message"]
    assert (await api.get(f"{SESSIONS}/room_1-A")).json()["id"] == "room_1-A"
    missing = await api.get(f"{SESSIONS}/nope")
    assert (missing.status_code, missing.content) == (404, b"")


async def test_standin_connection_errors(api):
    assert (await api.post(f"{SESSIONS}/nope/connection", json={})).content == b""
    await api.post(SESSIONS, json={"customSessionId": "r"})
    bad_role = await api.post(f"{SESSIONS}/r/connection", json={"role": "ADMIN"})
    bad_data = await api.post(f"{SESSIONS}/r/connection", json={"data": {"user": "x"}})
    assert (bad_role.status_code, bad_data.status_code) == (400, 400)
    assert "role" in bad_role.json()["message"]
    for method in ("GET", "DELETE"):
        no_session = await api.request(method, f"{SESSIONS}/nope/connection/con_X")
        no_connection = await api.request(method, f"{SESSIONS}/r/connection/con_X")
        assert (no_session.status_code, no_session.content) == (400, b"")
        assert (no_connection.status_code, no_connection.content) == (404, b"")


async def test_standin_pending_connection_and_unique_tokens(standin, api):
    await api.post(SESSIONS, json={"customSessionId": "r"})
    made = [(await api.post(f"{SESSIONS}/r/connection")).json() for _ in range(20)]

    assert len({c["token"] for c in made}) == len({c["id"] for c in made}) == 20
    first = made[0]
    assert list(first)[:5] == ["id", "object", "status", "connectionId", "sessionId"]
    assert (first["status"], first["role"], first["serverData"], first["activeAt"]) == (
        "pending",
        "PUBLISHER",
        "",
        None,
    )
    fetched = await api.get(f"{SESSIONS}/r/connection/{first['id']}")
    assert fetched.json() == first
    # Pending connections are listed only on request.
    assert (await api.get(f"{SESSIONS}/r")).json()["connections"]["numberOfElements"] == 0
    pending = await api.get(f"{SESSIONS}/r", params={"pendingConnections": "true"})
    assert pending.json()["connections"]["numberOfElements"] == 20


async def test_standin_closes_a_session_when_its_last_active_participant_leaves(standin, api):
    await api.post(SESSIONS, json={"customSessionId": "r"})
    a, b, c = [(await api.post(f"{SESSIONS}/r/connection")).json()["id"] for _ in range(3)]
    standin.activate("r", a)
    standin.activate("r", b)
    active = (await api.get(f"{SESSIONS}/r/connection/{a}")).json()
    assert (active["status"], active["platform"] is not None) == ("active", True)

    assert (await api.delete(f"{SESSIONS}/r/connection/{c}")).status_code == 204  # pending
    assert (await api.delete(f"{SESSIONS}/r/connection/{a}")).status_code == 204
    assert (await api.get(f"{SESSIONS}/r")).status_code == 200  # b is still there
    assert (await api.delete(f"{SESSIONS}/r/connection/{b}")).status_code == 204
    assert (await api.get(f"{SESSIONS}/r")).status_code == 404


async def test_standin_pending_connections_do_not_keep_a_session_open(standin, api):
    await api.post(SESSIONS, json={"customSessionId": "r"})
    joined = (await api.post(f"{SESSIONS}/r/connection")).json()["id"]
    await api.post(f"{SESSIONS}/r/connection")  # never used
    standin.activate("r", joined)

    assert (await api.delete(f"{SESSIONS}/r/connection/{joined}")).status_code == 204
    assert "r" not in standin.sessions


async def test_standin_records_calls_and_wakes_waiters(standin, api):
    await api.post(SESSIONS, content=b"not json")
    await standin.wait_for(lambda: bool(standin.calls))
    assert standin.calls == [Call("POST", SESSIONS, None, 400)]
    assert (await api.delete(f"{SESSIONS}/nope")).status_code == 404


def test_the_reason_of_a_host_whose_every_address_failed_is_the_first_one() -> None:
    from lobby.media.openvidu import _reason

    summed_up = OSError(
        "Multiple exceptions: [Errno 111] Connect call failed ('127.0.0.1', 4443), "
        "[Errno 99] Cannot assign requested address"
    )
    wrapped = httpx.ConnectError(str(summed_up))
    wrapped.__cause__ = summed_up
    assert _reason(wrapped) == "connection refused"
    assert _reason(httpx.ConnectError("no numbers here")) == "no numbers here"


# -- who is in a call (for reconciling call states) -----------------------------------------


async def test_participants_lists_the_sessions_connections_active_or_pending(standin, backend):
    used, unused = await backend.grant("room1", ALICE), await backend.grant("room1", BOB)
    standin.activate("room1", used.connection_id)
    listed = await backend.participants("room1")
    assert sorted(listed, key=lambda c: c.active) == [
        InCall(unused.connection_id, None, False),
        InCall(used.connection_id, None, True),
    ]
    assert standin.calls[-1] == Call("GET", f"{SESSIONS}/room1", None, 200)
    assert await backend.participants("nowhere") == []  # 404: no session, nobody in it


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, json={"id": "room1"}),
        httpx.Response(200, json={"connections": {"content": [{"id": "con_A"}]}}),
        httpx.Response(200, text="<html>proxy page</html>"),
    ],
)
async def test_a_session_without_a_list_of_connections_is_a_protocol_error(response, caplog):
    backend = OpenViduBackend("http://ov.test", SECRET, transport=respond(response))
    with pytest.raises(OpenViduProtocolError, match="without a list of connections"):
        await backend.participants("room1")
    await backend.aclose()
