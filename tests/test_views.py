"""The pages: login, logout, lobby, health, and the headers and cookies on them."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Literal

import httpx
import pytest
from argon2 import PasswordHasher
from starlette.requests import Request

from lobby.cluster.limits import LocalLogins
from lobby.rules.limits import LoginThrottle
from lobby.rules.protocol import CloseCode
from lobby.store import db as database
from lobby.store.users import UserStore
from lobby.web.auth import Auth
from tests.conftest import PASSWORD, Lobby, LobbyFactory, csrf_from, until


async def login_form(http: httpx.AsyncClient) -> str:
    page = await http.get("/")
    assert page.status_code == 200
    return csrf_from(page.text)


async def test_login_page_has_the_form_fields(lobby: Lobby) -> None:
    async with httpx.AsyncClient(base_url=lobby.http) as http:
        page = await http.get("/")
    assert page.status_code == 200
    assert 'name="user"' in page.text
    assert 'name="pass"' in page.text
    assert csrf_from(page.text)
    assert page.headers["content-type"].startswith("text/html")


async def test_login_succeeds_with_a_session_cookie_and_a_redirect(lobby: Lobby) -> None:
    async with httpx.AsyncClient(base_url=lobby.http) as http:
        token = await login_form(http)
        reply = await http.post(
            "/login", data={"user": "alice", "pass": PASSWORD, "csrf_token": token}
        )
        assert reply.status_code == 303
        assert reply.headers["location"] == "/lobby"
        cookie = next(
            v
            for k, v in reply.headers.multi_items()
            if k == "set-cookie" and v.startswith("lobby_session=")
        )
        assert "HttpOnly" in cookie
        assert "SameSite=lax" in cookie or "samesite=lax" in cookie.lower()
        assert "Secure" not in cookie  # plain http here
        lobby_page = await http.get("/lobby")
        assert lobby_page.status_code == 200
        assert "alice" in lobby_page.text
        # a logged-in user visiting the login page goes to the lobby
        again = await http.get("/")
        assert again.status_code == 303
        assert again.headers["location"] == "/lobby"


@pytest.mark.parametrize(
    ("user", "password"), [("alice", "wrong"), ("nobody", PASSWORD), ("alice", ""), ("", "")]
)
async def test_failed_login_shows_the_form_again_with_401(
    lobby: Lobby, user: str, password: str
) -> None:
    async with httpx.AsyncClient(base_url=lobby.http) as http:
        token = await login_form(http)
        reply = await http.post(
            "/login", data={"user": user, "pass": password, "csrf_token": token}
        )
    assert reply.status_code == 401
    assert 'role="alert"' in reply.text
    assert "lobby_session" not in reply.headers.get("set-cookie", "")
    assert 'name="csrf_token"' in reply.text


async def test_unknown_user_and_wrong_password_get_the_same_answer(lobby: Lobby) -> None:
    answers = []
    for user in ("alice", "nobody"):
        async with httpx.AsyncClient(base_url=lobby.http) as http:
            token = await login_form(http)
            reply = await http.post(
                "/login", data={"user": "x", "pass": "y", "csrf_token": token} | {"user": user}
            )
            answers.append(reply.text.replace(user, "USER"))
    assert answers[0] == answers[1] or _without_tokens(answers[0]) == _without_tokens(answers[1])


def _without_tokens(html: str) -> str:
    return html.replace(csrf_from(html), "TOKEN")


@pytest.mark.parametrize("token", [None, "forged-token-value-123456"])
async def test_login_without_the_csrf_token_is_refused(lobby: Lobby, token: str | None) -> None:
    async with httpx.AsyncClient(base_url=lobby.http) as http:
        await login_form(http)
        data = {"user": "alice", "pass": PASSWORD} | ({"csrf_token": token} if token else {})
        reply = await http.post("/login", data=data)
    assert reply.status_code == 403
    assert "lobby_session" not in reply.headers.get("set-cookie", "")


async def test_the_lobby_needs_a_login(lobby: Lobby) -> None:
    async with httpx.AsyncClient(base_url=lobby.http) as http:
        reply = await http.get("/lobby")
    assert reply.status_code == 303
    assert reply.headers["location"] == "/"


async def test_the_lobby_page_is_never_stored_by_a_cache(lobby: Lobby) -> None:
    cookie = await lobby.login("alice")
    async with httpx.AsyncClient(base_url=lobby.http, cookies={"lobby_session": cookie}) as http:
        page = await http.get("/lobby")
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"


async def test_logout_needs_its_csrf_token_and_ends_the_session(lobby: Lobby) -> None:
    cookie = await lobby.login("alice")
    async with httpx.AsyncClient(base_url=lobby.http, cookies={"lobby_session": cookie}) as http:
        page = await http.get("/lobby")
        refused = await http.post("/logout", data={"csrf_token": "nope"})
        assert refused.status_code == 403
        assert (await http.get("/lobby")).status_code == 200
        done = await http.post("/logout", data={"csrf_token": csrf_from(page.text)})
        assert done.status_code == 303
        assert done.headers["location"] == "/?logged_out=1"  # the form says so
    async with httpx.AsyncClient(base_url=lobby.http, cookies={"lobby_session": cookie}) as http:
        assert (await http.get("/lobby")).status_code == 303  # the replayed cookie is dead


async def test_pages_carry_security_headers(lobby: Lobby) -> None:
    async with httpx.AsyncClient(base_url=lobby.http) as http:
        page = await http.get("/")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "'unsafe-inline'" not in csp
    assert "frame-ancestors 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "same-origin"


HTTPS_PROXY = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"}


def set_cookie(reply: httpx.Response, name: str) -> str:
    return next(
        v for k, v in reply.headers.multi_items() if k == "set-cookie" and v.startswith(name + "=")
    )


async def test_cookies_are_secure_and_host_only_behind_an_https_proxy(
    make_lobby: LobbyFactory,
) -> None:
    """Over https the cookies are `__Host-` ones: no sibling host or plain-http page can plant
    them. Over http the plain names stay (a local server has no https)."""
    lobby = await make_lobby()
    async with httpx.AsyncClient(base_url=lobby.http, headers=HTTPS_PROXY) as http:
        page = await http.get("/")
        token = csrf_from(page.text)
        csrf_cookie = set_cookie(page, "__Host-lobby_csrf")
        # httpx keeps Secure cookies only for https URLs: pass the CSRF cookie by hand.
        http.cookies.set("__Host-lobby_csrf", token)
        reply = await http.post(
            "/login", data={"user": "alice", "pass": PASSWORD, "csrf_token": token}
        )
    assert reply.status_code == 303
    cookie = set_cookie(reply, "__Host-lobby_session")
    for header in (cookie, csrf_cookie):
        assert "Secure" in header
        assert "Path=/" in header
        assert "Domain" not in header
    session = cookie.split(";")[0].split("=", 1)[1]
    # Each scheme reads its own name only: a plain cookie (plantable) counts for nothing
    # over https, and the prefixed one is not read over plain http.
    for headers, name, status in [
        (HTTPS_PROXY, "__Host-lobby_session", 200),
        (HTTPS_PROXY, "lobby_session", 303),
        ({}, "__Host-lobby_session", 303),
        ({}, "lobby_session", 200),
    ]:
        async with httpx.AsyncClient(base_url=lobby.http, headers=headers) as http:
            lobby_page = await http.get("/lobby", headers={"Cookie": f"{name}={session}"})
        assert lobby_page.status_code == status, (headers, name)


async def test_a_planted_login_csrf_pair_is_refused(lobby: Lobby) -> None:
    """Double submit alone trusts any cookie value; whoever can plant one (a sibling host, plain
    http) would choose both halves. Only tokens signed with the secret key count."""
    for planted in ("x" * 32, signed_with_another_key(lobby)):
        async with httpx.AsyncClient(base_url=lobby.http, cookies={"lobby_csrf": planted}) as http:
            reply = await http.post(
                "/login", data={"user": "alice", "pass": PASSWORD, "csrf_token": planted}
            )
            assert reply.status_code == 403, planted
            assert "lobby_session" not in reply.headers.get("set-cookie", "")
            # the form shown again carries a fresh, signed token, not the planted one
            assert csrf_from(reply.text) != planted


def signed_with_another_key(lobby: Lobby) -> str:
    """A login CSRF token as a server with another secret key makes them."""
    auth = lobby.state.auth
    other = Auth(auth.users, auth.sessions, secret_key="another-secret-key-0123456789", ttl=60)
    return other.login_csrf(Request({"type": "http", "scheme": "http", "path": "/", "headers": []}))


async def test_logging_in_again_retires_the_presented_session(lobby: Lobby) -> None:
    """A session presented at login (someone else's, or planted) does not outlive it."""
    first = await lobby.login("alice")
    tab = await lobby.client("alice", cookie=first)
    async with httpx.AsyncClient(base_url=lobby.http, cookies={"lobby_session": first}) as http:
        token = await login_form_anyway(http)
        reply = await http.post(
            "/login", data={"user": "bob", "pass": PASSWORD, "csrf_token": token}
        )
    assert reply.status_code == 303
    second = reply.cookies["lobby_session"]
    assert second != first
    assert await tab.close_code() == CloseCode.SESSION_ENDED
    for cookie, status in [(first, 303), (second, 200)]:
        async with httpx.AsyncClient(
            base_url=lobby.http, cookies={"lobby_session": cookie}
        ) as http:
            assert (await http.get("/lobby")).status_code == status


async def login_form_anyway(http: httpx.AsyncClient) -> str:
    """The login form's token for a client that is logged in (GET / would redirect it)."""
    cookies = http.cookies
    async with httpx.AsyncClient(base_url=http.base_url) as fresh:
        token = await login_form(fresh)
        cookies.set("lobby_csrf", fresh.cookies["lobby_csrf"])
    return token


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Origin": "http://["},
        {"Origin": "http://127.0.0.1:{port}/path"},
        {"Origin": "https://127.0.0.1:{port}"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "http://evil.example", "Sec-Fetch-Site": "same-origin"},
    ],
)
async def test_a_cross_site_post_is_refused(lobby: Lobby, headers: dict[str, str]) -> None:
    """Login CSRF (logging the victim into the attacker's account) and forced logout: the
    form's token is valid here, only the page it came from is foreign."""
    port = lobby.live.port
    sent = {k: v.format(port=port) for k, v in headers.items()}
    async with httpx.AsyncClient(base_url=lobby.http) as http:
        token = await login_form(http)
        data = {"user": "alice", "pass": PASSWORD, "csrf_token": token}
        refused = await http.post("/login", data=data, headers=sent)
        assert refused.status_code == 403
        assert "lobby_session" not in refused.headers.get("set-cookie", "")
        assert (await http.post("/login", data=data)).status_code == 303  # same form, no headers
        page = await http.get("/lobby")
        logout = {"csrf_token": csrf_from(page.text)}
        assert (await http.post("/logout", data=logout, headers=sent)).status_code == 403
        assert (await http.get("/lobby")).status_code == 200  # still logged in


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://127.0.0.1:{port}"},
        {"Origin": "http://localhost:{port}"},
        {"Sec-Fetch-Site": "same-origin"},
        {"Sec-Fetch-Site": "none"},
        {},
    ],
)
async def test_a_post_from_our_own_page_or_no_browser_is_accepted(
    lobby: Lobby, headers: dict[str, str]
) -> None:
    """Without Origin or Sec-Fetch-Site the client is no browser (it cannot ride anyone's
    cookies): the CSRF token decides."""
    sent = {k: v.format(port=lobby.live.port) for k, v in headers.items()}
    async with httpx.AsyncClient(base_url=lobby.http) as http:
        token = await login_form(http)
        data = {"user": "alice", "pass": PASSWORD, "csrf_token": token}
        assert (await http.post("/login", data=data, headers=sent)).status_code == 303


async def test_a_non_ascii_csrf_token_is_a_403_not_a_500(lobby: Lobby) -> None:
    cookie = await lobby.login("alice")
    async with httpx.AsyncClient(base_url=lobby.http, cookies={"lobby_session": cookie}) as http:
        refused = await http.post("/logout", data={"csrf_token": "\u00e9" * 64})
        assert refused.status_code == 403
    async with httpx.AsyncClient(base_url=lobby.http) as http:
        await login_form(http)
        data = {"user": "alice", "pass": PASSWORD, "csrf_token": "\u00e9" * 32}
        assert (await http.post("/login", data=data)).status_code == 403


async def test_static_files_and_health(lobby: Lobby) -> None:
    async with httpx.AsyncClient(base_url=lobby.http) as http:
        script = await http.get("/static/lobby.js")
        health = await http.get("/healthz")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert health.json()["status"] == "ok"


async def test_user_text_in_pages_is_escaped(lobby: Lobby) -> None:
    async with httpx.AsyncClient(base_url=lobby.http) as http:
        token = await login_form(http)
        reply = await http.post(
            "/login", data={"user": "<script>x</script>", "pass": "p", "csrf_token": token}
        )
    assert "<script>x</script>" not in reply.text
    assert "&lt;script&gt;" in reply.text


class FrozenClock:
    """A throttle clock that stands still, so a lock lasts as long as the test needs."""

    def __call__(self) -> float:
        return 0.0


async def try_login(lobby: Lobby, user: str, password: str, address: str) -> httpx.Response:
    """One login from `address` (X-Forwarded-For, trusted from loopback in tests)."""
    headers = {"X-Forwarded-For": address}
    async with httpx.AsyncClient(base_url=lobby.http, headers=headers) as http:
        token = await login_form(http)
        return await http.post("/login", data={"user": user, "pass": password, "csrf_token": token})


async def test_failed_logins_lock_the_account_even_for_the_right_password(
    make_lobby: LobbyFactory,
) -> None:
    lobby = await make_lobby(login_throttle=LoginThrottle(free_failures=3, clock=FrozenClock()))
    answers = []
    for user, address in (("alice", "198.51.100.1"), ("nobody", "198.51.100.2")):
        for _ in range(4):  # three free failures, and the fourth locks for a second
            assert (await try_login(lobby, user, "wrong", address)).status_code == 401
        reply = await try_login(lobby, user, PASSWORD, address)
        assert reply.status_code == 429
        assert reply.headers["retry-after"] == "1"
        assert "Too many failed logins; try again in 1 second." in reply.text
        assert "lobby_session" not in reply.headers.get("set-cookie", "")
        answers.append(_without_tokens(reply.text).replace(user, "USER"))
    # A real account and an unknown name: the same answer, so no way to tell them apart.
    assert answers[0] == answers[1]


async def test_a_locked_account_leaves_other_accounts_and_addresses_alone(
    make_lobby: LobbyFactory,
) -> None:
    lobby = await make_lobby(login_throttle=LoginThrottle(free_failures=3, base_delay=60.0))
    for _ in range(4):
        await try_login(lobby, "alice", "wrong", "198.51.100.1")
    locked = await try_login(lobby, "alice", PASSWORD, "198.51.100.1")
    assert locked.status_code == 429
    assert 59 <= int(locked.headers["retry-after"]) <= 60
    assert (await try_login(lobby, "bob", PASSWORD, "198.51.100.1")).status_code == 303
    assert (await try_login(lobby, "bob", PASSWORD, "203.0.113.5")).status_code == 303
    # Only that address is locked out of that account: the owner elsewhere gets in.
    assert (await try_login(lobby, "alice", PASSWORD, "203.0.113.5")).status_code == 303


async def test_wrong_passwords_from_one_address_only_slow_the_owner_down_elsewhere(
    make_lobby: LobbyFactory,
) -> None:
    slowdown = 0.3
    throttle = LoginThrottle(
        free_failures=3, slowdown_base=slowdown, max_slowdown=slowdown, clock=FrozenClock()
    )
    lobby = await make_lobby(login_throttle=throttle)
    answers = []
    for user, expected in (("alice", 303), ("nobody", 401)):
        for _ in range(4):  # the attacker's guesses lock its own address out of the account
            assert (await try_login(lobby, user, "wrong", "198.51.100.1")).status_code == 401
        assert (await try_login(lobby, user, "wrong", "198.51.100.1")).status_code == 429
        start = time.monotonic()
        reply = await try_login(lobby, user, PASSWORD, "203.0.113.5")
        answers.append((reply.status_code, time.monotonic() - start >= slowdown))
        assert reply.status_code == expected
    # Both slowed down alike, a real account and an unknown name: nothing tells them apart.
    assert answers == [(303, True), (401, True)]


class HeldHasher(PasswordHasher):
    """A cheap hasher whose `verify` (in a worker thread) waits until the test lets go."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8, parallelism=1)
        self.release = threading.Event()

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
        self.release.wait(timeout=30)  # bounded: a failing test must not hang the run
        return super().verify(hash, password)


async def test_a_full_line_of_password_checks_answers_503_at_once(
    make_lobby: LobbyFactory,
) -> None:
    hasher = HeldHasher()
    users = UserStore(database.connect(":memory:"), hasher=hasher)
    users.add("alice", "PUBLISHER", PASSWORD)
    # A spray from many addresses: no lock may get in the way of filling the line.
    lobby = await make_lobby(users=users, login_throttle=LoginThrottle(address_factor=10_000))
    line = lobby.state.auth.verifications
    spray = [
        asyncio.create_task(try_login(lobby, f"guess{n}", "wrong", "198.51.100.1"))
        for n in range(line.capacity)
    ]
    try:
        await until(lambda: line.held == line.capacity)
        async with asyncio.timeout(5):  # answered at once, not after the line
            busy = await try_login(lobby, "alice", PASSWORD, "203.0.113.5")
    finally:
        hasher.release.set()
    assert busy.status_code == 503
    assert busy.headers["retry-after"] == "1"
    assert "The server is busy; please try again in a moment." in busy.text
    assert "lobby_session" not in busy.headers.get("set-cookie", "")
    assert {reply.status_code for reply in await asyncio.gather(*spray)} == {401}
    assert (await try_login(lobby, "alice", PASSWORD, "203.0.113.5")).status_code == 303


async def test_a_success_forgives_the_account(lobby: Lobby) -> None:
    assert (await try_login(lobby, "alice", "wrong", "198.51.100.1")).status_code == 401
    throttle = lobby.state.login_throttle
    assert isinstance(throttle, LocalLogins)  # one process: the pure throttle, countable
    assert len(throttle) == 3  # the pair, the address and the account
    assert (await try_login(lobby, "alice", PASSWORD, "198.51.100.1")).status_code == 303
    assert len(throttle) == 1  # the success forgave the pair and the account


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1.evil.example"])
async def test_a_request_naming_another_host_is_refused(lobby: Lobby, host: str) -> None:
    """DNS rebinding: a page at evil.example, now resolving to us, would read our pages."""
    async with httpx.AsyncClient(base_url=lobby.http) as http:
        for path in ("/", "/healthz"):
            page = await http.get(path, headers={"Host": host.format(port=lobby.live.port)})
            assert page.status_code == 400
        assert (await http.get("/healthz", headers={"Host": "localhost"})).status_code == 200
