"""The LiveKit (OpenVidu 3) `MediaBackend`: join tokens signed here, RoomService for the rest.

A grant makes no network call: the token is a JWT signed with the API secret
(`livekit.api.AccessToken`) for exactly one room, whose identity is the
participant id, so the same id removes it later. LiveKit creates the room when
the first browser joins. A LiveKit token cannot be revoked before it expires:
`revoke` removes the participant (RemoveParticipant), which is what ends its
call, and the token's short life (`LIVEKIT_TOKEN_TTL`) bounds what a copy of it
is worth. `close_room` is DeleteRoom, `check` is ListRooms, `participants`
(for reconciling call states) ListParticipants.

RoomService goes through the official client (`livekit.api.LiveKitAPI`): Twirp,
protobuf bodies, one bearer JWT per call carrying only the grant that call needs
(`roomAdmin` and the room for RemoveParticipant and ListParticipants, `roomCreate` for DeleteRoom,
`roomList` for ListRooms: the client's own choice, which tests/test_livekit.py
pins down). Its region failover is off: it only ever applies to LiveKit Cloud,
and `lobby.media.calls` and the breaker already decide what is retried.

Every failure is translated here, at the boundary, into one exception family
(`raise ... from exc`), and logged once on `lobby.media.livekit`::

    MediaError                    lobby.media.seam; code "media_unavailable"
    └── LiveKitError              (BackendError) `.message` for users; `.detail` for operators
        ├── LiveKitUnreachable      connect failed, or the link broke mid-call      (outage)
        ├── LiveKitTimeout          no answer within `timeout` seconds              (outage)
        ├── LiveKitAuthError        HTTP 401: the API key, secret or grant refused  (outage)
        ├── LiveKitServerError      HTTP 5xx                                        (outage)
        └── LiveKitProtocolError    any other Twirp error, or an unreadable answer

Twirp `not_found` from RemoveParticipant or DeleteRoom is success: the
participant or the room is already gone. Neither the secret nor a token ever
appears in a log line or an exception.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import os
import ssl
import warnings
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiohttp
import jwt.warnings
from google.protobuf.message import DecodeError
from livekit import api
from livekit.api.room_service import RoomService
from livekit.protocol.models import ParticipantInfo
from livekit.protocol.room import (
    DeleteRoomRequest,
    ListParticipantsRequest,
    ListRoomsRequest,
    RoomParticipantIdentity,
)

from lobby.media.seam import (
    BackendError,
    InCall,
    Misconfigured,
    ServerFailed,
    TimedOut,
    Unexpected,
    Unreachable,
)
from lobby.rules.grants import Grant, Identity, can_publish

logger = logging.getLogger("lobby.media.livekit")

_T = TypeVar("_T")
# RFC 7518 wants an HS256 key of at least 32 bytes; LiveKit's dev server uses `secret`.
MIN_SECRET_BYTES = 32


class LiveKitError(BackendError):
    """LiveKit could not do what was asked; `detail` says why, for operators."""


class LiveKitUnreachable(LiveKitError, Unreachable):
    """No usable connection to LiveKit."""


class LiveKitTimeout(LiveKitError, TimedOut):
    """LiveKit did not answer in time."""


class LiveKitAuthError(LiveKitError, Misconfigured):
    """LiveKit refused our token: a configuration problem, not a transient one."""


class LiveKitServerError(LiveKitError, ServerFailed):
    """LiveKit failed internally (HTTP 5xx)."""


class LiveKitProtocolError(LiveKitError, Unexpected):
    """LiveKit answered something this client does not expect."""


class LiveKitBackend:
    """`MediaBackend` over a LiveKit server (OpenVidu 3 is one).

    `url` is what browsers connect to (ws:// or wss://), `api_url` where the
    lobby calls RoomService (http:// or https://).
    """

    def __init__(
        self,
        url: str,
        api_url: str,
        api_key: str,
        api_secret: str,
        *,
        token_ttl: float = 60.0,
        timeout: float = 5.0,
    ) -> None:
        self._url = url
        self._api_url = api_url.rstrip("/")
        self._key = api_key
        self._secret = api_secret
        if len(api_secret.encode()) < MIN_SECRET_BYTES:
            logger.warning(
                "LIVEKIT_API_SECRET is shorter than %d bytes: fine for the LiveKit dev server, "
                "guessable anywhere else",
                MIN_SECRET_BYTES,
            )
            # Said once here; PyJWT would warn again at every token the lobby or the SDK signs.
            warnings.filterwarnings("ignore", category=jwt.warnings.InsecureKeyLengthWarning)
        self._ttl = datetime.timedelta(seconds=token_ttl)
        self._timeout = timeout
        # Made at the first RoomService call: aiohttp wants its session born in a running loop.
        self._api: api.LiveKitAPI | None = None

    def __repr__(self) -> str:
        return f"LiveKitBackend({self._url!r})"

    # livekit-client connects to the URL the page gets, then to the room the token names.
    peer_to_peer = False

    def page_config(self, user: str) -> dict[str, object]:
        return {"kind": "livekit", "url": self._url}

    async def grant(self, room: str, identity: Identity) -> Grant:
        publish = can_publish(identity.role)
        grants = api.VideoGrants(
            room_join=True,
            room=room,
            can_publish=publish,
            can_publish_data=publish,
            can_subscribe=True,
        )
        token = (
            api.AccessToken(self._key, self._secret)
            .with_identity(identity.participant_id)
            .with_name(identity.nickname)
            .with_metadata(json.dumps({"user": identity.user, "role": identity.role}))
            .with_grants(grants)
            .with_ttl(self._ttl)
            .to_jwt()
        )
        # RemoveParticipant names a participant by its identity: that is the handle.
        return Grant(room=room, connection_id=identity.participant_id, token=token)

    async def revoke(self, grant: Grant) -> None:
        request = RoomParticipantIdentity(room=grant.room, identity=grant.connection_id)
        await self._call(
            "RemoveParticipant", lambda rooms: rooms.remove_participant(request), gone_ok=True
        )

    async def close_room(self, room: str) -> None:
        request = DeleteRoomRequest(room=room)
        await self._call("DeleteRoom", lambda rooms: rooms.delete_room(request), gone_ok=True)

    async def check(self) -> None:
        # Authenticated (a wrong key or secret shows) and always answerable.
        await self._call("ListRooms", lambda rooms: rooms.list_rooms(ListRoomsRequest()))

    async def participants(self, room: str) -> list[InCall]:
        request = ListParticipantsRequest(room=room)
        listed = await self._call(
            "ListParticipants", lambda rooms: rooms.list_participants(request), gone_ok=True
        )
        if listed is None:  # no such room: LiveKit has nobody in it
            return []
        return [
            InCall(p.identity, p.sid, p.state != ParticipantInfo.DISCONNECTED)
            for p in listed.participants
        ]

    async def aclose(self) -> None:
        if self._api is not None:
            await self._api.aclose()
            self._api = None

    def _client(self) -> api.LiveKitAPI:
        if self._api is None:
            # No `timeout=`: the SDK passes `timeout=None` to every request, which aiohttp reads
            # as "no limit", overriding the session's (tests/test_livekit_standin.py shows it).
            # `_call` bounds each call itself.
            self._api = api.LiveKitAPI(self._api_url, self._key, self._secret, failover=False)
        return self._api

    async def _call(
        self,
        method: str,
        call: Callable[[RoomService], Awaitable[_T]],
        *,
        gone_ok: bool = False,
    ) -> _T | None:
        """RoomService `method`; errors become `LiveKitError`s, `not_found` None if `gone_ok`."""
        where = f"{method} at {self._api_url}"
        try:
            async with asyncio.timeout(self._timeout):
                return await call(self._client().room)
        except api.ServerError as exc:
            if gone_ok and exc.code == api.ServerErrorCode.NOT_FOUND:
                return None
            raise self._twirp_failure(method, exc) from exc
        except TimeoutError as exc:  # ours, or aiohttp's (also a ClientError): first
            raise LiveKitTimeout.logged(
                logger, f"LiveKit timed out after {self._timeout:g}s on {where}"
            ) from exc
        except aiohttp.ClientConnectorError as exc:
            raise LiveKitUnreachable.logged(
                logger, f"LiveKit unreachable at {self._api_url}: {_reason(exc)}"
            ) from exc
        except aiohttp.ClientError as exc:
            # The link broke mid-call: it may or may not have taken effect; never replayed here.
            raise LiveKitUnreachable.logged(
                logger,
                f"LiveKit broke the connection during {where}: {type(exc).__name__}",
            ) from exc
        except DecodeError as exc:
            raise LiveKitProtocolError.logged(
                logger, f"LiveKit sent an unreadable answer to {where}"
            ) from exc

    def _twirp_failure(self, method: str, exc: api.ServerError) -> LiveKitError:
        said = f"HTTP {exc.status} {exc.code}" + (f": {exc.message[:200]}" if exc.message else "")
        if exc.status == 401:
            return LiveKitAuthError.logged(
                logger,
                f"LiveKit refused our token ({said}) on {method} at {self._api_url}; "
                "check LIVEKIT_API_KEY and LIVEKIT_API_SECRET",
            )
        if exc.status >= 500:
            return LiveKitServerError.logged(
                logger, f"LiveKit answered {said} to {method} at {self._api_url}"
            )
        return LiveKitProtocolError.logged(
            logger,
            f"LiveKit answered unexpected {said} to {method} at {self._api_url}",
        )


def _reason(exc: aiohttp.ClientConnectorError) -> str:
    """ "connection refused", not aiohttp's "Cannot connect to host … [Connect call failed …]"."""
    # Certificate errors carry no OSError (the property raises), and an SSL errno means nothing.
    error = getattr(exc, "os_error", None)
    if isinstance(error, OSError) and not isinstance(error, ssl.SSLError) and error.errno:
        text = os.strerror(error.errno)
        return text[:1].lower() + text[1:]
    return str(exc)
