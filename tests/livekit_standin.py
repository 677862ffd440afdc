"""A faithful LiveKit RoomService stand-in: Twirp over real HTTP, as the official client calls it.

`livekit.api` (twirp_client.py) POSTs `/twirp/livekit.RoomService/<Method>` with
`Content-Type: application/protobuf`, the request message serialized, and
`Authorization: Bearer <JWT>` signed with the API secret, minted per call with
the grant that call needs. It reads a 200's body as the response message and
any other status's body as a Twirp error, JSON `{"code", "msg", "meta"}`. The
stand-in answers the same way (and JSON bodies too, which curl users send).

The grant each method needs follows livekit-server `pkg/service/auth.go`:
CreateRoom and DeleteRoom `roomCreate`, ListRooms `roomList`, the participant
methods `roomAdmin` and `room` equal to the request's room. A missing, invalid
or insufficient token is Twirp `unauthenticated` (HTTP 401); unknown rooms and
participants are `not_found` (404). Tokens are checked with the official
`TokenVerifier`, so the stand-in accepts exactly what a LiveKit server given the
same key and secret would.

Browsers reach it too, as far as a stand-in honestly can. livekit-client's
`Room.connect(url, token)` opens its signalling WebSocket at `url` + `/rtc/v1`
(`/rtc` for older servers) with the token as the `access_token` query parameter,
and when the upgrade fails asks `/rtc/v1/validate` (or `/rtc/validate`) over
HTTP why. The stand-in records every upgrade (`upgrades`: path, token and the
token's claims as the official `TokenVerifier` reads them), refuses one whose
token does not verify or grants no room join (as livekit-server does, HTTP 401
on validate), and closes every accepted socket at once: LiveKit's signalling is
protobuf, and there is no media server to fake it for, so the page sees its
connection fail.

Rooms and participants live in memory; `join` puts a participant in a room as a
browser would (LiveKit creates the room at its first join). Test hooks: `join`,
`calls` (each request with the grant its token carried), `upgrades`, `fault`
(every call answers a status, is `"slow"`, or is `"reset"` mid-answer), `delay`,
`on_answer` (awaited with the method's name once its answer is made and before it
is sent: the world changes after the server answered), `wait_for`, `reset`.

Webhooks (livekit-server `webhook/url_notifier.go`), to every URL in
`webhook_urls`: POST, `Content-Type: application/webhook+json`, the body the
protojson of a `WebhookEvent` (lowerCamelCase keys, defaults left out, int64 as
strings), `Authorization: <JWT>` with no "Bearer", signed with the API secret,
issued by the key, valid 5 minutes, its `sha256` claim the base64 (standard) of
the body's SHA-256. `connect` and `disconnect` are a browser joining and leaving
(or losing its connection: `participant_connection_aborted`) with their webhooks;
a second `connect` of one identity replaces the first, whose `participant_left`
(DUPLICATE_IDENTITY) comes after the new one's `participant_joined`, as it may on
the real server. RemoveParticipant sends `participant_left` (PARTICIPANT_REMOVED)
too. `signed_webhook` builds a request as the server would (tests alter it),
and `deliveries` records what each webhook was answered.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeAlias
from urllib.parse import parse_qs

import httpx
import jwt
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from livekit.api import AccessToken, TokenVerifier, VideoGrants
from livekit.api.access_token import Claims
from livekit.protocol.models import DisconnectReason, ParticipantInfo, Room
from livekit.protocol.room import (
    CreateRoomRequest,
    DeleteRoomRequest,
    DeleteRoomResponse,
    ListParticipantsRequest,
    ListParticipantsResponse,
    ListRoomsRequest,
    ListRoomsResponse,
    RemoveParticipantResponse,
    RoomParticipantIdentity,
)
from livekit.protocol.webhook import WebhookEvent
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.types import Message as AsgiMessage
from starlette.types import Receive, Scope, Send

from tests.live import LiveServer

PREFIX = "/twirp/livekit.RoomService/"
# livekit-client's signalling paths (src/api/utils.ts: v1 first, v0 after a 404 on validate).
RTC_PATHS = ("/rtc/v1", "/rtc")
VALIDATE_PATHS = tuple(path + "/validate" for path in RTC_PATHS)
PROTOBUF, JSON = "application/protobuf", "application/json"
Fault: TypeAlias = int | Literal["slow", "reset"] | None
# The Twirp spec's HTTP status for each error code the stand-in uses.
STATUS = {
    "bad_route": 404,
    "malformed": 400,
    "invalid_argument": 400,
    "unauthenticated": 401,
    "permission_denied": 403,
    "not_found": 404,
    "internal": 500,
    "unavailable": 503,
}
# And back, for an injected fault: the code a LiveKit server would send with that status.
CODE_FOR_STATUS = {401: "unauthenticated", 403: "permission_denied", 503: "unavailable"}
WEBHOOK_TYPE = "application/webhook+json"
WEBHOOK_TTL = datetime.timedelta(minutes=5)  # livekit-server's webhook token lifetime


@dataclass(frozen=True, slots=True)
class Delivery:
    """One webhook sent to one URL, and the status it was answered (None: no answer)."""

    url: str
    event: str
    identity: str
    sid: str
    status: int | None


@dataclass(frozen=True, slots=True)
class Call:
    method: str  # the Twirp method, e.g. "RemoveParticipant"
    request: dict[str, Any]  # the request message, snake_case keys, defaults left out
    grants: VideoGrants | None  # the bearer token's video grant; None without a valid token
    status: int | None = None  # None: the client went away before an answer
    code: str | None = None  # the Twirp error code answered; None for a 200


@dataclass(frozen=True, slots=True)
class Upgrade:
    """A WebSocket upgrade a browser asked for (or a validate request, `validate` True)."""

    path: str
    token: str  # the `access_token` query parameter, exactly as sent
    claims: Claims | None  # as the official TokenVerifier reads the token; None if it fails
    accepted: bool  # False: refused (bad token, no room join grant, or not a signalling path)
    validate: bool = False


@dataclass(slots=True)
class Participant:
    identity: str
    name: str = ""
    metadata: str = ""
    sid: str = field(default_factory=lambda: "PA_" + secrets.token_hex(6))
    joined_at: int = field(default_factory=lambda: int(time.time()))

    def info(self, reason: DisconnectReason | None = None) -> ParticipantInfo:
        """As RoomService lists it; with a disconnect `reason`, as a left one is reported."""
        return ParticipantInfo(
            sid=self.sid,
            identity=self.identity,
            name=self.name,
            metadata=self.metadata,
            state=ParticipantInfo.ACTIVE if reason is None else ParticipantInfo.DISCONNECTED,
            joined_at=self.joined_at,
            disconnect_reason=reason or DisconnectReason.UNKNOWN_REASON,
        )


@dataclass(slots=True)
class StandinRoom:
    name: str
    sid: str = field(default_factory=lambda: "RM_" + secrets.token_hex(6))
    creation_time: int = field(default_factory=lambda: int(time.time()))
    participants: dict[str, Participant] = field(default_factory=dict)

    def info(self) -> Room:
        return Room(
            sid=self.sid,
            name=self.name,
            creation_time=self.creation_time,
            num_participants=len(self.participants),
            empty_timeout=300,  # livekit-server's defaults
            departure_timeout=20,
        )


class TwirpError(Exception):
    """Answered as a Twirp error: its code, message and (by default the code's) HTTP status."""

    def __init__(self, code: str, msg: str, status: int | None = None) -> None:
        super().__init__(msg)
        self.code, self.msg = code, msg
        self.status = status or STATUS.get(code, 500)


class _Reset(Exception):
    """Raised after the answer started: uvicorn then drops the connection mid-body."""


class _QuietReset(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], _Reset))


def _twirp_error(error: TwirpError) -> Response:
    return JSONResponse({"code": error.code, "msg": error.msg}, status_code=error.status)


class LiveKitStandin:
    """The stand-in as an ASGI app; `url` (http) and `ws_url` are set once it is served."""

    def __init__(self, api_key: str = "devkey", api_secret: str = "secret") -> None:
        self.api_key, self.api_secret = api_key, api_secret
        self._verifier = TokenVerifier(api_key, api_secret)
        self.url = ""
        self.ws_url = ""
        self.rooms: dict[str, StandinRoom] = {}
        self.calls: list[Call] = []
        self.upgrades: list[Upgrade] = []
        self.fault: Fault = None
        self.delay = 1.0
        self.on_answer: Callable[[str], Awaitable[None]] | None = None
        self.webhook_urls: list[str] = []
        self.deliveries: list[Delivery] = []
        self._sending: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Condition()
        # Method -> (request type, the grant check, the handler).
        self._methods: dict[
            str,
            tuple[
                type[Message],
                Callable[[VideoGrants, Any], bool],
                Callable[[Any], Message],
            ],
        ] = {
            "CreateRoom": (CreateRoomRequest, _create, self._create_room),
            "ListRooms": (ListRoomsRequest, _list, self._list_rooms),
            "DeleteRoom": (DeleteRoomRequest, _create, self._delete_room),
            "ListParticipants": (ListParticipantsRequest, _admin, self._list_participants),
            "GetParticipant": (RoomParticipantIdentity, _admin, self._get_participant),
            "RemoveParticipant": (RoomParticipantIdentity, _admin, self._remove_participant),
        }

    # -- test hooks ---------------------------------------------------------------

    def join(self, room: str, identity: str, *, name: str = "", metadata: str = "") -> Participant:
        """A browser joined `room` as `identity` (LiveKit creates the room at its first join)."""
        joined = self.rooms.setdefault(room, StandinRoom(room))
        participant = joined.participants[identity] = Participant(identity, name, metadata)
        return participant

    async def connect(self, room: str, identity: str, *, name: str = "") -> Participant:
        """A browser joined the call: `participant_joined`, and for an identity already
        there, `participant_left` of its older connection after it (DUPLICATE_IDENTITY)."""
        older = self.rooms.get(room, StandinRoom(room)).participants.get(identity)
        joined = self.join(room, identity, name=name)
        await self.send_webhook("participant_joined", room, joined.info())
        if older is not None:
            info = older.info(DisconnectReason.DUPLICATE_IDENTITY)
            await self.send_webhook("participant_left", room, info)
        return joined

    async def disconnect(
        self,
        room: str,
        identity: str,
        *,
        aborted: bool = False,
        reason: DisconnectReason = DisconnectReason.CLIENT_INITIATED,
    ) -> None:
        """A browser left the call, or (`aborted`) its connection never got going."""
        gone = self.rooms[room].participants.pop(identity)
        event = "participant_connection_aborted" if aborted else "participant_left"
        await self.send_webhook(event, room, gone.info(reason))

    def signed_webhook(
        self,
        event: str,
        room: str,
        participant: ParticipantInfo,
        *,
        secret: str | None = None,
        ttl: datetime.timedelta = WEBHOOK_TTL,
    ) -> tuple[bytes, dict[str, str]]:
        """The body and headers of a webhook, as livekit-server sends it."""
        message = WebhookEvent(
            event=event,
            room=self.rooms[room].info() if room in self.rooms else Room(name=room),
            participant=participant,
            id="EV_" + uuid.uuid4().hex[:12],
            created_at=int(time.time()),
        )
        body = json_format.MessageToJson(message, indent=None).encode()
        return body, self.webhook_headers(body, secret=secret, ttl=ttl)

    def webhook_headers(
        self, body: bytes, *, secret: str | None = None, ttl: datetime.timedelta = WEBHOOK_TTL
    ) -> dict[str, str]:
        """The headers signing `body`: a JWT whose `sha256` claim is the body's digest."""
        token = AccessToken(self.api_key, secret or self.api_secret).with_ttl(ttl)
        token.claims.sha256 = base64.b64encode(hashlib.sha256(body).digest()).decode()
        return {"Authorization": token.to_jwt(), "Content-Type": WEBHOOK_TYPE}

    async def send_webhook(self, event: str, room: str, participant: ParticipantInfo) -> None:
        """Send `event` to every webhook URL, one after the other, as the server's queue does."""
        body, headers = self.signed_webhook(event, room, participant)
        async with httpx.AsyncClient(timeout=5) as http:
            for url in self.webhook_urls:
                try:
                    status: int | None = (
                        await http.post(url, content=body, headers=headers)
                    ).status_code
                except httpx.HTTPError:
                    status = None
                delivery = Delivery(url, event, participant.identity, participant.sid, status)
                self.deliveries.append(delivery)
                async with self._changed:
                    self._changed.notify_all()

    def reset(self) -> None:
        self.rooms.clear()
        self.calls.clear()
        self.upgrades.clear()
        self.deliveries.clear()
        self.webhook_urls.clear()
        self.on_answer = None
        self.fault = None
        self.delay = 1.0

    # A `timeout` argument (rather than asyncio.timeout at each call site) keeps tests short.
    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until `predicate()` holds; it is re-checked after every recorded call."""
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(predicate)

    # -- ASGI: faults and the call log around the Twirp handler ---------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] == "websocket":
            await self._signalling(scope, receive, send)
            return
        if scope["path"] in VALIDATE_PATHS:
            await self._validate(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        call = Call(scope["path"].removeprefix(PREFIX), {}, self._grants(headers))
        recorded = False

        async def recording_send(message: AsgiMessage) -> None:
            nonlocal call, recorded
            if message["type"] == "http.response.start":
                call = replace(call, status=message["status"])
            elif not message.get("more_body"):
                # Record before the last byte goes out: once the client has its answer,
                # `calls` already shows the request, so tests can assert right away.
                recorded = True
                await self._record(call)
            await send(message)

        try:
            request: Message | None = None
            try:
                request = self._parse(scope, headers, call.method, body)
                call = replace(call, request=_as_dict(request))
                answer = await self._answer(call, request, headers, hangup=receive)
            except TwirpError as error:
                answer = _twirp_error(error)
                call = replace(call, code=error.code)
            if answer is not None:
                await answer(scope, receive, recording_send)
            elif self.fault == "reset":
                await _reset_midway(recording_send)
        finally:
            if not recorded:  # the client hung up, or the answer was cut off
                await self._record(call)

    def _parse(self, scope: Scope, headers: dict[str, str], method: str, body: bytes) -> Message:
        if scope["method"] != "POST" or not scope["path"].startswith(PREFIX):
            raise TwirpError("bad_route", f"no handler for {scope['method']} {scope['path']}")
        if method not in self._methods:
            raise TwirpError("bad_route", f"no handler for method {method}")
        kind = self._methods[method][0]
        content_type = headers.get("content-type", "").split(";")[0].strip()
        try:
            if content_type == PROTOBUF:
                return kind.FromString(body)
            if content_type == JSON:
                return json_format.Parse(body or b"{}", kind(), ignore_unknown_fields=True)
        except (DecodeError, json_format.ParseError) as exc:
            raise TwirpError("malformed", f"the request body is not a {kind.__name__}") from exc
        raise TwirpError("bad_route", f"unexpected Content-Type: {content_type!r}")

    def _grants(self, headers: dict[str, str]) -> VideoGrants | None:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        try:
            return self._verifier.verify(token).video
        except jwt.PyJWTError:
            return None

    async def _answer(
        self, call: Call, request: Message, headers: dict[str, str], *, hangup: Receive
    ) -> Response | None:
        """The answer to a parsed request; None when there is none (client gone, link cut).

        Errors are raised as `TwirpError`s.
        """
        if isinstance(self.fault, int):
            code = CODE_FOR_STATUS.get(self.fault, "internal")
            raise TwirpError(code, "fault injected by the test", self.fault)
        if self.fault == "slow" and not await self._slept_while_connected(hangup):
            return None
        if self.fault == "reset":
            return None
        _, allowed, handle = self._methods[call.method]
        if call.grants is None or not allowed(call.grants, request):
            raise TwirpError("unauthenticated", "permissions denied")
        answer = handle(request)
        if self.on_answer is not None:
            await self.on_answer(call.method)
        if headers.get("content-type", "").split(";")[0].strip() == JSON:
            text = json_format.MessageToJson(answer, preserving_proto_field_name=True)
            return Response(text, media_type=JSON)
        return Response(answer.SerializeToString(), media_type=PROTOBUF)

    async def _slept_while_connected(self, hangup: Receive) -> bool:
        """Sleep `delay` seconds; False when the client hangs up first (nothing is done)."""
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

    # -- signalling: what livekit-client opens (livekit-server pkg/service/rtcservice.go) --

    def _upgrade(self, scope: Scope, *, validate: bool = False) -> Upgrade:
        query = parse_qs(scope["query_string"].decode())
        token = query.get("access_token", [""])[0]
        claims: Claims | None
        try:
            claims = self._verifier.verify(token)
        except jwt.PyJWTError:
            claims = None
        path = scope["path"].removesuffix("/validate") if validate else scope["path"]
        joins = claims is not None and claims.video is not None and claims.video.room_join
        accepted = bool(joins and claims and claims.identity) and path in RTC_PATHS
        return Upgrade(scope["path"], token, claims, accepted, validate)

    async def _signalling(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Record the upgrade; refuse it (HTTP 403) or accept it, then close at once."""
        upgrade = self._upgrade(scope)
        if (await receive())["type"] != "websocket.connect":
            return
        await self._record_upgrade(upgrade)
        if not upgrade.accepted:
            await send({"type": "websocket.close", "code": 1008})
            return
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1011, "reason": "no media server here"})

    async def _validate(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Why an upgrade failed, as livekit-server says it: 200, or 401 and a sentence."""
        upgrade = self._upgrade(scope, validate=True)
        await self._record_upgrade(upgrade)
        answer = (
            PlainTextResponse("success")
            if upgrade.accepted
            else PlainTextResponse("invalid token: permissions denied", status_code=401)
        )
        # The page calls it from another origin; livekit-server allows any.
        answer.headers["access-control-allow-origin"] = "*"
        await answer(scope, receive, send)

    async def _record_upgrade(self, upgrade: Upgrade) -> None:
        self.upgrades.append(upgrade)
        async with self._changed:
            self._changed.notify_all()

    # -- RoomService (livekit-server pkg/service/roomservice.go) --------------------

    def _room(self, name: str) -> StandinRoom:
        if name not in self.rooms:
            raise TwirpError("not_found", "requested room does not exist")
        return self.rooms[name]

    def _create_room(self, request: CreateRoomRequest) -> Message:
        return self.rooms.setdefault(request.name, StandinRoom(request.name)).info()

    def _list_rooms(self, request: ListRoomsRequest) -> Message:
        names = set(request.names)
        rooms = [r.info() for r in self.rooms.values() if not names or r.name in names]
        return ListRoomsResponse(rooms=rooms)

    def _delete_room(self, request: DeleteRoomRequest) -> Message:
        self._room(request.room)
        del self.rooms[request.room]  # everyone in it is disconnected (ROOM_DELETED)
        return DeleteRoomResponse()

    def _list_participants(self, request: ListParticipantsRequest) -> Message:
        room = self._room(request.room)
        return ListParticipantsResponse(participants=[p.info() for p in room.participants.values()])

    def _participant(self, request: RoomParticipantIdentity) -> Participant:
        participant = self._room(request.room).participants.get(request.identity)
        if participant is None:
            raise TwirpError("not_found", "participant not found")
        return participant

    def _get_participant(self, request: RoomParticipantIdentity) -> Message:
        return self._participant(request).info()

    def _remove_participant(self, request: RoomParticipantIdentity) -> Message:
        self._participant(request)
        # Disconnected (PARTICIPANT_REMOVED); the room stays for its departure timeout.
        gone = self.rooms[request.room].participants.pop(request.identity)
        if self.webhook_urls:  # after the answer, as the server's notifier queue sends it
            info = gone.info(DisconnectReason.PARTICIPANT_REMOVED)
            task = asyncio.create_task(self.send_webhook("participant_left", request.room, info))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        return RemoveParticipantResponse()


def _create(grants: VideoGrants, request: Any) -> bool:
    return bool(grants.room_create)


def _list(grants: VideoGrants, request: Any) -> bool:
    return bool(grants.room_list)


def _admin(grants: VideoGrants, request: Any) -> bool:
    return bool(grants.room_admin) and grants.room == request.room


def _as_dict(message: Message | None) -> dict[str, Any]:
    if message is None:
        return {}
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


async def _reset_midway(send: Send) -> None:
    """Promise 100 bytes of protobuf, send 4, then make uvicorn drop the connection."""
    headers = [(b"content-type", PROTOBUF.encode()), (b"content-length", b"100")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"\n\x02RM", "more_body": True})
    raise _Reset


@asynccontextmanager
async def running_standin(
    api_key: str = "devkey", api_secret: str = "secret"
) -> AsyncIterator[LiveKitStandin]:
    """Serve a fresh stand-in on a free loopback port; `.url` is its http base URL."""
    standin = LiveKitStandin(api_key, api_secret)
    quiet = _QuietReset()
    uvicorn_errors = logging.getLogger("uvicorn.error")
    uvicorn_errors.addFilter(quiet)
    try:
        async with LiveServer(standin) as server:
            standin.url, standin.ws_url = server.http, server.ws
            yield standin
            # Webhooks still on their way go out before the stand-in stops, as on the server.
            if standin._sending:
                await asyncio.wait(set(standin._sending))
    finally:
        uvicorn_errors.removeFilter(quiet)
