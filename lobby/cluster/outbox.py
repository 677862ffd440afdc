"""This instance's appends, in the order they were made, a batch per round trip.

Commands of one instance must reach the log in the order it issued them (a join
before the disconnect of the same socket, or the socket would hold a participant
after it closed). One writer task sends whatever is waiting as one pipeline,
waits for the replies, then sends what came meanwhile: order kept, and under load
many appends share a round trip instead of queueing behind one another.
"""

from __future__ import annotations

import asyncio

from redis.exceptions import RedisError

from lobby.cluster.stream import Stream

Waiting = tuple[str, str, asyncio.Future[None]]  # ref, command, done when appended


class Outbox:
    def __init__(self, stream: Stream, instance: str) -> None:
        self._stream = stream
        self._instance = instance
        self._waiting: dict[str, list[Waiting]] = {}  # epoch -> appends for it
        self._writer: asyncio.Task[None] | None = None

    async def append(self, epoch: str, ref: str, cmd: str) -> None:
        """Append `cmd` after every earlier `append`; raises what Redis answered."""
        appended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(epoch, []).append((ref, cmd, appended))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write())
        await appended

    def tasks(self) -> list[asyncio.Task[None]]:
        return [] if self._writer is None else [self._writer]

    async def _write(self) -> None:
        while self._waiting:
            epoch = next(iter(self._waiting))
            batch = self._waiting.pop(epoch)
            pairs = [(ref, cmd) for ref, cmd, _ in batch]
            try:
                replies = await self._stream.append_all(epoch, self._instance, pairs)
            except (RedisError, OSError, TimeoutError) as exc:
                replies = [exc] * len(batch)
            for (_, _, appended), reply in zip(batch, replies, strict=True):
                if appended.done():
                    continue  # its caller timed out
                if isinstance(reply, Exception):
                    appended.set_exception(reply)
                else:
                    appended.set_result(None)
