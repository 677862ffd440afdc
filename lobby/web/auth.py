"""Who is logged in: session cookies, password checks and CSRF tokens.

The session cookie holds only a random session id; the record lives in SQLite
(`lobby.sessions`), so logging out or removing a user revokes it at once.

CSRF: a logged-in form carries an HMAC of the session id, so it cannot be
forged without the cookie's value. The login form, before any session, uses a
double-submit token: a random value in a SameSite=Strict cookie that the form
must repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
import secrets
from collections.abc import AsyncIterator

from starlette.requests import HTTPConnection
from starlette.responses import Response

from lobby.store.sessions import SessionStore
from lobby.store.users import User, UserStore

SESSION_COOKIE = "lobby_session"
CSRF_COOKIE = "lobby_csrf"


class Auth:
    def __init__(
        self, users: UserStore, sessions: SessionStore, *, secret_key: str, ttl: float
    ) -> None:
        self.users = users
        self.sessions = sessions
        self._key = secret_key.encode()
        self._ttl = ttl
        # argon2 takes ~64 MiB and a core for ~0.2 s: bound how many run at once,
        # or a spray of logins (many names and addresses, so no lockout applies)
        # takes a pool thread's worth of memory each; and bound how many wait.
        self.verifications = Verifications(os.cpu_count() or 1)

    def current(self, conn: HTTPConnection) -> tuple[str, User] | None:
        """The request's session id and user, if it carries a live session."""
        session_id = conn.cookies.get(SESSION_COOKIE)
        if not session_id or len(session_id) > 128:
            return None
        user = self.sessions.get(session_id)
        return None if user is None else (session_id, user)

    async def login(self, name: str, password: str) -> tuple[str, User] | None:
        """Check a password (argon2 runs in a thread: it takes tens of ms) and open a session."""
        async with self.verifications.slot():  # `Busy` when too many wait already
            user = await asyncio.to_thread(self.users.verify, name, password)
        if user is None:
            return None
        return self.sessions.create(user.name), user

    def logout(self, session_id: str) -> None:
        self.sessions.delete(session_id)

    # Cookies

    def set_session_cookie(self, response: Response, session_id: str, *, secure: bool) -> None:
        response.set_cookie(
            SESSION_COOKIE,
            session_id,
            max_age=int(self._ttl),
            httponly=True,
            samesite="lax",
            secure=secure,
            path="/",
        )

    def clear_session_cookie(self, response: Response, *, secure: bool) -> None:
        response.delete_cookie(
            SESSION_COOKIE, httponly=True, samesite="lax", secure=secure, path="/"
        )

    # CSRF

    def session_csrf(self, session_id: str) -> str:
        return hmac.new(self._key, b"csrf:" + session_id.encode(), hashlib.sha256).hexdigest()

    def check_session_csrf(self, session_id: str, token: object) -> bool:
        return isinstance(token, str) and hmac.compare_digest(self.session_csrf(session_id), token)

    @staticmethod
    def login_csrf(conn: HTTPConnection) -> str:
        """The pre-login CSRF value: the cookie's if it has a sane one, else a new one."""
        current = conn.cookies.get(CSRF_COOKIE, "")
        return current if 20 <= len(current) <= 64 else secrets.token_urlsafe(24)

    @staticmethod
    def check_login_csrf(conn: HTTPConnection, token: object) -> bool:
        cookie = conn.cookies.get(CSRF_COOKIE, "")
        return bool(cookie) and isinstance(token, str) and hmac.compare_digest(cookie, token)

    @staticmethod
    def set_login_csrf_cookie(response: Response, value: str, *, secure: bool) -> None:
        response.set_cookie(
            CSRF_COOKIE, value, httponly=True, samesite="strict", secure=secure, path="/"
        )


class Busy(Exception):
    """Too many password checks are waiting already: answer 503 and let the client retry."""


class Verifications:
    """At most `running` password checks at once, `waiting_per_runner` times as many in line.

    The line is bounded because an unbounded one hands a spray of wrong passwords
    (many addresses, so no lock applies) the power to delay every right one: 80
    guesses at once delayed the next login by 6.8 s on two cores. With the bound
    a login waits at most about `waiting_per_runner` checks' time, or is told at
    once to come back.
    """

    def __init__(self, running: int, *, waiting_per_runner: int = 4) -> None:
        self._running = asyncio.Semaphore(running)
        self.capacity = running * (1 + waiting_per_runner)
        self.held = 0  # running or waiting

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a place to check a password; raises `Busy` when none is left."""
        if self.held >= self.capacity:
            raise Busy
        self.held += 1
        try:
            async with self._running:
                yield
        finally:
            self.held -= 1
