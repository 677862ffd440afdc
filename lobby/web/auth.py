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
# Over https the cookies carry the `__Host-` prefix: the browser then takes them only
# Secure, for this host alone and path /, so neither a sibling subdomain nor a plain-http
# man in the middle can plant one (a planted login CSRF cookie, a fixed session).
HOST_PREFIX = "__Host-"


def cookie_name(name: str, conn: HTTPConnection) -> str:
    """`name` as the cookie is called on this request: prefixed when it came over https."""
    return HOST_PREFIX + name if _secure(conn) else name


def _secure(conn: HTTPConnection) -> bool:
    # uvicorn rewrites the scheme from X-Forwarded-Proto for trusted proxies (wss: sockets).
    return conn.url.scheme in ("https", "wss")


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
        session_id = conn.cookies.get(cookie_name(SESSION_COOKIE, conn))
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

    def set_session_cookie(self, response: Response, conn: HTTPConnection, session_id: str) -> None:
        response.set_cookie(
            cookie_name(SESSION_COOKIE, conn),
            session_id,
            max_age=int(self._ttl),
            httponly=True,
            samesite="lax",
            secure=_secure(conn),
            path="/",
        )

    @staticmethod
    def clear_session_cookie(response: Response, conn: HTTPConnection) -> None:
        response.delete_cookie(
            cookie_name(SESSION_COOKIE, conn),
            httponly=True,
            samesite="lax",
            secure=_secure(conn),
            path="/",
        )

    # CSRF

    def session_csrf(self, session_id: str) -> str:
        return hmac.new(self._key, b"csrf:" + session_id.encode(), hashlib.sha256).hexdigest()

    def check_session_csrf(self, session_id: str, token: object) -> bool:
        return isinstance(token, str) and _same(self.session_csrf(session_id), token)

    # Before login there is no session to bind a token to: the token is a nonce signed with
    # the secret key, in a cookie and in the form (double submit). The signature means a
    # value someone else planted in the cookie (a sibling host, plain http) is not accepted.

    def login_csrf(self, conn: HTTPConnection) -> str:
        """The pre-login CSRF token: the cookie's if it is one we signed, else a new one."""
        current = conn.cookies.get(cookie_name(CSRF_COOKIE, conn), "")
        if self._signed_login_csrf(current):
            return current
        nonce = secrets.token_urlsafe(24)
        return f"{nonce}.{self._login_csrf_signature(nonce)}"

    def check_login_csrf(self, conn: HTTPConnection, token: object) -> bool:
        cookie = conn.cookies.get(cookie_name(CSRF_COOKIE, conn), "")
        return isinstance(token, str) and self._signed_login_csrf(cookie) and _same(cookie, token)

    @staticmethod
    def set_login_csrf_cookie(response: Response, conn: HTTPConnection, value: str) -> None:
        response.set_cookie(
            cookie_name(CSRF_COOKIE, conn),
            value,
            httponly=True,
            samesite="strict",
            secure=_secure(conn),
            path="/",
        )

    def _login_csrf_signature(self, nonce: str) -> str:
        return hmac.new(self._key, b"login-csrf:" + nonce.encode(), hashlib.sha256).hexdigest()

    def _signed_login_csrf(self, value: str) -> bool:
        nonce, dot, signature = value.partition(".")
        return (
            bool(dot)
            and 20 <= len(nonce) <= 64
            and _same(self._login_csrf_signature(nonce), signature)
        )


def _same(ours: str, theirs: str) -> bool:
    # As bytes: `compare_digest` raises on a str with non-ASCII characters (a form can send any).
    return hmac.compare_digest(ours.encode(), theirs.encode("utf-8", "surrogatepass"))


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
