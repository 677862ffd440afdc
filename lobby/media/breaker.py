"""A circuit breaker in front of the media back end.

When OpenVidu is down, every join would otherwise wait for its own timeout and
then fail. After the first outage-type failure (`MediaError.outage`: refused,
timed out, 5xx, wrong secret) the breaker *opens*: calls fail at once with
`media_unavailable`, and a single background probe (`check`) asks the media
server, with a growing pause, whether it is back. When a probe succeeds the
breaker closes and `recovered` is set, so whoever queued work for later (e.g.
connections that could not be deleted) can retry at once.

Every call that reaches the back end (the probe's too) is reported to `observe`
with its operation, outcome (`ok`, `error`: this request was wrong, `outage`)
and duration, for the metrics; calls refused while open never reach it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from lobby.media.seam import InCall, MediaBackend, MediaError, ParticipantLister
from lobby.rules.grants import Grant, Identity

log = logging.getLogger("lobby.media.breaker")
T = TypeVar("T")
# (operation, outcome, seconds) of one call to the back end.
Observer = Callable[[str, str, float], None]


def _ignore(operation: str, outcome: str, seconds: float) -> None:
    pass


class MediaDown(MediaError):
    """Refused without trying: the media server is known to be down."""

    outage = True

    def __init__(self) -> None:
        super().__init__(
            "The video service is unavailable right now; please try again in a moment."
        )


class Breaker:
    """A `MediaBackend` that fails fast while the one it wraps is down."""

    def __init__(
        self,
        inner: MediaBackend,
        *,
        first_probe: float = 1.0,
        max_probe: float = 30.0,
        observe: Observer = _ignore,
    ) -> None:
        self.inner = inner
        self.observe = observe
        self._first_probe = first_probe
        self._max_probe = max_probe
        self._probe: asyncio.Task[None] | None = None
        # Set each time the media server comes back; whoever retries on it clears it.
        self.recovered = asyncio.Event()

    @property
    def down(self) -> bool:
        return self._probe is not None

    @property
    def peer_to_peer(self) -> bool:
        return self.inner.peer_to_peer

    def page_config(self, user: str) -> dict[str, object]:
        return self.inner.page_config(user)

    async def grant(self, room: str, identity: Identity) -> Grant:
        return await self._call("grant", lambda: self.inner.grant(room, identity))

    async def revoke(self, grant: Grant) -> None:
        await self._call("revoke", lambda: self.inner.revoke(grant))

    async def close_room(self, room: str) -> None:
        await self._call("close_room", lambda: self.inner.close_room(room))

    async def check(self) -> None:
        await self._call("check", self.inner.check)

    @property
    def lists_participants(self) -> bool:
        return isinstance(self.inner, ParticipantLister)

    async def participants(self, room: str) -> list[InCall]:
        """The inner back end's list (`ParticipantLister`), failing fast while it is down."""
        inner = self.inner
        if not isinstance(inner, ParticipantLister):
            raise TypeError(f"{inner!r} cannot list participants")
        return await self._call("participants", lambda: inner.participants(room))

    async def aclose(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
        await self.inner.aclose()

    async def _call(self, operation: str, work: Callable[[], Awaitable[T]]) -> T:
        if self._probe is not None:
            raise MediaDown()
        try:
            return await self._observed(operation, work)
        except MediaError as error:
            if error.outage:
                self._trip()
            raise

    async def _observed(self, operation: str, work: Callable[[], Awaitable[T]]) -> T:
        started = time.perf_counter()
        outcome = "ok"
        try:
            return await work()
        except MediaError as error:
            outcome = "outage" if error.outage else "error"
            raise
        finally:
            self.observe(operation, outcome, time.perf_counter() - started)

    def _trip(self) -> None:
        if self._probe is None:
            log.warning("media server down: failing fast until it answers again")
            self.recovered.clear()
            self._probe = asyncio.get_running_loop().create_task(self._wait_for_recovery())

    async def _wait_for_recovery(self) -> None:
        pause = self._first_probe
        while True:
            await asyncio.sleep(pause)
            try:
                await self._observed("probe", self.inner.check)
            except MediaError:
                pause = min(pause * 2, self._max_probe)
                continue
            log.warning("media server is back")
            self._probe = None
            self.recovered.set()
            return
