"""Fakes for the parts behind the hub and the request handler: a socket's writer and closer,
and a media back end. Tests pass them in through constructor arguments.

`FakeWriter` keeps the frames the hub writes and decodes them back into JSON messages;
`FakeMedia` implements `MediaBackend` in memory, records every call in order, and
can be told to fail (`fail`) or to hold a call until the test lets it go (`hold`), so
races are staged step by step instead of with delays.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import secrets
import struct
from dataclasses import dataclass, field
from typing import Any

from lobby.hub import MAX_BUFFERED, Conn
from lobby.media.seam import MediaError
from lobby.rules.grants import Grant, Identity

Message = dict[str, Any]


def decode_text_frame(frame: bytes) -> str:
    """The payload of one unmasked server text frame (`lobby.rules.frames.text_frame`)."""
    assert frame[0] == 0x81, f"not a final text frame: {frame[:2]!r}"
    size, start = frame[1], 2
    if size == 126:
        (size,), start = struct.unpack("!H", frame[2:4]), 4
    elif size == 127:
        (size,), start = struct.unpack("!Q", frame[2:10]), 10
    payload = frame[start:]
    assert len(payload) == size, "the frame's length field does not match its payload"
    return payload.decode()


class FakeWriter:
    """Where a socket's frames go (a `FrameWriter`): kept and decoded, never sent.

    `backlog` is what it reports as buffered (set it past `max_buffered` to play a
    reader that stopped reading); with `refuse` set, writes fail as on a dying transport.
    """

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.messages: list[Message] = []
        self.cuts: list[tuple[int, str]] = []
        self.backlog = 0
        self.refuse = False
        self.pings: list[bytes] = []  # payloads of the pings written, in order
        self.pong_due: bytes | None = None  # the ping payload a pong has not answered yet
        self._taken = 0
        self._written = asyncio.Event()

    def write(self, frame: bytes) -> bool:
        if self.refuse:
            return False
        self.frames.append(frame)
        self.messages.append(json.loads(decode_text_frame(frame)))
        self._written.set()
        self._written = asyncio.Event()
        return True

    def buffered(self) -> int:
        return self.backlog

    def cut(self, code: int, reason: str) -> None:
        self.cuts.append((code, reason))

    def ping(self, frame: bytes, payload: bytes) -> bool:
        if self.refuse:
            return False
        assert frame == bytes((0x89, len(payload))) + payload
        self.pings.append(payload)
        self.pong_due = payload
        return True

    def awaited_pong(self) -> bytes | None:
        return self.pong_due

    def pong(self) -> None:
        """The peer answers the ping in flight."""
        self.pong_due = None

    def take(self) -> list[Message]:
        """The messages written since the last `take` or `next`."""
        new, self._taken = self.messages[self._taken :], len(self.messages)
        return new

    async def next(self, timeout: float = 5.0) -> Message:
        """The next message not taken yet, waiting for it to be written."""
        async with asyncio.timeout(timeout):
            while self._taken == len(self.messages):
                await self._written.wait()
        self._taken += 1
        return self.messages[self._taken - 1]

    async def expect(self, kind: str, timeout: float = 5.0) -> Message:
        """The next message, which must be of type `kind`."""
        message = await self.next(timeout)
        assert message["type"] == kind, message
        return message

    async def until(self, kind: str, timeout: float = 5.0) -> Message:
        """The next message of type `kind`, past others (which stay in `messages`)."""
        async with asyncio.timeout(timeout):
            while (message := await self.next())["type"] != kind:
                assert message["type"] != "error", message
        return message


class FakeCloser:
    """A socket's `Closer`: records each close it is asked for."""

    def __init__(self) -> None:
        self.closes: list[tuple[int, str]] = []

    def __call__(self, code: int, reason: str) -> None:
        self.closes.append((code, reason))


@dataclass
class FakeSocket:
    """A `Conn` with its fake writer and closer."""

    conn: Conn
    writer: FakeWriter = field(repr=False)
    closer: FakeCloser = field(repr=False)

    def take(self) -> list[Message]:
        return self.writer.take()

    async def next(self, timeout: float = 5.0) -> Message:
        return await self.writer.next(timeout)

    async def expect(self, kind: str, timeout: float = 5.0) -> Message:
        return await self.writer.expect(kind, timeout)

    async def until(self, kind: str, timeout: float = 5.0) -> Message:
        return await self.writer.until(kind, timeout)


def fake_socket(
    user: str = "alice",
    role: str = "PUBLISHER",
    session_id: str = "s-alice",
    *,
    max_buffered: int = MAX_BUFFERED,
) -> FakeSocket:
    writer, closer = FakeWriter(), FakeCloser()
    conn = Conn(user, role, session_id, writer, closer, max_buffered=max_buffered)
    return FakeSocket(conn, writer, closer)


# The media back end


class Outage(MediaError):
    """The media server as a whole is down (what trips the breaker)."""

    outage = True


class Refused(MediaError):
    """One request was refused; the media server itself is fine (`outage` is False)."""


class Gate:
    """A held media call: `arrived` is set once it is waiting; `release` lets it go on."""

    def __init__(self) -> None:
        self.arrived = asyncio.Event()
        self._released = asyncio.Event()
        self._error: Exception | None = None

    async def reached(self, timeout: float = 5.0) -> None:
        """Wait until the held call has arrived at the gate."""
        await asyncio.wait_for(self.arrived.wait(), timeout)

    @property
    def released(self) -> bool:
        return self._released.is_set()

    def release(self, error: Exception | None = None) -> None:
        """Let the call go on, or end it with `error`."""
        self._error = error
        self._released.set()

    async def _pass(self) -> None:
        self.arrived.set()
        await self._released.wait()
        if self._error is not None:
            raise self._error


class FakeMedia:
    """A `MediaBackend` in memory, faithful to the seam's contract.

    Grants get unique connection ids and tokens; `connections` holds the live ones
    and `rooms` the rooms with a session. Revoking a gone connection or closing a gone
    room is no error. `calls` lists every call in order, as "grant R1",
    "revoke con_1", "close_room R1", "check", "aclose"; `identities` whom each grant
    was for. `fail` makes calls raise, `hold` makes the next call of a kind wait.
    """

    def __init__(self, *, peer_to_peer: bool = False) -> None:
        self._peer_to_peer = peer_to_peer
        self.calls: list[str] = []
        self.identities: list[Identity] = []
        self.connections: dict[str, Grant] = {}
        self.rooms: set[str] = set()
        self.closed = False
        self.call_times: list[float] = []  # the loop's time of each call in `calls`
        self._faults: dict[str, tuple[Exception, int | None]] = {}
        self._holds: dict[str, list[Gate]] = {}
        self._gates: list[Gate] = []
        self._numbers = itertools.count(1)
        self._recorded = asyncio.Event()

    def __repr__(self) -> str:
        return "FakeMedia()"

    # What a test controls

    def fail(
        self, *kinds: str, error: Exception | None = None, times: int | None = None
    ) -> Exception:
        """Calls of `kinds` ("grant", "revoke", "close_room", "check") raise `error` (an
        `Outage` unless given; anything else plays a bug): the next `times` of them, or
        all until `mend`."""
        raised = error or Outage("The video service is unavailable; please try again.")
        for kind in kinds:
            self._faults[kind] = (raised, times)
        return raised

    def mend(self) -> None:
        """No more faults."""
        self._faults.clear()

    def hold(self, kind: str) -> Gate:
        """The next call of `kind` is recorded, then waits until the gate is released."""
        gate = Gate()
        self._holds.setdefault(kind, []).append(gate)
        self._gates.append(gate)
        return gate

    def release_all(self) -> None:
        """Let every held call go on (at the end of a test, so that nothing hangs)."""
        for gate in self._gates:
            if not gate.released:
                gate.release()

    async def called(self, call: str, timeout: float = 5.0) -> None:
        """Wait until `call` (e.g. "close_room R1") has been made."""
        async with asyncio.timeout(timeout):
            while call not in self.calls:
                await self._recorded.wait()

    # MediaBackend

    @property
    def peer_to_peer(self) -> bool:
        return self._peer_to_peer

    def page_config(self, user: str) -> dict[str, object]:
        return {"kind": "fake", "user": user}

    async def grant(self, room: str, identity: Identity) -> Grant:
        self.identities.append(identity)
        await self._enter(f"grant {room}", "grant")
        number = next(self._numbers)
        grant = Grant(room, f"con_{number}", f"tok_{number}_{secrets.token_urlsafe(8)}")
        self.rooms.add(room)
        self.connections[grant.connection_id] = grant
        return grant

    async def revoke(self, grant: Grant) -> None:
        await self._enter(f"revoke {grant.connection_id}", "revoke")
        self.connections.pop(grant.connection_id, None)

    async def close_room(self, room: str) -> None:
        await self._enter(f"close_room {room}", "close_room")
        self.rooms.discard(room)
        for connection_id in [c for c, g in self.connections.items() if g.room == room]:
            del self.connections[connection_id]

    async def check(self) -> None:
        await self._enter("check", "check")

    async def aclose(self) -> None:
        self._record("aclose")
        self.closed = True

    def _record(self, call: str) -> None:
        self.calls.append(call)
        self.call_times.append(asyncio.get_running_loop().time())
        self._recorded.set()
        self._recorded = asyncio.Event()

    async def _enter(self, call: str, kind: str) -> None:
        """Record the call, wait at its gate if one is set, then raise its fault if any."""
        self._record(call)
        holds = self._holds.get(kind)
        if holds:
            await holds.pop(0)._pass()
        fault = self._faults.get(kind)
        if fault is not None:
            error, times = fault
            if times is not None:
                if times <= 1:
                    del self._faults[kind]
                else:
                    self._faults[kind] = (error, times - 1)
            raise error
