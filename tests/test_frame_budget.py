"""The frame budget, pure: pings, pongs and fragments below the message limits."""

from __future__ import annotations

from lobby.rules.limits import CONTROL_BURST, CONTROL_RATE, MAX_FRAGMENTS, FrameBudget


def test_control_frames_get_a_small_burst_then_a_few_a_second() -> None:
    budget = FrameBudget(now=0.0)
    assert all(budget.control(0.0) is None for _ in range(CONTROL_BURST))
    assert budget.control(0.0) == "too many pings"
    # A browser's pong per server ping, or a client pinging now and then, never runs out.
    budget = FrameBudget(now=0.0)
    assert all(budget.control(i / CONTROL_RATE) is None for i in range(1000))


def test_a_message_may_come_in_a_bounded_number_of_fragments() -> None:
    budget = FrameBudget(now=0.0)
    for _ in range(3):  # each message counts afresh
        assert budget.data(first=True, fin=False, size=100) is None
        for _ in range(MAX_FRAGMENTS - 2):
            assert budget.data(first=False, fin=False, size=100) is None
        assert budget.data(first=False, fin=True, size=0) is None  # an empty last one is fine
    assert budget.data(first=True, fin=True, size=10) is None  # a whole message in one frame
    assert budget.data(first=True, fin=False, size=1) is None
    for _ in range(MAX_FRAGMENTS - 1):
        assert budget.data(first=False, fin=False, size=1) is None
    assert budget.data(first=False, fin=False, size=1) == "too many fragments"


def test_an_empty_fragment_that_is_not_the_last_is_refused() -> None:
    assert FrameBudget(0.0).data(first=True, fin=False, size=0) == "empty fragment"
    budget = FrameBudget(0.0)
    assert budget.data(first=True, fin=False, size=5) is None
    assert budget.data(first=False, fin=False, size=0) == "empty fragment"
