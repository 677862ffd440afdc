"""The database seam: one interface, SQLite or PostgreSQL behind it, and the schema's migrations.

`connect(LOBBY_DATABASE)` opens a SQLite file (the default; `lobby.store.sqlite`)
or, for a `postgresql://` URL, a PostgreSQL database that several instances on
several machines share (`lobby.store.postgres`), and brings its schema up to date.
The stores (users, sessions, roster, audit) speak to either through `Database`.

The dialects differ in few places, all of them here or in the two modules:

- SQL is written once, with `?` placeholders; the PostgreSQL connection turns
  them into `%s`. Upserts use `INSERT … ON CONFLICT … DO UPDATE`, which both
  speak; `user` is a reserved word in PostgreSQL, so it is always quoted.
- `MIGRATIONS[i]` moves a database from version `i` to `i + 1`, in both; a
  statement's `{float}` is the dialect's 8-byte float (`REAL` in SQLite, which
  is 8 bytes there; `DOUBLE PRECISION` in PostgreSQL, whose `REAL` has 4).
  SQLite keeps the version in `PRAGMA user_version`, PostgreSQL in a
  `schema_version` table. A new column is a new tuple at the end, never an edit.
- `changed_elsewhere()`: a number that moves when another connection writes.

Exceptions: `SchemaError` when the database was written by a newer lobby;
`Unavailable` when it cannot be reached now (PostgreSQL down, unreachable,
timed out), with a sentence fit for a user.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any, Literal, Protocol

Dialect = Literal["sqlite", "postgresql"]
POSTGRES_SCHEMES = ("postgresql://", "postgres://")

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: users and their login sessions.
    (
        """
        CREATE TABLE IF NOT EXISTS users (
            name TEXT PRIMARY KEY,
            role TEXT NOT NULL CHECK (role IN ('PUBLISHER', 'SUBSCRIBER', 'MODERATOR')),
            password_hash TEXT NOT NULL,
            demo INTEGER NOT NULL DEFAULT 0,
            created_at {float},
            updated_at {float}
        )
        """,
        """
        CREATE TABLE IF NOT EXISTS sessions (
            id TEXT PRIMARY KEY,
            "user" TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
            created_at {float} NOT NULL,
            expires_at {float} NOT NULL
        )
        """,
        # Deleting a user or changing a password deletes by user; purging, by expiry.
        'CREATE INDEX IF NOT EXISTS sessions_user ON sessions("user")',
        "CREATE INDEX IF NOT EXISTS sessions_expires_at ON sessions(expires_at)",
    ),
    # 2: the participants of the rooms, so a restart can give them back (lobby.roster).
    # Created in PostgreSQL too, to keep one numbering, though only SQLite uses it (see app.py).
    (
        """
        CREATE TABLE IF NOT EXISTS participants (
            id TEXT PRIMARY KEY,
            room TEXT NOT NULL,
            "user" TEXT NOT NULL,
            nickname TEXT NOT NULL,
            role TEXT NOT NULL,
            resume_key TEXT NOT NULL UNIQUE,
            connection_id TEXT NOT NULL,
            joined_at {float} NOT NULL
        )
        """,
    ),
    # 3: what moderators did (lobby.store.audit): kicks, room closes, locks.
    (
        """
        CREATE TABLE IF NOT EXISTS audit (
            at {float} NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            room TEXT NOT NULL,
            target TEXT NOT NULL,
            reason TEXT NOT NULL
        )
        """,
        "CREATE INDEX IF NOT EXISTS audit_at ON audit(at)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)
FLOAT_TYPES: dict[Dialect, str] = {"sqlite": "REAL", "postgresql": "DOUBLE PRECISION"}
UNAVAILABLE = "The user database is unreachable; try again in a moment."


class SchemaError(RuntimeError):
    """The database was written by a newer lobby than this one."""


class Unavailable(RuntimeError):
    """The database cannot be reached now; `str()` says why, `UNAVAILABLE` says it to users."""


def migration_statements(dialect: Dialect, version: int) -> Iterator[str]:
    """The statements that bring a database at `version` to `SCHEMA_VERSION`, in `dialect`."""
    for statements in MIGRATIONS[version:]:
        for statement in statements:
            yield statement.format(float=FLOAT_TYPES[dialect])


def check_version(version: int) -> None:
    """Refuse a schema newer than this code knows, in one sentence."""
    if version > SCHEMA_VERSION:
        raise SchemaError(
            f"the database has schema version {version}, but this lobby knows only up to "
            f"{SCHEMA_VERSION}; upgrade lobby"
        )


class Rows(Protocol):
    """What a statement returns: its rows (tuples) and how many rows it changed."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Database(Protocol):
    """A connection the stores share between the event loop and argon2's worker threads."""

    @property
    def dialect(self) -> Dialect: ...

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> Rows:
        """Run one statement; a read, or a write inside `transaction()`."""
        ...

    def write(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        """Run one writing statement as its own transaction."""
        ...

    def transaction(self) -> AbstractContextManager[Database]:
        """Run several statements atomically: committed together or not at all."""
        ...

    def changed_elsewhere(self) -> int:
        """A number that changes whenever another connection (another process) commits."""
        ...

    def close(self) -> None: ...


def is_postgres(location: str) -> bool:
    """Whether `LOBBY_DATABASE` names a PostgreSQL database rather than a SQLite file."""
    return location.lower().startswith(POSTGRES_SCHEMES)


def connect(location: str) -> Database:
    """Open the database `LOBBY_DATABASE` names (a SQLite path or a PostgreSQL URL), migrated."""
    # Imported here: each back end imports this module, and SQLite needs no psycopg.
    if is_postgres(location):
        from lobby.store import postgres

        return postgres.connect(location)
    from lobby.store import sqlite

    return sqlite.connect(location)
