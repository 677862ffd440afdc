"""The per-user limits in Redis (`lobby.cluster.throttle`, `lobby.cluster.quotas`), against a
real redis-server: the same verdicts as the pure throttle, counts shared by instances,
a dead instance's sockets forgotten with its lease, and what happens when Redis goes away.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict

import pytest
from redis.asyncio import Redis

from lobby.cluster.limits import LimitsUnavailable
from lobby.cluster.quotas import RedisJoins, RedisSockets
from lobby.cluster.stream import connect
from lobby.cluster.throttle import RedisLogins
from lobby.rules.logins import LoginPolicy, LoginThrottle, Verdict
from tests.redis_server import RedisServer
from tests.test_limits import Clock

_prefixes = itertools.count(1)


@pytest.fixture
def prefix() -> str:
    """Keys of one test: the session's redis-server is shared."""
    return f"limits{next(_prefixes)}:"


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[Redis]:
    redis = connect(redis_server.url, 2.0)
    yield redis
    await redis.aclose()


async def until(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    """Wait for a condition on Redis or on a limiter (async predicates awaited)."""
    async with asyncio.timeout(timeout):
        while True:
            result = predicate()
            if asyncio.iscoroutine(result):
                result = await result
            if result:
                return
            await asyncio.sleep(0.02)  # polling the condition; nothing to wait on


# Logins

POLICIES = [
    LoginPolicy(),
    LoginPolicy(1, 2, 0.5, 8.0, 0.25, 1.0, 60.0),
    # An interval that is no binary fraction (1000 / 3): the floats must still agree.
    LoginPolicy(3, 4, 1.0, 30.0, 0.5, 4.0, 1000.0),
]


@pytest.mark.parametrize("policy", POLICIES)
async def test_the_redis_throttle_gives_the_verdicts_of_the_pure_one(
    client: Redis, prefix: str, policy: LoginPolicy
) -> None:
    clock = Clock()
    pure = LoginThrottle(**asdict(policy), clock=clock)
    shared = RedisLogins(client, policy, prefix=prefix, clock=clock)
    rng = random.Random(13)
    accounts = ["alice", "bob", " Alice"]  # the last is alice's key too
    addresses = ["198.51.100.1", "198.51.100.2", "2001:db8::1", "2001:db8::2", "2001:db8:1::1"]
    ops = ["attempt"] * 6 + ["check"] * 2 + ["succeeded", "withdrawn"]
    refused = slowed = 0
    for step in range(1500):
        clock.now += rng.choice([0] * 8 + [0.25, 0.5, 1, 2, 7, 30, 200])
        account, address, op = rng.choice(accounts), rng.choice(addresses), rng.choice(ops)
        if op == "attempt":
            verdict = pure.attempt(account, address)
            assert await shared.attempt(account, address) == verdict, step
            refused += verdict.refused
            slowed += verdict.slowdown > 0
        elif op == "check":
            assert await shared.check(account, address) == pure.check(account, address), step
        elif op == "succeeded":
            pure.succeeded(account, address)
            await shared.succeeded(account, address)
        else:
            pure.withdrawn(account, address)
            await shared.withdrawn(account, address)
    assert refused > 25
    assert slowed > 25


async def test_two_instances_share_one_count(client: Redis, prefix: str) -> None:
    policy = LoginPolicy(free_failures=2, base_delay=60.0)
    a, b = (RedisLogins(client, policy, prefix=prefix) for _ in range(2))
    assert await a.attempt("alice", "198.51.100.1") == Verdict(0.0)
    assert await b.attempt("alice", "198.51.100.1") == Verdict(0.0)
    assert not (await a.attempt("alice", "198.51.100.1")).refused  # the third locks the pair
    locked = await b.attempt("alice", "198.51.100.1")
    assert 59 <= locked.wait <= 60  # Redis's clock, shared by both
    assert not (await b.attempt("alice", "203.0.113.5")).refused  # only that address


async def test_concurrent_guesses_on_two_instances_never_share_a_count(
    client: Redis, prefix: str
) -> None:
    """No read-modify-write: 40 guesses at once, 3 free failures, so exactly 3 + 1 pass."""
    policy = LoginPolicy(free_failures=3, base_delay=60.0)
    a, b = (RedisLogins(client, policy, prefix=prefix) for _ in range(2))
    guesses = [(a if n % 2 else b).attempt("alice", "198.51.100.1") for n in range(40)]
    verdicts = await asyncio.gather(*guesses)
    assert sum(not v.refused for v in verdicts) == 4  # the fourth failure is what locks


async def test_the_keys_expire_when_they_would_be_forgotten(client: Redis, prefix: str) -> None:
    policy = LoginPolicy(free_failures=1, forget_after=60.0, base_delay=5.0)
    shared = RedisLogins(client, policy, prefix=prefix)
    await shared.attempt("alice", "198.51.100.1")
    await shared.attempt("alice", "198.51.100.1")  # locked for 5 s; two failures to forgive
    pair = shared.key(("pair", "alice", "198.51.100.1"))
    address = shared.key(("address", "198.51.100.1"))
    assert 119_000 < await client.pttl(pair) <= 120_000  # 2 failures, one per 60 s
    assert 23_000 < await client.pttl(address) <= 24_000  # 2 failures, one per 60 / 5 s
    await shared.succeeded("alice", "198.51.100.1")
    assert not await client.exists(pair)


async def test_redis_down_makes_the_throttle_unavailable(own_redis: RedisServer) -> None:
    redis = connect(own_redis.url, 0.5)
    shared = RedisLogins(redis, LoginPolicy())
    assert not (await shared.attempt("alice", "198.51.100.1")).refused
    own_redis.stop()
    for call in (shared.attempt, shared.succeeded, shared.withdrawn):
        with pytest.raises(LimitsUnavailable):
            await call("alice", "198.51.100.1")
    await redis.aclose()


# Joins


async def test_joins_count_across_instances_per_user(client: Redis, prefix: str) -> None:
    a = RedisJoins(client, 3, "a.1", prefix)
    b = RedisJoins(client, 3, "b.1", prefix)
    for limiter in (a, b, a):
        assert await limiter.hit("alice") is None
    refused = await b.hit("alice")
    assert refused is not None
    assert refused.code == "rate_limited"
    wait = re.fullmatch(r"Too many joins; try again in (\d+) s\.", refused.message)
    assert wait is not None
    assert 58 <= int(wait[1]) <= 60
    assert await a.hit("bob") is None  # per user
    assert await client.zcard(prefix + "joins:alice") == 3  # refused ones do not count
    assert 59_000 < await client.pttl(prefix + "joins:alice") <= 60_000


async def test_joins_refused_while_redis_is_down(own_redis: RedisServer) -> None:
    redis = connect(own_redis.url, 0.5)
    joins = RedisJoins(redis, 3, "a.1")
    own_redis.stop()
    refused = await joins.hit("alice")
    assert refused is not None
    assert refused.code == "cluster_unavailable"
    await redis.aclose()


# Sockets


class Instances:
    """RedisSockets of named instances, each with a lease as `lobby.cluster.node` keeps one."""

    def __init__(self, redis: Redis, prefix: str, cap: int) -> None:
        self.redis, self.prefix, self.cap = redis, prefix, cap
        self.started: list[RedisSockets] = []

    async def start(self, name: str, redis: Redis | None = None) -> RedisSockets:
        await self.lease(name)
        sockets = RedisSockets(
            redis or self.redis, self.cap, name, prefix=self.prefix, renew=0.05, timeout=1.0
        )
        await sockets.start()
        self.started.append(sockets)
        return sockets

    async def lease(self, name: str) -> None:
        await self.redis.set(f"{self.prefix}lease:{name}", "1", px=60_000)

    async def lapse(self, name: str) -> None:
        await self.redis.delete(f"{self.prefix}lease:{name}")

    async def held(self, user: str) -> dict[str, str]:
        fields = await self.redis.hgetall(f"{self.prefix}sockets:{user}")
        return {str(k): str(v) for k, v in fields.items()}

    async def stop(self) -> None:
        for sockets in self.started:
            await sockets.stop()


@pytest.fixture
async def instances(client: Redis, prefix: str) -> AsyncIterator[Instances]:
    made = Instances(client, prefix, cap=3)
    yield made
    await made.stop()


async def admitted(sockets: RedisSockets, user: str, times: int) -> list[bool]:
    return [await sockets.admit(user) for _ in range(times)]


async def test_sockets_count_across_instances(instances: Instances) -> None:
    a, b = await instances.start("a.1"), await instances.start("b.1")
    assert await admitted(a, "alice", 2) == [True, True]
    assert await admitted(b, "alice", 2) == [True, False]  # 2 on a + 1 on b: the cap
    assert not await a.admit("alice")
    assert await b.admit("bob")  # per user
    a.release("alice")
    await until(lambda: _field(instances, "alice", "a.1", 1))
    assert await b.admit("alice")
    assert await instances.held("alice") == {"a.1": "1", "b.1": "2"}


async def _field(instances: Instances, user: str, instance: str, count: int) -> bool:
    return (await instances.held(user)).get(instance) == str(count)


async def test_a_dead_instances_sockets_stop_counting_with_its_lease(
    instances: Instances,
) -> None:
    a, b = await instances.start("a.1"), await instances.start("b.1")
    assert await admitted(a, "alice", 3) == [True] * 3
    assert not await b.admit("alice")
    await instances.lapse("a.1")  # a is gone: its lease lapsed
    assert await admitted(b, "alice", 4) == [True, True, True, False]
    assert await instances.held("alice") == {"b.1": "3"}


async def test_an_instance_whose_lease_lapsed_while_alive_counts_again(
    instances: Instances, client: Redis, prefix: str
) -> None:
    a, b = await instances.start("a.1"), await instances.start("b.1")
    assert await admitted(a, "alice", 2) == [True, True]
    await instances.lapse("a.1")  # a stalled past its lease
    assert await b.admit("alice")  # a's field and its marker are dropped
    assert not await client.exists(prefix + "counted:a.1")
    await instances.lease("a.1")  # a renews its lease: its watcher writes its count again
    await until(lambda: _field(instances, "alice", "a.1", 2))
    assert not await b.admit("alice")


async def test_counts_come_back_after_redis_lost_its_data(
    instances: Instances, client: Redis
) -> None:
    a, b = await instances.start("a.1"), await instances.start("b.1")
    assert await admitted(a, "alice", 2) == [True, True]
    assert await b.admit("alice")
    await client.flushdb()
    await instances.lease("a.1")  # what their stores do after a new epoch
    await instances.lease("b.1")
    await until(lambda: _both(instances))
    assert not await b.admit("alice")


async def _both(instances: Instances) -> bool:
    return await instances.held("alice") == {"a.1": "2", "b.1": "1"}


async def test_while_redis_is_down_each_instance_counts_its_own(
    own_redis: RedisServer,
) -> None:
    redis = connect(own_redis.url, 0.5)
    made = Instances(redis, "lobby:", cap=2)
    try:
        a = await made.start("a.1")
        assert await a.admit("alice")
        own_redis.kill()
        assert await admitted(a, "alice", 2) == [True, False]  # this instance's cap still holds
        a.release("alice")
        own_redis.start()  # back, empty
        await made.lease("a.1")
        await until(lambda: _field(made, "alice", "a.1", 1))
    finally:
        await made.stop()
        await redis.aclose()


async def test_a_handshake_gone_while_waiting_for_redis_holds_no_place(
    instances: Instances, client: Redis
) -> None:
    a = await instances.start("a.1")
    await client.client_pause(5000, all=False)  # writes (the script) wait
    try:
        waiting = asyncio.create_task(a.admit("alice"))
        await until(lambda: a.held("alice") == 1)
        waiting.cancel()
        await asyncio.wait([waiting])
        assert a.held("alice") == 0
    finally:
        await client.client_unpause()
    await until(lambda: _no_field(instances, "alice"))  # its write, then the release's
    assert await admitted(a, "alice", 4) == [True, True, True, False]


async def _no_field(instances: Instances, user: str) -> bool:
    return await instances.held(user) == {}
