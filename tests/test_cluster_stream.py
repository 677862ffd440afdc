"""The Redis scripts behind the shared log, each against a real redis-server."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from lobby.cluster.commands import Disconnect, Join, encode
from lobby.cluster.replica import Replica
from lobby.cluster.stream import Stream
from lobby.rules.presence import Participant
from tests.redis_server import RedisServer


@pytest.fixture
async def stream(redis_server: RedisServer) -> AsyncIterator[Stream]:
    client = Redis.from_url(redis_server.url, decode_responses=True)
    yield Stream(client, f"s{uuid.uuid4().hex[:8]}:")
    await client.aclose()


async def test_appends_are_numbered_and_refused_under_another_epoch(stream: Stream) -> None:
    epoch = await stream.epoch("first")
    assert epoch == "first"
    assert await stream.epoch("second") == "first"  # set once
    _, one = await stream.append(epoch, "a", "1", encode(Disconnect("a:1")))
    _, two = await stream.append(epoch, "b", "1", encode(Disconnect("b:1")))
    assert (one, two) == (1, 2)
    with pytest.raises(ResponseError, match="EPOCH"):
        await stream.append("stale", "a", "2", encode(Disconnect("a:2")))
    entries = await stream.read("0-0", None)
    assert [(e.seq, e.by, e.ref) for e in entries] == [(1, "a", "1"), (2, "b", "1")]
    assert abs(entries[0].at - time.time() * 1000) < 5000  # Redis's clock, in ms


async def test_only_one_instance_declares_a_lapsed_lease(stream: Stream) -> None:
    epoch = await stream.epoch("e")
    await stream.renew_lease("b", 10_000)
    cmd = encode(Disconnect("x:1"))
    assert not await stream.append_if_lapsed(epoch, "a", "0", cmd, "b", 1000)  # b is alive
    await stream.drop_lease("b")
    tries = [stream.append_if_lapsed(epoch, name, "0", cmd, "b", 1000) for name in "acd"]
    assert sorted(await asyncio.gather(*tries)) == [False, False, True]
    assert len(await stream.read("0-0", None)) == 1


async def test_the_duty_lock_has_one_holder_until_released(stream: Stream) -> None:
    assert await stream.hold("duty", "a", 10_000)
    assert await stream.hold("duty", "a", 10_000)  # extended
    assert not await stream.hold("duty", "b", 10_000)
    await stream.release("duty", "b")  # not b's to give back
    assert not await stream.hold("duty", "b", 10_000)
    await stream.release("duty", "a")
    assert await stream.hold("duty", "b", 10_000)


async def test_a_snapshot_replaces_only_an_older_one_and_trims_to_it(stream: Stream) -> None:
    epoch = await stream.epoch("e")
    replica = Replica()
    ids = []
    for n in range(1, 7):
        alice = Participant(f"p{n}", "alice", "Alice", "PUBLISHER")
        command = Join(f"a:{n}", alice, "R", f"k{n}", None)
        entry_id, _ = await stream.append(epoch, "a", str(n), encode(command))
        replica.apply(command, 0)
        ids.append(entry_id)
    assert await stream.save_snapshot(epoch, 2, ids[1], replica)
    assert not await stream.save_snapshot(epoch, 2, ids[1], replica)
    assert await stream.save_snapshot(epoch, 5, ids[4], replica)  # trims before entry 2
    assert [e.seq for e in await stream.read("0-0", None)] == [2, 3, 4, 5, 6]
    with pytest.raises(ResponseError, match="EPOCH"):
        await stream.save_snapshot("stale", 6, ids[5], replica)
    loaded = await stream.load_snapshot()
    assert loaded is not None
    assert (loaded.seq, loaded.id) == (5, ids[4])
    assert loaded.replica.snapshot() == replica.snapshot()


async def test_no_snapshot_yet(stream: Stream) -> None:
    assert await stream.load_snapshot() is None
    assert abs(await stream.now_ms() - time.time() * 1000) < 5000
