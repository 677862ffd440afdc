"""Server-side login sessions: a random id in the cookie, a row in `sessions`.

A session lasts `ttl` seconds from login. It ends early when it is deleted
(logout), when its user is removed (the foreign key cascades) or when its
user's password changes (`UserStore.set_password`).

The table stores a SHA-256 digest of each id, never the id itself: someone who
reads the database file (a backup, a stray copy) cannot use what they find to
log in. The id has 256 random bits, so an unsalted fast hash is enough.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable, Iterable

from lobby.store.db import Database
from lobby.store.users import User


def _key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def _name(user: User | str) -> str:
    return user if isinstance(user, str) else user.name


class SessionStore:
    """Login sessions in the `sessions` table, expiring `ttl` seconds after creation."""

    def __init__(self, db: Database, *, ttl: float, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._ttl = ttl
        self._clock = clock

    def create(self, user: User | str) -> str:
        """Start a session for an existing user; returns the id for the cookie."""
        session_id = secrets.token_urlsafe(32)
        now = self._clock()
        self._db.write(
            'INSERT INTO sessions (id, "user", created_at, expires_at) VALUES (?, ?, ?, ?)',
            (_key(session_id), _name(user), now, now + self._ttl),
        )
        return session_id

    def get(self, session_id: str) -> User | None:
        """The session's user, or None if the session is unknown or expired."""
        key = _key(session_id)
        # One primary-key lookup: this runs on every socket connect.
        row = self._db.execute(
            "SELECT users.name, users.role, sessions.expires_at FROM sessions"
            ' JOIN users ON users.name = sessions."user" WHERE sessions.id = ?',
            (key,),
        ).fetchone()
        if row is None:
            return None
        if row[2] <= self._clock():
            self._db.write("DELETE FROM sessions WHERE id = ?", (key,))
            return None
        return User(row[0], row[1])

    def delete(self, session_id: str) -> None:
        """End one session (logout); unknown ids are ignored."""
        self._db.write("DELETE FROM sessions WHERE id = ?", (_key(session_id),))

    def delete_user(self, user: User | str) -> None:
        """End every session of `user`."""
        self._db.write('DELETE FROM sessions WHERE "user" = ?', (_name(user),))

    def alive(self, session_ids: Iterable[str]) -> set[str]:
        """Which of `session_ids` are still valid (not logged out, revoked or expired)."""
        by_key = {_key(i): i for i in session_ids}
        keys, now = list(by_key), self._clock()
        found: set[str] = set()
        for start in range(0, len(keys), 500):  # SQLite caps bound parameters (999 before 3.32)
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                # Only "?" placeholders are formatted in; the values stay bound parameters.
                f"SELECT id FROM sessions WHERE expires_at > ? AND id IN ({marks})",
                (now, *chunk),
            )
            found.update(by_key[row[0]] for row in rows)
        return found

    def changed_elsewhere(self) -> int:
        """A number that changes whenever another connection (another process) commits."""
        return self._db.changed_elsewhere()

    def purge_expired(self) -> int:
        """Delete expired sessions; returns how many. Call it now and then."""
        return self._db.write(
            "DELETE FROM sessions WHERE expires_at <= ?", (self._clock(),)
        ).rowcount
