"""Live connections and the fan-out to them.

A broadcast encodes and frames its message once and writes the same bytes to
every connection without awaiting any of them (a `FrameWriter` per socket, which
the server puts in the ASGI scope under `WRITER_EXTENSION`): a socket that
keeps up costs one `transport.write` per event and no task. A tab that stops
reading only grows its own transport buffer; once that passes `max_buffered`
bytes it is cut off (close code 4008, then aborted if the close cannot get
through) and its buffer freed, and nobody else ever waits for it.

Both parts keep the garbage collector's full collections short (`HeapFreezer`).

The hub also keeps the sockets alive (`Keepalive`): one task pings them all,
spread over the ping interval in small batches that share one ping frame, and
checks the pong deadlines as it goes. Per-socket timers (uvicorn's: a ping timer
and a pong deadline for each socket) fire together for sockets that connected
together, and at 15,000 sockets froze the loop for over a second.

Knows nothing of HTTP, presence or the media server.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import math
import struct
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from typing import Protocol

from lobby.rules.frames import ping_frame, text_frame
from lobby.rules.protocol import CloseCode

WRITER_EXTENSION = "lobby.writer"  # the ASGI scope extension that carries a socket's writer
FLOODED = "lobby.flooded"  # in a `websocket.disconnect`: the server cut the socket for flooding
MAX_BUFFERED = 1 << 20  # bytes a socket may fall behind before it is cut off
PING_TICK = 0.1  # seconds between two batches of pings (shorter for short intervals)
_ids = itertools.count(1)


class FrameWriter(Protocol):
    def write(self, frame: bytes) -> bool: ...
    def buffered(self) -> int: ...
    def cut(self, code: int, reason: str) -> None: ...
    def ping(self, frame: bytes, payload: bytes) -> bool: ...
    def awaited_pong(self) -> bytes | None: ...


Closer = Callable[[int, str], None]


class HubMetrics(Protocol):
    """What the hub counts (`lobby.web.metrics.Metrics`): once per event, never per socket."""

    def broadcast(self, frames: int, seconds: float) -> None: ...
    def slow_cut(self) -> None: ...


class Conn:
    """One lobby socket: who it belongs to and where its frames go."""

    __slots__ = (
        "_closer",
        "_max_buffered",
        "_writer",
        "close_code",
        "id",
        "on_slow_cut",
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
        self.on_slow_cut: Callable[[], None] | None = None  # set by the hub that holds it

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
            self._too_slow()

    def ping(self, frame: bytes, payload: bytes) -> bool:
        """Write the ping `frame` (carrying `payload`) unless a ping is still unanswered.

        True when it went out: its pong is then awaited (`awaits_pong`).
        """
        if self.close_code is not None or self._writer.awaited_pong() is not None:
            return False
        if not self._writer.ping(frame, payload):
            self.close_code = 1006
            return False
        if self._writer.buffered() > self._max_buffered:
            self._too_slow()
            return False
        return True

    def _too_slow(self) -> None:
        self.close_code = CloseCode.TOO_SLOW
        self._writer.cut(CloseCode.TOO_SLOW, "too slow: stopped reading")
        if self.on_slow_cut is not None:
            self.on_slow_cut()

    def awaits_pong(self, payload: bytes) -> bool:
        """Whether the pong to the ping carrying `payload` has not come (yet)."""
        return self.close_code is None and self._writer.awaited_pong() == payload

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

    def __init__(self, metrics: HubMetrics | None = None) -> None:
        self._metrics = metrics
        self._conns: dict[int, Conn] = {}
        self._per_user: Counter[str] = Counter()
        self.removed = 0  # connections that ever left: how much `HeapFreezer` may hold dead

    def add(self, conn: Conn) -> None:
        if self._metrics is not None:
            conn.on_slow_cut = self._metrics.slow_cut
        self._conns[conn.id] = conn
        self._per_user[conn.user] += 1

    def remove(self, conn: Conn) -> None:
        if self._conns.pop(conn.id, None) is not None:
            self.removed += 1
            self._per_user[conn.user] -= 1
            if not self._per_user[conn.user]:
                del self._per_user[conn.user]

    def sockets_of(self, user: str) -> int:
        return self._per_user[user]

    def get(self, conn_id: int) -> Conn | None:
        return self._conns.get(conn_id)

    def broadcast(self, text: str) -> None:
        began = time.perf_counter()
        frame = text_frame(text.encode())
        for conn in self._conns.values():
            conn.send_frame(frame)
        if self._metrics is not None:  # once per event: two clock reads, never per socket
            self._metrics.broadcast(len(self._conns), time.perf_counter() - began)

    def of_session(self, session_id: str) -> list[Conn]:
        return [c for c in self._conns.values() if c.session_id == session_id]

    def __iter__(self) -> Iterator[Conn]:
        return iter(list(self._conns.values()))

    def __len__(self) -> int:
        return len(self._conns)


class Keepalive:
    """Pings every socket of a hub once per `interval`, in batches spread over it.

    At the start of each interval it takes the hub's sockets as they are; every
    `tick` seconds it pings the next batch, sized to finish within the interval.
    A batch shares one payload, so one ping frame is built per batch and written
    to each of its sockets. `timeout` seconds after a batch went out, its sockets
    whose pong has not come are cut (1011) and so counted as gone. A socket
    whose previous ping is still unanswered (a timeout longer than the interval)
    is not pinged again. Nobody is pinged in the first interval (the server has
    just started), and a socket that connects during an interval is pinged in
    the next one, so its first ping comes within two intervals.
    """

    def __init__(self, hub: Hub, interval: float, timeout: float, *, tick: float = PING_TICK):
        self.hub = hub
        self.interval = interval
        self.timeout = timeout
        self.tick = min(tick, interval / 4)
        self._todo: list[Conn] = []  # this interval's sockets not pinged yet, last first
        self._per_tick = 0
        self._next_interval: float | None = None  # the first interval starts at the first sweep
        self._batches = itertools.count()
        # (deadline, payload, the batch's sockets), oldest first
        self._due: deque[tuple[float, bytes, list[Conn]]] = deque()

    def sweep(self, now: float) -> None:
        """One tick: cut the sockets whose pong is late, ping the next batch."""
        due = self._due
        while due and due[0][0] <= now:
            _, payload, batch = due.popleft()
            for conn in batch:
                if conn.awaits_pong(payload):
                    conn.cut(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
        if self._next_interval is None:
            self._next_interval = now + self.interval
        if not self._todo and now >= self._next_interval:
            self._next_interval = now + self.interval
            self._todo = list(self.hub)[::-1]
            ticks = max(1, int(self.interval / self.tick) - 1)
            self._per_tick = math.ceil(len(self._todo) / ticks)
        if not self._todo:
            return
        batch = self._todo[-self._per_tick :]
        del self._todo[-self._per_tick :]
        payload = struct.pack("!Q", next(self._batches))
        frame = ping_frame(payload)
        due.append((now + self.timeout, payload, [c for c in batch if c.ping(frame, payload)]))

    async def run(self) -> None:
        """Sweep every `tick` seconds, for ever (cancel to stop)."""
        clock = asyncio.get_running_loop().time
        while True:
            await asyncio.sleep(self.tick)
            self.sweep(clock())


class HeapFreezer:
    """Keeps the live connections' objects out of the garbage collector's full collections.

    Every idle socket is a hundred-odd long-lived objects, and a full collection
    walks them all: 1.5 to 2.5 s at 15,000 sockets, with the loop stopped. Each
    time `wave` more sockets are open than at the last freeze, `gc.freeze()`
    moves every object alive into the permanent generation, which collections
    skip (it costs nothing: a list splice). The first freeze comes with the
    first `wave` sockets, so a small server (or a test) never freezes.

    Frozen objects are never collected, so cycles left by sockets that close
    later stay; once as many sockets have left since the freeze as were frozen
    (and at least a `wave`), one full collection (`gc.unfreeze`, `gc.collect`)
    frees them and everything is frozen again: a stall after heavy churn only.
    """

    def __init__(self, hub: Hub, *, wave: int = 1000, period: float = 1.0) -> None:
        self.hub = hub
        self.wave = wave
        self.period = period
        self._frozen = 0  # sockets at the last freeze
        self._removed = hub.removed  # `hub.removed` then

    def check(self) -> str | None:
        """Freeze, or collect and freeze, if it is time; what it did."""
        live, removed = len(self.hub), self.hub.removed - self._removed
        if self._frozen and removed >= max(self.wave, self._frozen):
            gc.unfreeze()
            gc.collect()
            done = "collected"
        elif live - self._frozen >= self.wave:
            done = "froze"
        else:
            return None
        gc.freeze()
        self._frozen, self._removed = live, self.hub.removed
        return done

    async def run(self) -> None:
        """Check every `period` seconds, for ever (cancel to stop)."""
        while True:
            await asyncio.sleep(self.period)
            self.check()
