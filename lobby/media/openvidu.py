"""Async client for the OpenVidu 2.x REST API: the `MediaBackend` the lobby uses.

A grant is two calls: create the session (200, or 409 when it already exists:
both mean "it is there") and create a WEBRTC connection in it, whose `token` the
browser joins with. Revoking deletes the connection; closing deletes the session.
`participants` reads the session with its connections (pending ones too: a
connection nobody joined with yet is `active=False`), for reconciling call states.

Every failure is translated here, at the boundary, into one exception family
(`raise ... from exc`), and logged once on `lobby.media.openvidu` with the
operator's explanation. Each kind is also one of `lobby.media.seam`'s (which
decides outage, level and the user's sentence)::

    MediaError                    lobby.media.seam; code "media_unavailable"
    └── OpenViduError             (BackendError) `.message` for users; `.detail` for operators
        ├── OpenViduUnreachable     connect failed (DNS, refused, TLS) or the link broke mid-call
        ├── OpenViduTimeout         no answer within `timeout` seconds
        ├── OpenViduAuthError       HTTP 401: OpenVidu rejected the secret
        ├── OpenViduServerError     HTTP 5xx
        └── OpenViduProtocolError   any other unexpected status, or a body of the wrong shape

Neither the secret nor a token ever appears in a log line or an exception.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import socket
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx

from lobby import __version__
from lobby.media.seam import (
    BackendError,
    InCall,
    Misconfigured,
    ServerFailed,
    TimedOut,
    Unexpected,
    Unreachable,
)
from lobby.rules.grants import Grant, Identity

logger = logging.getLogger("lobby.media.openvidu")

_API = "/openvidu/api"


class OpenViduError(BackendError):
    """OpenVidu could not do what was asked; `detail` says why, for operators."""


class OpenViduUnreachable(OpenViduError, Unreachable):
    """No usable connection to OpenVidu."""


class OpenViduTimeout(OpenViduError, TimedOut):
    """OpenVidu did not answer in time."""


class OpenViduAuthError(OpenViduError, Misconfigured):
    """OpenVidu rejected the secret: a configuration problem, not a transient one."""


class OpenViduServerError(OpenViduError, ServerFailed):
    """OpenVidu failed internally (HTTP 5xx)."""


class OpenViduProtocolError(OpenViduError, Unexpected):
    """OpenVidu answered something this client does not expect."""


class OpenViduBackend:
    """`MediaBackend` over OpenVidu 2.x REST, on httpx's own keep-alive transport.

    Requests go straight to the transport (`httpx.AsyncHTTPTransport` unless one
    is passed in: tests pass `httpx.MockTransport`) as ready-made `httpx.Request`s.
    `httpx.AsyncClient` would add only what OpenVidu does not use (a cookie jar, an
    auth flow, redirects, URL merging): a quarter of a call's time on an idle
    process, and the token's p99 under load doubled with it (docs/performance.md).
    A proxy named by the environment (`HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`, …) is
    used as httpx's client would (`environment_proxy`).
    """

    def __init__(
        self,
        base_url: str,
        secret: str,
        *,
        timeout: float = 5.0,
        verify: bool | str = True,
        transport: httpx.AsyncBaseTransport | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        # httpx 0.28 deprecates verify=<path>; a context built from the CA file is the same thing.
        tls: bool | ssl.SSLContext = (
            ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify
        )
        self._timeout = timeout
        self._extensions = {"timeout": httpx.Timeout(timeout).as_dict()}
        base = httpx.URL(base_url.rstrip("/") + "/")
        # Userinfo in a URL would be a credential; keep it out of requests and log lines.
        self._base = base.copy_with(username=None, password=None)
        self._origin = str(self._base).rstrip("/")
        self._transport = transport or httpx.AsyncHTTPTransport(
            verify=tls,
            proxy=environment_proxy(self._base, os.environ if env is None else env),
            # Every join makes one or two calls: keep connections open between them.
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        )
        credentials = base64.b64encode(f"OPENVIDUAPP:{secret}".encode()).decode()
        # Built once and copied into each request, which then only adds its Content-Length:
        # a request given its body as a `stream` is not prepared again by httpx.
        self._headers = httpx.Headers(
            {
                "Host": base.netloc.decode("ascii"),
                "Authorization": f"Basic {credentials}",
                "Accept": "application/json",
                "User-Agent": f"lobby/{__version__}",
            }
        )
        self._json_headers = httpx.Headers(self._headers)
        self._json_headers["Content-Type"] = "application/json"
        # Sessions we created or found (200 or 409) and have not closed since: a join into
        # one of them needs only its connection, one round trip instead of two. A stale
        # entry (OpenVidu closed the session by itself) costs a 404, then the same two calls.
        self._open: set[str] = set()
        self._urls: dict[str, httpx.URL] = {}  # parsed once each: a parse is ~0.1 ms

    def __repr__(self) -> str:
        return f"OpenViduBackend({self._origin!r})"

    # openvidu-browser finds the server in the token itself.
    peer_to_peer = False

    def page_config(self, user: str) -> dict[str, object]:
        return {"kind": "openvidu"}

    async def grant(self, room: str, identity: Identity) -> Grant:
        body = {
            "type": "WEBRTC",
            "role": identity.role,
            "data": json.dumps(
                {"serverData": identity.user, "participantId": identity.participant_id}
            ),
        }
        path = f"{_API}/sessions/{_segment(room)}/connection"
        if room not in self._open:
            await self._ensure_session(room)
        response = await self._call("POST", path, body, ok={200, 404})
        if response.status_code == 404:
            # OpenVidu closed the session between our two calls (its last participant
            # left), or before this join: build it again, once. Twice in a row is not
            # a race any more.
            self._open.discard(room)
            await self._ensure_session(room)
            response = await self._call("POST", path, body, ok={200})
        self._open.add(room)
        return Grant(room=room, **self._connection(response, path))

    async def revoke(self, grant: Grant) -> None:
        path = f"{_API}/sessions/{_segment(grant.room)}/connection/{_segment(grant.connection_id)}"
        # 400 = the session is gone, 404 = the connection is gone: the token is dead either way.
        await self._call("DELETE", path, None, ok={204, 400, 404})

    async def close_room(self, room: str) -> None:
        self._open.discard(room)
        await self._call("DELETE", f"{_API}/sessions/{_segment(room)}", None, ok={204, 404})

    async def check(self) -> None:
        # The session list: authenticated (so a wrong secret shows) and always there.
        await self._call("GET", f"{_API}/sessions", None, ok={200})

    async def participants(self, room: str) -> list[InCall]:
        path = f"{_API}/sessions/{_segment(room)}"
        response = await self._call("GET", path + "?pendingConnections=true", None, ok={200, 404})
        if response.status_code == 404:  # no session: nobody is in the call
            return []
        try:
            content = response.json()["connections"]["content"]
            return [
                InCall(c["connectionId"], None, c["status"] == "active")
                for c in content
                if isinstance(c["connectionId"], str)
            ]
        except (ValueError, KeyError, TypeError) as exc:
            raise OpenViduProtocolError.logged(
                logger, f"OpenVidu answered GET {path} without a list of connections"
            ) from exc

    async def aclose(self) -> None:
        await self._transport.aclose()

    def _url(self, path: str) -> httpx.URL:
        url = self._urls.get(path)
        if url is None:
            if len(self._urls) > 10_000:  # one per room and connection: bounded
                self._urls.clear()
            url = self._urls[path] = self._base.join(path.lstrip("/"))
        return url

    async def _ensure_session(self, room: str) -> None:
        body = {"customSessionId": room}
        await self._call("POST", f"{_API}/sessions", body, ok={200, 409})

    async def _call(
        self, method: str, path: str, body: dict[str, Any] | None, *, ok: set[int]
    ) -> httpx.Response:
        """`method` on `path` (below the base URL); errors become `OpenViduError`s."""
        where = f"{method} {path}"
        if body is None:
            headers, content = self._headers, b""
        else:
            content = json.dumps(body).encode()
            headers = httpx.Headers(self._json_headers)
            headers["Content-Length"] = str(len(content))
        request = httpx.Request(
            method,
            self._url(path),
            headers=headers,
            stream=httpx.ByteStream(content),
            extensions=self._extensions,
        )
        try:
            response = await self._transport.handle_async_request(request)
            response.request = request
            try:
                await response.aread()
            finally:
                await response.aclose()
        except httpx.TimeoutException as exc:
            raise OpenViduTimeout.logged(
                logger, f"OpenVidu timed out after {self._timeout:g}s on {where}"
            ) from exc
        except httpx.ConnectError as exc:
            raise OpenViduUnreachable.logged(
                logger, f"OpenVidu unreachable at {self._origin}: {_reason(exc)}"
            ) from exc
        except httpx.TransportError as exc:
            # RemoteProtocolError, ReadError, ...: the request may or may not have
            # taken effect, so we never replay it; the caller may simply try again.
            raise OpenViduUnreachable.logged(
                logger,
                f"OpenVidu broke the connection during {where} at {self._origin}: {_reason(exc)}",
            ) from exc
        except httpx.RequestError as exc:
            raise OpenViduProtocolError.logged(
                logger, f"OpenVidu sent an unreadable answer to {where}: {exc}"
            ) from exc
        status = response.status_code
        if status in ok:
            return response
        if status == 401:
            raise OpenViduAuthError.logged(
                logger,
                f"OpenVidu rejected the secret (HTTP 401) at {self._origin}; check OPENVIDU_SECRET",
            )
        if status >= 500:
            raise OpenViduServerError.logged(
                logger,
                f"OpenVidu answered HTTP {status} to {where} at {self._origin}",
            )
        raise OpenViduProtocolError.logged(
            logger,
            f"OpenVidu answered unexpected HTTP {status} to {where}{_explanation(response)}",
        )

    def _connection(self, response: httpx.Response, path: str) -> dict[str, str]:
        try:
            data = response.json()
        except ValueError:
            data = None
        if (
            isinstance(data, dict)
            and isinstance(data.get("id"), str)
            and isinstance(data.get("token"), str)
        ):
            return {"connection_id": data["id"], "token": data["token"]}
        raise OpenViduProtocolError.logged(
            logger,
            f"OpenVidu answered POST {path} without a connection id and token",
        )


def environment_proxy(url: httpx.URL, env: Mapping[str, str]) -> str | None:
    """The proxy `env` names for `url`, read as curl and httpx read it, or None.

    `<scheme>_proxy` or `all_proxy` (either case; lower case first), unless
    `no_proxy` lists the host, a domain it ends in, or `*`.
    """

    def get(name: str) -> str:
        return env.get(name) or env.get(name.upper()) or ""

    proxy = get(f"{url.scheme}_proxy") or get("all_proxy")
    if not proxy:
        return None
    host = url.host.lower()
    for entry in get("no_proxy").split(","):
        domain = entry.strip().lower().lstrip(".").split(":")[0]
        if domain == "*" or (domain and (host == domain or host.endswith("." + domain))):
            return None
    return proxy


def _segment(value: str) -> str:
    """Percent-encode one path segment, so an id can never reach another endpoint."""
    return quote(value, safe="")


_ERRNO = re.compile(r"\[Errno (\d+)\]")


def _reason(exc: Exception) -> str:
    """The most specific cause: "connection refused", not "All connection attempts failed"."""
    cause: BaseException | None = exc
    while cause is not None:
        # SSL errors are OSErrors too, but their errno means nothing; their text is better.
        if isinstance(cause, OSError) and not isinstance(cause, ssl.SSLError):
            # asyncio sums up a host whose every address failed differently (IPv4
            # refused, IPv6 unavailable for "localhost") in one OSError with no errno:
            # "Multiple exceptions: [Errno 111] ...". The first address's says most.
            found = None if cause.errno else _ERRNO.search(str(cause))
            number = cause.errno or (int(found.group(1)) if found else 0)
            if number:
                text = cause.strerror if isinstance(cause, socket.gaierror) else None
                text = text or os.strerror(number)
                return text[:1].lower() + text[1:]
        cause = cause.__cause__ or cause.__context__
    return str(exc).strip() or type(exc).__name__


def _explanation(response: httpx.Response) -> str:
    """OpenVidu's own error `message` (never contains secrets or tokens), if it sent one."""
    try:
        message = response.json().get("message")
    except (ValueError, AttributeError):
        return ""
    return f": {message[:200]}" if isinstance(message, str) and message else ""
