"""Rate limits: a token bucket per socket, a sliding window per user.

Pure and clock-injected: callers pass `now` (the event loop's clock), so tests
need no sleeps. Both keep their memory bounded: a bucket is four numbers, and
a window keeps at most `limit` timestamps per key and forgets idle keys.
"""

from __future__ import annotations

from collections import deque


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
