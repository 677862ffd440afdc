"""The stand-in's browser side: openvidu-browser's JSON-RPC WebSocket at `/openvidu`.

Driven by a real `websockets` client speaking what openvidu-browser 2.32.2 sends
(`Session.connectAux`, `OpenVidu.startWs`, kurento-jsonrpc's `JsonRpcClient`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from tests.live import LiveServer, Recorder
from tests.openvidu_standin import (
    LOOPBACK_ICE_SERVERS,
    MEDIA_METHODS,
    SDK_VERSION,
    OpenViduStandin,
    running_standin,
)

SESSIONS = "/openvidu/api/sessions"
SERVER_DATA = json.dumps({"serverData": "alice", "participantId": "p_1"})
# Every field openvidu-browser's Session.processJoinRoomResponse and Connection read.
JOIN_FIELDS = {
    "id", "finalUserId", "createdAt", "metadata", "value", "session", "sessionId", "role",
    "record", "coturnIp", "coturnPort", "turnUsername", "turnCredential", "version",
    "mediaServer", "videoSimulcast", "life", "customIceServers",
}  # fmt: skip


class RpcClient:
    """A JSON-RPC 2.0 client over a real WebSocket, like kurento-jsonrpc's."""

    def __init__(self, socket: websockets.ClientConnection) -> None:
        self.socket = socket
        self.notifications: list[dict[str, Any]] = []
        self._id = 0

    async def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """The whole response frame (`result` or `error`); notifications are kept."""
        self._id += 1
        frame: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": self._id}
        if params is not None:
            frame["params"] = params
        await self.socket.send(json.dumps(frame))
        while (message := await self._next())["id"] != self._id:
            pass
        return message

    async def result(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        reply = await self.call(method, params)
        assert "result" in reply, reply
        result: dict[str, Any] = reply["result"]
        return result

    async def error(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        reply = await self.call(method, params)
        assert "error" in reply, reply
        error: dict[str, Any] = reply["error"]
        return error

    async def notification(self, method: str) -> dict[str, Any]:
        """The params of the next notification `method` (earlier other ones are dropped)."""
        while True:
            while self.notifications:
                note = self.notifications.pop(0)
                if note["method"] == method:
                    params: dict[str, Any] = note["params"]
                    return params
            await self._frame()

    async def _next(self) -> dict[str, Any]:
        """The next response; notifications on the way are kept."""
        while (message := await self._frame()) is None:
            pass
        return message

    async def _frame(self) -> dict[str, Any] | None:
        """Read one frame: a response is returned, a notification kept (None)."""
        message: dict[str, Any] = json.loads(await asyncio.wait_for(self.socket.recv(), 5))
        assert message["jsonrpc"] == "2.0"
        if "method" not in message:
            return message
        self.notifications.append(message)
        return None

    async def close(self) -> None:
        await self.socket.close()


@pytest.fixture
async def standin() -> AsyncIterator[OpenViduStandin]:
    async with running_standin() as server:
        yield server


@pytest.fixture
async def api(standin: OpenViduStandin) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=standin.url, auth=("OPENVIDUAPP", "MY_SECRET")) as client:
        yield client


async def issue(api: httpx.AsyncClient, session: str, role: str = "PUBLISHER") -> dict[str, Any]:
    """Create the session if needed and a connection in it; the connection JSON."""
    await api.post(SESSIONS, json={"customSessionId": session})
    reply = await api.post(
        f"{SESSIONS}/{session}/connection", json={"role": role, "data": SERVER_DATA}
    )
    assert reply.status_code == 200
    connection: dict[str, Any] = reply.json()
    return connection


async def open_browser(standin: OpenViduStandin, session: str = "r") -> RpcClient:
    ws_url = standin.url.replace("http", "ws", 1)
    return RpcClient(await websockets.connect(f"{ws_url}/openvidu?sessionId={session}"))


def join_params(token: str, session: str = "r", nickname: str = "Alice") -> dict[str, Any]:
    """`Session.initializeParams` of openvidu-browser 2.32.2."""
    return {
        "token": token,
        "session": session,
        "platform": "Chrome 150.0.0.0 on Linux 64-bit",
        "sdkVersion": SDK_VERSION,
        "metadata": json.dumps({"clientData": nickname}),
        "secret": "",
        "recorder": False,
        "stt": False,
    }


@pytest.fixture
async def browsers(standin: OpenViduStandin) -> AsyncIterator[list[RpcClient]]:
    """Open browser sockets, closed after the test."""
    opened: list[RpcClient] = []
    yield opened
    for client in opened:
        await client.close()


async def joined(
    standin: OpenViduStandin, api: httpx.AsyncClient, browsers: list[RpcClient], nickname: str
) -> tuple[RpcClient, dict[str, Any]]:
    """A browser that joined session `r` with a fresh token; the join result."""
    browser = await open_browser(standin)
    browsers.append(browser)
    connection = await issue(api, "r")
    return browser, await browser.result(
        "joinRoom", join_params(connection["token"], nickname=nickname)
    )


async def test_ping_answers_pong_before_and_after_a_join(standin, api, browsers):
    browser = await open_browser(standin)
    browsers.append(browser)
    assert (await browser.result("ping", {"interval": 5000}))["value"] == "pong"
    connection = await issue(api, "r")
    await browser.result("joinRoom", join_params(connection["token"]))
    assert (await browser.result("ping"))["value"] == "pong"
    assert [c.method for c in standin.rpc_calls] == ["ping", "joinRoom", "ping"]
    assert standin.rpc_calls[0].params == {"interval": 5000}


async def test_join_answers_every_field_openvidu_browser_reads(standin, api, browsers):
    connection = await issue(api, "r", role="MODERATOR")
    browser = await open_browser(standin)
    browsers.append(browser)
    result = await browser.result("joinRoom", join_params(connection["token"]))
    assert set(result) >= JOIN_FIELDS
    client_data = json.dumps({"clientData": "Alice"})
    assert result["id"] == connection["id"]
    assert result["session"] == "r"
    assert result["metadata"] == f"{client_data}%/%{SERVER_DATA}"
    assert (result["role"], result["value"], result["version"]) == ("MODERATOR", [], SDK_VERSION)
    assert result["mediaServer"] == "kurento"
    # Non-empty and on loopback: openvidu-browser never falls back to public STUN servers.
    assert result["customIceServers"] == list(LOOPBACK_ICE_SERVERS)
    assert all("127.0.0.1" in server["url"] for server in result["customIceServers"])
    # The REST side shows the connection active, with what the browser sent.
    shown = (await api.get(f"{SESSIONS}/r/connection/{connection['id']}")).json()
    assert (shown["status"], shown["clientData"]) == ("active", client_data)
    assert shown["platform"] == "Chrome 150.0.0.0 on Linux 64-bit"
    call = standin.rpc_calls[-1]
    assert (call.method, call.connection_id, call.error) == ("joinRoom", connection["id"], None)
    assert call.params["token"] == connection["token"]


async def test_tokens_are_single_use_and_bound_to_their_session(standin, api, browsers):
    connection = await issue(api, "r")
    other = await issue(api, "other")
    first, second, third = [await open_browser(standin) for _ in range(3)]
    browsers.extend([first, second, third])
    await first.result("joinRoom", join_params(connection["token"]))
    reused = await second.error("joinRoom", join_params(connection["token"]))
    assert reused["code"] == 401
    assert "is not valid" in reused["message"]
    assert (await second.error("joinRoom", join_params(other["token"])))["code"] == 401
    missing = await third.error("joinRoom", join_params(connection["token"], session="nope"))
    assert (missing["code"], missing["message"]) == (202, "Session nope cannot be found")
    assert (await first.error("joinRoom", join_params(other["token"], "other")))["code"] == 104
    assert [c.error for c in standin.rpc_calls] == [None, 401, 401, 202, 104]


async def test_others_hear_joins_and_see_who_is_there(standin, api, browsers):
    alice, _ = await joined(standin, api, browsers, "Alice")
    bob, result = await joined(standin, api, browsers, "Bob")
    assert [json.loads(p["metadata"].split("%/%")[0]) for p in result["value"]] == [
        {"clientData": "Alice"}
    ]
    heard = await alice.notification("participantJoined")
    assert heard["id"] == result["id"]
    assert heard["metadata"] == f"{json.dumps({'clientData': 'Bob'})}%/%{SERVER_DATA}"
    assert heard["createdAt"] == result["createdAt"]
    await bob.close()


async def test_leave_room_tells_the_others_and_the_last_one_closes_the_session(
    standin, api, browsers
):
    alice, first = await joined(standin, api, browsers, "Alice")
    bob, second = await joined(standin, api, browsers, "Bob")
    pending = await issue(api, "r")  # a token nobody used does not keep the session open
    assert await bob.result("leaveRoom") == {}
    assert await alice.notification("participantLeft") == {
        "connectionId": second["id"],
        "reason": "disconnect",
    }
    assert await alice.result("leaveRoom") == {}
    assert "r" not in standin.sessions
    assert (await api.get(f"{SESSIONS}/r")).status_code == 404
    assert pending["status"] == "pending"
    assert [c.connection_id for c in standin.rpc_calls[-2:]] == [second["id"], first["id"]]


async def test_a_socket_closed_without_leave_room_is_a_network_disconnect(standin, api, browsers):
    alice, _ = await joined(standin, api, browsers, "Alice")
    bob, second = await joined(standin, api, browsers, "Bob")
    await bob.close()
    assert await alice.notification("participantLeft") == {
        "connectionId": second["id"],
        "reason": "networkDisconnect",
    }
    assert (await api.get(f"{SESSIONS}/r/connection/{second['id']}")).status_code == 404
    await alice.close()
    await standin.wait_for(lambda: "r" not in standin.sessions)


async def test_rest_deletes_evict_browsers(standin, api, browsers):
    alice, first = await joined(standin, api, browsers, "Alice")
    bob, second = await joined(standin, api, browsers, "Bob")
    carol, third = await joined(standin, api, browsers, "Carol")
    assert (await api.delete(f"{SESSIONS}/r/connection/{second['id']}")).status_code == 204
    evicted = {"connectionId": second["id"], "reason": "forceDisconnectByServer"}
    assert await bob.notification("participantEvicted") == evicted
    assert await alice.notification("participantLeft") == evicted
    assert await carol.notification("participantLeft") == evicted
    assert (await bob.error("leaveRoom"))["code"] == 102
    assert (await api.delete(f"{SESSIONS}/r")).status_code == 204
    closed = {"connectionId": first["id"], "reason": "sessionClosedByServer"}
    assert await alice.notification("participantEvicted") == closed
    assert await carol.notification("participantLeft") == closed
    assert await carol.notification("participantEvicted") == {
        "connectionId": third["id"],
        "reason": "sessionClosedByServer",
    }
    assert standin.browsers == {}


async def test_media_methods_are_refused_with_a_clear_error(standin, api, browsers):
    browser = await open_browser(standin)
    browsers.append(browser)
    assert (await browser.error("publishVideo", {"sdpOffer": "v=0"}))["code"] == 102
    connection = await issue(api, "r")
    await browser.result("joinRoom", join_params(connection["token"]))
    for method in sorted(MEDIA_METHODS):
        error = await browser.error(method, {})
        assert error == {
            "code": 301,
            "message": f"The OpenVidu stand-in has no media server: {method}",
        }
    assert (await browser.error("sendMessage", {"message": "{}"}))["code"] == -32601
    await browser.socket.send("not json")
    assert (await browser._next())["error"]["code"] == -32600


async def test_a_subscriber_may_not_publish(standin, api, browsers):
    connection = await issue(api, "r", role="SUBSCRIBER")
    browser = await open_browser(standin)
    browsers.append(browser)
    result = await browser.result("joinRoom", join_params(connection["token"]))
    assert result["role"] == "SUBSCRIBER"
    # openvidu-browser turns 401 into OPENVIDU_PERMISSION_DENIED.
    assert (await browser.error("publishVideo", {"sdpOffer": "v=0"}))["code"] == 401
    assert (await browser.error("receiveVideoFrom", {"sender": "x"}))["code"] == 301


async def test_refused_browsers_cannot_open_the_socket(standin):
    standin.refuse_browsers = True
    with pytest.raises(InvalidStatus) as refused:
        await open_browser(standin)
    assert refused.value.response.status_code == 403


async def test_a_reconnecting_socket_takes_its_participant_back(standin, api, browsers):
    old, result = await joined(standin, api, browsers, "Alice")
    fresh = await open_browser(standin)
    browsers.append(fresh)
    unknown = await fresh.error("connect", {"sessionId": "nope", "reconnect": True})
    assert (unknown["code"], unknown["message"]) == (40007, "reconnection error")
    reconnect = {"sessionId": result["sessionId"], "reconnect": True}
    assert (await fresh.result("connect", reconnect))["sessionId"] == result["sessionId"]
    assert standin.browsers[result["id"]] is not None
    await asyncio.wait_for(old.socket.wait_closed(), 5)  # the old socket is closed for it
    assert await fresh.result("leaveRoom") == {}
    assert "r" not in standin.sessions


async def test_reset_closes_every_socket_and_forgets_everything(standin, api, browsers):
    browser, _ = await joined(standin, api, browsers, "Alice")
    idle = await open_browser(standin)
    browsers.append(idle)
    standin.refuse_browsers = True
    standin.reset()
    await asyncio.wait_for(browser.socket.wait_closed(), 5)
    await asyncio.wait_for(idle.socket.wait_closed(), 5)
    assert (standin.sessions, standin.browsers, standin.rpc_calls, standin.calls) == (
        {},
        {},
        [],
        [],
    )
    assert standin.refuse_browsers is False


async def test_wait_for_wakes_on_browser_calls(standin, api, browsers):
    connection = await issue(api, "r")
    browser = await open_browser(standin)
    browsers.append(browser)

    def joined_once() -> bool:
        return any(c.method == "joinRoom" and c.error is None for c in standin.rpc_calls)

    waiter = asyncio.create_task(standin.wait_for(joined_once))
    await asyncio.sleep(0)
    assert not waiter.done()
    await browser.result("joinRoom", join_params(connection["token"]))
    await asyncio.wait_for(waiter, 5)


async def test_joins_and_leaves_are_posted_as_webhooks_in_order_with_the_configured_headers(
    standin, api, browsers
):
    sink = Recorder()
    async with LiveServer(sink) as server:
        standin.webhook_url = server.http + "/webhooks/openvidu"
        standin.webhook_headers = {"Authorization": "Bearer s3cret-for-webhooks"}
        await issue(api, "r")  # pending: nobody joined with it, nothing to tell
        alice, first = await joined(standin, api, browsers, "Alice")
        await alice.close()
        await standin.wait_for(lambda: len(standin.webhooks) == 2)
    assert [(w.event, w.connection_id, w.status) for w in standin.webhooks] == [
        ("participantJoined", first["id"], 200),
        ("participantLeft", first["id"], 200),
    ]
    (joined_headers, joined_body), (_, left_body) = sink.requests
    assert joined_headers["authorization"] == "Bearer s3cret-for-webhooks"
    assert joined_headers["content-type"] == "application/json"
    event, left = json.loads(joined_body), json.loads(left_body)
    assert (event["sessionId"], event["connectionId"]) == ("r", first["id"])
    assert event["uniqueSessionId"].startswith("r_")
    assert event["serverData"] == SERVER_DATA
    assert (left["event"], left["reason"]) == ("participantLeft", "networkDisconnect")
    assert isinstance(left["duration"], int)
