"""Rate limits: token buckets and frame budgets per socket, windows per user, login lockouts.

Pure and clock-injected: callers pass `now` (or a clock), so tests need no
sleeps. Every limiter keeps its memory bounded: a bucket is four numbers, a
window keeps at most `limit` timestamps per key and forgets idle keys, and the
login throttle forgets leaked-out keys and evicts the oldest past `max_keys`.

Login throttling lives in `lobby.rules.logins` (re-exported here).
"""

from __future__ import annotations

from collections import deque

# Re-exported: callers and tests import the login throttle from here too.
from lobby.rules.logins import LoginPolicy as LoginPolicy
from lobby.rules.logins import LoginThrottle as LoginThrottle
from lobby.rules.logins import Verdict as Verdict
from lobby.rules.logins import address_key as address_key


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
