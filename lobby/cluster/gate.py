"""Keeping joins and media-session closes apart across instances, through the log.

The handler's side of `lobby.cluster.reservations`: a join `reserve`s its room before
asking for a grant (waiting out a close under way), and `lobby.media.calls` asks
`claim` before deleting a room's session and calls `release` after. Every step is a
command, so the log's order decides between a join and a close, on every instance.

A command nobody waited for (its issuer gave up: Redis was slow) is undone here
(`unattended`), so a reservation or a close never outlives the request that made it.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Coroutine
from typing import Any

from lobby.cluster.commands import CloseMedia, Command, MediaClosed, Reserve, Unreserve
from lobby.cluster.seam import Applied, ClusterUnavailable, PresenceStore

# How long a join waits for another instance to finish closing the room's session: a
# DELETE, or the lapse of a dead closer's lease (`InstanceDown` ends its close).
CLOSE_WAIT = 20.0


class MediaGate:
    def __init__(self, store: PresenceStore, *, wait: float = CLOSE_WAIT) -> None:
        self._store = store
        self._wait = wait
        self._moved = asyncio.Event()  # set at every applied command or reset
        self._tasks: set[asyncio.Task[None]] = set()

    def note(self) -> None:
        """The replica changed: whoever waits for a close to end looks again."""
        self._moved.set()

    async def reserve(self, socket: str, room: str) -> str:
        """Hold `room` open for a join from `socket`: the reservation's id, to name in
        the `Join`. Raises `ClusterUnavailable` (Redis, or a close that does not end)."""
        reservation = secrets.token_urlsafe(9)
        while True:
            applied = await self._store.execute(Reserve(reservation, room, socket))
            if applied.result.rejected is None:
                return reservation
            try:
                async with asyncio.timeout(self._wait):
                    await self._closed(room)
            except TimeoutError:
                raise ClusterUnavailable(f"the media session of {room} stays closing") from None

    async def _closed(self, room: str) -> None:
        while self._store.replica.reservations.closing(room):
            self._moved.clear()
            await self._moved.wait()

    async def unreserve(self, reservation: str) -> None:
        """The join will not come; the store keeps the command if Redis is away."""
        with contextlib.suppress(ClusterUnavailable):
            await self._store.execute(Unreserve(reservation))

    async def claim(self, room: str) -> bool | None:
        """May this instance close `room`'s session now? None: could not ask (try later)."""
        try:
            applied = await self._store.execute(CloseMedia(room, self._store.instance))
        except ClusterUnavailable:
            return None  # if it applies after all, `unattended` gives it back
        return applied.result.rejected is None

    async def release(self, room: str) -> None:
        """The close `claim` granted is over: joins may go in again."""
        with contextlib.suppress(ClusterUnavailable):
            await self._store.execute(MediaClosed(room, self._store.instance))

    def unattended(self, applied: Applied) -> None:
        """A reservation or close of ours that its issuer stopped waiting for: undo it."""
        command = applied.command
        if applied.result.rejected is not None:
            return
        if isinstance(command, Reserve):
            self._issue(Unreserve(command.reservation))
        elif isinstance(command, CloseMedia):
            self._issue(MediaClosed(command.room, command.instance))

    def _issue(self, command: Command) -> None:
        async def run() -> None:
            with contextlib.suppress(ClusterUnavailable):
                await self._store.execute(command)

        self._spawn(run())

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
