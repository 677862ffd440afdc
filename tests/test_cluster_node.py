"""Several lobby instances sharing presence through one real Redis.

Each `Instance` is a `RedisPresence` in this process with what it told its owner
recorded: every applied command (`heard`), the clean-ups it must do (`cleaned`),
resets, and the view a tab would build from its `welcome` and the events after it.
Timings are shrunk (lease 0.6 s, grace 0.3 s) so leases lapse within a test.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from lobby.cluster.commands import (
    Chat,
    Command,
    Disconnect,
    Expire,
    InstanceDown,
    Join,
    Leave,
    MediaJoined,
    MediaLeft,
    Reconcile,
    ReplaceGrant,
    ReportCall,
    Resume,
    encode,
)
from lobby.cluster.duties import Timing
from lobby.cluster.local import LocalPresence
from lobby.cluster.node import RedisPresence, on_this_machine
from lobby.cluster.replica import Replica, slot
from lobby.cluster.seam import Applied, ClusterUnavailable, PresenceStore
from lobby.rules.presence import Joined, Left, Participant, RoomClosed
from tests.conftest import until
from tests.live import free_port
from tests.redis_server import RedisServer

FAST = Timing(
    lease=0.6,
    renew=0.15,
    tick=0.05,
    block=0.2,
    command_timeout=1.0,
    retry=0.05,
    snapshot_every=3600,
    start_timeout=5,
)
View = dict[str, list[str]]
ROOT = Path(__file__).resolve().parent.parent


def rooms(replica: Replica) -> View:
    return {room: [p.id for p in people] for room, people in replica.presence.rooms()}


class Instance:
    def __init__(
        self, url: str, name: str, prefix: str, grace: float, timing: Timing = FAST
    ) -> None:
        self.heard: list[Applied] = []
        self.gave_way: list[int] = []  # the seq last applied each time it yielded its core
        self.cleaned: list[Applied] = []
        self.health: list[bool] = []
        self.resets = 0
        self.reset_at = 0  # where in `heard` the last reset happened
        self.view: View = {}
        self.node = RedisPresence(
            url,
            name=name,
            grace=grace,
            listener=self._hear,
            cleaner=self.cleaned.append,
            resetter=self._reset,
            on_health=self.health.append,
            prefix=prefix,
            timing=timing,
            give_way=lambda: self.gave_way.append(self.node.seq),
        )
        self.running = False

    def _reset(self) -> None:
        """What a `welcome` to every socket gives: the replica as it is now."""
        self.resets += 1
        self.reset_at = len(self.heard)
        self.view = rooms(self.node.replica)

    def _hear(self, applied: Applied) -> None:
        self.heard.append(applied)
        for event in applied.result.outcome.events:
            if isinstance(event, Joined):
                self.view.setdefault(event.room, []).append(event.participant.id)
            elif isinstance(event, Left):
                self.view[event.room].remove(event.participant.id)
            elif isinstance(event, RoomClosed):
                assert self.view.pop(event.room) == []

    def s(self, conn_id: int) -> str:
        """This instance's socket `conn_id`, by its cluster-wide id."""
        return self.node.socket_id(conn_id)

    async def do(self, command: Command) -> Applied:
        return await self.node.execute(command)

    def state(self) -> Any:
        return self.node.replica.snapshot()

    def log(self, since: int = 0) -> list[tuple[int, Command, Any]]:
        return [(a.seq, a.command, a.result) for a in self.heard if a.seq > since]


Factory = Callable[..., Any]


@pytest.fixture
async def cluster(redis_server: RedisServer) -> AsyncIterator[Factory]:
    """Start instances (on the session's Redis unless `url=`), all under a fresh prefix."""
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    made: list[Instance] = []

    async def start(
        name: str, *, url: str | None = None, grace: float = 0.3, timing: Timing = FAST
    ) -> Instance:
        instance = Instance(url or redis_server.url, name, prefix, grace, timing)
        await instance.node.start()
        instance.running = True
        made.append(instance)
        return instance

    yield start
    for instance in made:
        if instance.running:
            await instance.node.stop()


def person(pid: str, user: str = "alice") -> Participant:
    return Participant(pid, user, user.title(), "PUBLISHER")


def join(socket: str, pid: str, room: str = "R", limit: int = 0, user: str = "alice") -> Join:
    return Join(socket, person(pid, user), room, "k" + pid, "h" + pid, limit)


async def settled(*instances: Instance, timeout: float = 5.0) -> None:
    """Every instance has applied the same entries."""
    await until(lambda: len({i.node.seq for i in instances}) == 1, timeout)


def revoked(*instances: Instance) -> list[str]:
    """The handles the instances were told to revoke on their own (unattended commands)."""
    return sorted(
        g.connection_id for i in instances for a in i.cleaned for g in a.result.outcome.revoke if g
    )


async def test_a_join_on_one_instance_is_seen_by_the_others_in_the_same_order(
    cluster: Factory,
) -> None:
    a, b, c = [await cluster(name) for name in "abc"]
    await a.do(join(a.s(1), "p1"))
    await b.do(join(b.s(1), "p2", user="bob"))
    await c.do(Leave(a.s(1)))
    await settled(a, b, c)
    assert a.log() == b.log() == c.log()
    assert [type(cmd).__name__ for _, cmd, _ in a.log()] == ["Join", "Join", "Leave"]
    assert a.state() == b.state() == c.state()
    for instance in (a, b, c):
        assert instance.view == rooms(instance.node.replica) == {"R": ["p2"]}


async def test_only_the_issuer_gives_way_and_before_applying_its_own_entries(
    cluster: Factory,
) -> None:
    a, b = await cluster("a"), await cluster("b")
    await a.do(join(a.s(1), "p1"))
    await settled(a, b)
    first = a.node.seq
    assert a.gave_way == [first - 1]  # once, before its entry was applied
    assert b.gave_way == []  # it only read another's entry
    await b.do(join(b.s(1), "p2", user="bob"))
    await settled(a, b)
    assert (a.gave_way, b.gave_way) == ([first - 1], [first])


@pytest.mark.parametrize(
    ("url", "here"),
    [
        ("unix:///run/redis/redis.sock", True),
        ("redis://127.0.0.1:6379/0", True),
        ("redis://127.8.9.10", True),
        ("redis://localhost", True),
        ("rediss://:secret@[::1]:6380", True),
        ("redis://", True),  # redis-py's default host is localhost
        ("redis://10.0.0.5:6379", False),
        ("rediss://redis.example.com", False),
        ("redis://[2001:db8::1]", False),
    ],
)
def test_redis_counts_as_on_this_machine_only_on_loopback_or_a_unix_socket(
    url: str, here: bool
) -> None:
    assert on_this_machine(url) is here


async def test_call_states_and_sids_reach_every_replica(cluster: Factory) -> None:
    a, b = await cluster("a"), await cluster("b")
    await a.do(join(a.s(1), "p1"))
    await b.do(MediaJoined("p1", "S1"))
    await a.do(MediaLeft("p1", "S0"))  # an older connection: nothing changes
    await settled(a, b)
    assert a.state() == b.state()
    member = b.node.replica.presence.member("p1")
    assert member is not None
    assert (member.participant.call, member.media_sid) == ("connected", "S1")


async def test_two_joins_for_the_last_seat_get_the_same_answer_everywhere(
    cluster: Factory,
) -> None:
    a, b = await cluster("a"), await cluster("b")
    await a.do(join(a.s(1), "p1", limit=2))
    first, second = await asyncio.gather(
        a.do(join(a.s(2), "p2", limit=2)), b.do(join(b.s(1), "p3", limit=2, user="bob"))
    )
    assert sorted(r.result.rejected.code for r in (first, second) if r.result.rejected) == [
        "room_full"
    ]
    await settled(a, b)
    assert a.log() == b.log()
    assert len(rooms(a.node.replica)["R"]) == 2
    assert a.state() == b.state()


async def test_two_resumes_of_one_key_resolve_in_log_order_everywhere(cluster: Factory) -> None:
    a, b = await cluster("a"), await cluster("b")
    await a.do(join(a.s(1), "p1"))
    await a.do(Disconnect(a.s(1)))
    one, two = await asyncio.gather(
        a.do(Resume(a.s(2), "kp1", "alice")), b.do(Resume(b.s(2), "kp1", "alice"))
    )
    earlier, later = sorted((one, two), key=lambda r: r.seq)
    assert earlier.result.taken_over is None
    assert later.result.taken_over == earlier.command.socket
    await settled(a, b)
    assert a.log() == b.log()
    member = a.node.replica.presence.member("p1")
    assert member is not None
    assert member.socket == later.command.socket


async def test_random_churn_leaves_every_replica_and_every_view_equal(cluster: Factory) -> None:
    instances = [await cluster(name, grace=60) for name in ("a", "b", "c")]
    rng = random.Random(20261207)
    pids = (f"p{n}" for n in range(10_000))
    known: list[str] = []

    def command(node: Instance) -> Command:
        socket = f"{node.node.instance}:{rng.randint(1, 6)}"
        roll = rng.random()
        if roll < 0.4 or not known:
            pid = next(pids)
            known.append(pid)
            user = rng.choice(["alice", "bob"])
            return join(socket, pid, rng.choice("RST"), limit=3, user=user)
        pid = rng.choice(known)
        if roll < 0.55:
            return Leave(socket)
        if roll < 0.75:
            return Disconnect(socket)
        if roll < 0.9:
            return Resume(socket, "k" + pid, rng.choice(["alice", "bob"]))
        return Expire(pid)

    for _ in range(30):
        batch = [(node, command(node)) for node in rng.choices(instances, k=10)]
        await asyncio.gather(*(node.do(cmd) for node, cmd in batch))
    await settled(*instances)
    first = instances[0]
    assert first.node.seq == 300
    assert any(a.result.rejected for a in first.heard)  # the churn did hit the rules
    for other in instances[1:]:
        assert other.log() == first.log()
        assert other.state() == first.state()
    for instance in instances:
        assert instance.view == rooms(instance.node.replica)


async def test_snapshots_trim_the_log_and_a_late_instance_catches_up(
    cluster: Factory, redis_server: RedisServer
) -> None:
    a = await cluster("a")
    for n in range(30):
        await a.do(join(a.s(n), f"p{n}", room=f"R{n % 4}"))
    assert await a.node.duties.snapshot()
    for n in range(30, 60):
        await a.do(join(a.s(n), f"p{n}", room=f"R{n % 4}"))
    assert await a.node.duties.snapshot()
    assert not await a.node.duties.snapshot()  # nothing new since
    with redis.Redis(port=redis_server.port) as client:
        # Kept: from the first snapshot's entry on (the duty writes none within a test).
        assert client.xlen(a.node._stream.log) == 31
    late = await cluster("late")
    assert late.node.seq == 60
    assert late.state() == a.state()
    await a.do(Leave(a.s(0)))
    await settled(a, late)
    assert late.state() == a.state()
    assert late.view == rooms(a.node.replica)


async def test_a_reader_that_missed_trimmed_entries_reloads_the_snapshot(
    cluster: Factory, redis_server: RedisServer
) -> None:
    a = await cluster("a")
    for n in range(5):
        await a.do(join(a.s(n), f"p{n}"))
    old = (a.node.seq, a.node.last_id, Replica.from_snapshot(a.state()), a.node.epoch)
    for n in range(5, 25):
        await a.do(join(a.s(n), f"p{n}"))
        if n in (10, 20):
            await a.node.duties.snapshot()
    for n in range(25, 28):
        await a.do(join(a.s(n), f"p{n}"))
    # An instance that was reading at entry 5, then fell behind two trims.
    behind = Instance(redis_server.url, "behind", a.node._stream.prefix, 0.3)
    node = behind.node
    node.seq, node.last_id, node._replica, node.epoch = old
    await node.start()
    try:
        assert behind.resets == 1
        assert node.seq == 28
        assert behind.state() == a.state()
        assert behind.view == rooms(a.node.replica)
    finally:
        await node.stop()


async def test_a_killed_instance_is_declared_down_once_and_its_people_revoked_once(
    cluster: Factory,
) -> None:
    a, b, c = [await cluster(name) for name in "abc"]
    await b.do(join(b.s(1), "p1"))
    await b.do(join(b.s(2), "p2", user="bob"))
    await a.do(join(a.s(1), "p3", user="bob"))
    await b.node.abandon()  # killed: no lease given back, no disconnects
    b.running = False
    await until(lambda: rooms(a.node.replica) == rooms(c.node.replica) == {"R": ["p3"]}, 10)
    # An issuer's clean-up runs once its `execute` returns, just after the apply.
    await until(lambda: len(revoked(a, c)) >= 2, 5)
    await settled(a, c)
    assert a.log() == c.log()
    downs = [a for a in a.heard if isinstance(a.command, InstanceDown)]
    assert [d.command for d in downs] == [InstanceDown(b.node.instance)]
    assert revoked(a, c) == ["hp1", "hp2"]
    lefts = [e for x in a.heard for e in x.result.outcome.events if isinstance(e, Left)]
    assert sorted((e.participant.id, e.reason) for e in lefts) == [
        ("p1", "disconnected"),
        ("p2", "disconnected"),
    ]


async def test_an_instance_declared_down_while_alive_takes_its_participants_back(
    cluster: Factory,
) -> None:
    a, b = await cluster("a"), await cluster("b")
    await b.do(join(b.s(1), "p1"))
    await a.do(InstanceDown(b.node.instance))  # as if b had stalled past its lease
    await until(lambda: a.node.replica.presence.member_of(b.s(1)) is not None, 5)
    await asyncio.sleep(0.5)  # longer than the grace period
    assert rooms(a.node.replica) == {"R": ["p1"]}
    assert revoked(a, b) == []


async def test_redis_restarted_empty_is_healed_by_reasserting(
    cluster: Factory, own_redis: RedisServer
) -> None:
    a = await cluster("a", url=own_redis.url, grace=1.0)
    b = await cluster("b", url=own_redis.url, grace=1.0)
    await a.do(join(a.s(1), "p1"))
    await b.do(join(b.s(1), "p2", user="bob"))
    await a.do(join(a.s(2), "p3"))
    await a.do(Disconnect(a.s(2)))  # p3 is away when Redis goes
    await settled(a, b)
    epoch = a.node.epoch

    own_redis.kill()
    await until(lambda: not a.node.healthy and not b.node.healthy, 5)
    assert a.health[-1] is False
    started = time.monotonic()
    with pytest.raises(ClusterUnavailable) as failed:
        await a.do(join(a.s(3), "p4"))
    assert time.monotonic() - started < 0.2  # fails fast
    assert failed.value.code == "cluster_unavailable"
    assert "try again" in failed.value.message
    assert rooms(a.node.replica) == {"R": ["p1", "p2", "p3"]}  # reads go on
    with pytest.raises(ClusterUnavailable):
        await a.do(Disconnect(a.s(1)))  # p1's tab closed during the outage: kept for later

    own_redis.start()  # empty: the stream, the epoch, every lease are gone
    await until(lambda: a.node.healthy and b.node.healthy, 10)
    assert a.node.epoch == b.node.epoch != epoch
    # p2's socket is still open on b; p1's closed meanwhile and p3 was away: both expire.
    await until(lambda: rooms(a.node.replica) == {"R": ["p2"]}, 10)
    await until(lambda: len(revoked(a, b)) >= 2, 5)
    await settled(a, b)
    assert a.state() == b.state()
    assert a.node.replica.presence.member_of(b.s(1)) is not None
    assert revoked(a, b) == ["hp1", "hp3"]
    for instance in (a, b):
        assert instance.resets >= 2  # the first start, and the new epoch
        assert instance.view == rooms(instance.node.replica)
        since_reset = instance.heard[instance.reset_at :]
        joined = [
            e.participant.id
            for x in since_reset
            for e in x.result.outcome.events
            if isinstance(e, Joined)
        ]
        assert sorted(joined) == ["p1", "p2", "p3"]  # each re-asserted once


async def test_a_dropped_connection_catches_up_without_a_reset(
    cluster: Factory, redis_server: RedisServer
) -> None:
    a, b = await cluster("a"), await cluster("b")
    await a.do(join(a.s(1), "p1"))
    await settled(a, b)
    resets = b.resets
    with redis.Redis(port=redis_server.port) as client:
        client.client_kill_filter(_type="normal", skipme=True)
    # Both readers lose their connection, notice, and catch up again.
    await until(lambda: all(False in i.health and i.node.healthy for i in (a, b)), 5)
    applied = await b.do(Leave(a.s(1)))
    assert applied.result.outcome.revoke == (slot("hp1", "R"),)
    await settled(a, b)
    assert b.resets == resets
    assert a.state() == b.state()


async def test_the_local_store_and_the_redis_one_give_the_same_results(cluster: Factory) -> None:
    x = await cluster("x", grace=60)
    script: list[Command] = [
        join(x.s(1), "p1", limit=2),
        join(x.s(2), "p2", limit=2, user="bob"),
        join(x.s(3), "p3", limit=2),
        Resume(x.s(3), "kp1", "bob"),
        Disconnect(x.s(1)),
        Resume(x.s(3), "kp1", "alice"),
        ReplaceGrant(x.s(3), "p1", "fresh"),
        Chat(x.s(3), "hello", AT),
        Chat(x.s(1), "from a closed socket", AT),
        MediaJoined("p1", "S1"),
        Reconcile("R", (("p2", "S2"),)),
        MediaLeft("p1", "S0"),
        ReportCall(x.s(2), "dropped"),
        MediaLeft("p1", "S1"),
        Leave(x.s(2)),
        Disconnect(x.s(3)),
        Expire("p1"),
    ]
    local = LocalPresence(grace=60, instance=x.node.instance)  # the same socket ids
    from_local = [(await local.execute(c)).result for c in script]
    from_redis = [(await x.do(c)).result for c in script]
    assert from_local == from_redis
    assert list(local.replica.presence.rooms()) == list(x.node.replica.presence.rooms())
    assert from_redis[2].rejected is not None
    assert from_redis[7].chat is not None
    assert from_redis[8].rejected is not None
    assert from_redis[-1].outcome.revoke == (slot("fresh", "R"),)
    await local.stop()


async def test_a_command_its_issuer_stopped_waiting_for_is_cleaned_up_there(
    cluster: Factory,
) -> None:
    a, b = await cluster("a"), await cluster("b")
    await a.do(join(a.s(1), "p1"))
    # As if `execute` had timed out after its append reached Redis.
    assert a.node.epoch is not None
    await a.node._stream.append(a.node.epoch, a.node.instance, "999", encode(Leave(a.s(1))))
    await until(lambda: bool(a.cleaned), 5)
    assert [x.result.outcome.revoke for x in a.cleaned] == [(slot("hp1", "R"),)]
    await settled(a, b)
    assert b.cleaned == []


async def test_an_entry_nobody_can_read_is_skipped_alike(cluster: Factory) -> None:
    a, b = await cluster("a"), await cluster("b")
    assert a.node.epoch is not None
    await a.node._stream.append(a.node.epoch, "z", "1", "not a command")
    applied = await b.do(join(b.s(1), "p1"))
    assert applied.seq == 2
    await settled(a, b)
    assert a.state() == b.state()


async def test_start_without_redis_fails_with_the_clear_error() -> None:
    node = RedisPresence(
        f"redis://127.0.0.1:{free_port()}",
        grace=1,
        timing=dataclasses.replace(FAST, start_timeout=0.3),
    )
    with pytest.raises(ClusterUnavailable, match="unreachable at start"):
        await node.start()
    with pytest.raises(ValueError, match="cannot hold ':'"):
        RedisPresence("redis://127.0.0.1", name="a:b", grace=1)


async def test_a_flushed_redis_is_noticed_without_any_command(
    cluster: Factory, own_redis: RedisServer
) -> None:
    a = await cluster("a", url=own_redis.url)
    b = await cluster("b", url=own_redis.url)
    await a.do(join(a.s(1), "p1"))
    await b.do(join(b.s(1), "p2", user="bob"))
    epoch = a.node.epoch
    own_redis.flush()
    with contextlib.suppress(ClusterUnavailable):
        await a.do(join(a.s(2), "p3"))  # refused (new epoch) unless it came after the re-sync
    await until(lambda: a.node.epoch != epoch and b.node.epoch == a.node.epoch, 5)
    # Each instance re-asserts what it knew: its own sockets' participants with their
    # socket, the others' away. Whichever comes first in the log, a socket's owner gives
    # its participant the socket back (a `reassert` resumes an away one onto a free socket).
    await until(lambda: b.node.replica.presence.member_of(b.s(1)) is not None, 5)
    await until(lambda: a.node.replica.presence.member_of(a.s(1)) is not None, 5)
    await settled(a, b)
    assert a.state() == b.state()
    assert {"p1", "p2"} <= {m.participant.id for m in b.node.replica.members()}
    assert b.node.replica.presence.member_of(a.s(1)) is not None
    assert a.node.replica.presence.member_of(b.s(1)) is not None


async def test_the_duty_holder_writes_snapshots_on_its_own(
    cluster: Factory, redis_server: RedisServer
) -> None:
    a = await cluster("a", timing=dataclasses.replace(FAST, snapshot_every=0.1))
    await a.do(join(a.s(1), "p1"))
    with redis.Redis(port=redis_server.port) as client:
        await until(lambda: client.hget(a.node._stream.prefix + "snapshot", "seq") == b"1", 5)


async def test_a_failing_listener_never_stops_the_reader(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(applied: Applied) -> None:
        raise RuntimeError("a bug in the hub")

    node = RedisPresence(
        redis_server.url, grace=1, listener=explode, prefix=f"f{uuid.uuid4().hex[:8]}:", timing=FAST
    )
    store: PresenceStore = node  # the same seam as the local store
    await store.start()
    try:
        await node.execute(join(node.socket_id(1), "p1"))
        applied = await node.execute(Leave(node.socket_id(1)))
        assert applied.seq == 2
        assert "handling entry 1 failed" in caplog.text
    finally:
        await node.stop()


async def test_a_disconnect_that_failed_while_redis_was_up_is_appended_later(
    cluster: Factory,
) -> None:
    a, b = await cluster("a", grace=60), await cluster("b", grace=60)
    await a.do(join(a.s(1), "p1"))
    a.node._keep(Disconnect(a.s(1)))  # as if its append had timed out
    await until(lambda: [pid for pid, _ in b.node.replica.away()] == ["p1"], 5)


async def test_a_sigkilled_process_is_declared_down_once_and_revoked_once(
    cluster: Factory, redis_server: RedisServer
) -> None:
    a, b = await cluster("a"), await cluster("b")
    prefix = a.node._stream.prefix
    args = [sys.executable, "-m", "tests.cluster_member", redis_server.url, prefix, "3"]
    victim = await asyncio.create_subprocess_exec(*args, cwd=ROOT, stdout=asyncio.subprocess.PIPE)
    try:
        assert victim.stdout is not None
        name = (await asyncio.wait_for(victim.stdout.readline(), 10)).decode().strip()
        await until(lambda: len(a.node.replica.presence) == len(b.node.replica.presence) == 3)
    finally:
        victim.kill()  # SIGKILL: no lease given back, no socket closed
        await victim.wait()
    await until(lambda: len(a.node.replica.presence) == len(b.node.replica.presence) == 0, 10)
    await until(lambda: len(revoked(a, b)) >= 3, 5)
    await settled(a, b)
    assert [x.command for x in a.heard if isinstance(x.command, InstanceDown)] == [
        InstanceDown(name)
    ]
    assert revoked(a, b) == ["hv0", "hv1", "hv2"]


async def test_churn_through_a_redis_restart_converges_everywhere(
    cluster: Factory, own_redis: RedisServer
) -> None:
    instances = [await cluster(name, url=own_redis.url, grace=60) for name in "abc"]
    rng = random.Random(7)
    counter = iter(range(10_000))

    def command(node: Instance) -> Command:
        socket = node.s(rng.randint(1, 5))
        if rng.random() < 0.6:
            n = next(counter)
            return join(socket, f"p{n}", rng.choice("RS"), limit=4, user=rng.choice(["al", "bo"]))
        options: list[Command] = [Leave(socket), Disconnect(socket)]
        return rng.choice(options)

    async def churn(rounds: int) -> int:
        failed = 0
        for _ in range(rounds):
            batch = [node.do(command(node)) for node in rng.choices(instances, k=6)]
            results = await asyncio.gather(*batch, return_exceptions=True)
            failed += sum(isinstance(r, ClusterUnavailable) for r in results)
        return failed

    await churn(10)
    own_redis.kill()
    assert await churn(3) == 18  # every command refused while Redis is away
    own_redis.start()
    await until(lambda: all(i.node.healthy for i in instances), 10)
    await churn(10)
    # Re-assertions and re-delivered disconnects run in the background: wait for them.
    await until(lambda: not any(i.node._undelivered or i.node._background for i in instances))
    await settled(*instances, timeout=10)
    states = [i.state() for i in instances]
    assert states[0] == states[1] == states[2]
    ids = [m["participant"]["id"] for m in states[0]["members"]]
    assert len(ids) == len(set(ids))
    for instance in instances:
        assert instance.view == rooms(instance.node.replica)


AT = "2026-12-07T06:30:00.123Z"


async def test_a_late_instance_gets_the_chat_history_and_drops_it_with_the_room(
    cluster: Factory,
) -> None:
    a = await cluster("a")
    await a.do(join(a.s(1), "p1"))
    for n in range(3):
        await a.do(Chat(a.s(1), f"m{n}", AT))
    assert await a.node.duties.snapshot()
    await a.do(Chat(a.s(1), "after the snapshot", AT))
    late = await cluster("late")
    texts = [line.text for line in late.node.replica.chats.of("R")]
    assert texts == ["m0", "m1", "m2", "after the snapshot"]
    refused = await late.do(Chat(late.s(1), "from the lobby", AT))
    assert refused.result.rejected is not None
    assert refused.result.rejected.code == "not_in_room"
    await a.do(Leave(a.s(1)))
    await settled(a, late)
    assert late.node.replica.chats.of("R") == a.node.replica.chats.of("R") == []
