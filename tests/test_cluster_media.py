"""Media clean-up across instances: two request handlers sharing presence through a real
Redis and one media back end (`FakeMedia`, whose `hold` stops a call half-way).

A room's media session is closed only through the log (`CloseMedia`), and a join
reserves its room there first (`Reserve`): whichever comes first wins, on every
instance, so no instance closes a session under another instance's join.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from lobby.cluster.commands import (
    CloseMedia,
    Command,
    Expire,
    Gone,
    InstanceDown,
    Leave,
    Reassert,
    Reserve,
)
from lobby.cluster.node import RedisPresence
from lobby.cluster.seam import Applied, Cleaner, Listener, Resetter
from lobby.handler import RequestHandler
from lobby.hub import Hub
from tests.conftest import until
from tests.fakes import FakeMedia
from tests.redis_server import RedisServer
from tests.test_cluster_node import FAST, Instance, join, rooms, settled
from tests.test_handler import connect, send
from tests.test_handler import join as join_room


class Side:
    """One instance: a request handler on a `RedisPresence`, and what its replica applied."""

    def __init__(self, handler: RequestHandler, heard: list[Applied]) -> None:
        self.handler, self.heard = handler, heard

    def applied(self, kind: type[Command], *, rejected: bool | None = None) -> list[Applied]:
        return [
            a
            for a in self.heard
            if isinstance(a.command, kind)
            and (rejected is None or (a.result.rejected is not None) == rejected)
        ]


Pair = Callable[..., Any]


@pytest.fixture
def media() -> FakeMedia:
    return FakeMedia()


@pytest.fixture
async def sides(redis_server: RedisServer, media: FakeMedia) -> AsyncIterator[Pair]:
    prefix = f"m{uuid.uuid4().hex[:8]}:"
    made: list[RequestHandler] = []

    async def start(name: str) -> Side:
        heard: list[Applied] = []

        def store(listener: Listener, cleaner: Cleaner, resetter: Resetter) -> RedisPresence:
            def both(applied: Applied) -> None:
                heard.append(applied)
                listener(applied)

            return RedisPresence(
                redis_server.url,
                name=name,
                grace=30.0,
                listener=both,
                cleaner=cleaner,
                resetter=resetter,
                prefix=prefix,
                timing=FAST,
            )

        handler = RequestHandler(media, Hub(), grace=30.0, store=store)
        await handler.store.start()
        made.append(handler)
        return Side(handler, heard)

    yield start
    media.release_all()
    for handler in made:
        await handler.drain()


async def test_a_room_emptied_on_one_instance_is_not_closed_under_a_join_on_another(
    sides: Pair, media: FakeMedia
) -> None:
    a, b = await sides("a"), await sides("b")
    alice = connect(a.handler, "alice")
    await join_room(a.handler, alice, "R1")
    await until(lambda: b.handler.presence.has_room("R1"))
    held = media.hold("grant")
    bob = connect(b.handler, "bob")
    send(b.handler, bob, "join", room="R1", nickname="Bob")
    await held.reached()  # bob's grant is in flight: R1 reserved everywhere
    send(a.handler, alice, "leave")  # R1 is empty in every replica now
    await until(lambda: a.applied(CloseMedia) or "close_room R1" in media.calls)
    assert "close_room R1" not in media.calls  # it would take bob's connection with it
    # The close came after bob's reservation in the log: refused on every instance.
    assert a.applied(CloseMedia, rejected=True)
    assert not b.applied(CloseMedia, rejected=False)
    held.release()
    token = await bob.until("token")
    assert "close_room R1" not in media.calls
    assert token["token"] in {g.token for g in media.connections.values()}
    assert [m.participant.nickname for m in b.handler.presence.members_in("R1")] == ["Bob"]


async def test_a_join_waits_for_a_close_under_way_on_another_instance(
    sides: Pair, media: FakeMedia
) -> None:
    a, b = await sides("a"), await sides("b")
    alice = connect(a.handler, "alice")
    await join_room(a.handler, alice, "R1")
    closing = media.hold("close_room")
    send(a.handler, alice, "leave")
    await closing.reached()  # a's DELETE of R1 is under way
    bob = connect(b.handler, "bob")
    send(b.handler, bob, "join", room="R1", nickname="Bob")
    await until(lambda: b.applied(Reserve, rejected=True) or media.calls.count("grant R1") > 1)
    assert media.calls.count("grant R1") == 1  # alice's only: bob waits for the close
    closing.release()
    await bob.until("token")
    assert media.calls[-2:] == ["close_room R1", "grant R1"]
    assert [m.participant.nickname for m in a.handler.presence.members_in("R1")] == ["Bob"]
    assert "R1" in media.rooms


async def test_a_dead_instances_reservation_ends_with_its_instance_down(
    redis_server: RedisServer,
) -> None:
    prefix = f"m{uuid.uuid4().hex[:8]}:"
    a, b = (Instance(redis_server.url, name, prefix, 0.3) for name in "ab")
    await a.node.start()
    await b.node.start()
    try:
        await b.do(Reserve("r1", "R1", b.s(1)))
        refused = await a.do(CloseMedia("R1", a.node.instance))
        assert refused.result.rejected is not None  # b's join is on its way in
        await b.node.abandon()  # b dies mid-join: its lease lapses, a declares it down
        await until(lambda: any(isinstance(c, InstanceDown) for _, c, _ in a.log()), 5)
        granted = await a.do(CloseMedia("R1", a.node.instance))
        assert granted.result.rejected is None
        assert a.node.replica.reservations.closing("R1")
    finally:
        await a.node.stop()


async def test_a_participant_expired_while_its_instance_was_declared_down_stays_gone(
    redis_server: RedisServer,
) -> None:
    """b stalled past its lease: a declares it down and, at once, b's participant's grace
    period ends (a revokes its grant). b, alive, re-asserts the participants of its open
    sockets: the one that expired must not come back (it would be revoked again)."""
    prefix = f"m{uuid.uuid4().hex[:8]}:"
    a, b = (Instance(redis_server.url, name, prefix, 0.3) for name in "ab")
    await a.node.start()
    await b.node.start()
    try:
        await b.do(join(b.s(1), "p1"))
        _, expired = await asyncio.gather(a.do(InstanceDown(b.node.instance)), a.do(Expire("p1")))
        assert [g.connection_id for g in expired.result.outcome.revoke if g] == ["hp1"]
        await until(lambda: any(isinstance(c, Reassert) for _, c, _ in a.log()), 5)
        await settled(a, b)
        assert rooms(a.node.replica) == rooms(b.node.replica) == {}
        assert a.view == b.view == {}
    finally:
        await a.node.stop()
        await b.node.stop()


async def test_after_redis_lost_its_data_each_instance_declares_gone_only_its_own_removals(
    own_redis: RedisServer,
) -> None:
    """Only the issuer of a removal revokes the grant: a `Gone` from another instance
    could hide a participant whose removal its issuer never applied (so never revoked),
    which must instead come back and expire, revoked once."""
    prefix = f"m{uuid.uuid4().hex[:8]}:"
    a, b = (Instance(own_redis.url, name, prefix, 1.0) for name in "ab")
    await a.node.start()
    await b.node.start()
    try:
        await a.do(join(a.s(1), "p1"))
        await b.do(join(b.s(1), "p2", user="bob"))
        await a.do(Leave(a.s(1)))
        await b.do(Leave(b.s(1)))
        await settled(a, b)
        own_redis.kill()
        await until(lambda: not a.node.healthy and not b.node.healthy, 5)
        own_redis.start()  # empty: a new epoch
        await until(lambda: len([x for x in a.heard if isinstance(x.command, Gone)]) == 2, 10)
        said = {x.issuer: x.command for x in a.heard if isinstance(x.command, Gone)}
        assert said == {a.node.instance: Gone(("p1",)), b.node.instance: Gone(("p2",))}
    finally:
        await a.node.stop()
        await b.node.stop()
