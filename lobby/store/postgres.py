"""PostgreSQL (`LOBBY_DATABASE=postgresql://…`): the database instances on several machines share.

One psycopg 3 connection in autocommit mode, shared like SQLite's between the
event loop and argon2's worker threads; a re-entrant lock keeps one thread's
statements out of another's transaction (psycopg would otherwise run them in it).

Why the calls stay synchronous, on the event loop, as SQLite's do: what runs on
the loop is a primary-key lookup per page or socket handshake and one insert
per login. Measured on loopback here (PostgreSQL 15, psycopg 3.3, median / p99):
a session lookup 0.08 / 0.18 ms, a login's insert 0.11 / 0.21 ms, `SELECT 1`
0.04 / 0.11 ms; the same lookup through `asyncio.to_thread` 0.25 / 1.7 ms. A
thread hop costs more than the round trip it would hide, and would make every
caller async; a LAN adds its own round trip (typically a few tenths of a
millisecond), still far less than an argon2 check. What keeps a sick database
from stalling the loop is bounds: a statement gives up after `STATEMENT_TIMEOUT`
(server side, lock waits too), an unanswered send after `TCP_USER_TIMEOUT`; and
once the connection is lost, connecting again (`CONNECT_TIMEOUT`) happens in a
thread of its own, every `RETRY_AFTER` at most, while every call fails at once.

Failures: an unreachable server, a dropped connection or a timeout raise
`Unavailable` (a broken connection is dropped and a thread connects again,
so the lobby recovers by itself when PostgreSQL is back). Other errors (a
constraint violated) stay psycopg's.

Migrations: the version lives in a one-row `schema_version` table; `migrate`
applies `MIGRATIONS` in one transaction under an advisory lock, so two
instances starting at once take turns and the second finds nothing to do.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import TupleRow

from lobby.store.db import (
    SCHEMA_VERSION,
    Dialect,
    Rows,
    Unavailable,
    check_version,
    migration_statements,
)

CONNECT_TIMEOUT = 2  # seconds; libpq's smallest
STATEMENT_TIMEOUT = 1000  # ms, lock waits included; ours take well under a millisecond
TCP_USER_TIMEOUT = 2000  # ms: a server that stops acknowledging (host gone) counts as down
RETRY_AFTER = 1.0  # seconds between attempts to connect again
MIGRATION_LOCK = 7_955_998_531_425_612_897  # an advisory lock key of our own ("lobby-db")

log = logging.getLogger("lobby.store")


@functools.lru_cache(maxsize=256)
def _placeholders(sql: str) -> str:
    """Our `?` placeholders as psycopg's `%s` (and a literal `%` escaped)."""
    return sql.replace("%", "%%").replace("?", "%s")


def _open(url: str) -> psycopg.Connection[TupleRow]:
    conn = psycopg.connect(
        url,
        autocommit=True,
        connect_timeout=CONNECT_TIMEOUT,
        tcp_user_timeout=TCP_USER_TIMEOUT,
        keepalives=1,
        keepalives_idle=10,
        keepalives_interval=2,
        keepalives_count=3,
        application_name="lobby",
    )
    # Set here rather than through `options`, which would replace any the URL carries.
    conn.execute(
        "SELECT set_config('statement_timeout', %s, false), set_config('lock_timeout', %s, false)",
        (str(STATEMENT_TIMEOUT), str(STATEMENT_TIMEOUT)),
    )
    return conn


class PostgresDatabase:
    """A PostgreSQL connection that reconnects by itself; see the module docstring."""

    dialect: Dialect = "postgresql"

    def __init__(self, url: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._url = url
        self._clock = clock
        self._conn: psycopg.Connection[TupleRow] | None = None
        self._retry_at = 0.0
        self._down = False  # whether it was lost: log the loss and the return once each
        self._opened = False  # whether a first connection was made (else: no reconnecting)
        self._connecting = False  # whether a thread is connecting again
        self._closed = False
        self.lock = threading.RLock()

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> Rows:
        with self.lock, self._failures():
            return self._connection().execute(_placeholders(sql), params)

    def write(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        """Run one writing statement; autocommit makes it its own transaction."""
        return self.execute(sql, params)

    @contextmanager
    def transaction(self) -> Iterator[PostgresDatabase]:
        with self.lock, self._failures(), self._connection().transaction():
            yield self

    def changed_elsewhere(self) -> int:
        """The next transaction id: it moves whenever a transaction writes anywhere in the
        cluster (our own writes too: a spare check, never a missed one)."""
        row = self.execute("SELECT pg_snapshot_xmax(pg_current_snapshot())::text").fetchone()
        return int(row[0])

    def close(self) -> None:
        with self.lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _connection(self) -> psycopg.Connection[TupleRow]:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        self._conn = None
        if not self._opened:  # the first time (start-up, the CLI): at once, in this thread
            self._conn, self._opened = _open(self._url), True
            return self._conn
        self._reconnect()
        raise Unavailable("PostgreSQL is unreachable; reconnecting")

    def _reconnect(self) -> None:
        """Connect again in a thread of its own: a host that drops packets would hold the
        caller (the event loop) for `CONNECT_TIMEOUT`, at every try."""
        if self._connecting or self._clock() < self._retry_at:
            return
        self._connecting = True
        threading.Thread(target=self._connect_again, name="lobby-postgres", daemon=True).start()

    def _connect_again(self) -> None:
        try:
            conn: psycopg.Connection[TupleRow] | None = _open(self._url)
        except psycopg.Error as exc:
            conn = None
            log.debug("PostgreSQL is still unreachable: %s", _first_line(exc))
        with self.lock:
            self._connecting = False
            if conn is None:
                self._retry_at = self._clock() + RETRY_AFTER
            elif self._closed:
                conn.close()
            else:
                self._conn, self._down = conn, False
                log.warning("PostgreSQL is reachable again")

    @contextmanager
    def _failures(self) -> Iterator[None]:
        """psycopg's connection-level errors as `Unavailable`; a broken connection dropped."""
        try:
            yield
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            reason = _first_line(exc)  # names host and port, never the password
            if self._conn is not None and not self._conn.closed:
                # Connected, but the statement failed (timed out): the connection stays.
                log.warning("PostgreSQL did not answer in time: %s", reason)
                raise Unavailable(f"PostgreSQL did not answer in time: {reason}") from exc
            self._conn = None
            if self._opened:
                self._reconnect()
            # A first connection that fails is its caller's to report (`lobby serve` and
            # the CLI say it in one sentence); a lost one is logged here, once.
            if self._opened and not self._down:
                self._down = True
                log.warning("PostgreSQL is unreachable: %s", reason)
            raise Unavailable(f"PostgreSQL is unreachable: {reason}") from exc


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def connect(url: str) -> PostgresDatabase:
    """Connect to the database at `url` and migrate its schema."""
    db = PostgresDatabase(url)
    try:
        migrate(db)
    except BaseException:
        db.close()
        raise
    return db


def schema_version(db: PostgresDatabase) -> int:
    """The version in the `schema_version` table; 0 before the first migration."""
    table = db.execute("SELECT to_regclass('schema_version')").fetchone()[0]
    if table is None:
        return 0
    row = db.execute("SELECT version FROM schema_version").fetchone()
    return 0 if row is None else int(row[0])


def migrate(db: PostgresDatabase) -> None:
    """Apply the migrations `db` has not seen yet; a no-op when it is current."""
    with db.transaction():
        # Held until commit: a second instance starting now waits here, then reads
        # the version the first one wrote, so the steps never run twice.
        # No timeouts here: waiting for the other migrator, or a long step, is expected.
        db.execute("SET LOCAL statement_timeout = 0")
        db.execute("SET LOCAL lock_timeout = 0")
        db.execute(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
        version = schema_version(db)
        check_version(version)
        if version == SCHEMA_VERSION:
            return
        for statement in migration_statements("postgresql", version):
            db.execute(statement)
        db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
        db.execute("DELETE FROM schema_version")
        db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
