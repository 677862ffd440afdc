"""Login throttling (`LoginThrottle`): lockouts per (account, address), a
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

`LoginThrottle` keeps the state in this process. Several instances share it
through Redis (`lobby.cluster.throttle`), which applies the same `LoginPolicy`
in one Lua script per call; the arithmetic here is written so that the script
can repeat it step for step (float division and floor, no `//`).
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

# ("pair", name, host), ("address", host) or ("account", name); the kind first.
Key = tuple[str, ...]
KINDS = ("pair", "address", "account")  # the order of an attempt's keys, everywhere


@dataclass(frozen=True, slots=True)
class LoginPolicy:
    """The numbers of login throttling, and the arithmetic on them (see the module doc)."""

    free_failures: int = 3
    address_factor: int = 5
    base_delay: float = 1.0
    max_delay: float = 300.0
    slowdown_base: float = 0.5
    max_slowdown: float = 4.0
    forget_after: float = 900.0

    def __post_init__(self) -> None:
        if min(self.free_failures, self.address_factor, self.forget_after) <= 0:
            raise ValueError("free_failures, address_factor, forget_after must be > 0")

    def free(self, kind: str) -> int:
        """Failures a key of `kind` may have before it locks (or, an account, slows down)."""
        factor = self.address_factor if kind == "address" else 1
        return self.free_failures * factor

    def interval(self, kind: str) -> float:
        """Seconds after which a key of `kind` is forgiven one failure."""
        return self.forget_after / self.free(kind)

    def delay(self, excess: int) -> float:
        # The exponent is capped so a long-locked key cannot overflow the float.
        return float(min(self.max_delay, self.base_delay * 2 ** min(excess - 1, 64)))

    def slowdown(self, excess: int) -> float:
        if excess <= 0:
            return 0.0
        return float(min(self.max_slowdown, self.slowdown_base * 2 ** min(excess - 1, 64)))


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
        if max_keys < 3:
            # max_keys >= 3: an attempt's own three keys must survive the eviction it causes.
            raise ValueError("max_keys must be >= 3")
        self.policy = LoginPolicy(
            free_failures,
            address_factor,
            base_delay,
            max_delay,
            slowdown_base,
            max_slowdown,
            forget_after,
        )
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
        return max(self._wait(key, now) for key in self.keys_of(account, address))

    def attempt(self, account: str, address: str) -> Verdict:
        """Count a login attempt as a failure, unless locked: then only say how long.

        Nothing is counted while locked, so a locked key's delay does not grow
        from attempts it refused.
        """
        wait = self.check(account, address)
        if wait > 0:
            return Verdict(wait)
        now = self._clock()
        keys = self.keys_of(account, address)
        for key in keys:
            self._fail(key, now)
        self._trim(now)
        return Verdict(0.0, self._slowdown(keys[2], now))

    def succeeded(self, account: str, address: str) -> None:
        """The attempt's password was right: forgive the pair and the account, and take
        back the attempt's own count on the address."""
        pair, host, name = self.keys_of(account, address)
        self._keys.pop(pair, None)
        self._keys.pop(name, None)
        self._take_back(host)

    def withdrawn(self, account: str, address: str) -> None:
        """The attempt's password was never checked: take back its count on every key."""
        for key in self.keys_of(account, address):
            self._take_back(key)

    @staticmethod
    def keys_of(account: str, address: str) -> tuple[Key, Key, Key]:
        """The keys an attempt counts against, in `KINDS` order."""
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
        return 0.0 if failures is None else self.policy.slowdown(failures.count - self._free(key))

    def _current(self, key: Key, now: float) -> _Failures | None:
        """The key's failures less what time forgave; None (and dropped) if none are left."""
        failures = self._keys.get(key)
        if failures is None:
            return None
        interval = self.policy.interval(key[0])
        # floor of a true division, not `//`: the Redis script computes exactly this.
        forgiven = math.floor((now - failures.leak_from) / interval)
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
        excess = failures.count - self._free(key)
        if excess > 0 and key[0] != "account":  # an account is only ever slowed down
            failures.locked_until = now + self.policy.delay(excess)
        self._keys.move_to_end(key)

    def _free(self, key: Key) -> int:
        return self.policy.free(key[0])

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
