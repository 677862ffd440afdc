"""The limits seam: login throttling, sockets per user and joins per user, in one process
or shared by every instance.

Each limit is a small protocol with an in-process implementation here (the pure
rules of `lobby.rules.limits` and `lobby.rules.logins` behind it, exactly as a
single lobby always counted) and a Redis one (`lobby.cluster.throttle`,
`lobby.cluster.quotas`) that counts for the whole cluster. The web edge and the
request handler talk to the protocols only.

- `Logins`: the login throttle. Redis unreachable: `LimitsUnavailable`, and the
  login page says logins are unavailable for a moment (failing closed: a throttle
  nobody can consult must not become an unthrottled login).
- `Sockets`: open sockets per user. `admit` before the upgrade, `release` once
  the socket is gone (every admitted socket is released exactly once). Redis
  unreachable: this instance's own count decides (failing open: a page must be
  able to reconnect while Redis is away, and the cap is a guard against runaway
  tabs, not a security boundary).
- `Joins`: `join`s (and token refreshes) per user per minute. Redis unreachable:
  the join is refused with `cluster_unavailable`, which its append to the log
  would answer anyway, before it costs the media server anything.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Protocol

from lobby.cluster.seam import UNAVAILABLE
from lobby.rules.limits import SlidingWindow
from lobby.rules.logins import LoginThrottle, Verdict
from lobby.rules.protocol import ProtocolError

LOGINS_UNAVAILABLE = "Logins are unavailable for a moment; please try again shortly."
JOIN_WINDOW = 60.0  # seconds: `LOBBY_JOINS_PER_MINUTE`


class LimitsUnavailable(Exception):
    """A shared limit cannot be consulted (Redis down or too slow)."""


class Logins(Protocol):
    """Use: `attempt`; if refused, refuse the login; else wait `slowdown`, check the
    password, then `succeeded` (it was right) or `withdrawn` (it was never checked)."""

    async def attempt(self, account: str, address: str) -> Verdict: ...

    async def succeeded(self, account: str, address: str) -> None: ...

    async def withdrawn(self, account: str, address: str) -> None: ...


class Sockets(Protocol):
    async def admit(self, user: str) -> bool:
        """Count one more socket of `user` if the cap allows; False (and nothing counted)
        if it does not."""
        ...

    def release(self, user: str) -> None:
        """An admitted socket of `user` is gone."""
        ...


class Joins(Protocol):
    async def hit(self, user: str) -> ProtocolError | None:
        """Count a join of `user`; None if it may go on, else the error to answer."""
        ...


class LocalLogins:
    """The pure throttle of this process, behind the seam."""

    def __init__(self, throttle: LoginThrottle) -> None:
        self.throttle = throttle

    def __len__(self) -> int:
        return len(self.throttle)

    async def attempt(self, account: str, address: str) -> Verdict:
        return self.throttle.attempt(account, address)

    async def succeeded(self, account: str, address: str) -> None:
        self.throttle.succeeded(account, address)

    async def withdrawn(self, account: str, address: str) -> None:
        self.throttle.withdrawn(account, address)


class LocalSockets:
    """Sockets per user in this process."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._held: dict[str, int] = {}

    def held(self, user: str) -> int:
        return self._held.get(user, 0)

    async def admit(self, user: str) -> bool:
        return self.take(user)

    def take(self, user: str) -> bool:
        """`admit`, answered at once."""
        if self.held(user) >= self.cap:
            return False
        self._held[user] = self.held(user) + 1
        return True

    def release(self, user: str) -> None:
        left = self.held(user) - 1
        if left > 0:
            self._held[user] = left
        else:
            self._held.pop(user, None)


class LocalJoins:
    """Joins per user in this process: a sliding window, answered at once (`hit_now`)."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._window = SlidingWindow(per_minute, JOIN_WINDOW)
        self._clock = clock

    async def hit(self, user: str) -> ProtocolError | None:
        return self.hit_now(user)

    def hit_now(self, user: str) -> ProtocolError | None:
        now = self._clock()
        if not self._window.hit(user, now):
            return too_many_joins(self._window.retry_after(user, now))
        if len(self._window) > 10_000:
            self._window.forget_idle(now)
        return None


def too_many_joins(wait: float) -> ProtocolError:
    return ProtocolError("rate_limited", f"Too many joins; try again in {math.ceil(wait)} s.")


def joins_unavailable() -> ProtocolError:
    return ProtocolError("cluster_unavailable", UNAVAILABLE)
