"""PostgreSQL (`lobby.store.postgres`) against a real server: migrations, timeouts, outages.

What the stores do is tested on both databases in test_users.py and test_sessions.py;
here is what only PostgreSQL has: its migrations (from empty, again, two at once, too
new), its timeouts, and losing the server, in the store and in a running lobby.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import psycopg
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from lobby.handler import RequestHandler
from lobby.hub import Hub
from lobby.media.p2p import PeerToPeerBackend
from lobby.store import postgres
from lobby.store.db import SCHEMA_VERSION, UNAVAILABLE, SchemaError, Unavailable, connect
from lobby.store.postgres import PostgresDatabase, schema_version
from lobby.store.sessions import SessionStore
from lobby.store.users import User, UserStore
from lobby.watch import watch_sessions
from tests.conftest import CHEAP_HASHER, PASSWORD, LobbyFactory, csrf_from, until
from tests.fakes import fake_socket
from tests.postgres import PostgresServer


@pytest.fixture
def url(postgres: PostgresServer) -> str:
    return postgres.fresh_database()


@pytest.fixture
def open_users() -> Iterator[Callable[[str], UserStore]]:
    """Open an instance's own connection to a database; all closed after the lobbies stopped
    (ask for this fixture before `make_lobby`, which then stops first)."""
    opened: list[UserStore] = []

    def open_(url: str) -> UserStore:
        opened.append(UserStore(connect(url), CHEAP_HASHER))
        return opened[-1]

    yield open_
    for store in opened:
        store.db.close()


@pytest.fixture
def raw(url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A plain connection beside the lobby's, to look at what it did."""
    with psycopg.connect(url, autocommit=True) as conn:
        yield conn


# --- migrations ---------------------------------------------------------------------------


def test_migrating_an_empty_database_creates_every_table_and_records_the_version(
    url: str, raw: psycopg.Connection[tuple[object, ...]]
) -> None:
    connect(url).close()
    tables = {
        row[0] for row in raw.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    }
    assert tables == {"users", "sessions", "participants", "audit", "schema_version"}
    assert raw.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    # Times are 8-byte floats: PostgreSQL's REAL (4 bytes) would round them to minutes.
    columns = raw.execute(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_name = 'sessions'"
    )
    types = {row[0]: row[1] for row in columns}
    assert types["expires_at"] == "double precision"


def test_a_second_start_changes_nothing(
    url: str, raw: psycopg.Connection[tuple[object, ...]]
) -> None:
    first = connect(url)
    UserStore(first, CHEAP_HASHER).add("alice", "PUBLISHER", "pw")
    first.close()
    row_version = raw.execute("SELECT xmin::text FROM schema_version").fetchone()
    second = postgres.connect(url)
    try:
        assert schema_version(second) == SCHEMA_VERSION
        assert UserStore(second, CHEAP_HASHER).get("alice") == User("alice", "PUBLISHER")
    finally:
        second.close()
    # The version row was not even rewritten.
    assert raw.execute("SELECT xmin::text FROM schema_version").fetchone() == row_version


def test_two_instances_starting_at_once_take_turns(
    url: str, raw: psycopg.Connection[tuple[object, ...]]
) -> None:
    """Both wait on the advisory lock (held here), then one migrates and the other finds it done."""
    opened: list[object] = []

    def start() -> None:
        try:
            opened.append(connect(url))
        except BaseException as exc:  # reported below, not lost in the thread
            opened.append(exc)

    with raw.transaction():
        raw.execute(f"SELECT pg_advisory_xact_lock({postgres.MIGRATION_LOCK})")
        threads = [threading.Thread(target=start) for _ in range(2)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while waiting_for_the_lock(raw) < 2:  # both are in their migration, blocked
            assert time.monotonic() < deadline, "the migrators never waited for the lock"
            time.sleep(0.01)
    for thread in threads:
        thread.join(timeout=10)
    assert all(isinstance(db, PostgresDatabase) for db in opened), opened
    assert raw.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    for db in opened:
        assert isinstance(db, PostgresDatabase)
        db.close()


def waiting_for_the_lock(raw: psycopg.Connection[tuple[object, ...]]) -> int:
    row = raw.execute(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
    ).fetchone()
    assert row is not None
    return int(str(row[0]))


def test_a_newer_schema_is_refused_in_one_sentence(
    url: str, raw: psycopg.Connection[tuple[object, ...]]
) -> None:
    connect(url).close()
    raw.execute("UPDATE schema_version SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(SchemaError) as refused:
        connect(url)
    assert str(refused.value) == (
        f"the database has schema version {SCHEMA_VERSION + 1}, but this lobby knows only up"
        f" to {SCHEMA_VERSION}; upgrade lobby"
    )


# --- statements ---------------------------------------------------------------------------


def test_placeholders_are_translated_and_percent_signs_kept(url: str) -> None:
    db = connect(url)
    try:
        assert db.execute("SELECT ? || '%'", ("100",)).fetchone() == ("100%",)
    finally:
        db.close()


def test_times_keep_their_fractions(url: str) -> None:
    db = connect(url)
    try:
        UserStore(db, CHEAP_HASHER).add("alice", "PUBLISHER", "pw")
        sessions = SessionStore(db, ttl=60, clock=lambda: 1_765_000_000.125)
        sessions.create("alice")
        assert db.execute("SELECT created_at FROM sessions").fetchone() == (1_765_000_000.125,)
    finally:
        db.close()


def test_a_statement_that_hangs_is_cut_off_and_the_connection_kept(url: str) -> None:
    db = connect(url)
    try:
        started = time.monotonic()
        with pytest.raises(Unavailable, match="statement timeout"):
            db.execute("SELECT pg_sleep(10)")
        assert time.monotonic() - started < postgres.STATEMENT_TIMEOUT / 1000 + 1
        assert db.execute("SELECT 1").fetchone() == (1,)
    finally:
        db.close()


# --- losing the server --------------------------------------------------------------------


def test_a_lost_server_fails_calls_at_once_and_is_reconnected_to_when_back(
    own_postgres: PostgresServer, caplog: pytest.LogCaptureFixture
) -> None:
    url = own_postgres.fresh_database()
    db = connect(url)
    users = UserStore(db, CHEAP_HASHER)
    users.add("alice", "PUBLISHER", "pw")
    try:
        with caplog.at_level(logging.WARNING, logger="lobby.store"):
            own_postgres.stop(immediate=True)
            for _ in range(3):
                started = time.monotonic()
                with pytest.raises(Unavailable):
                    users.get("alice")
                assert time.monotonic() - started < 0.5
            own_postgres.start()
            deadline = time.monotonic() + 10
            while True:
                try:
                    assert users.get("alice") == User("alice", "PUBLISHER")
                    break
                except Unavailable:
                    assert time.monotonic() < deadline, "never reconnected"
                    time.sleep(0.05)
        messages = [r.getMessage() for r in caplog.records]
        assert messages[0].startswith("PostgreSQL is unreachable: ")
        assert messages[-1] == "PostgreSQL is reachable again"
        assert len(messages) == 2  # the loss and the return, once each
    finally:
        db.close()


async def test_the_watcher_keeps_every_socket_while_the_database_is_down(
    own_postgres: PostgresServer,
) -> None:
    url = own_postgres.fresh_database()
    db = connect(url)
    UserStore(db, CHEAP_HASHER).add("alice", "PUBLISHER", "pw")
    sessions = CountingSessions(db, ttl=3600)
    ids = [sessions.create("alice") for _ in range(3)]
    hub = Hub()
    handler = RequestHandler(PeerToPeerBackend(), hub, grace=1.0)
    sockets = [fake_socket("alice", session_id=session_id) for session_id in ids]
    for socket in sockets:
        handler.connect(socket.conn)
    own_postgres.stop(immediate=True)
    watcher = asyncio.create_task(
        watch_sessions(sessions, hub, handler, interval=0.01, full_every=0)
    )
    try:
        await until(lambda: sessions.asked >= 20)  # it looked many times and found nothing
        assert [s.closer.closes for s in sockets] == [[], [], []]
        own_postgres.start()
        with psycopg.connect(url, autocommit=True) as other:  # a logout on another instance
            other.execute("DELETE FROM sessions WHERE id = %s", (_digest(ids[0]),))
        await until(lambda: bool(sockets[0].closer.closes), timeout=10)
        assert [s.closer.closes for s in sockets] == [[(4001, "session ended")], [], []]
    finally:
        watcher.cancel()
        db.close()


class CountingSessions(SessionStore):
    """Counts the watcher's looks at the database (whether or not it answered)."""

    asked = 0

    def changed_elsewhere(self) -> int:
        self.asked += 1
        return super().changed_elsewhere()


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


async def test_a_lobby_whose_database_goes_away_answers_503_and_keeps_open_sockets(
    own_postgres: PostgresServer, open_users: Callable[[str], UserStore], make_lobby: LobbyFactory
) -> None:
    users = open_users(own_postgres.fresh_database())
    for name in ("alice", "bob"):
        users.add(name, "PUBLISHER", PASSWORD)
    lobby = await make_lobby(users=users)
    assert lobby.state.handler.roster is None  # per instance: off with a shared database
    alice = await lobby.client("alice")
    bob_cookie = await lobby.login("bob")

    own_postgres.stop(immediate=True)
    async with httpx.AsyncClient(base_url=lobby.http) as http:
        form = await http.get("/")
        reply = await http.post(
            "/login",
            data={"user": "alice", "pass": PASSWORD, "csrf_token": csrf_from(form.text)},
        )
    assert reply.status_code == 503
    assert UNAVAILABLE in reply.text
    assert reply.headers["retry-after"] == "5"
    # A page that needs the session says the same, in the login form.
    async with httpx.AsyncClient(base_url=lobby.http, cookies={"lobby_session": bob_cookie}) as h:
        page = await h.get("/lobby")
    assert (page.status_code, UNAVAILABLE in page.text) == (503, True)
    with pytest.raises(InvalidStatus) as refused:
        await websockets.connect(
            lobby.ws_url,
            origin=websockets.Origin(lobby.http),
            additional_headers={"Cookie": f"lobby_session={bob_cookie}"},
        )
    assert refused.value.response.status_code == 503
    assert refused.value.response.body == UNAVAILABLE.encode()

    # The open socket lives on: the watcher (every second) closes nothing it cannot check.
    await alice.nothing(within=2.5)
    await alice.send({"type": "ping", "ref": 1})
    assert (await alice.expect("pong"))["ref"] == 1

    own_postgres.start()
    deadline = time.monotonic() + 10
    while True:  # the first calls may still find it reconnecting
        try:
            await lobby.login("alice")
            break
        except AssertionError:
            assert time.monotonic() < deadline, "logins never worked again"
            await asyncio.sleep(0.05)
    bob = await lobby.client("bob", cookie=bob_cookie)  # the session survived the outage
    await bob.close()
    await alice.close()


# --- several instances --------------------------------------------------------------------


async def test_two_instances_share_logins_and_a_logout_on_one_closes_sockets_on_the_other(
    url: str, open_users: Callable[[str], UserStore], make_lobby: LobbyFactory
) -> None:
    first, second = open_users(url), open_users(url)
    first.add("alice", "PUBLISHER", PASSWORD)
    one, other = await make_lobby(users=first), await make_lobby(users=second)
    cookie = await one.login("alice")
    elsewhere = await other.client("alice", cookie=cookie)  # logged in on one, valid on other
    async with httpx.AsyncClient(base_url=one.http, cookies={"lobby_session": cookie}) as http:
        page = await http.get("/lobby")
        reply = await http.post("/logout", data={"csrf_token": csrf_from(page.text)})
        assert reply.status_code == 303
    # The other instance's watcher sees the write within a second or so and closes the socket.
    assert await elsewhere.close_code(timeout=10) == 4001
    with pytest.raises(InvalidStatus) as refused:
        await other.client("alice", cookie=cookie)
    assert refused.value.response.status_code == 403
