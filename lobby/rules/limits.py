"""Rate limits: token buckets and frame budgets per socket, windows per user, login lockouts.

Pure and clock-injected: callers pass `now` (or a clock), so tests need no
sleeps. Every limiter keeps its memory bounded: a bucket is four numbers, a
window keeps at most `limit` timestamps per key and forgets idle keys, and the
login throttle forgets leaked-out keys and evicts the oldest past `max_keys`.

Login throttling (`LoginThrottle`): growing lockouts per account name and per
client address.

Every login attempt counts against two keys, the account name (lower-cased)
and the client address. A key gets `free_failures` failures; each one beyond
locks it for a delay that doubles (1, 2, 4, … seconds, capped at `max_delay`).
The address allows `address_factor` times as many failures, because offices
and mobile carriers put many people behind one NAT address; an IPv6 address
counts by its /64, since one host usually holds a whole /64.

An attempt counts as a failure *before* the password is checked: concurrent
guesses cannot all slip past `check` while argon2 runs. `succeeded` then
forgives the account entirely, but takes back only the attempt's own count on
the address, so an attacker holding one valid account cannot log in with it to
reset the address's budget for guessing other accounts.

Failures leak away with time: a key is forgiven one failure every
`forget_after / free` seconds, so a quiet key has its whole allowance back
after `forget_after`, and a busy NAT address whose people mistype now and then
never locks. A key with nothing left to forgive is forgotten; past `max_keys`
the least recently failed keys are dropped, so memory stays bounded.

The state lives in this process only; several instances will share it through
Redis later, behind the same methods.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass


class TokenBucket:
    """`burst` messages at once, then `rate` per second; repeated refusals mean a flood."""

    __slots__ = ("_burst", "_rate", "_stamp", "_tokens", "strikes")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._stamp = now
        self.strikes = 0  # refusals since the last accepted message

    def take(self, now: float) -> bool:
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            self.strikes = 0
            return True
        self.strikes += 1
        return False

    @property
    def flooding(self) -> bool:
        """Still sending a whole burst's worth after being told to slow down."""
        return self.strikes > self._burst


# Below the message level (`FrameBudget`). The server answers every ping and
# buffers every fragment before any message limit sees them, so these frames
# are charged as they are parsed. Browsers never send pings (the server pings
# them) and send one pong per server ping, so a few control frames a second is
# generous; they send each message as one frame, other clients may split one.
CONTROL_RATE = 3.0  # pings and pongs per second, on average
CONTROL_BURST = 6  # pings and pongs at once
MAX_FRAGMENTS = 32  # frames per message


class FrameBudget:
    """What one WebSocket may send besides whole messages: pings, pongs, fragments.

    Each method charges one incoming frame and returns None while it is within
    the budget, else the reason to close the socket (1008): there is no gentler
    answer to a ping flood than ending it, and no client sends one by mistake.
    An empty non-final fragment carries nothing and only makes the server
    buffer and loop, so it is never within the budget.
    """

    __slots__ = ("_control", "_fragments")

    def __init__(self, now: float) -> None:
        self._control = TokenBucket(CONTROL_RATE, CONTROL_BURST, now)
        self._fragments = 0  # frames of the message being received

    def control(self, now: float) -> str | None:
        """A ping or a pong."""
        return None if self._control.take(now) else "too many pings"

    def data(self, *, first: bool, fin: bool, size: int) -> str | None:
        """A text or binary frame (`first`) or a continuation frame."""
        if not fin and size == 0:
            return "empty fragment"
        self._fragments = 1 if first else self._fragments + 1
        if self._fragments > MAX_FRAGMENTS:
            return "too many fragments"
        return None


class SlidingWindow:
    """At most `limit` hits per key within any `window` seconds."""

    def __init__(self, limit: int, window: float) -> None:
        self._limit = limit
        self._window = window
        self._hits: dict[str, deque[float]] = {}

    def hit(self, key: str, now: float) -> bool:
        """Count a hit for `key` if it is within the limit; False (and no count) if not."""
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - self._window:
            hits.popleft()
        if len(hits) >= self._limit:
            return False
        hits.append(now)
        return True

    def retry_after(self, key: str, now: float) -> float:
        hits = self._hits.get(key)
        if not hits or len(hits) < self._limit:
            return 0.0
        return max(0.0, hits[0] + self._window - now)

    def forget_idle(self, now: float) -> None:
        """Drop keys with no hit in the window (call now and then)."""
        for key in [k for k, h in self._hits.items() if not h or h[-1] <= now - self._window]:
            del self._hits[key]

    def __len__(self) -> int:
        return len(self._hits)


# Login throttling

Key = tuple[str, str]  # ("account", name) or ("address", host)


@dataclass(slots=True)
class _Failures:
    """One key's unforgiven failures and the lock they put on it."""

    count: int
    leak_from: float  # when the next forgiveness started accruing
    locked_until: float = 0.0


def address_key(host: str) -> str:
    """The throttle key for a client address: IPv6 by /64, IPv4 (mapped or not) as is."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host  # not an IP (a Unix socket, a test client): throttle the name as given
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class LoginThrottle:
    """Per-account and per-address lockouts that grow with each failed login.

    Use: `wait = attempt(account, address)`; if `wait` is positive refuse the
    login without checking the password, else check it and call `succeeded`
    when it was right.
    """

    def __init__(
        self,
        *,
        free_failures: int = 3,
        address_factor: int = 5,
        base_delay: float = 1.0,
        max_delay: float = 300.0,
        forget_after: float = 900.0,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if min(free_failures, address_factor, forget_after) <= 0 or max_keys < 2:
            # max_keys >= 2: an attempt's own two keys must survive the eviction it causes.
            raise ValueError(
                "free_failures, address_factor, forget_after must be > 0, max_keys >= 2"
            )
        self._free = {"account": free_failures, "address": free_failures * address_factor}
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._forget_after = forget_after
        self._max_keys = max_keys
        self._clock = clock
        # Ordered by last failure, oldest first: the order to forget and evict in.
        self._keys: OrderedDict[Key, _Failures] = OrderedDict()

    def __len__(self) -> int:
        """How many keys are tracked (for tests and metrics)."""
        return len(self._keys)

    def check(self, account: str, address: str) -> float:
        """Seconds until this account may try again from this address; 0 means now."""
        now = self._clock()
        return max(self._wait(key, now) for key in self._keys_of(account, address))

    def attempt(self, account: str, address: str) -> float:
        """Count a login attempt as a failure, unless locked: then only return the wait.

        Returns what `check` returns. Nothing is counted while locked, so a
        locked key's delay does not grow from attempts it refused.
        """
        wait = self.check(account, address)
        if wait > 0:
            return wait
        now = self._clock()
        for key in self._keys_of(account, address):
            self._fail(key, now)
        self._trim(now)
        return 0.0

    def succeeded(self, account: str, address: str) -> None:
        """The attempt's password was right: forgive the account, take back its address count."""
        account_key, host_key = self._keys_of(account, address)
        self._keys.pop(account_key, None)
        failures = self._current(host_key, self._clock())
        if failures is not None:
            # Only this attempt's own count: a lock it set stays, so a success can
            # never make the address *more* able to guess than before the attempt.
            failures.count = max(0, failures.count - 1)

    @staticmethod
    def _keys_of(account: str, address: str) -> tuple[Key, Key]:
        return ("account", account.strip().lower()), ("address", address_key(address))

    def _wait(self, key: Key, now: float) -> float:
        failures = self._current(key, now)
        return 0.0 if failures is None else max(0.0, failures.locked_until - now)

    def _current(self, key: Key, now: float) -> _Failures | None:
        """The key's failures less what time forgave; None (and dropped) if none are left."""
        failures = self._keys.get(key)
        if failures is None:
            return None
        interval = self._forget_after / self._free[key[0]]
        forgiven = int((now - failures.leak_from) // interval)
        if forgiven > 0:
            failures.count = max(0, failures.count - forgiven)
            failures.leak_from += forgiven * interval
        if failures.count == 0 and now >= failures.locked_until:
            del self._keys[key]
            return None
        return failures

    def _fail(self, key: Key, now: float) -> None:
        failures = self._current(key, now)
        if failures is None:
            failures = self._keys[key] = _Failures(0, now)
        elif failures.count == 0:
            # Still locked but all forgiven: forgiveness accrues anew from this failure.
            failures.leak_from = now
        failures.count += 1
        excess = failures.count - self._free[key[0]]
        if excess > 0:
            failures.locked_until = now + self._delay(excess)
        self._keys.move_to_end(key)

    def _delay(self, excess: int) -> float:
        # The exponent is capped so a long-locked key cannot overflow the float.
        return float(min(self._max_delay, self._base_delay * 2 ** min(excess - 1, 64)))

    def _trim(self, now: float) -> None:
        """Forget leaked-out keys from the old end, then evict the oldest past `max_keys`."""
        while self._keys:
            oldest = next(iter(self._keys))
            if self._current(oldest, now) is not None:
                # Keys behind it failed later. One with fewer failures may be done
                # sooner and wait here a while: `max_keys` bounds memory regardless.
                break
        while len(self._keys) > self._max_keys:
            self._keys.popitem(last=False)
