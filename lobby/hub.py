"""Live connections and the fan-out to them.

A broadcast encodes and frames its message once and writes the same bytes to
every connection without awaiting any of them (a `FrameWriter` per socket, which
the server puts in the ASGI scope under `WRITER_EXTENSION`): a socket that
keeps up costs one `transport.write` per event and no task. A tab that stops
reading only grows its own transport buffer; once that passes `max_buffered`
bytes it is cut off (close code 4008, then aborted if the close cannot get
through) and its buffer freed, and nobody else ever waits for it.

Knows nothing of HTTP, presence or the media server.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Protocol

from lobby.rules.frames import text_frame
from lobby.rules.protocol import CloseCode

WRITER_EXTENSION = "lobby.writer"  # the ASGI scope extension that carries a socket's writer
MAX_BUFFERED = 1 << 20  # bytes a socket may fall behind before it is cut off
_ids = itertools.count(1)


class FrameWriter(Protocol):
    def write(self, frame: bytes) -> bool: ...
    def buffered(self) -> int: ...
    def cut(self, code: int, reason: str) -> None: ...


Closer = Callable[[int, str], None]


class Conn:
    """One lobby socket: who it belongs to and where its frames go."""

    __slots__ = (
        "_closer",
        "_max_buffered",
        "_writer",
        "close_code",
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
        writer: FrameWriter,
        closer: Closer,
        *,
        max_buffered: int = MAX_BUFFERED,
    ) -> None:
        self.id = next(_ids)
        self.user = user
        self.role = role
        self.session_id = session_id
        self.close_code: int | None = None
        self._writer = writer
        self._closer = closer
        self._max_buffered = max_buffered

    def __repr__(self) -> str:
        return f"<Conn {self.id} {self.user}>"

    @property
    def open(self) -> bool:
        return self.close_code is None

    def send(self, text: str) -> None:
        """Send one message to this socket only."""
        self.send_frame(text_frame(text.encode()))

    def send_frame(self, frame: bytes) -> None:
        """Write a ready frame; never blocks. Cuts the socket off when it is too far behind."""
        if self.close_code is not None:
            return
        if not self._writer.write(frame):
            self.close_code = 1006  # the transport is already going away
        elif self._writer.buffered() > self._max_buffered:
            self.close_code = CloseCode.TOO_SLOW
            self._writer.cut(CloseCode.TOO_SLOW, "too slow: stopped reading")

    def cut(self, code: int, reason: str) -> None:
        """Close without waiting for the peer's answer: it stops being read at once."""
        if self.close_code is None:
            self.close_code = code
            self._writer.cut(code, reason)

    def close(self, code: int, reason: str = "") -> None:
        """Close with a close frame (sent by the endpoint; see `Closer`)."""
        if self.close_code is None:
            self.close_code = code
            self._closer(code, reason)


class Hub:
    """Every open lobby connection of this process."""

    def __init__(self) -> None:
        self._conns: dict[int, Conn] = {}
        self._per_user: Counter[str] = Counter()

    def add(self, conn: Conn) -> None:
        self._conns[conn.id] = conn
        self._per_user[conn.user] += 1

    def remove(self, conn: Conn) -> None:
        if self._conns.pop(conn.id, None) is not None:
            self._per_user[conn.user] -= 1
            if not self._per_user[conn.user]:
                del self._per_user[conn.user]

    def sockets_of(self, user: str) -> int:
        return self._per_user[user]

    def get(self, conn_id: int) -> Conn | None:
        return self._conns.get(conn_id)

    def broadcast(self, text: str) -> None:
        frame = text_frame(text.encode())
        for conn in self._conns.values():
            conn.send_frame(frame)

    def of_session(self, session_id: str) -> list[Conn]:
        return [c for c in self._conns.values() if c.session_id == session_id]

    def __iter__(self) -> Iterator[Conn]:
        return iter(list(self._conns.values()))

    def __len__(self) -> int:
        return len(self._conns)
