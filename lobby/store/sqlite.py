"""The SQLite database (the default): one connection to a file, shared between threads.

`connect` opens the file (or `:memory:`) with WAL journaling, foreign keys on and
a busy timeout, then brings the schema up to date; the version lives in SQLite's
`user_version` pragma. Several instances on one machine may share the file.

The server shares one connection between the event loop thread and the worker
threads that run argon2, so the connection is opened with
`check_same_thread=False` and in autocommit mode, and every write goes through
`write` or `transaction`, which hold one lock: without it a statement from one
thread could land inside another thread's open transaction and be committed or
rolled back with it. Reads take no lock; SQLite serializes calls on a connection
by itself. Calls stay synchronous, on the event loop: a primary-key lookup in a
local file takes microseconds.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from lobby.store.db import SCHEMA_VERSION, Dialect, check_version, migration_statements

BUSY_TIMEOUT = 5.0  # seconds to wait for another process (e.g. `lobby users`) to finish writing


class SQLiteDatabase(sqlite3.Connection):
    """A connection shared between threads, with the lock that keeps their writes apart."""

    dialect: Dialect = "sqlite"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lock = threading.Lock()

    def write(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        """Run one writing statement; autocommit makes it its own transaction."""
        with self.lock:
            return self.execute(sql, params)

    @contextmanager
    def transaction(self) -> Iterator[SQLiteDatabase]:
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

    def changed_elsewhere(self) -> int:
        """`PRAGMA data_version`: it moves when another connection commits, nearly free."""
        return int(self.execute("PRAGMA data_version").fetchone()[0])


def connect(path: str) -> SQLiteDatabase:
    """Open (creating if needed) the database at `path` and migrate its schema."""
    db = sqlite3.connect(
        path,
        timeout=BUSY_TIMEOUT,
        isolation_level=None,
        check_same_thread=False,
        factory=SQLiteDatabase,
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


def migrate(db: SQLiteDatabase) -> None:
    """Apply the migrations `db` has not seen yet; a no-op when it is current."""
    if schema_version(db) == SCHEMA_VERSION:
        return
    with db.transaction():
        # Read again under the write lock: another process may have migrated meanwhile.
        version = schema_version(db)
        check_version(version)
        for statement in migration_statements("sqlite", version):
            db.execute(statement)
        # PRAGMA takes no bound parameters; the value is our own integer.
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
