"""Per-user limits across two whole lobby apps sharing one real Redis (issue 13, item 4).

Two servers (`create_app` with `LOBBY_REDIS_URL`, each on its own loopback port, as two
instances behind a load balancer), real logins through the form, real websockets
clients: failures on one count on the other, sockets and joins are counted for the
cluster, a killed instance's sockets stop counting once its lease lapsed, a Redis that
stopped answers logins with a sentence; a logout on one closes the session's sockets on
the other; TURN credentials from either instance are the same coturn accepts.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis
from websockets.exceptions import InvalidStatus

from lobby.cluster.stream import connect
from lobby.media.p2p import IceServer
from lobby.rules.limits import LoginThrottle
from lobby.store import db as database
from lobby.store.users import UserStore
from tests.conftest import CHEAP_HASHER, PASSWORD, USERS, Lobby, LobbyFactory, csrf_from
from tests.redis_server import RedisServer
from tests.test_cluster_app import pair
from tests.test_metrics import scrape, value
from tests.test_views import try_login

ROOT = Path(__file__).resolve().parent.parent


async def refused_socket(lobby: Lobby, cookie: str) -> int:
    """The HTTP status a socket of the session `cookie` is refused with."""
    with pytest.raises(InvalidStatus) as refused:
        await lobby.client("alice", cookie=cookie)
    return refused.value.response.status_code


async def redis_until(
    redis_url: str, probe: Callable[[Redis], Awaitable[object]], expected: object
) -> None:
    """Wait until `probe` of Redis answers `expected`."""
    client = connect(redis_url, 2.0)
    try:
        async with asyncio.timeout(15):
            while await probe(client) != expected:  # noqa: ASYNC110
                await asyncio.sleep(0.02)  # polling Redis: the condition has no event
    finally:
        await client.aclose()


async def test_failed_logins_on_one_instance_count_on_the_other(
    make_lobby: LobbyFactory, own_redis: RedisServer
) -> None:
    a, b = await pair(make_lobby, own_redis, login_throttle=LoginThrottle(base_delay=60.0))
    for lobby in (a, b, a, b):  # three free failures, and the fourth locks the pair
        assert (await try_login(lobby, "alice", "wrong", "198.51.100.1")).status_code == 401
    for lobby in (a, b):
        locked = await try_login(lobby, "alice", PASSWORD, "198.51.100.1")
        assert locked.status_code == 429
        assert 59 <= int(locked.headers["retry-after"]) <= 60
    # Only that address is locked out of that account, on both.
    assert (await try_login(b, "alice", PASSWORD, "203.0.113.5")).status_code == 303
    assert value(await scrape(a), "lobby_logins_total", outcome="throttled") == 1


async def test_logins_say_they_are_unavailable_while_redis_is_down(
    make_lobby: LobbyFactory, own_redis: RedisServer
) -> None:
    a, _ = await pair(make_lobby, own_redis)
    own_redis.stop()
    reply = await try_login(a, "alice", PASSWORD, "198.51.100.1")
    assert reply.status_code == 503
    assert reply.headers["retry-after"] == "5"
    assert "Logins are unavailable for a moment; please try again shortly." in reply.text
    assert "lobby_session" not in reply.headers.get("set-cookie", "")
    assert value(await scrape(a), "lobby_logins_total", outcome="unavailable") == 1


async def test_the_socket_cap_counts_sockets_on_both_instances(
    make_lobby: LobbyFactory, own_redis: RedisServer
) -> None:
    a, b = await pair(make_lobby, own_redis, max_sockets_per_user=2)
    # Each test app has a user database of its own: alice logs in on each.
    on_a, on_b = await a.login("alice"), await b.login("alice")
    tab = await a.client("alice", cookie=on_a)
    await b.client("alice", cookie=on_b)
    assert await refused_socket(a, on_a) == 429
    assert await refused_socket(b, on_b) == 429
    await b.client("bob")  # per user
    await tab.close()
    field = a.state.handler.store.instance
    await redis_until(own_redis.url, lambda r: r.hlen("lobby:sockets:alice"), 1)  # a's is gone
    assert field not in await _fields(own_redis.url, "lobby:sockets:alice")
    await b.client("alice", cookie=on_b)  # the closed tab freed its place, for the cluster


async def _fields(url: str, key: str) -> dict[str, str]:
    client = connect(url, 2.0)
    try:
        fields = await client.hgetall(key)
        return {str(k): str(v) for k, v in fields.items()}
    finally:
        await client.aclose()


async def test_a_killed_instances_sockets_stop_counting_once_its_lease_lapsed(
    make_lobby: LobbyFactory, own_redis: RedisServer
) -> None:
    lobby = await make_lobby(redis_url=own_redis.url, max_sockets_per_user=3)
    args = [sys.executable, "-m", "tests.limits_member", own_redis.url, "alice", "2"]
    victim = await asyncio.create_subprocess_exec(*args, cwd=ROOT, stdout=asyncio.subprocess.PIPE)
    try:
        assert victim.stdout is not None
        name = (await asyncio.wait_for(victim.stdout.readline(), 20)).decode().strip()
        cookie = await lobby.login("alice")
        await lobby.client("alice", cookie=cookie)  # 2 there and 1 here: the cap
        assert await refused_socket(lobby, cookie) == 429
    finally:
        victim.kill()  # SIGKILL: no socket released, no lease given back
        await victim.wait()
    await redis_until(own_redis.url, lambda r: r.exists(f"lobby:lease:{name}"), 0)
    await lobby.client("alice", cookie=cookie)
    await lobby.client("alice", cookie=cookie)
    assert await refused_socket(lobby, cookie) == 429
    assert await _fields(own_redis.url, "lobby:sockets:alice") == {
        lobby.state.handler.store.instance: "3"
    }


async def test_joins_per_minute_count_joins_on_both_instances(
    make_lobby: LobbyFactory, own_redis: RedisServer
) -> None:
    a, b = await pair(make_lobby, own_redis, joins_per_minute=3)
    on_a, on_b = await a.client("alice"), await b.client("alice")
    await on_a.join("R1")
    await on_b.join("R2")
    await on_a.join("R3")
    ref = await on_b.request({"type": "join", "room": "R4", "nickname": "A"})
    refused = await on_b.until("error")
    assert (refused["code"], refused["ref"]) == ("rate_limited", ref)
    assert refused["message"].startswith("Too many joins; try again in ")
    await (await b.client("bob")).join("R4")  # per user


async def test_a_logout_on_one_instance_closes_the_sessions_sockets_on_the_other(
    make_lobby: LobbyFactory, own_redis: RedisServer, tmp_path: Path
) -> None:
    path = str(tmp_path / "users.sqlite3")
    first = UserStore(database.connect(path), hasher=CHEAP_HASHER)
    for name, role in USERS.items():
        first.add(name, role, PASSWORD)
    second = UserStore(database.connect(path), hasher=CHEAP_HASHER)
    # One database for both (a shared SQLite file here; PostgreSQL across machines).
    a = await make_lobby(redis_url=own_redis.url, reconnect_grace=3.0, users=first)
    b = await make_lobby(redis_url=own_redis.url, reconnect_grace=3.0, users=second)
    cookie = await a.login("alice")
    elsewhere = await b.client("alice", cookie=cookie)
    await elsewhere.join("R1")
    watcher = await a.client("mod")
    async with httpx.AsyncClient(base_url=a.http, cookies={"lobby_session": cookie}) as http:
        page = await http.get("/lobby")
        start = time.monotonic()
        reply = await http.post("/logout", data={"csrf_token": csrf_from(page.text)})
        assert reply.status_code == 303
    assert await elsewhere.close_code(timeout=10) == 4001
    closed_after = time.monotonic() - start
    left = await watcher.until("left")
    assert left["reason"] == "left"  # at once, not after the grace period
    assert closed_after < 3.0, closed_after  # the watcher looks every second
    first.db.close()
    second.db.close()


async def test_turn_credentials_from_either_instance_are_the_same_kind_coturn_checks(
    make_lobby: LobbyFactory, own_redis: RedisServer
) -> None:
    secret = "coturn-static-auth-secret"
    turn = IceServer(("turn:turn.example:3478",))
    a, b = await pair(make_lobby, own_redis, media="p2p", ice_servers=(turn,), turn_secret=secret)
    for lobby in (a, b):
        welcome = (await lobby.client("alice")).welcome
        [server] = welcome["media"]["ice_servers"]
        expiry, _, user = server["username"].partition(":")
        assert user == "alice"
        assert abs(int(expiry) - time.time() - lobby.settings.session_ttl) < 60
        # What coturn's use-auth-secret computes from the username and its own secret.
        digest = hmac.new(secret.encode(), server["username"].encode(), hashlib.sha1).digest()
        assert server["credential"] == base64.b64encode(digest).decode()
