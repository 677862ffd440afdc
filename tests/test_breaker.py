"""The circuit breaker in front of the media back end (`lobby.media.breaker`), on `FakeMedia`."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable

import pytest

from lobby.media.breaker import Breaker, MediaDown
from lobby.rules.grants import Grant, Identity
from tests.fakes import FakeMedia, Outage, Refused

ALICE = Identity("p_a", "alice", "Alice", "PUBLISHER")
BreakerFactory = Callable[..., Breaker]


@pytest.fixture
def media() -> FakeMedia:
    return FakeMedia()


@pytest.fixture
async def make_breaker(media: FakeMedia) -> AsyncIterator[BreakerFactory]:
    """A breaker around `media` (probing after `first_probe`, default 1 s); closed after."""
    made: list[Breaker] = []

    def make(first_probe: float = 1.0, max_probe: float = 30.0) -> Breaker:
        breaker = Breaker(media, first_probe=first_probe, max_probe=max_probe)
        made.append(breaker)
        return breaker

    yield make
    for breaker in made:
        await breaker.aclose()


async def test_while_closed_every_call_goes_through(
    make_breaker: BreakerFactory, media: FakeMedia
) -> None:
    breaker = make_breaker()
    grant = await breaker.grant("R1", ALICE)
    await breaker.revoke(grant)
    await breaker.close_room("R1")
    await breaker.check()
    assert media.calls == ["grant R1", f"revoke {grant.connection_id}", "close_room R1", "check"]
    assert breaker.page_config("alice") == media.page_config("alice")
    assert breaker.peer_to_peer is False
    assert Breaker(FakeMedia(peer_to_peer=True)).peer_to_peer is True
    assert not breaker.down


async def test_an_error_that_is_no_outage_passes_through_and_trips_nothing(
    make_breaker: BreakerFactory, media: FakeMedia
) -> None:
    breaker = make_breaker()
    refused = media.fail("grant", error=Refused("Not that one."), times=1)
    with pytest.raises(Refused) as raised:
        await breaker.grant("R1", ALICE)
    assert raised.value is refused
    assert not breaker.down
    assert isinstance(await breaker.grant("R1", ALICE), Grant)
    assert media.calls == ["grant R1", "grant R1"]


async def test_an_outage_opens_it_and_then_calls_fail_fast_without_asking(
    make_breaker: BreakerFactory, media: FakeMedia
) -> None:
    breaker = make_breaker(first_probe=60.0)
    outage = media.fail("grant")
    with pytest.raises(Outage) as raised:
        await breaker.grant("R1", ALICE)
    assert raised.value is outage  # the first failure is the back end's own
    assert breaker.down
    asked = list(media.calls)
    grant = Grant("R1", "con_x", "tok_x")
    for call in (
        breaker.grant("R1", ALICE),
        breaker.revoke(grant),
        breaker.close_room("R1"),
        breaker.check(),
    ):
        with pytest.raises(MediaDown) as down:
            await call
        assert (down.value.code, down.value.outage) == ("media_unavailable", True)
        assert "try again" in down.value.message
    assert media.calls == asked  # not even asked


async def test_it_probes_with_a_growing_pause_and_closes_when_the_check_passes(
    make_breaker: BreakerFactory, media: FakeMedia
) -> None:
    breaker = make_breaker(first_probe=0.01, max_probe=1.0)
    media.fail("revoke")
    media.fail("check", times=3)
    with pytest.raises(Outage):
        await breaker.revoke(Grant("R1", "con_x", "tok_x"))
    assert not breaker.recovered.is_set()
    await asyncio.wait_for(breaker.recovered.wait(), 5)
    assert not breaker.down
    times = [t for c, t in zip(media.calls, media.call_times, strict=True) if c == "check"]
    assert len(times) == 4  # three failed probes, then one that passed
    # Timers never fire early, so each pause is at least what was due: doubling.
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    for gap, due in zip(gaps, (0.02, 0.04, 0.08), strict=True):
        assert gap >= due * 0.99, (gaps, due)
    assert isinstance(await breaker.grant("R1", ALICE), Grant)  # closed again


async def test_recovered_is_cleared_when_it_opens_again(
    make_breaker: BreakerFactory, media: FakeMedia
) -> None:
    breaker = make_breaker(first_probe=0.01)
    media.fail("grant", times=1)
    with pytest.raises(Outage):
        await breaker.grant("R1", ALICE)
    await asyncio.wait_for(breaker.recovered.wait(), 5)
    media.fail("close_room", times=1)
    with pytest.raises(Outage):
        await breaker.close_room("R1")
    assert breaker.down
    assert not breaker.recovered.is_set()


async def test_aclose_stops_the_probe_and_closes_the_back_end(
    make_breaker: BreakerFactory, media: FakeMedia
) -> None:
    breaker = make_breaker(first_probe=0.01)
    media.fail("grant", "check")  # never comes back
    with pytest.raises(Outage):
        await breaker.grant("R1", ALICE)
    await media.called("check")
    probes = [t for t in asyncio.all_tasks() if "_wait_for_recovery" in repr(t.get_coro())]
    assert len(probes) == 1
    await breaker.aclose()
    await asyncio.wait(probes)
    assert probes[0].cancelled()
    assert media.closed


async def test_every_call_that_reaches_the_back_end_is_observed_with_its_outcome(
    media: FakeMedia,
) -> None:
    seen: list[tuple[str, str]] = []
    breaker = Breaker(
        media, first_probe=60.0, observe=lambda op, outcome, seconds: seen.append((op, outcome))
    )
    try:
        await breaker.grant("R1", ALICE)
        media.fail("grant", error=Refused("Not that one."), times=1)
        with pytest.raises(Refused):
            await breaker.grant("R1", ALICE)
        media.fail("close_room", error=Outage("down"), times=1)
        with pytest.raises(Outage):
            await breaker.close_room("R1")
        with pytest.raises(MediaDown):  # refused while open: never reached the back end
            await breaker.check()
    finally:
        await breaker.aclose()
    assert seen == [("grant", "ok"), ("grant", "error"), ("close_room", "outage")]
