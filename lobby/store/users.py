"""The user store: accounts, roles and argon2 password hashes (in SQLite or PostgreSQL).

Passwords are hashed with argon2id (argon2-cffi's `PasswordHasher`, default
parameters in production; tests inject a cheap one). Hashing is slow on
purpose, so the server calls `add`, `verify` and `set_password` from a worker
thread; the database lock is held only for the SQL, never while hashing.

Exceptions: `UserError` (a `ValueError`) for anything a caller asked wrongly:
a bad name or role, an empty password, a name already taken. Its `message` is
a sentence fit for a user; `code` is stable for programs.
"""

from __future__ import annotations

import builtins
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from lobby.rules.grants import ROLES
from lobby.store.db import Database

NAME_PATTERN = re.compile(r"[A-Za-z0-9_.-]{1,32}")
DEMO_PASSWORD = "pass"
DEMO_USERS: tuple[tuple[str, str], ...] = (
    ("publisher1", "PUBLISHER"),
    ("publisher2", "PUBLISHER"),
    ("subscriber", "SUBSCRIBER"),
)


@dataclass(frozen=True, slots=True)
class User:
    """Someone who can log in, and what they may do in a call."""

    name: str
    role: str


@dataclass(frozen=True, slots=True)
class Account:
    """A user as an administrator sees it, with the bookkeeping `User` leaves out."""

    name: str
    role: str
    demo: bool


class UserError(ValueError):
    """A request the store refuses; `message` says why in a sentence."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def check_name(name: str) -> str:
    """Return `name` if it is a valid user name, else raise `UserError`."""
    if not NAME_PATTERN.fullmatch(name):
        raise UserError(
            "bad_name",
            f"user name {name!r} must be 1 to 32 letters, digits, '_', '.' or '-'",
        )
    return name


def check_role(role: str) -> str:
    """Return `role` if it is one of `ROLES`, else raise `UserError`."""
    if role not in ROLES:
        raise UserError("bad_role", f"role {role!r} must be one of {', '.join(ROLES)}")
    return role


def _check_password(password: str) -> str:
    if not password:
        raise UserError("empty_password", "the password must not be empty")
    return password


class UserStore:
    """Users in the `users` table; deleting one (or its password) ends its sessions."""

    def __init__(
        self,
        db: Database,
        hasher: PasswordHasher | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._hasher = hasher or PasswordHasher()
        self._clock = clock
        self._dummy_hash: str | None = None

    @property
    def db(self) -> Database:
        """The database the users live in; the login sessions live there too."""
        return self._db

    def add(self, name: str, role: str, password: str, *, demo: bool = False) -> User:
        """Create a user; `UserError` if the name is bad or taken, the role or password bad."""
        check_name(name)
        check_role(role)
        password_hash = self._hasher.hash(_check_password(password))
        now = self._clock()
        cursor = self._db.write(
            "INSERT INTO users (name, role, password_hash, demo, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO NOTHING",
            (name, role, password_hash, int(demo), now, now),
        )
        if cursor.rowcount == 0:
            raise UserError("user_exists", f"a user named {name!r} already exists")
        return User(name, role)

    def get(self, name: str) -> User | None:
        row = self._db.execute("SELECT name, role FROM users WHERE name = ?", (name,)).fetchone()
        return None if row is None else User(row[0], row[1])

    def verify(self, name: str, password: str) -> User | None:
        """The user if `password` is theirs, else None, whether or not `name` exists."""
        # Compute the dummy before looking the user up, so even the first call
        # costs the same for known and unknown names.
        dummy = self._dummy()
        row = self._db.execute(
            "SELECT name, role, password_hash FROM users WHERE name = ?", (name,)
        ).fetchone()
        # An unknown name still costs one argon2 verify: response time must not
        # reveal which names exist.
        stored: str = dummy if row is None else row[2]
        try:
            self._hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        if row is None:
            return None  # unreachable in practice: nobody knows the dummy's password
        if self._hasher.check_needs_rehash(stored):
            # Parameters were raised since this hash was made; upgrade it now that
            # we hold the password. Not `set_password`: this must not log anyone out.
            self._db.write(
                "UPDATE users SET password_hash = ? WHERE name = ? AND password_hash = ?",
                (self._hasher.hash(password), name, stored),
            )
        return User(row[0], row[1])

    def accounts(self) -> builtins.list[Account]:
        """Every user with its demo flag, by name."""
        rows = self._db.execute("SELECT name, role, demo FROM users ORDER BY name").fetchall()
        return [Account(name, role, bool(demo)) for name, role, demo in rows]

    def list(self) -> builtins.list[User]:
        """Every user, by name."""
        return [User(a.name, a.role) for a in self.accounts()]

    def remove(self, name: str) -> bool:
        """Delete the user and (by cascade) its sessions; False if there was none."""
        return self._db.write("DELETE FROM users WHERE name = ?", (name,)).rowcount > 0

    def set_password(self, name: str, password: str) -> bool:
        """Change the password and log the user out everywhere; False if no such user."""
        password_hash = self._hasher.hash(_check_password(password))
        with self._db.transaction() as db:
            changed = db.execute(
                "UPDATE users SET password_hash = ?, updated_at = ? WHERE name = ?",
                (password_hash, self._clock(), name),
            ).rowcount
            db.execute('DELETE FROM sessions WHERE "user" = ?', (name,))
        return changed > 0

    def ensure_demo_users(self) -> builtins.list[User]:
        """Create (or reset) the demo users, all with password `pass`.

        A real account that happens to bear a demo name is left alone: demo mode
        must never reset a real password, nor mark the account for deletion by
        `remove_demo_users`. Returns the demo users that are in place.
        """
        ensured = []
        for name, role in DEMO_USERS:
            now = self._clock()
            cursor = self._db.write(
                "INSERT INTO users (name, role, password_hash, demo, created_at, updated_at)"
                " VALUES (?, ?, ?, 1, ?, ?) ON CONFLICT (name) DO UPDATE SET"
                " role = excluded.role, password_hash = excluded.password_hash,"
                " updated_at = excluded.updated_at WHERE users.demo = 1",
                (name, role, self._hasher.hash(DEMO_PASSWORD), now, now),
            )
            if cursor.rowcount > 0:
                ensured.append(User(name, role))
        return ensured

    def remove_demo_users(self) -> int:
        """Delete every demo user (and their sessions); returns how many there were."""
        return self._db.write("DELETE FROM users WHERE demo = 1").rowcount

    def _dummy(self) -> str:
        if self._dummy_hash is None:
            # Made with our own hasher so verifying against it costs what a real one does.
            self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))
        return self._dummy_hash
