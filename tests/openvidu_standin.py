"""A faithful OpenVidu 2.x stand-in: the REST API and the browser WebSocket, over real HTTP.

Served by a real uvicorn on loopback (`running_standin()`), so the client under
test goes through its whole network stack. Status codes and bodies follow the
server source, including its quirks: 409 and most 404s have EMPTY bodies, and
connection operations on a missing session answer 400, not 404.

Browsers (openvidu-browser 2.32.2) connect to `ws://…/openvidu?sessionId=…` and
speak JSON-RPC 2.0: `ping`, `joinRoom` (with a token the REST side issued and
nobody used yet), `leaveRoom` and `connect` (a reconnecting socket). Other
browsers of the session hear `participantJoined` / `participantLeft`; a browser
whose connection is deleted over REST hears `participantEvicted`; a socket that
closes without `leaveRoom` counts as a network disconnect (at once: the stand-in
has no ping watchdog). The session closes when its last active participant goes.
There is no media server: media methods (`publishVideo`, `onIceCandidate`, …)
are answered with error 301 saying so. The join answer carries a loopback STUN
server, so openvidu-browser never falls back to public STUN servers.

Webhooks (openvidu-server `HttpWebhookSender`), when `webhook_url` is set:
`participantJoined` when a connection becomes active, `participantLeft` (with its
`reason`) when an active one ends, POSTed as JSON with `webhook_headers` (what
`OPENVIDU_WEBHOOK_HEADERS` configures) one after the other, in order, on one
sender; each answer is recorded in `webhooks`. Any answer but 200 is only
recorded, as OpenVidu only logs it.

Test hooks are plain methods and attributes: `activate` (a participant joined
without a browser), `drop_session` (OpenVidu closed a session on its own),
`on_request` (change the world at an exact point), `fault` (every API call
answers a status, is `"slow"`, or is `"reset"` mid-response), `refuse_browsers`
(the WebSocket handshake fails: OpenVidu unreachable from browsers), `calls`,
`rpc_calls`, `browsers`, `wait_for` and `reset`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
import secrets
import socket
import string
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from typing import Any, Literal, TypeAlias

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from tests.live import LiveServer

API = "/openvidu/api"
ROLES = ("PUBLISHER", "SUBSCRIBER", "MODERATOR")
_CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]+")
_BAD_CUSTOM_ID = (
    "Some parameter is not valid. Parameter 'customSessionId' is wrong."
    " Must be an alphanumeric string [a-zA-Z0-9_-]"
)
Fault: TypeAlias = int | Literal["slow", "reset"] | None

SDK_VERSION = "2.32.2"  # what the join answer reports: the openvidu-browser we serve
PLATFORM = "Chrome 120.0 on Linux 64-bit"  # for participants activated without a browser
# openvidu-browser uses public STUN servers (freeice) when the join answer lists no
# ICE servers; a loopback one keeps every packet on this machine.
LOOPBACK_ICE_SERVERS = ({"url": "stun:127.0.0.1:3478"},)
# JSON-RPC error codes: OpenViduException.Code, kurento-jsonrpc, JSON-RPC 2.0.
USER_NOT_FOUND, EXISTING_USER_IN_ROOM, MEDIA_GENERIC, SESSION_NOT_FOUND = 102, 104, 301, 202
UNAUTHORIZED, RECONNECTION_ERROR = 401, 40007
INVALID_REQUEST, METHOD_NOT_FOUND = -32600, -32601
# Methods that need a media server; the stand-in has none.
MEDIA_METHODS = frozenset(
    {
        "publishVideo", "unpublishVideo", "prepareReceiveVideoFrom", "receiveVideoFrom",
        "unsubscribeFromVideo", "onIceCandidate", "reconnectStream", "streamPropertyChanged",
        "videoData", "applyFilter", "execFilterMethod", "removeFilter",
        "addFilterEventListener", "removeFilterEventListener",
    }
)  # fmt: skip


def _id(prefix: str, length: int) -> str:
    """OpenVidu's identifiers: prefix + 1 uppercase letter + `length` alphanumerics."""
    alnum = string.ascii_letters + string.digits
    first = secrets.choice(string.ascii_uppercase)
    return prefix + first + "".join(secrets.choice(alnum) for _ in range(length))


def _now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class Call:
    method: str
    path: str
    json: Any  # the parsed request body, None when absent or not JSON
    status: int | None  # None: the client went away before an answer


@dataclass(frozen=True, slots=True)
class WebhookSent:
    """One webhook the stand-in posted, and OpenVidu's record of its answer."""

    event: str
    connection_id: str
    status: int | None  # None: no answer (refused, timed out)


@dataclass(frozen=True, slots=True)
class RpcCall:
    """A JSON-RPC request a browser sent, as the stand-in answered it."""

    method: str
    params: dict[str, Any]
    connection_id: str | None  # the participant on that socket (after a join: the joined one)
    error: int | None  # the error code answered; None for a result


@dataclass(slots=True)
class Connection:
    id: str
    session_id: str
    role: str
    server_data: str
    record: bool
    token: str
    created_at: int = field(default_factory=_now_ms)
    active_at: int | None = None
    client_data: str = ""  # the `metadata` a browser joined with
    platform: str = PLATFORM

    def full_metadata(self) -> str:
        """`Participant.getFullMetadata`: client and server data joined by `%/%`."""
        if self.client_data and self.server_data:
            return f"{self.client_data}%/%{self.server_data}"
        return self.client_data + self.server_data

    def to_json(self) -> dict[str, Any]:
        """`Token.toJsonAsParticipant` when pending, `Participant.toJson` when active."""
        active = self.active_at is not None
        # OpenVidu's keys, in its order, read better as a packed table.
        # fmt: off
        return {
            "id": self.id, "object": "connection", "status": "active" if active else "pending",
            "connectionId": self.id, "sessionId": self.session_id, "createdAt": self.created_at,
            "type": "WEBRTC", "record": self.record, "role": self.role, "kurentoOptions": None,
            "customIceServers": [], "rtspUri": None, "adaptativeBitrate": None,
            "onlyPlayWithSubscribers": None, "networkCache": None,
            "serverData": self.server_data, "token": self.token, "activeAt": self.active_at,
            "location": "unknown" if active else None, "ip": "127.0.0.1" if active else None,
            "platform": self.platform if active else None,
            "clientData": self.client_data if active else None,
            "publishers": [] if active else None, "subscribers": [] if active else None,
        }
        # fmt: on


@dataclass(slots=True)
class Session:
    id: str
    custom_session_id: str
    created_at: int = field(default_factory=_now_ms)
    connections: dict[str, Connection] = field(default_factory=dict)

    def to_json(self, *, pending: bool) -> dict[str, Any]:
        """`Session.toJson`; `pending` also lists connections nobody joined with yet."""
        shown = [
            c.to_json() for c in self.connections.values() if pending or c.active_at is not None
        ]
        # OpenVidu's keys, in its order, read better as a packed table.
        # fmt: off
        return {
            "id": self.id, "object": "session", "sessionId": self.id,
            "createdAt": self.created_at, "recording": False, "broadcasting": False,
            "mediaMode": "ROUTED", "recordingMode": "MANUAL",
            "defaultRecordingProperties": {
                "name": "", "hasAudio": True, "hasVideo": True, "outputMode": "COMPOSED",
                "recordingLayout": "BEST_FIT", "resolution": "1280x720", "frameRate": 25,
                "shmSize": 536870912,
            },
            "customSessionId": self.custom_session_id,
            "forcedVideoCodec": "MEDIA_SERVER_PREFERRED", "allowTranscoding": False,
            "connections": {"numberOfElements": len(shown), "content": shown},
        }
        # fmt: on


class BrowserSocket:
    """One openvidu-browser WebSocket.

    Frames leave in order through `outbox`, so the stand-in can tell any browser
    something without awaiting its socket.
    """

    def __init__(self) -> None:
        self.rpc_session = secrets.token_hex(16)  # the JSON-RPC session, for `connect`
        self.session_id: str | None = None
        self.connection_id: str | None = None  # set by joinRoom
        self.outbox: asyncio.Queue[str | None] = asyncio.Queue()  # None: close the socket

    def send(self, message: dict[str, Any]) -> None:
        self.outbox.put_nowait(json.dumps({"jsonrpc": "2.0", **message}))

    def notify(self, method: str, params: dict[str, Any]) -> None:
        self.send({"method": method, "params": params})

    def close(self) -> None:
        self.outbox.put_nowait(None)


class RpcError(Exception):
    """Answered as a JSON-RPC error: OpenVidu's code and message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class _Reset(Exception):
    """Raised after the response started: uvicorn then drops the connection mid-body."""


class _QuietReset(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], _Reset))


async def _reset_midway(send: Send) -> None:
    """Promise 100 bytes of JSON, send 12, then make uvicorn drop the connection."""
    headers = [(b"content-type", b"application/json"), (b"content-length", b"100")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b'{"id": "con_', "more_body": True})
    raise _Reset


def _empty(status: int) -> Response:
    return Response(status_code=status)


def _error(status: int, message: str, path: str) -> JSONResponse:
    """`SessionRestController.generateErrorResponse`."""
    error = HTTPStatus(status).phrase
    body = {"timestamp": _now_ms(), "status": status, "error": error, "message": message}
    return JSONResponse({**body, "path": path}, status_code=status)


async def _read_body(receive: Receive) -> bytes:
    body, more = b"", True
    while more:
        message = await receive()
        body, more = body + message.get("body", b""), message.get("more_body", False)
    return body


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    return json.loads(raw) if raw.strip() else {}


class OpenViduStandin:
    """The stand-in server as an ASGI app; `url` is set once it is served."""

    def __init__(self, secret: str = "MY_SECRET") -> None:
        credentials = base64.b64encode(f"OPENVIDUAPP:{secret}".encode()).decode()
        self._authorization = f"Basic {credentials}"
        self.url = ""
        self.sessions: dict[str, Session] = {}
        self.calls: list[Call] = []
        self.fault: Fault = None
        self.delay = 1.0
        self.on_request: Callable[[str, str], None] | None = None
        self.rpc_calls: list[RpcCall] = []
        self.browsers: dict[
            str, BrowserSocket
        ] = {}  # connection id -> the browser that joined with it
        self.refuse_browsers = False
        self.webhook_url: str | None = None
        self.webhook_headers: dict[str, str] = {}
        self.webhooks: list[WebhookSent] = []
        self._outgoing: asyncio.Queue[tuple[str, dict[str, str], dict[str, Any]]] | None = None
        self._webhook_sender: asyncio.Task[None] | None = None
        self.ice_servers = [dict(server) for server in LOOPBACK_ICE_SERVERS]
        self._sockets: set[BrowserSocket] = set()
        self._changed = asyncio.Condition()
        self._app = Starlette(routes=self._routes())

    def _routes(self) -> list[BaseRoute]:
        s = f"{API}/sessions"
        return [
            Route(s, self.create_session, methods=["POST"]),
            Route(s, self.list_sessions, methods=["GET"]),
            Route(s + "/{sid}", self.get_session, methods=["GET"]),
            Route(s + "/{sid}", self.delete_session, methods=["DELETE"]),
            Route(s + "/{sid}/connection", self.create_connection, methods=["POST"]),
            Route(s + "/{sid}/connection/{cid}", self.get_connection, methods=["GET"]),
            Route(s + "/{sid}/connection/{cid}", self.delete_connection, methods=["DELETE"]),
            WebSocketRoute("/openvidu", self.browser_socket),
        ]

    # -- test hooks ---------------------------------------------------------------

    def activate(self, session_id: str, connection_id: str) -> None:
        """A browser joined with this connection's token."""
        connection = self.sessions[session_id].connections[connection_id]
        connection.active_at = _now_ms()
        self._webhook("participantJoined", connection)

    def drop_session(self, session_id: str) -> None:
        """OpenVidu closed the session on its own (e.g. its last participant left)."""
        if not self._close_session(session_id, "sessionClosedByServer"):
            raise KeyError(session_id)

    def leave(self, session_id: str, connection_id: str) -> None:
        """A connection ends; the session closes when its last active participant leaves.

        A browser that joined with it is evicted (`participantEvicted`), the
        other browsers of the session hear `participantLeft`.
        """
        if connection_id not in self.sessions[session_id].connections:
            raise KeyError(connection_id)
        self._end(session_id, connection_id, "forceDisconnectByServer", evict=True)

    def reset(self) -> None:
        """A fresh stand-in: no sessions, logs or faults; every browser socket is closed."""
        for browser in self._sockets:
            browser.close()
        self.browsers.clear()
        self.sessions.clear()
        self.calls.clear()
        self.rpc_calls.clear()
        self.fault = None
        self.on_request = None
        self.refuse_browsers = False
        self.webhook_url = None
        self.webhook_headers = {}
        self.webhooks.clear()
        self._stop_webhooks()

    def _stop_webhooks(self) -> None:
        """Drop webhooks not sent yet and end their sender."""
        if self._webhook_sender is not None:
            self._webhook_sender.cancel()
        self._outgoing = self._webhook_sender = None

    # A `timeout` argument (rather than asyncio.timeout at each call site) keeps tests short.
    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until `predicate()` holds; it is re-checked after every recorded call."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)

    # -- ASGI: auth, faults and the call log wrap the Starlette routes ------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(API):
            await self._app(scope, receive, send)
            return
        body = await _read_body(receive)  # first, so the call log can show it
        unread = [{"type": "http.request", "body": body, "more_body": False}]

        async def replay() -> Message:
            return unread.pop() if unread else await receive()

        call = Call(scope["method"], scope["path"], _parse(body), None)
        recorded = False

        async def recording_send(message: Message) -> None:
            nonlocal call, recorded
            if message["type"] == "http.response.start":
                call = replace(call, status=message["status"])
            elif not message.get("more_body"):
                # Record before the last byte goes out: once a client has its answer,
                # `calls` already shows the request, so tests can assert right away.
                recorded = True
                await self._record(call)
            await send(message)

        try:
            await self._answer(scope, replay, recording_send, hangup=receive)
        finally:
            if not recorded:  # the client hung up, or the response was cut off
                await self._record(call)

    async def _answer(self, scope: Scope, receive: Receive, send: Send, *, hangup: Receive) -> None:
        if self.on_request is not None:
            self.on_request(scope["method"], scope["path"])
        if isinstance(self.fault, int):
            injected = _error(self.fault, "Fault injected by the test", scope["path"])
            await injected(scope, receive, send)
            return
        if self.fault == "slow" and not await self._slept_while_connected(hangup):
            return
        if self.fault == "reset":
            await _reset_midway(send)
        authorization = dict(scope["headers"]).get(b"authorization", b"").decode()
        if authorization != self._authorization:  # Spring Security's answer, body unverified
            challenge = {"WWW-Authenticate": 'Basic realm="OpenVidu"'}
            await Response(status_code=401, headers=challenge)(scope, receive, send)
            return
        await self._app(scope, receive, send)

    async def _slept_while_connected(self, hangup: Receive) -> bool:
        """Sleep `delay` seconds; False when the client hangs up first (nothing is done).

        `hangup` is the raw ASGI receive: the body is already read, so its next
        message can only be `http.disconnect`.
        """
        disconnect = asyncio.ensure_future(hangup())
        try:
            done, _ = await asyncio.wait([disconnect], timeout=self.delay)
        finally:
            disconnect.cancel()
        return not done

    async def _record(self, call: Call) -> None:
        self.calls.append(call)
        async with self._changed:
            self._changed.notify_all()

    # -- REST handlers (openvidu-server SessionRestController) -----------------------

    async def create_session(self, request: Request) -> Response:
        path = request.url.path
        try:
            params = await _json_body(request)
        except ValueError:
            return _error(400, "Request body is not valid JSON", path)
        custom = params.get("customSessionId", "") if isinstance(params, dict) else None
        if not isinstance(custom, str):
            return _error(400, "Type error in some parameter: customSessionId", path)
        if custom and not _CUSTOM_ID.fullmatch(custom):
            return _error(400, _BAD_CUSTOM_ID, path)
        if custom in self.sessions:
            return _empty(409)
        session = Session(id=custom or _id("ses_", 9), custom_session_id=custom)
        self.sessions[session.id] = session
        return JSONResponse(session.to_json(pending=False))

    async def list_sessions(self, request: Request) -> Response:
        pending = request.query_params.get("pendingConnections") == "true"
        content = [s.to_json(pending=pending) for s in self.sessions.values()]
        return JSONResponse({"numberOfElements": len(content), "content": content})

    async def get_session(self, request: Request) -> Response:
        session = self.sessions.get(request.path_params["sid"])
        if session is None:
            return _empty(404)
        pending = request.query_params.get("pendingConnections") == "true"
        return JSONResponse(session.to_json(pending=pending))

    async def delete_session(self, request: Request) -> Response:
        closed = self._close_session(request.path_params["sid"], "sessionClosedByServer")
        return _empty(204 if closed else 404)

    async def create_connection(self, request: Request) -> Response:
        path = request.url.path
        session = self.sessions.get(request.path_params["sid"])
        if session is None:
            return _empty(404)
        try:
            params = await _json_body(request)
        except ValueError:
            return _error(400, "Request body is not valid JSON", path)
        if not isinstance(params, dict):
            return _error(400, "Type error in some parameter", path)
        kind, role = params.get("type", "WEBRTC"), params.get("role", "PUBLISHER")
        data, record = params.get("data", ""), params.get("record", True)
        if not all(isinstance(v, str) for v in (kind, role, data)) or not isinstance(record, bool):
            return _error(400, "Type error in some parameter", path)
        if kind != "WEBRTC":  # IPCAM needs a media server; the stand-in only does WebRTC
            return _error(400, f"Parameter 'type' {kind} is not supported by the stand-in", path)
        if role not in ROLES:
            return _error(400, f"Parameter 'role' {role} is not defined", path)
        ws_url = self.url.replace("http", "ws", 1)
        token = f"{ws_url}?sessionId={session.id}&token={_id('tok_', 15)}"
        connection = Connection(_id("con_", 9), session.id, role, data, record, token)
        session.connections[connection.id] = connection
        return JSONResponse(connection.to_json())

    async def get_connection(self, request: Request) -> Response:
        session = self.sessions.get(request.path_params["sid"])
        if session is None:
            return _empty(400)
        connection = session.connections.get(request.path_params["cid"])
        return _empty(404) if connection is None else JSONResponse(connection.to_json())

    async def delete_connection(self, request: Request) -> Response:
        sid, cid = request.path_params["sid"], request.path_params["cid"]
        session = self.sessions.get(sid)
        if session is None:
            return _empty(400)
        if cid not in session.connections:
            return _empty(404)
        self.leave(sid, cid)
        return _empty(204)

    # -- the browser side: openvidu-browser's JSON-RPC WebSocket (RpcHandler) ---------

    async def browser_socket(self, websocket: WebSocket) -> None:
        if self.refuse_browsers:
            await websocket.close()  # before accepting: the handshake fails with 403
            return
        await websocket.accept()
        browser = BrowserSocket()
        self._sockets.add(browser)
        writer = asyncio.create_task(_write(websocket, browser))
        try:
            while (message := await websocket.receive())["type"] != "websocket.disconnect":
                await self._rpc(browser, message.get("text"))
        finally:
            self._sockets.discard(browser)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            if (seat := self._seat(browser)) is not None:
                self._end(*seat, "networkDisconnect")

    async def _rpc(self, browser: BrowserSocket, text: str | None) -> None:
        try:
            request = json.loads(text) if text is not None else None
        except ValueError:
            request = None
        if not (isinstance(request, dict) and isinstance(request.get("method"), str)):
            error = {"code": INVALID_REQUEST, "message": "Invalid JSON-RPC 2.0 request"}
            browser.send({"id": None, "error": error})
            return
        method, params = request["method"], request.get("params")
        params = params if isinstance(params, dict) else {}
        try:
            answer: dict[str, Any] = {"result": self._rpc_result(browser, method, params)}
        except RpcError as error:
            answer = {"error": {"code": error.code, "message": error.message}}
        if request.get("id") is not None:
            browser.send({"id": request["id"], **answer})
        code = answer["error"]["code"] if "error" in answer else None
        await self._record_rpc(RpcCall(method, params, browser.connection_id, code))

    def _rpc_result(
        self, browser: BrowserSocket, method: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        if method == "ping":
            return {"value": "pong", "sessionId": browser.rpc_session}
        if method == "joinRoom":
            return self._join_room(browser, params)
        if method == "connect":
            return self._reconnect(browser, params)
        seat = self._seat(browser)
        if seat is None:
            raise RpcError(USER_NOT_FOUND, f"No participant has joined on this socket ({method})")
        if method == "leaveRoom":
            self._end(*seat, "disconnect")
            return {}
        if (
            method == "publishVideo"
            and self.sessions[seat[0]].connections[seat[1]].role == "SUBSCRIBER"
        ):
            raise RpcError(UNAUTHORIZED, "A SUBSCRIBER is not allowed to publish")
        if method in MEDIA_METHODS:
            raise RpcError(MEDIA_GENERIC, f"The OpenVidu stand-in has no media server: {method}")
        raise RpcError(METHOD_NOT_FOUND, f"The OpenVidu stand-in does not implement {method}")

    def _join_room(self, browser: BrowserSocket, params: dict[str, Any]) -> dict[str, Any]:
        if browser.connection_id is not None:
            raise RpcError(EXISTING_USER_IN_ROOM, "This socket has already joined a session")
        session_id, token = params.get("session"), params.get("token")
        session = self.sessions.get(session_id) if isinstance(session_id, str) else None
        if session is None:
            raise RpcError(SESSION_NOT_FOUND, f"Session {session_id} cannot be found")
        # Tokens are single use: once a browser joined with one, it is gone.
        connection = next((c for c in session.connections.values() if c.token == token), None)
        if connection is None or connection.active_at is not None:
            raise RpcError(UNAUTHORIZED, f"Token {token} is not valid")
        metadata, platform = params.get("metadata", ""), params.get("platform")
        connection.active_at = _now_ms()
        connection.client_data = metadata if isinstance(metadata, str) else json.dumps(metadata)
        connection.platform = platform if isinstance(platform, str) else PLATFORM
        joined = _participant(connection)
        self._webhook("participantJoined", connection)
        for other in self._browsers_in(session.id):
            other.notify("participantJoined", joined)
        browser.session_id, browser.connection_id = session.id, connection.id
        self.browsers[connection.id] = browser
        others = [
            _participant(c)
            for c in session.connections.values()
            if c.active_at is not None and c is not connection
        ]
        # The fields openvidu-browser's Session.processJoinRoomResponse reads.
        # fmt: off
        return {
            **joined, "finalUserId": connection.id, "value": others, "session": session.id,
            "sessionId": browser.rpc_session, "role": connection.role, "record": connection.record,
            "coturnIp": "127.0.0.1", "coturnPort": 3478, "turnUsername": connection.id,
            "turnCredential": secrets.token_hex(8), "version": SDK_VERSION,
            "mediaServer": "kurento", "videoSimulcast": False, "life": -1,
            "customIceServers": [dict(server) for server in self.ice_servers],
        }
        # fmt: on

    def _reconnect(self, browser: BrowserSocket, params: dict[str, Any]) -> dict[str, Any]:
        """`connect` from a socket that came back: it takes over its participant, if any."""
        old = next(
            (b for b in self.browsers.values() if b.rpc_session == params.get("sessionId")), None
        )
        if old is None or old.connection_id is None:
            raise RpcError(RECONNECTION_ERROR, "reconnection error")
        browser.rpc_session, browser.session_id = old.rpc_session, old.session_id
        browser.connection_id, old.connection_id = old.connection_id, None
        self.browsers[browser.connection_id] = browser
        old.close()
        return {"sessionId": browser.rpc_session}

    def _seat(self, browser: BrowserSocket) -> tuple[str, str] | None:
        """(session id, connection id) of the participant this socket holds, if any."""
        session_id, connection_id = browser.session_id, browser.connection_id
        if session_id is None or connection_id is None:
            return None
        return (session_id, connection_id) if self.browsers.get(connection_id) is browser else None

    def _browsers_in(self, session_id: str) -> list[BrowserSocket]:
        return [b for b in self.browsers.values() if b.session_id == session_id]

    def _end(
        self, session_id: str, connection_id: str, reason: str, *, evict: bool = False
    ) -> None:
        """A connection ends; the session closes when its last active participant went.

        Only active participants are announced: the others never heard of a pending one.
        """
        browser = self.browsers.pop(connection_id, None)
        session = self.sessions.get(session_id)
        gone = session.connections.pop(connection_id, None) if session else None
        if session is None or gone is None or gone.active_at is None:
            return
        self._webhook("participantLeft", gone, reason=reason)
        if evict and browser is not None:
            browser.notify("participantEvicted", {"connectionId": connection_id, "reason": reason})
        for other in self._browsers_in(session_id):
            other.notify("participantLeft", {"connectionId": connection_id, "reason": reason})
        if not any(c.active_at is not None for c in session.connections.values()):
            del self.sessions[session_id]

    def _close_session(self, session_id: str, reason: str) -> bool:
        """Close a session, evicting its participants one by one; False if there is none."""
        session = self.sessions.get(session_id)
        if session is None:
            return False
        for connection_id in list(session.connections):
            self._end(session_id, connection_id, reason, evict=True)
        self.sessions.pop(session_id, None)
        return True

    # -- webhooks (HttpWebhookSender: one sender, in order) ---------------------------

    def _webhook(self, event: str, connection: Connection, *, reason: str = "") -> None:
        if self.webhook_url is None:
            return
        session = self.sessions.get(connection.session_id)
        created = session.created_at if session else connection.created_at
        body: dict[str, Any] = {
            "event": event,
            "sessionId": connection.session_id,
            "uniqueSessionId": f"{connection.session_id}_{created}",
            "timestamp": _now_ms(),
            "participantId": connection.id,
            "connectionId": connection.id,
            "location": "unknown",
            "ip": "127.0.0.1",
            "platform": connection.platform,
            "clientData": connection.client_data,
            "serverData": connection.server_data,
        }
        if reason:
            start = connection.active_at or connection.created_at
            body |= {"startTime": start, "duration": (_now_ms() - start) // 1000, "reason": reason}
        if self._outgoing is None:
            self._outgoing = asyncio.Queue()
            self._webhook_sender = asyncio.create_task(self._send_webhooks(self._outgoing))
        self._outgoing.put_nowait((self.webhook_url, dict(self.webhook_headers), body))

    async def _send_webhooks(
        self, outgoing: asyncio.Queue[tuple[str, dict[str, str], dict[str, Any]]]
    ) -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            while True:
                url, headers, body = await outgoing.get()
                try:
                    status: int | None = (
                        await http.post(url, json=body, headers=headers)
                    ).status_code
                except httpx.HTTPError:
                    status = None
                self.webhooks.append(WebhookSent(body["event"], body["connectionId"], status))
                async with self._changed:
                    self._changed.notify_all()

    async def _record_rpc(self, call: RpcCall) -> None:
        self.rpc_calls.append(call)
        async with self._changed:
            self._changed.notify_all()


def _participant(connection: Connection) -> dict[str, Any]:
    """A participant as `participantJoined` and the join answer's `value` show it."""
    assert connection.active_at is not None
    return {
        "id": connection.id,
        "createdAt": connection.active_at,
        "metadata": connection.full_metadata(),
    }


async def _write(websocket: WebSocket, browser: BrowserSocket) -> None:
    """Send `browser.outbox` in order; close the socket at its end."""
    try:
        while (frame := await browser.outbox.get()) is not None:
            await websocket.send_text(frame)
        await websocket.close()
    except (WebSocketDisconnect, RuntimeError, OSError):
        pass  # the browser went away first


def _parse(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None


def closed_port_url() -> str:
    """An http URL where nothing listens: OpenVidu is down."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@asynccontextmanager
async def running_standin(secret: str = "MY_SECRET") -> AsyncIterator[OpenViduStandin]:
    """Serve a fresh stand-in on a free loopback port; `.url` is its base URL."""
    standin = OpenViduStandin(secret)
    quiet = _QuietReset()
    uvicorn_errors = logging.getLogger("uvicorn.error")
    uvicorn_errors.addFilter(quiet)
    try:
        async with LiveServer(standin) as server:
            standin.url = server.http
            yield standin
    finally:
        sender = standin._webhook_sender
        standin._stop_webhooks()
        if sender is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await sender
        uvicorn_errors.removeFilter(quiet)
