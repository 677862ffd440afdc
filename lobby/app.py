"""`create_app(settings, …)`: routes, middleware, lifespan; the only module knowing them all."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from lobby.cluster.courier import Courier
from lobby.cluster.duties import Timing
from lobby.cluster.limits import LocalLogins, LocalSockets, Logins, Sockets
from lobby.cluster.node import RedisPresence
from lobby.cluster.quotas import RedisJoins, RedisSockets
from lobby.cluster.seam import Cleaner, Listener, PresenceStore, Resetter
from lobby.cluster.stream import connect
from lobby.cluster.throttle import RedisLogins
from lobby.config import Settings
from lobby.flows.callstates import CallStates
from lobby.handler import RequestHandler, StoreFactory
from lobby.hub import HeapFreezer, Hub, Keepalive
from lobby.logs import RequestIds
from lobby.media.breaker import Breaker
from lobby.media.livekit import LiveKitBackend
from lobby.media.openvidu import OpenViduBackend
from lobby.media.p2p import PeerToPeerBackend
from lobby.media.seam import MediaBackend
from lobby.rules.limits import LoginThrottle
from lobby.rules.protocol import CloseCode
from lobby.store import db as database
from lobby.store.audit import AuditLog
from lobby.store.roster import Roster
from lobby.store.sessions import SessionStore
from lobby.store.users import UserStore
from lobby.watch import watch_sessions
from lobby.web import assets, health, metrics, pages, webhooks
from lobby.web.auth import Auth
from lobby.web.metrics import Metrics, Readings, metrics_server
from lobby.web.origins import Origins, SameSitePosts
from lobby.web.socket import lobby_socket
from lobby.web.state import AppState

log = logging.getLogger("lobby")


def media_backend(settings: Settings) -> MediaBackend:
    """The back end `settings.media` names."""
    if settings.media == "p2p":
        return PeerToPeerBackend(
            settings.ice_servers, turn_secret=settings.turn_secret, turn_ttl=settings.session_ttl
        )
    if settings.media == "livekit":
        return LiveKitBackend(
            settings.livekit_url,
            settings.livekit_api_url,
            settings.livekit_api_key,
            settings.livekit_api_secret,
            token_ttl=settings.livekit_token_ttl,
            timeout=settings.livekit_timeout,
        )
    return OpenViduBackend(
        settings.openvidu_url,
        settings.openvidu_secret,
        timeout=settings.openvidu_timeout,
        verify=settings.openvidu_ca_file or settings.openvidu_verify_tls,
    )


def presence_store(settings: Settings) -> StoreFactory | None:
    """Presence shared through Redis when `LOBBY_REDIS_URL` is set; None: in this process."""
    url = settings.redis_url
    if not url:
        return None

    def build(listener: Listener, cleaner: Cleaner, resetter: Resetter) -> PresenceStore:
        return RedisPresence(
            url,
            grace=settings.reconnect_grace,
            listener=listener,
            cleaner=cleaner,
            resetter=resetter,
            prefix=settings.redis_prefix,
        )

    return build


class SharedLimits:
    """The per-user limits counted in Redis for the whole cluster (`lobby.cluster.quotas`,
    `lobby.cluster.throttle`), on one client of their own."""

    def __init__(self, settings: Settings, store: PresenceStore, throttle: LoginThrottle) -> None:
        timing = store.timing if isinstance(store, RedisPresence) else Timing()
        self.redis = connect(settings.redis_url or "", timing.command_timeout)
        prefix = settings.redis_prefix
        self.logins = RedisLogins(self.redis, throttle.policy, prefix=prefix)
        self.joins = RedisJoins(self.redis, settings.joins_per_minute, store.instance, prefix)
        self.sockets = RedisSockets(
            self.redis,
            settings.max_sockets_per_user,
            store.instance,
            prefix=prefix,
            lease=timing.lease,
            renew=timing.renew,
            timeout=timing.command_timeout,
        )

    async def aclose(self) -> None:
        await self.sockets.stop()
        await self.redis.aclose()


def create_app(
    settings: Settings,
    *,
    media: MediaBackend | None = None,
    users: UserStore | None = None,
    login_throttle: LoginThrottle | None = None,
) -> Starlette:
    """The whole server. `media`, `users` and `login_throttle` can be passed in (tests do)."""
    origins = Origins(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        db = users.db if users is not None else database.connect(settings.database)
        store = users if users is not None else UserStore(db)
        if settings.demo:
            store.ensure_demo_users()
        else:
            store.remove_demo_users()
        sessions = SessionStore(db, ttl=settings.session_ttl)
        sessions.purge_expired()
        # Each worker of `lobby serve --workers` is a process of its own: label it so.
        meter = Metrics(
            settings.media, process=f"pid{os.getpid()}" if settings.workers > 1 else "main"
        )
        backend = Breaker(media or media_backend(settings), observe=meter.media_call)
        hub = Hub(metrics=meter)
        handler = RequestHandler(
            backend,
            hub,
            grace=settings.reconnect_grace,
            joins_per_minute=settings.joins_per_minute,
            room_size=settings.room_size,
            recovered=backend.recovered,
            # Per instance and SQLite only: see lobby.store.roster. With Redis, the log and
            # its snapshots keep presence across restarts instead.
            roster=Roster(db) if db.dialect == "sqlite" and not settings.redis_url else None,
            calls_from_media=settings.calls_from_media,
            store=presence_store(settings),
            kick_ban=settings.kick_ban,
            audit=AuditLog(db),
        )
        call_states = CallStates(
            handler,
            backend if backend.lists_participants else None,
            interval=settings.call_reconcile_interval,
        )
        await handler.store.start()
        courier = None
        if settings.redis_url:  # peer-to-peer signals for sockets of other instances
            courier = Courier(
                settings.redis_url,
                handler.store.instance,
                handler.deliver,
                prefix=settings.redis_prefix,
            )
            handler.remote = courier.send
            await courier.start()
        restored = handler.restore()
        if restored:
            log.info(
                "restored %d participants; they have %gs to come back",
                restored,
                settings.reconnect_grace,
            )
        auth = Auth(store, sessions, secret_key=settings.secret_key, ttl=settings.session_ttl)
        # `is None`, not `or`: an empty throttle has length 0 and counts as false.
        policy = LoginThrottle() if login_throttle is None else login_throttle
        throttle: Logins = LocalLogins(policy)
        sockets: Sockets = LocalSockets(settings.max_sockets_per_user)
        shared = SharedLimits(settings, handler.store, policy) if settings.redis_url else None
        if shared is not None:  # with Redis, every per-user limit counts for the cluster
            throttle, sockets, handler.joins = shared.logins, shared.sockets, shared.joins
            await shared.sockets.start()
        readiness = health.Readiness(
            [health.database_check(db), health.media_check(lambda: backend.down)]
        )
        meter.watch(
            Readings(
                sockets=hub.__len__,
                participants=handler.presence.__len__,
                rooms=lambda: handler.presence.room_count,
                media_down=lambda: backend.down,
                grace_expiries=lambda: handler.grace_expiries,
                resumes=lambda: handler.resumes,
                cluster_up=(lambda: handler.store.healthy) if settings.redis_url else None,
            )
        )
        if settings.redis_url:
            readiness.add(health.redis_check(lambda: handler.store.healthy))
        app.state.lobby = AppState(
            settings,
            db,
            auth,
            backend,
            hub,
            handler,
            throttle,
            origins,
            call_states,
            readiness,
            meter,
            sockets,
        )
        scrape_port = metrics_server(meter, settings)
        watcher = asyncio.create_task(watch_sessions(sessions, hub, handler))
        reconciler = asyncio.create_task(call_states.run())
        # The sockets' pings: one task for all of them (uvicorn's own are off).
        keepalive = asyncio.create_task(
            Keepalive(hub, settings.ping_interval, settings.ping_timeout).run()
        )
        freezer = asyncio.create_task(HeapFreezer(hub).run())
        try:
            yield
        finally:
            watcher.cancel()
            reconciler.cancel()
            keepalive.cancel()
            freezer.cancel()
            if scrape_port is not None:
                await asyncio.to_thread(scrape_port.shutdown)
                scrape_port.server_close()
            for conn in hub:
                conn.close(CloseCode.RESTARTING, "server restarting")
            await handler.drain()
            if courier is not None:
                await courier.stop()
            if shared is not None:
                await shared.aclose()
            await backend.aclose()
            if users is None:
                db.close()

    routes = [
        Route("/", pages.login_page, methods=["GET"]),
        Route("/login", pages.login, methods=["POST"]),
        Route("/logout", pages.logout, methods=["POST"]),
        Route("/lobby", pages.lobby_page, methods=["GET"]),
        Route("/room/{name}", pages.room_page, methods=["GET"]),
        Route("/healthz", health.healthz, methods=["GET"]),
        Route("/readyz", health.readyz, methods=["GET"]),
        Route("/metrics", metrics.metrics, methods=["GET"]),
        Route("/webhooks/livekit", webhooks.livekit_webhook, methods=["POST"]),
        # Where OpenVidu 3's local deployment sends LiveKit's webhooks out of the box.
        Route("/livekit/webhook", webhooks.livekit_webhook, methods=["POST"]),
        Route("/webhooks/openvidu", webhooks.openvidu_webhook, methods=["POST"]),
        WebSocketRoute("/ws", lobby_socket),
        Mount(assets.STATIC_URL, StaticFiles(directory=assets.STATIC), name="static"),
    ]
    return LobbyApp(
        frozenset(origins.hosts),
        routes=routes,
        middleware=[
            Middleware(RequestIds),  # first: every line about a request carries its id
            Middleware(SecurityHeaders, settings=settings),
            # Outermost first: a foreign Host is refused before anything else looks at the
            # request (sockets too), then a cross-site post before its form is read.
            Middleware(TrustedHostMiddleware, allowed_hosts=origins.hosts, www_redirect=False),
            Middleware(SameSitePosts, origins=origins),
        ],
        lifespan=lifespan,
        exception_handlers={database.Unavailable: pages.database_unavailable},
    )


class LobbyApp(Starlette):
    """Starlette, except that a `/ws` socket with a trusted Host goes straight to its endpoint.

    An open socket's coroutine lives as long as the socket, and through the middleware
    and the router its stack is a dozen frames (about 4 KiB per idle socket). Of them a
    socket needs only its request id (`RequestIds`, kept) and the Host check (the security
    headers and the cross-site check are for HTTP): a Host this check is not sure of
    (anything but an exact match, with or without a port, or a "*" entry) takes the whole
    stack, which answers or refuses it as before.
    """

    def __init__(self, hosts: frozenset[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.socket_hosts = hosts
        self._socket = RequestIds(self._serve_socket)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == "/ws" and self._trusted(scope):
            await self._socket(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    async def _serve_socket(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["app"] = self
        await lobby_socket(WebSocket(scope, receive, send))

    def _trusted(self, scope: Scope) -> bool:
        if "*" in self.socket_hosts:
            return True
        for name, value in scope["headers"]:
            if name == b"host":  # the first, as Starlette's check reads it
                host, _, port = value.decode("latin-1").partition(":")
                return host in self.socket_hosts and (not port or port.isdecimal())
        return False


class SecurityHeaders:
    """Adds a strict Content-Security-Policy and friends to every HTTP response."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        connect = "'self'"
        if settings.media == "openvidu":
            # openvidu-browser opens a WebSocket to the OpenVidu host named in the token.
            media = urlsplit(settings.openvidu_url)
            ws_scheme = "wss" if media.scheme == "https" else "ws"
            connect += f" {ws_scheme}://{media.netloc} {media.scheme}://{media.netloc}"
        elif settings.media == "livekit":
            # livekit-client opens its WebSocket at LIVEKIT_URL and, when that fails, asks
            # the same host over HTTP(S) why (`/rtc/validate`).
            media = urlsplit(settings.livekit_url)
            http_scheme = "https" if media.scheme == "wss" else "http"
            connect += f" {media.scheme}://{media.netloc} {http_scheme}://{media.netloc}"
        self.headers = [
            (
                b"content-security-policy",
                (
                    "default-src 'self'; script-src 'self'; style-src 'self'; "
                    f"connect-src {connect}; img-src 'self' data: blob:; "
                    "media-src 'self' blob: mediastream:; object-src 'none'; "
                    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
                ).encode(),
            ),
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"same-origin"),
            (b"x-frame-options", b"DENY"),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + self.headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
