"""Grants and clean-up on the media back end (`lobby.media.calls`), against `FakeMedia`."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Callable

import pytest

from lobby.media.calls import Calls
from lobby.rules.grants import Grant, Identity
from tests.conftest import until
from tests.fakes import FakeMedia, Refused

ALICE = Identity("p_a", "alice", "Alice", "PUBLISHER")
BOB = Identity("p_b", "bob", "Bob", "PUBLISHER")

CallsFactory = Callable[..., Calls]


@pytest.fixture
def media() -> FakeMedia:
    return FakeMedia()


@pytest.fixture
async def make_calls(media: FakeMedia) -> AsyncIterator[CallsFactory]:
    """`Calls` over `media` (rooms are empty unless `occupied=` says otherwise), drained after."""
    made: list[Calls] = []

    def make(**options: object) -> Calls:
        options.setdefault("occupied", lambda room: False)
        calls = Calls(media, **options)  # type: ignore[arg-type]
        made.append(calls)
        return calls

    yield make
    media.release_all()
    for calls in made:
        await calls.drain()


async def granted(calls: Calls, room: str, identity: Identity = ALICE) -> Grant:
    grant = await calls.grant(room, identity)
    assert isinstance(grant, Grant), grant
    return grant


async def test_a_grant_comes_from_the_media_back_end(
    make_calls: CallsFactory, media: FakeMedia
) -> None:
    calls = make_calls()
    grant = await granted(calls, "R1")
    assert media.connections == {grant.connection_id: grant}
    assert media.identities == [ALICE]
    assert calls.media is media


async def test_a_failed_grant_is_returned_not_raised(
    make_calls: CallsFactory, media: FakeMedia
) -> None:
    calls = make_calls()
    error = media.fail("grant", error=Refused("No."))
    assert await calls.grant("R1", ALICE) is error
    media.mend()
    await granted(calls, "R1")  # nothing is stuck: the room is not counted as joining


async def test_clean_up_revokes_then_closes_the_rooms_still_empty(
    make_calls: CallsFactory, media: FakeMedia
) -> None:
    occupied = {"B"}
    calls = make_calls(occupied=occupied.__contains__)
    a, b = await granted(calls, "A"), await granted(calls, "B", BOB)
    media.calls.clear()
    calls.clean_up([a, None, b], ["A", "B"])  # None: nothing to revoke
    await media.called("close_room A")
    await calls.drain()
    assert media.calls == [f"revoke {a.connection_id}", f"revoke {b.connection_id}", "close_room A"]
    assert media.rooms == {"B"}
    assert calls.unfinished == 0


async def test_a_room_is_not_closed_while_a_grant_for_it_is_in_flight(
    make_calls: CallsFactory, media: FakeMedia
) -> None:
    calls = make_calls()
    gate = media.hold("grant")
    joining = asyncio.create_task(calls.grant("R1", ALICE))
    await gate.reached()
    calls.maybe_close("R1")  # the room is empty, but someone is on the way in
    gate.release()
    assert isinstance(await joining, Grant)
    await calls.drain()
    assert media.calls == ["grant R1"]
    assert media.rooms == {"R1"}
    calls.maybe_close("R1")  # once nobody is on the way in, it may close
    await media.called("close_room R1")


async def test_a_grant_waits_while_its_room_is_being_closed(
    make_calls: CallsFactory, media: FakeMedia
) -> None:
    calls = make_calls()
    await granted(calls, "R1")
    closing = media.hold("close_room")
    calls.maybe_close("R1")
    await closing.reached()
    joining = asyncio.create_task(calls.grant("R1", BOB))
    await asyncio.sleep(0)  # the grant is started, and waits for the close
    assert media.calls == ["grant R1", "close_room R1"]
    closing.release()
    grant = await joining
    assert isinstance(grant, Grant)
    assert media.calls == ["grant R1", "close_room R1", "grant R1"]
    assert media.connections == {grant.connection_id: grant}  # in a fresh session


async def test_maybe_close_only_when_empty_and_not_closing_already(
    make_calls: CallsFactory, media: FakeMedia
) -> None:
    occupied = {"R1"}
    calls = make_calls(occupied=occupied.__contains__)
    calls.maybe_close("R1")
    occupied.clear()
    closing = media.hold("close_room")
    calls.maybe_close("R1")
    await closing.reached()
    calls.maybe_close("R1")  # a second close while the first runs: nothing
    closing.release()
    await calls.drain()
    assert media.calls == ["close_room R1"]


async def test_a_failed_revoke_is_kept_and_retried_at_once_when_the_media_server_is_back(
    make_calls: CallsFactory, media: FakeMedia, caplog: pytest.LogCaptureFixture
) -> None:
    recovered = asyncio.Event()
    calls = make_calls(recovered=recovered, first_retry=60.0)  # only `recovered` can wake it
    grant = await granted(calls, "R1")
    media.fail("revoke")
    with caplog.at_level(logging.WARNING, logger="lobby.media.calls"):
        await calls.revoke(grant)
    assert calls.unfinished == 1
    assert f"could not delete connection {grant.connection_id} in room R1" in caplog.text
    media.mend()
    recovered.set()
    await until(lambda: calls.unfinished == 0)
    assert media.calls.count(f"revoke {grant.connection_id}") == 2
    assert media.connections == {}


async def test_retries_wait_a_growing_pause(make_calls: CallsFactory, media: FakeMedia) -> None:
    calls = make_calls(first_retry=0.02, max_retry=1.0)
    grant = await granted(calls, "R1")
    media.fail("revoke", times=3)
    await calls.revoke(grant)
    await until(lambda: calls.unfinished == 0)
    tries = [
        t for c, t in zip(media.calls, media.call_times, strict=True) if c.startswith("revoke")
    ]
    gaps = [later - earlier for earlier, later in itertools.pairwise(tries)]
    assert len(gaps) == 3
    # Timers never fire early, so each pause is at least what was due: 0.02 s, doubling.
    for gap, due in zip(gaps, (0.02, 0.04, 0.08), strict=True):
        assert gap >= due * 0.99, (gaps, due)
    assert media.connections == {}


async def test_a_failed_close_is_retried_only_while_the_room_stays_empty(
    make_calls: CallsFactory, media: FakeMedia, caplog: pytest.LogCaptureFixture
) -> None:
    occupied: set[str] = set()
    recovered = asyncio.Event()
    calls = make_calls(occupied=occupied.__contains__, recovered=recovered, first_retry=60.0)
    await granted(calls, "R1")
    await granted(calls, "R2")
    media.fail("close_room")
    with caplog.at_level(logging.WARNING, logger="lobby.media.calls"):
        calls.maybe_close("R1")
        calls.maybe_close("R2")
        await until(lambda: calls.unfinished == 2)
    assert "could not close the media session of room R1; will retry" in caplog.text
    media.mend()
    occupied.add("R2")  # someone joined R2 meanwhile: its session is in use again
    recovered.set()
    await until(lambda: calls.unfinished == 0)
    await calls.drain()
    assert media.calls.count("close_room R1") == 2
    assert media.calls.count("close_room R2") == 1
    assert media.rooms == {"R2"}


async def test_a_retry_round_stops_at_the_first_revoke_that_still_fails(
    make_calls: CallsFactory, media: FakeMedia
) -> None:
    calls = make_calls(first_retry=0.01, max_retry=0.01)
    first, second = await granted(calls, "R1"), await granted(calls, "R1", BOB)
    media.fail("revoke")
    await calls.revoke(first)
    await calls.revoke(second)
    await until(lambda: media.calls.count(f"revoke {first.connection_id}") == 3)
    assert media.calls.count(f"revoke {second.connection_id}") == 1  # still down: not asked
    assert calls.unfinished == 2
    media.mend()
    await until(lambda: calls.unfinished == 0)
    assert media.connections == {}


def retriers() -> list[asyncio.Task[object]]:
    """The retry loops (`Calls._retry`) still running on this event loop."""
    return [
        task
        for task in asyncio.all_tasks()
        if getattr(task.get_coro(), "__qualname__", "") == "Calls._retry"
        and not task.done()
        and not task.cancelling()
    ]


async def test_drain_waits_for_clean_up_under_way_and_stops_retrying(
    make_calls: CallsFactory, media: FakeMedia
) -> None:
    calls = make_calls(first_retry=60.0)
    missed, grant = await granted(calls, "R0"), await granted(calls, "R1", BOB)
    media.fail("revoke", times=1)
    await calls.revoke(missed)  # kept for a retry a minute from now
    assert len(retriers()) == 1
    revoking = media.hold("revoke")
    calls.clean_up([grant], ["R1"])
    await revoking.reached()
    draining = asyncio.create_task(calls.drain())
    await asyncio.sleep(0)
    assert not draining.done()
    revoking.release()
    await draining
    assert media.calls[-2:] == [f"revoke {grant.connection_id}", "close_room R1"]
    assert retriers() == []
    assert calls.unfinished == 1  # left undone: shutdown does not wait for an outage to end


async def test_after_a_recovery_what_still_fails_is_retried_after_a_pause_not_in_a_spin(
    make_calls: CallsFactory, media: FakeMedia
) -> None:
    """`recovered` stays set once the media server is back; it must not cut every pause short."""
    recovered = asyncio.Event()
    recovered.set()  # the media server came back earlier and has not failed since
    calls = make_calls(recovered=recovered, first_retry=0.02, max_retry=0.02)
    grant = await granted(calls, "R1")
    media.fail("revoke", error=Refused("That connection cannot be deleted."), times=4)
    await calls.revoke(grant)
    await until(lambda: calls.unfinished == 0)
    tries = [
        t for c, t in zip(media.calls, media.call_times, strict=True) if c.startswith("revoke")
    ]
    gaps = [later - earlier for earlier, later in itertools.pairwise(tries)]
    assert len(gaps) == 4
    # The first retry may use the comeback (at once); after that each one waits its pause.
    assert min(gaps[1:]) >= 0.02 * 0.99, gaps
    assert not recovered.is_set()  # consumed


async def test_a_revoke_that_fails_while_draining_starts_no_retries(
    make_calls: CallsFactory, media: FakeMedia
) -> None:
    calls = make_calls(first_retry=60.0)
    grant = await granted(calls, "R1")
    revoking = media.hold("revoke")
    media.fail("revoke")
    calls.clean_up([grant], [])
    await revoking.reached()
    draining = asyncio.create_task(calls.drain())
    await asyncio.sleep(0)
    revoking.release()
    await draining
    assert calls.unfinished == 1  # kept, but nobody retries it after shutdown
    assert retriers() == []
