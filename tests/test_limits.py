"""The login throttle, pure: a fake clock, no server."""

from __future__ import annotations

import math

import pytest

from lobby.rules.limits import LoginThrottle, address_key

HOME = "198.51.100.7"
AWAY = "203.0.113.9"


class Clock:
    """A clock that moves only when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def fail(throttle: LoginThrottle, times: int, account: str = "alice", address: str = HOME) -> None:
    """Fail `times` allowed attempts (none may be refused)."""
    for _ in range(times):
        assert not throttle.attempt(account, address).refused


def lock_delays(throttle: LoginThrottle, clock: Clock, rounds: int) -> list[float]:
    """Fail once per lock, as soon as the last one is over; the lock each failure set."""
    delays = []
    for _ in range(rounds):
        clock.now += throttle.check("alice", HOME)
        assert not throttle.attempt("alice", HOME).refused
        delays.append(throttle.check("alice", HOME))
    return delays


def test_free_failures_then_delays_that_double_up_to_the_cap(clock: Clock) -> None:
    throttle = LoginThrottle(free_failures=3, base_delay=1.0, max_delay=10.0, clock=clock)
    fail(throttle, 3)
    assert throttle.check("alice", HOME) == 0
    assert lock_delays(throttle, clock, 6) == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_a_locked_key_refuses_without_counting(clock: Clock) -> None:
    throttle = LoginThrottle(free_failures=1, base_delay=4.0, clock=clock)
    fail(throttle, 2)
    clock.now += 1
    for _ in range(5):
        assert throttle.attempt("alice", HOME).wait == 3.0  # refused; the lock did not grow
    clock.now += 3
    assert not throttle.attempt("alice", HOME).refused
    assert throttle.check("alice", HOME) == 8.0  # the next doubling, not five more


def test_wrong_passwords_from_one_address_lock_only_that_address_out(clock: Clock) -> None:
    # The attack of issue 17: four wrong passwords from AWAY used to lock the account
    # everywhere, and one more attempt whenever the lock ended kept it locked.
    throttle = LoginThrottle(free_failures=3, max_slowdown=4.0, clock=clock)
    fail(throttle, 4, address=AWAY)
    assert throttle.check("alice", AWAY) == 1.0
    assert throttle.check("ALICE ", AWAY) == 1.0  # names count lower-cased
    for _ in range(40):  # the attacker keeps the lock going for hours
        clock.now += throttle.check("alice", AWAY)
        assert not throttle.attempt("alice", AWAY).refused
        assert throttle.check("alice", HOME) == 0  # the owner is never refused...
    owner = throttle.attempt("alice", HOME)
    assert not owner.refused
    assert 0 < owner.slowdown <= 4.0  # ...only slowed down, a bounded amount
    throttle.succeeded("alice", HOME)
    assert throttle.attempt("alice", HOME).slowdown == 0  # and a success forgives it


def test_across_addresses_attempts_are_slowed_down_more_and_more_up_to_a_cap(
    clock: Clock,
) -> None:
    throttle = LoginThrottle(free_failures=3, slowdown_base=0.5, max_slowdown=4.0, clock=clock)
    verdicts = [throttle.attempt("alice", f"192.0.2.{n}") for n in range(9)]
    assert not any(v.refused for v in verdicts)
    assert [v.slowdown for v in verdicts] == [0, 0, 0, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert throttle.attempt("bob", AWAY).slowdown == 0  # other accounts are not slowed


def test_a_withdrawn_attempt_takes_back_its_counts(clock: Clock) -> None:
    throttle = LoginThrottle(free_failures=1, address_factor=1, clock=clock)
    for _ in range(5):  # never checked (the server was busy): never counted
        fail(throttle, 1)
        throttle.withdrawn("alice", HOME)
    assert throttle.check("alice", HOME) == 0
    assert throttle.attempt("alice", HOME).slowdown == 0


def test_an_address_gets_more_failures_than_an_account(clock: Clock) -> None:
    throttle = LoginThrottle(free_failures=3, address_factor=5, clock=clock)
    for n in range(16):  # a different account each time: no account lock
        fail(throttle, 1, account=f"user{n}")
    assert throttle.check("someone-else", HOME) == 1.0
    assert throttle.check("someone-else", AWAY) == 0


def test_success_forgives_the_account(clock: Clock) -> None:
    throttle = LoginThrottle(free_failures=3, clock=clock)
    fail(throttle, 3)
    assert not throttle.attempt("alice", HOME).refused  # the right password, at the limit
    throttle.succeeded("alice", HOME)
    assert throttle.check("alice", HOME) == 0
    fail(throttle, 3)  # a whole allowance again
    assert throttle.check("alice", HOME) == 0


def test_success_takes_back_only_its_own_count_on_the_address(clock: Clock) -> None:
    throttle = LoginThrottle(free_failures=1, address_factor=5, clock=clock)
    for n in range(4):
        fail(throttle, 1, account=f"guess{n}")
    # An attacker's own valid account, logged into between guesses...
    for _ in range(3):
        fail(throttle, 1, account="mine")
        throttle.succeeded("mine", HOME)
    # ...leaves the address where the guesses put it: one more free, then locked.
    fail(throttle, 2, account="guess-next")
    assert throttle.check("nobody", HOME) == 1.0


def test_failures_leak_away_and_quiet_keys_are_forgotten(clock: Clock) -> None:
    throttle = LoginThrottle(free_failures=3, forget_after=900.0, clock=clock)
    fail(throttle, 3)
    clock.now += 300  # one failure forgiven per forget_after / free_failures
    fail(throttle, 1)
    assert throttle.check("alice", HOME) == 0
    assert len(throttle) == 3  # the pair, the address and the account
    clock.now += 900
    fail(throttle, 1, account="bob", address=AWAY)  # any attempt sweeps the old keys
    assert len(throttle) == 3


def test_a_lock_is_remembered_until_it_is_over(clock: Clock) -> None:
    throttle = LoginThrottle(free_failures=1, base_delay=50.0, forget_after=10.0, clock=clock)
    fail(throttle, 2)
    clock.now += 20  # every failure forgiven, but the lock still runs
    assert throttle.check("alice", HOME) == 30.0
    clock.now += 30
    assert throttle.check("alice", HOME) == 0
    assert len(throttle) == 0


def test_tracked_keys_are_capped_by_evicting_the_oldest(clock: Clock) -> None:
    throttle = LoginThrottle(free_failures=1, max_keys=6, clock=clock)
    fail(throttle, 1, account="a", address="192.0.2.1")
    fail(throttle, 1, account="b", address="192.0.2.2")
    fail(throttle, 1, account="c", address="192.0.2.3")
    assert len(throttle) == 6
    # "a" from 192.0.2.1 was evicted: its second failure is its first again, so no lock.
    fail(throttle, 1, account="a", address="192.0.2.1")
    assert throttle.check("a", "192.0.2.1") == 0
    assert len(throttle) == 6


def test_a_long_siege_never_overflows_the_delay(clock: Clock) -> None:
    # No forgiveness and no cap: 1100 doublings would be far past a float's range.
    throttle = LoginThrottle(
        free_failures=1, max_delay=float("inf"), forget_after=1e300, clock=clock
    )
    delays = lock_delays(throttle, clock, 1100)
    assert math.isfinite(delays[-1])
    assert delays[-1] >= 2.0**63


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("203.0.113.9", "203.0.113.9"),
        ("::ffff:203.0.113.9", "203.0.113.9"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::ffff", "2001:db8:1:2::/64"),
        ("testclient", "testclient"),
    ],
)
def test_address_keys(host: str, key: str) -> None:
    assert address_key(host) == key


def test_one_ipv6_host_cannot_rotate_addresses_within_its_64(clock: Clock) -> None:
    throttle = LoginThrottle(free_failures=1, address_factor=1, clock=clock)
    fail(throttle, 1, account="a", address="2001:db8::1")
    fail(throttle, 1, account="b", address="2001:db8::2")
    assert throttle.check("c", "2001:db8::3") == 1.0


def test_one_ipv6_host_cannot_dodge_a_pair_lock_within_its_64(clock: Clock) -> None:
    throttle = LoginThrottle(free_failures=1, address_factor=5, clock=clock)
    fail(throttle, 2, address="2001:db8::1")
    assert throttle.check("alice", "2001:db8::2") == 1.0
    assert throttle.check("alice", "2001:db8:0:1::1") == 0  # another /64: another address


@pytest.mark.parametrize(
    "bad", [{"free_failures": 0}, {"address_factor": 0}, {"forget_after": 0}, {"max_keys": 2}]
)
def test_nonsense_settings_are_refused(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="must be"):
        # The ignore: mypy cannot match a dict of ints to the keyword-only floats.
        LoginThrottle(**bad)  # type: ignore[arg-type]
