"""The SQLite database: one connection, the schema, and its migrations.

`connect` opens the file (or `:memory:`) with WAL journaling, foreign keys on and
a busy timeout, then brings the schema up to date. The schema version lives in
SQLite's `user_version` pragma; `MIGRATIONS[i]` moves a database from version
`i` to `i + 1`, so a new column is a new tuple at the end, never an edit.

The server shares one connection between the event loop thread and the worker
threads that run argon2, so the connection is opened with
`check_same_thread=False` and in autocommit mode, and every write goes through
`Database.write` or `Database.transaction`, which hold one lock: without it a
statement from one thread could land inside another thread's open transaction
and be committed or rolled back with it. Reads take no lock; SQLite serializes
calls on a connection by itself.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

BUSY_TIMEOUT = 5.0  # seconds to wait for another process (e.g. `lobby users`) to finish writing

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: users and their login sessions.
    (
        """
        CREATE TABLE IF NOT EXISTS users (
            name TEXT PRIMARY KEY,
            role TEXT NOT NULL CHECK (role IN ('PUBLISHER', 'SUBSCRIBER', 'MODERATOR')),
            password_hash TEXT NOT NULL,
            demo INTEGER NOT NULL DEFAULT 0,
            created_at REAL,
            updated_at REAL
        )
        """,
        """
        CREATE TABLE IF NOT EXISTS sessions (
            id TEXT PRIMARY KEY,
            user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL
        )
        """,
        # Deleting a user or changing a password deletes by user; purging, by expiry.
        "CREATE INDEX IF NOT EXISTS sessions_user ON sessions(user)",
        "CREATE INDEX IF NOT EXISTS sessions_expires_at ON sessions(expires_at)",
    ),
    # 2: the participants of the rooms, so a restart can give them back (lobby.roster).
    (
        """
        CREATE TABLE IF NOT EXISTS participants (
            id TEXT PRIMARY KEY,
            room TEXT NOT NULL,
            user TEXT NOT NULL,
            nickname TEXT NOT NULL,
            role TEXT NOT NULL,
            resume_key TEXT NOT NULL UNIQUE,
            connection_id TEXT NOT NULL,
            joined_at REAL NOT NULL
        )
        """,
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


class SchemaError(RuntimeError):
    """The database was written by a newer lobby than this one."""


class Database(sqlite3.Connection):
    """A connection shared between threads, with the lock that keeps their writes apart."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lock = threading.Lock()

    def write(self, sql: str, params: tuple[object, ...] = ()) -> sqlite3.Cursor:
        """Run one writing statement; autocommit makes it its own transaction."""
        with self.lock:
            return self.execute(sql, params)

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        """Run several statements atomically: committed together or not at all."""
        with self.lock:
            # IMMEDIATE takes the write lock now, so another process cannot slip a
            # write in between our reads and writes.
            self.execute("BEGIN IMMEDIATE")
            try:
                yield self
            except BaseException:
                self.execute("ROLLBACK")
                raise
            self.execute("COMMIT")


def connect(path: str) -> Database:
    """Open (creating if needed) the database at `path` and migrate its schema."""
    db = sqlite3.connect(
        path,
        timeout=BUSY_TIMEOUT,
        isolation_level=None,
        check_same_thread=False,
        factory=Database,
    )
    try:
        db.execute("PRAGMA foreign_keys = ON")  # per connection; cascades depend on it
        db.execute("PRAGMA journal_mode = WAL")  # readers never block the writer
        db.execute("PRAGMA synchronous = NORMAL")  # durable enough with WAL, far fewer fsyncs
        migrate(db)
    except BaseException:
        db.close()
        raise
    return db


def schema_version(db: sqlite3.Connection) -> int:
    """The version stored in the database's `user_version` pragma."""
    version: int = db.execute("PRAGMA user_version").fetchone()[0]
    return version


def migrate(db: Database) -> None:
    """Apply the migrations `db` has not seen yet; a no-op when it is current."""
    if schema_version(db) == SCHEMA_VERSION:
        return
    with db.transaction():
        # Read again under the write lock: another process may have migrated meanwhile.
        version = schema_version(db)
        if version > SCHEMA_VERSION:
            raise SchemaError(
                f"the database has schema version {version}, but this lobby knows only up to "
                f"{SCHEMA_VERSION}; upgrade lobby"
            )
        for statements in MIGRATIONS[version:]:
            for statement in statements:
                db.execute(statement)
        # PRAGMA takes no bound parameters; the value is our own integer.
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
