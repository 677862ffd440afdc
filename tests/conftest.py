"""Shared fixtures: the OpenVidu stand-in, a real lobby server, logged-in socket clients, and
the databases (SQLite in memory or in a file; a real PostgreSQL server for the session)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
import websockets
from argon2 import PasswordHasher
from websockets.exceptions import ConnectionClosed

from lobby.app import create_app, media_backend
from lobby.config import Settings
from lobby.server import uvicorn_config
from lobby.store import db as database
from lobby.store.users import UserStore
from lobby.web.state import AppState
from tests.live import LiveServer
from tests.log_secrets import SECRETS
from tests.openvidu_standin import OpenViduStandin, running_standin
from tests.postgres import PostgresServer
from tests.redis_server import RedisServer, require_redis_server

PASSWORD = "correct horse"
USERS = {"alice": "PUBLISHER", "bob": "PUBLISHER", "sub": "SUBSCRIBER", "mod": "MODERATOR"}
CHEAP_HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


@pytest.fixture(scope="session", autouse=True)
def no_secret_in_any_log_line() -> Iterator[None]:
    """Fails the run, naming each line, if a registered secret reached a log line
    (`tests/log_secrets.py`)."""
    SECRETS.register(PASSWORD)
    with SECRETS.watching():
        yield
    leaks = SECRETS.leaks()
    assert not leaks, "secrets in log lines:\n" + "\n".join(leaks)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole run (skipped without one, failed under CI)."""
    server = PostgresServer.create()
    try:
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of the test's own, to stop and start again (about a second)."""
    server = PostgresServer.create()
    try:
        server.start()
        yield server
    finally:
        server.destroy()


DIALECTS = ("sqlite", "postgresql")


@pytest.fixture(params=DIALECTS)
def location(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """A `LOBBY_DATABASE` several connections can share: a SQLite file, a PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "lobby.sqlite3")
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.fresh_database()


@pytest.fixture
def db(location: str) -> Iterator[database.Database]:
    """An empty, migrated database of each kind (the store tests run against both)."""
    connected = database.connect(location)
    yield connected
    connected.close()


@pytest.fixture(scope="session")
async def standin_server() -> AsyncIterator[OpenViduStandin]:
    async with running_standin(secret="MY_SECRET") as standin:
        yield standin


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server for the session; tests keep apart by key prefix."""
    require_redis_server()
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own, to kill and restart."""
    require_redis_server()
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def standin(standin_server: OpenViduStandin) -> OpenViduStandin:
    """The stand-in, reset to a clean state for each test."""
    standin_server.reset()
    return standin_server


def test_settings(standin: OpenViduStandin, **overrides: Any) -> Settings:
    base = Settings(
        openvidu_url=standin.url,
        openvidu_secret="MY_SECRET",
        openvidu_timeout=1.0,
        database=":memory:",
        secret_key="test-secret-key-0123456789",
        reconnect_grace=0.5,
        ping_interval=5,
        ping_timeout=5,
        port=0,
    )
    settings = replace(base, **overrides)
    SECRETS.register(settings.secret_key, settings.livekit_api_secret, settings.turn_secret)
    SECRETS.register(settings.openvidu_webhook_secret)
    SECRETS.register_openvidu_secret(settings.openvidu_secret)
    return settings


def make_users() -> UserStore:
    store = UserStore(database.connect(":memory:"), hasher=CHEAP_HASHER)
    for name, role in USERS.items():
        store.add(name, role, PASSWORD)
    return store


class Lobby:
    """A running lobby server and ways to talk to it."""

    def __init__(self, live: LiveServer, app: Any, settings: Settings) -> None:
        self.live = live
        self.app = app
        self.settings = settings
        self.http = live.http
        self.ws_url = live.ws + "/ws"

    @property
    def state(self) -> AppState:
        state: AppState = self.app.state.lobby
        return state

    async def login(
        self, name: str, password: str = PASSWORD, *, headers: dict[str, str] | None = None
    ) -> str:
        """Log in through the real form (with extra `headers`); returns the session cookie."""
        async with httpx.AsyncClient(base_url=self.http, headers=headers) as http:
            page = await http.get("/")
            token = csrf_from(page.text)
            reply = await http.post(
                "/login", data={"user": name, "pass": password, "csrf_token": token}
            )
            assert reply.status_code == 303, reply.text
            SECRETS.register(reply.cookies["lobby_session"], token)
            return reply.cookies["lobby_session"]

    async def client(self, name: str, *, cookie: str | None = None) -> Client:
        cookie = cookie or await self.login(name)
        socket = await websockets.connect(
            self.ws_url,
            origin=websockets.Origin(self.http),
            additional_headers={"Cookie": f"lobby_session={cookie}"},
        )
        client = Client(socket, name, cookie)
        client.welcome = await client.expect("welcome")
        return client


Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@contextlib.asynccontextmanager
async def raw_connection(lobby: Lobby) -> AsyncIterator[Stream]:
    """A raw TCP connection to the lobby, for bytes no client library would send.

    Closed on the way out, even if the test fails.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", lobby.live.port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait for a condition on server state (same process, same loop)."""
    async with asyncio.timeout(timeout):
        # Server state has no event to wait on; a short poll is still a wait on the condition.
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def csrf_from(html: str) -> str:
    match = re.search(r'name="csrf_token"\s+value="([^"]+)"', html) or re.search(
        r'value="([^"]+)"\s+name="csrf_token"', html
    )
    assert match, "no csrf_token in the page"
    return match.group(1)


class Client:
    """A real `websockets` client with small helpers for the lobby protocol."""

    def __init__(self, socket: websockets.ClientConnection, name: str, cookie: str) -> None:
        self.socket = socket
        self.name = name
        self.cookie = cookie
        self.welcome: dict[str, Any] = {}
        self.backlog: list[dict[str, Any]] = []  # frames skipped by `until`, in order
        self._ref = 0

    async def send(self, frame: dict[str, Any] | str) -> None:
        await self.socket.send(frame if isinstance(frame, str) else json.dumps(frame))

    async def request(self, frame: dict[str, Any]) -> int:
        self._ref += 1
        await self.send({**frame, "ref": self._ref})
        return self._ref

    async def recv(self, timeout: float = 5.0) -> dict[str, Any]:
        if self.backlog:
            return self.backlog.pop(0)
        frame = await asyncio.wait_for(self.socket.recv(), timeout)
        message: dict[str, Any] = json.loads(frame)
        return message

    async def expect(self, kind: str, timeout: float = 5.0) -> dict[str, Any]:
        message = await self.recv(timeout)
        assert message["type"] == kind, message
        return message

    async def join(self, room: str, nickname: str | None = None) -> dict[str, Any]:
        """Join and return the `token` reply (the `joined` broadcast stays queued)."""
        ref = await self.request({"type": "join", "room": room, "nickname": nickname or self.name})
        reply = await self.until("token")
        assert reply["ref"] == ref
        # An OpenVidu token is a URL: its `token=` part alone is secret too.
        token = reply.get("token") or ""
        SECRETS.register(token, token.rpartition("token=")[2], reply["resume_key"])
        return reply

    async def until(self, kind: str, timeout: float = 5.0) -> dict[str, Any]:
        """The next frame of type `kind`; other frames are kept for later `recv`s."""
        skipped: list[dict[str, Any]] = []
        while (message := await self.recv(timeout))["type"] != kind:
            assert message["type"] != "error", message
            skipped.append(message)
        self.backlog[:0] = skipped
        return message

    async def nothing(self, within: float = 0.3) -> None:
        """Assert that no frame arrives within `within` seconds."""
        assert not self.backlog, self.backlog
        try:
            frame = await asyncio.wait_for(self.socket.recv(), within)
        except TimeoutError:
            return
        pytest.fail(f"unexpected frame {frame!r}")

    async def close_code(self, timeout: float = 5.0) -> int | None:
        """Read (and drop) frames until the server closes; its close code."""
        try:
            async with asyncio.timeout(timeout):
                async for _ in self.socket:
                    pass
        except ConnectionClosed:
            pass
        return self.socket.close_code

    async def close(self) -> None:
        await self.socket.close()


LobbyFactory = Callable[..., Any]


@pytest.fixture
async def make_lobby(standin: OpenViduStandin) -> AsyncIterator[LobbyFactory]:
    """Start lobby servers with test settings (overridable) against the stand-in.

    `backend=` passes a media back end in; otherwise the one `media=` names (OpenVidu,
    at the stand-in, unless `media="p2p"`).
    """
    started: list[tuple[LiveServer, Any]] = []

    async def start(**overrides: Any) -> Lobby:
        backend = overrides.pop("backend", None)
        users = overrides.pop("users", None) or make_users()
        throttle = overrides.pop("login_throttle", None)
        settings = test_settings(standin, **overrides)
        app = create_app(
            settings,
            users=users,
            media=backend or media_backend(settings),
            login_throttle=throttle,
        )
        # Quiet unless the test asks for a level (`log_level=`).
        quiet = replace(
            settings, log_level=settings.log_level if "log_level" in overrides else "warning"
        )
        live = LiveServer(config=uvicorn_config(app, quiet))
        await live.__aenter__()
        started.append((live, app))
        return Lobby(live, app, settings)

    yield start
    for live, _ in reversed(started):
        await live.__aexit__(None, None, None)


@pytest.fixture
async def lobby(make_lobby: LobbyFactory) -> Lobby:
    server: Lobby = await make_lobby()
    return server
