"""The media side of the rooms: grants in, revokes and room closes out, retried until done.

`Calls` asks the media back end for grants and carries out the clean-up that
presence hands back (`Outcome.revoke`, `Outcome.close_rooms`), with two rules:

- A room's media session is never closed under a join: `_joining` counts the
  grants in flight per room, a close waits until there are none and the room
  is empty (`occupied`), and a grant that starts while its room is closing
  waits for the close to finish first. Across instances the `CloseGate` decides
  (`lobby.cluster.gate`): a close goes ahead only if it `claim`s the room, which
  the log refuses while anyone is in it or on the way in, on any instance.
- Clean-up the media server missed (it was down or failing) is kept and
  retried with a growing pause, and at once when `recovered` is set, so every
  connection the lobby made is deleted in the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Protocol

from lobby.media.seam import MediaBackend, MediaError
from lobby.rules.grants import Grant, Identity

log = logging.getLogger("lobby.media.calls")


class CloseGate(Protocol):
    async def claim(self, room: str) -> bool | None:
        """May this instance close `room`'s session now (no join may start there until
        `release`)? False: someone is in it or on the way in. None: could not ask."""

    async def release(self, room: str) -> None: ...


class Calls:
    def __init__(
        self,
        media: MediaBackend,
        *,
        occupied: Callable[[str], bool],
        recovered: asyncio.Event | None = None,
        gate: CloseGate | None = None,
        first_retry: float = 0.5,
        max_retry: float = 30.0,
    ) -> None:
        self.media = media
        self._first_retry = first_retry
        self._max_retry = max_retry
        self._occupied = occupied
        self._gate = gate
        self._recovered = recovered or asyncio.Event()
        self._joining: Counter[str] = Counter()
        self._closing: dict[str, asyncio.Future[None]] = {}
        self._undeleted: dict[str, Grant] = {}
        self._revoking: Counter[str] = Counter()  # connection ids being deleted now
        self._unclosed: set[str] = set()
        self._retrier: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._draining = False

    @property
    def unfinished(self) -> int:
        """Connections and rooms still waiting to be deleted on the media server."""
        return len(self._undeleted) + len(self._unclosed)

    async def grant(self, room: str, identity: Identity) -> Grant | MediaError:
        """A grant for `room`, or the media server's error (already logged by the back end)."""
        self._joining[room] += 1
        try:
            while (closing := self._closing.get(room)) is not None:
                await asyncio.shield(closing)
            grant = await self.media.grant(room, identity)
        except MediaError as error:
            return error
        finally:
            self._joining[room] -= 1
            if not self._joining[room]:
                del self._joining[room]
        # A back end may hand out the same handle again: LiveKit names a participant by its
        # identity, which a reloaded page keeps. A retry of the stale grant's revoke would then
        # remove the fresh connection; and it is needless, since LiveKit drops the old
        # connection when the new one joins with that identity.
        self._undeleted.pop(grant.connection_id, None)
        return grant

    def clean_up(self, grants: Iterable[Grant | None], rooms: Iterable[str]) -> None:
        """Revoke `grants` (None: nothing to revoke), then close `rooms` that are still empty."""
        queued = tuple(g for g in grants if g)
        for grant in queued:  # counted now: `revoking` is true from this moment on
            self._revoking[grant.connection_id] += 1
        self._spawn(self._revoke_then_close(queued, tuple(rooms)))

    def revoking(self, connection_id: str) -> bool:
        """Is this connection being deleted, or waiting to be retried? Then leave it alone."""
        return connection_id in self._revoking or connection_id in self._undeleted

    async def revoke(self, grant: Grant) -> None:
        self._revoking[grant.connection_id] += 1
        await self._revoke(grant)

    async def _revoke(self, grant: Grant) -> None:
        """Revoke a grant already counted in `_revoking`; uncount it when done."""
        try:
            await self.media.revoke(grant)
        except MediaError:
            log.warning(
                "could not delete connection %s in room %s; will retry",
                grant.connection_id,
                grant.room,
            )
            self._undeleted[grant.connection_id] = grant
            self._retry_later()
        finally:
            self._revoking[grant.connection_id] -= 1
            if not self._revoking[grant.connection_id]:
                del self._revoking[grant.connection_id]

    def maybe_close(self, room: str) -> None:
        """Close the room's media session if nobody is in it or on the way in."""
        if self._occupied(room) or self._joining[room] or room in self._closing:
            return
        self._closing[room] = asyncio.get_running_loop().create_future()
        self._spawn(self._close(room))

    async def _revoke_then_close(self, grants: tuple[Grant, ...], rooms: tuple[str, ...]) -> None:
        for grant in grants:
            await self._revoke(grant)
        for room in rooms:
            self.maybe_close(room)

    async def _close(self, room: str) -> None:
        try:
            claimed = True if self._gate is None else await self._gate.claim(room)
            if claimed is None:  # the gate could not be asked: like a failed close
                self._unclosed.add(room)
                self._retry_later()
            elif claimed:
                try:
                    await self._delete(room)
                finally:
                    if self._gate is not None:
                        await self._gate.release(room)
        finally:
            self._closing.pop(room).set_result(None)

    async def _delete(self, room: str) -> None:
        try:
            await self.media.close_room(room)
        except MediaError:
            log.warning("could not close the media session of room %s; will retry", room)
            self._unclosed.add(room)
            self._retry_later()
        else:
            self._unclosed.discard(room)

    def _retry_later(self) -> None:
        if self._retrier is None and not self._draining:
            self._retrier = asyncio.get_running_loop().create_task(self._retry())

    async def _retry(self) -> None:
        """Finish the missed clean-up: now and then, and at once when the media server is back."""
        pause = self._first_retry
        while self._undeleted or self._unclosed:
            await self._pause(pause)
            pause = min(pause * 2, self._max_retry)
            for grant in list(self._undeleted.values()):
                try:
                    await self.media.revoke(grant)
                except MediaError:
                    break  # still down: wait for the next round
                # Gone already if a fresh grant took over its handle meanwhile.
                self._undeleted.pop(grant.connection_id, None)
            for room in list(self._unclosed):
                self._unclosed.discard(room)
                self.maybe_close(room)  # only if still empty; queued again if it fails
        self._retrier = None

    async def _pause(self, seconds: float) -> None:
        """Wait `seconds`, or less if the media server comes back meanwhile.

        Waking on `recovered` consumes it: the event stays set after a comeback, and
        what still fails after that is no outage to wait out, so without clearing it
        every later pause would end at once and the retries would spin.
        """
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._recovered.wait(), seconds)
            self._recovered.clear()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for clean-up under way (at shutdown); stop retrying, and start no retries."""
        self._draining = True
        if self._retrier is not None:
            self._retrier.cancel()
        while self._tasks:
            await asyncio.wait(set(self._tasks))
