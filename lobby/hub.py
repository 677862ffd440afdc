"""Live connections and the fan-out to them.

A broadcast renders its frame once (the caller passes text) and hands it to
every connection without awaiting any of them: `Conn.send` only appends to that
connection's bounded outbox. Each socket's writer drains its own outbox, so a
tab that stops reading fills only its own outbox and is cut off (close code
4008) when it passes `max_messages` or `max_bytes`; nobody else waits for it.

Knows nothing of HTTP, presence or OpenVidu.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Iterator

SLOW_CLOSE_CODE = 4008
_ids = itertools.count(1)


class Conn:
    """One lobby socket: who it belongs to and what is waiting to be written to it."""

    __slots__ = (
        "_max_bytes",
        "_max_messages",
        "_outbox",
        "_queued_bytes",
        "_waiter",
        "close_code",
        "close_reason",
        "id",
        "role",
        "session_id",
        "user",
    )

    def __init__(
        self,
        user: str,
        role: str,
        session_id: str,
        *,
        max_messages: int = 1024,
        max_bytes: int = 1 << 20,
    ) -> None:
        self.id = next(_ids)
        self.user = user
        self.role = role
        self.session_id = session_id
        self.close_code: int | None = None
        self.close_reason = ""
        self._outbox: deque[str] = deque()
        self._queued_bytes = 0
        self._max_messages = max_messages
        self._max_bytes = max_bytes
        self._waiter: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return f"<Conn {self.id} {self.user}>"

    @property
    def open(self) -> bool:
        return self.close_code is None

    def send(self, text: str) -> None:
        """Queue a frame; never blocks. Cuts the connection off when it is too far behind."""
        if self.close_code is not None:
            return
        self._outbox.append(text)
        self._queued_bytes += len(text)
        if len(self._outbox) > self._max_messages or self._queued_bytes > self._max_bytes:
            self.close(SLOW_CLOSE_CODE, "too slow: stopped reading")
            return
        self._wake()

    def close(self, code: int, reason: str = "") -> None:
        """Ask the writer to close the socket; anything still queued is dropped."""
        if self.close_code is not None:
            return
        self.close_code, self.close_reason = code, reason
        self._outbox.clear()
        self._queued_bytes = 0
        self._wake()

    async def take(self) -> list[str] | None:
        """Everything queued (waiting until there is something), or None once closing."""
        while not self._outbox and self.close_code is None:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self.close_code is not None:
            return None
        batch = list(self._outbox)
        self._outbox.clear()
        self._queued_bytes = 0
        return batch

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class Hub:
    """Every open lobby connection of this process."""

    def __init__(self) -> None:
        self._conns: dict[int, Conn] = {}

    def add(self, conn: Conn) -> None:
        self._conns[conn.id] = conn

    def remove(self, conn: Conn) -> None:
        self._conns.pop(conn.id, None)

    def get(self, conn_id: int) -> Conn | None:
        return self._conns.get(conn_id)

    def broadcast(self, text: str) -> None:
        for conn in self._conns.values():
            conn.send(text)

    def of_session(self, session_id: str) -> list[Conn]:
        return [c for c in self._conns.values() if c.session_id == session_id]

    def __iter__(self) -> Iterator[Conn]:
        return iter(list(self._conns.values()))

    def __len__(self) -> int:
        return len(self._conns)
