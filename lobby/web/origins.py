"""Whom the lobby answers: the hosts it is reached by and the origins its pages come from.

One rule, from `LOBBY_PUBLIC_URL` (or, unset, from where the server listens), for
three checks: the `Host` header (Starlette's `TrustedHostMiddleware`, against DNS
rebinding: a page at evil.example whose name now resolves to us still says
`Host: evil.example`), the `Origin` of a socket (cross-site WebSocket hijacking), and
the `Origin` or `Sec-Fetch-Site` of every request that changes state (cross-site
form posts, `SameSitePosts`). Never the request's own `Host`: the attacker writes it.
"""

from __future__ import annotations

from starlette.requests import HTTPConnection
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from lobby.config import Settings
from lobby.rules.origins import Origin, own_hosts, parse_origin

# Sec-Fetch-Site values of requests a page of ours made, or the user did ("none": typed,
# bookmarked); "same-site" is a sibling host, which is another origin.
OWN_FETCH_SITES = ("same-origin", "none")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class Origins:
    """The public origins and host names, parsed once from the settings."""

    def __init__(self, settings: Settings) -> None:
        # `Settings` parsed these already (a malformed one is a `ConfigError` at start-up).
        self._public = frozenset(_parsed(settings.public_origins))
        self._extra = frozenset(_parsed(settings.allowed_origins))
        self.hosts: tuple[str, ...] = (
            tuple(sorted({o.host for o in self._public}))
            if self._public
            else own_hosts(settings.host)
        )

    def public(self, scope: Scope) -> frozenset[Origin]:
        """The origins of our own pages, as seen by the connection in `scope`."""
        if self._public:
            return self._public
        # Unset: plain http at our own names, on the port this connection came in on (the
        # bound one; a server told to listen on port 0 learns it only once it listens).
        server = scope.get("server")
        port = server[1] if server else None
        if not isinstance(port, int):
            return frozenset()
        return frozenset(Origin("http", host, port) for host in self.hosts)

    def socket_may_connect(self, conn: HTTPConnection) -> bool:
        """Only our pages, or the extra `LOBBY_ALLOWED_ORIGINS`, may open a socket; a socket
        without an Origin is no browser's page and needs none."""
        origin = parse_origin(conn.headers.get("origin", ""))
        return origin is not None and (origin in self._extra or origin in self.public(conn.scope))

    def may_change_state(self, conn: HTTPConnection) -> bool:
        """Whether a POST (or any unsafe method) comes from our own pages.

        The Origin decides when sent (every current browser sends it with a POST); without
        it, Sec-Fetch-Site. A request with neither is no browser's: it cannot ride a
        victim's cookies, so it may go on, and the CSRF token in the form still decides
        (the tests' and the benchmark's httpx clients post like that).
        """
        sent = conn.headers.get("origin")
        if sent is not None:
            origin = parse_origin(sent)  # "null" (sandboxed frames, privacy redirects): None
            return origin is not None and origin in self.public(conn.scope)
        site = conn.headers.get("sec-fetch-site")
        return site is None or site in OWN_FETCH_SITES


class SameSitePosts:
    """Answers 403 to any request that changes state from another site, before any route
    reads a form or a cookie."""

    def __init__(self, app: ASGIApp, origins: Origins) -> None:
        self.app = app
        self.origins = origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] not in SAFE_METHODS
            and not self.origins.may_change_state(HTTPConnection(scope))
        ):
            refusal = PlainTextResponse("Cross-site requests are refused.", status_code=403)
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _parsed(texts: tuple[str, ...]) -> list[Origin]:
    return [o for o in map(parse_origin, texts) if o is not None]
