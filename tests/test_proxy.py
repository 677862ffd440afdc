"""The lobby behind a real nginx terminating TLS, with the config the README documents
(`docs/deploy/nginx.conf`, run by `tests/nginx.py`).

Clients reach nginx from 127.0.0.2 and 127.0.0.3, nginx reaches the lobby from
127.0.0.1 (the trusted proxy, `LOBBY_FORWARDED_ALLOW_IPS`), and a client that goes
around nginx comes from 127.0.0.4: loopback addresses that tell the three apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from lobby.rules.limits import LoginThrottle
from tests.conftest import PASSWORD, Client, Lobby, LobbyFactory, csrf_from
from tests.instances import Instance, login, user_database
from tests.log_secrets import SECRETS
from tests.nginx import Nginx
from tests.openvidu_standin import OpenViduStandin
from tests.redis_server import RedisServer


@pytest.fixture
def nginx() -> Iterator[Nginx]:
    proxy = Nginx()
    try:
        yield proxy
    finally:
        proxy.stop()


async def behind(nginx: Nginx, make_lobby: LobbyFactory, **overrides: Any) -> Lobby:
    """A lobby whose public URL is nginx's https address, and nginx in front of it."""
    lobby: Lobby = await make_lobby(
        public_origins=(nginx.url,), forwarded_allow_ips="127.0.0.1", **overrides
    )
    nginx.start(lobby.live.port)
    return lobby


@contextlib.asynccontextmanager
async def client(base_url: str, nginx: Nginx, *, source: str) -> AsyncIterator[httpx.AsyncClient]:
    """An https client (trusting the test certificate) whose connections come from `source`."""
    transport = httpx.AsyncHTTPTransport(verify=nginx.ssl_context(), local_address=source)
    async with httpx.AsyncClient(base_url=base_url, transport=transport) as http:
        yield http


async def try_login(
    http: httpx.AsyncClient, user: str, password: str, *, forwarded_for: str | None = None
) -> httpx.Response:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    token = csrf_from((await http.get("/", headers=headers)).text)
    data = {"user": user, "pass": password, "csrf_token": token}
    return await http.post("/login", data=data, headers=headers)


def spoofed() -> str:
    return f"198.51.100.{secrets.randbelow(250) + 1}"


async def test_over_https_cookies_are_secure_and_the_socket_works_through_the_proxy(
    nginx: Nginx, make_lobby: LobbyFactory
) -> None:
    lobby = await behind(nginx, make_lobby)
    async with client(nginx.url, nginx, source="127.0.0.2") as http:
        login_page = await http.get("/")
        assert login_page.headers["set-cookie"].startswith("__Host-lobby_csrf=")
        reply = await try_login(http, "alice", PASSWORD)
        assert reply.status_code == 303, reply.text
        assert (await http.get("/readyz")).json() == {"status": "ready"}  # forwarded: a stranger
        health = await http.get(f"http://127.0.0.1:{nginx.http_port}/healthz")
    set_cookie = reply.headers["set-cookie"]
    assert set_cookie.startswith("__Host-lobby_session=")
    assert "secure" in set_cookie.lower()
    assert "httponly" in set_cookie.lower()
    cookie = reply.cookies["__Host-lobby_session"]
    SECRETS.register(cookie)
    # Plain http is sent to https by the documented redirect.
    assert health.status_code == 301
    assert health.headers["location"] == "https://127.0.0.1/healthz"

    socket_url = nginx.url.replace("https://", "wss://") + "/ws"
    cookie_header = {"Cookie": f"__Host-lobby_session={cookie}"}
    async with websockets.connect(
        socket_url,
        ssl=nginx.ssl_context(),
        origin=websockets.Origin(nginx.url),
        additional_headers=cookie_header,
    ) as ws:
        assert '"welcome"' in str(await ws.recv())
        assert len(lobby.state.hub) == 1
    # The Origin check compares with the https public URL: the same host over http is another.
    with pytest.raises(InvalidStatus) as refused:
        await websockets.connect(
            socket_url,
            ssl=nginx.ssl_context(),
            origin=websockets.Origin(f"http://127.0.0.1:{nginx.https_port}"),
            additional_headers=cookie_header,
        )
    assert refused.value.response.status_code == 403


async def test_the_throttle_counts_the_address_nginx_saw_whatever_the_client_claims(
    nginx: Nginx, make_lobby: LobbyFactory
) -> None:
    throttle = LoginThrottle(
        free_failures=3, base_delay=60.0, slowdown_base=0.01, max_slowdown=0.05
    )
    await behind(nginx, make_lobby, login_throttle=throttle)
    async with client(nginx.url, nginx, source="127.0.0.2") as guesser:
        # Each guess claims another address; nginx appends the real one, which counts.
        for _ in range(4):
            wrong = await try_login(guesser, "alice", "wrong", forwarded_for=spoofed())
            assert wrong.status_code == 401
        locked = await try_login(guesser, "alice", PASSWORD, forwarded_for=spoofed())
        assert locked.status_code == 429
    assert throttle.check("alice", "127.0.0.2") > 0
    # Another client of the same proxy is another address: not locked out.
    async with client(nginx.url, nginx, source="127.0.0.3") as owner:
        assert (await try_login(owner, "alice", PASSWORD)).status_code == 303


async def test_a_spoofed_forwarded_for_from_elsewhere_is_ignored(
    nginx: Nginx, make_lobby: LobbyFactory
) -> None:
    throttle = LoginThrottle(
        free_failures=3, base_delay=60.0, slowdown_base=0.01, max_slowdown=0.05
    )
    lobby = await behind(nginx, make_lobby, login_throttle=throttle)
    # Around the proxy, straight to the lobby, from an address it does not trust.
    async with client(lobby.http, nginx, source="127.0.0.4") as direct:
        for _ in range(4):
            wrong = await try_login(direct, "bob", "wrong", forwarded_for=spoofed())
            assert wrong.status_code == 401
        locked = await try_login(direct, "bob", PASSWORD, forwarded_for="127.0.0.3")
        assert locked.status_code == 429
    assert throttle.check("bob", "127.0.0.4") > 0
    assert throttle.check("bob", "127.0.0.3") == 0


def opened(instance: Instance, user: str) -> int:
    """How many sockets of `user` this instance's log shows opened."""
    lines = instance.output().splitlines()
    return sum(1 for line in lines if "socket open" in line and f"user={user} " in line)


async def where(
    nginx: Nginx, instances: list[Instance], cookie: str, user: str
) -> tuple[Client, Instance]:
    """A socket of `user` through nginx, and the instance it reached (the logs say)."""
    before = [opened(i, user) for i in instances]
    tab = await through(nginx, cookie, user)
    async with asyncio.timeout(10):
        while True:
            for instance, count in zip(instances, before, strict=True):
                if opened(instance, user) > count:
                    return tab, instance
            await asyncio.sleep(0.05)  # a poll of the logs, bounded above


async def through(nginx: Nginx, cookie: str, name: str) -> Client:
    socket = await websockets.connect(
        nginx.url.replace("https://", "wss://") + "/ws",
        ssl=nginx.ssl_context(),
        origin=websockets.Origin(nginx.url),
        additional_headers={"Cookie": f"__Host-lobby_session={cookie}"},
    )
    tab = Client(socket, name, cookie)
    tab.welcome = await tab.expect("welcome")
    return tab


async def test_two_instances_behind_nginx_a_page_whose_instance_dies_resumes_on_the_other(
    nginx: Nginx, tmp_path: Path, own_redis: RedisServer, standin: OpenViduStandin
) -> None:
    env = {
        "LOBBY_DATABASE": user_database(tmp_path / "users.sqlite3", ["alice", "bob"]),
        "LOBBY_REDIS_URL": own_redis.url,
        "LOBBY_PUBLIC_URL": nginx.url,
        "LOBBY_FORWARDED_ALLOW_IPS": "127.0.0.1",
        "LOBBY_RECONNECT_GRACE": "5",
        "OPENVIDU_URL": standin.url,
        "OPENVIDU_SECRET": "MY_SECRET",
    }
    instances = [Instance(f"lobby{i}", env, tmp_path) for i in range(2)]
    try:
        await asyncio.gather(*(i.start() for i in instances))
        nginx.start(*(i.port for i in instances))
        verify = nginx.ssl_context()
        alice_cookie = await login(nginx.url, "alice", verify=verify)
        bob_cookie = await login(nginx.url, "bob", verify=verify)
        alice, victim = await where(nginx, instances, alice_cookie, "alice")
        # nginx spreads sockets over both (no stickiness): bob opens until one is elsewhere.
        for _ in range(8):
            bob, reached = await where(nginx, instances, bob_cookie, "bob")
            if reached is not victim:
                break
            await bob.close()
        else:
            pytest.fail("nginx sent every socket to one instance")
        token = await alice.join("R1")
        assert (await bob.expect("joined"))["participant"] == token["participant"]

        await victim.kill()
        assert await alice.close_code() == 1006  # gone without a close frame
        # The page reconnects through nginx: the dead instance refuses, the other answers.
        alice = await through(nginx, alice_cookie, "alice")
        ref = await alice.request({"type": "resume", "key": token["resume_key"]})
        resumed = await alice.expect("resumed")
        assert (resumed["ref"], resumed["participant"]["id"]) == (ref, token["participant"]["id"])
        await bob.nothing(within=1.0)  # silently: no left, no joined
        for tab in (alice, bob):
            await tab.close()
    finally:
        await asyncio.gather(*(i.stop() for i in instances))
