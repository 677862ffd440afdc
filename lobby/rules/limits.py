"""Rate limits: token buckets and frame budgets per socket, windows per user, login lockouts.

Pure and clock-injected: callers pass `now` (or a clock), so tests need no
sleeps. Every limiter keeps its memory bounded: a bucket is four numbers, a
window keeps at most `limit` timestamps per key and forgets idle keys, and the
login throttle forgets leaked-out keys and evicts the oldest past `max_keys`.

Login throttling (`LoginThrottle`): lockouts per (account, address), a
per-address budget, and across addresses only a growing delay.

Every login attempt counts against three keys:

- the pair (account name lower-cased, client address): `free_failures`
  failures, then each one beyond locks the pair for a delay that doubles (1, 2,
  4, … seconds, capped at `max_delay`). A locked attempt is refused (429).
  Locking the pair, not the account, is what keeps an attacker from locking the
  owner out: wrong passwords from one address lock that address out of that
  account, and nobody else.
- the address: `address_factor` times as many failures before the same kind
  of lock, for every account together: the budget of one address guessing
  across many accounts. Generous, because offices and mobile carriers put many
  people behind one NAT address. An IPv6 address counts by its /64 (in the pair
  too), since one host usually holds a whole /64.
- the account, from every address: never a lock, so the owner is never
  refused because of someone else's guesses; beyond `free_failures` each
  attempt is only *slowed down*: the server waits `slowdown` before checking
  the password, a delay that doubles from `slowdown_base` up to
  `max_slowdown` (a few seconds). Unknown names count the same way, so the
  answers (and their timing) say nothing about which names exist.

An attempt counts as a failure *before* the password is checked: concurrent
guesses cannot all slip past `check` while argon2 runs. `succeeded` then
forgives the pair and the account entirely (only the password's holder can
cause that), but takes back only the attempt's own count on the address, so an
attacker holding one valid account cannot log in with it to reset the
address's budget for guessing other accounts. `withdrawn` takes back an
attempt whose password was never checked (the server was too busy).

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

# ("pair", name, host), ("address", host) or ("account", name); the kind first.
Key = tuple[str, ...]


@dataclass(slots=True)
class _Failures:
    """One key's unforgiven failures and the lock they put on it."""

    count: int
    leak_from: float  # when the next forgiveness started accruing
    locked_until: float = 0.0


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with one login attempt."""

    wait: float  # > 0: refuse it; the client may try again after this many seconds
    slowdown: float = 0.0  # otherwise: wait this long before checking the password

    @property
    def refused(self) -> bool:
        return self.wait > 0


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
    """Lockouts per (account, address) and per address; across addresses a growing delay.

    Use: `verdict = attempt(account, address)`; if `verdict.refused`, refuse the
    login without checking the password (retry after `verdict.wait`); else wait
    `verdict.slowdown` seconds, check the password, and call `succeeded` when it
    was right.
    """

    def __init__(
        self,
        *,
        free_failures: int = 3,
        address_factor: int = 5,
        base_delay: float = 1.0,
        max_delay: float = 300.0,
        slowdown_base: float = 0.5,
        max_slowdown: float = 4.0,
        forget_after: float = 900.0,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if min(free_failures, address_factor, forget_after) <= 0 or max_keys < 3:
            # max_keys >= 3: an attempt's own three keys must survive the eviction it causes.
            raise ValueError(
                "free_failures, address_factor, forget_after must be > 0, max_keys >= 3"
            )
        self._free = {
            "pair": free_failures,
            "address": free_failures * address_factor,
            "account": free_failures,
        }
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._slowdown_base = slowdown_base
        self._max_slowdown = max_slowdown
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
        # An account key never locks (its wait is 0); asking sweeps it when forgiven.
        return max(self._wait(key, now) for key in self._keys_of(account, address))

    def attempt(self, account: str, address: str) -> Verdict:
        """Count a login attempt as a failure, unless locked: then only say how long.

        Nothing is counted while locked, so a locked key's delay does not grow
        from attempts it refused.
        """
        wait = self.check(account, address)
        if wait > 0:
            return Verdict(wait)
        now = self._clock()
        keys = self._keys_of(account, address)
        for key in keys:
            self._fail(key, now)
        self._trim(now)
        return Verdict(0.0, self._slowdown(keys[2], now))

    def succeeded(self, account: str, address: str) -> None:
        """The attempt's password was right: forgive the pair and the account, and take
        back the attempt's own count on the address."""
        pair, host, name = self._keys_of(account, address)
        self._keys.pop(pair, None)
        self._keys.pop(name, None)
        self._take_back(host)

    def withdrawn(self, account: str, address: str) -> None:
        """The attempt's password was never checked: take back its count on every key."""
        for key in self._keys_of(account, address):
            self._take_back(key)

    @staticmethod
    def _keys_of(account: str, address: str) -> tuple[Key, Key, Key]:
        name, host = account.strip().lower(), address_key(address)
        return ("pair", name, host), ("address", host), ("account", name)

    def _take_back(self, key: Key) -> None:
        failures = self._current(key, self._clock())
        if failures is not None:
            # Only this attempt's own count: a lock it set stays, so taking back can
            # never make a key *more* able to guess than before the attempt.
            failures.count = max(0, failures.count - 1)

    def _wait(self, key: Key, now: float) -> float:
        failures = self._current(key, now)
        return 0.0 if failures is None else max(0.0, failures.locked_until - now)

    def _slowdown(self, key: Key, now: float) -> float:
        failures = self._current(key, now)
        excess = 0 if failures is None else failures.count - self._free[key[0]]
        if excess <= 0:
            return 0.0
        return float(min(self._max_slowdown, self._slowdown_base * 2 ** min(excess - 1, 64)))

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
        if excess > 0 and key[0] != "account":  # an account is only ever slowed down
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
