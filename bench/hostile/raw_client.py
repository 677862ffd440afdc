"""A WebSocket client that can misbehave: stop answering pings, ignore a close, flood.

The framing and the upgrade request are the load generator's (`bench.wsclient`); what
is here is the protocol object that decides, frame by frame, how rude to be.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from bench.hostile.figures import now
from bench.wsclient import client_frame, handshake

Msg = dict[str, Any]
T = TypeVar("T")
TextHandler = Callable[[float, bytes], None]


def upgrade_request(port: int, cookie: str | None) -> bytes:
    headers = {"Origin": f"http://127.0.0.1:{port}"}
    if cookie is not None:
        headers["Cookie"] = f"lobby_session={cookie}"
    return handshake("127.0.0.1", port, "/ws", headers)


class WsClient(asyncio.Protocol):
    """A hand-made client: the handshake, then frames; pings answered unless told not to.

    Text frames go to `on_text(time, payload)` if given, else parsed into `inbox`.
    `pong_quota`: answer that many pings, then go silent (no pongs, no close reply).
    """

    def __init__(
        self, *, on_text: TextHandler | None = None, pong_quota: int | None = None
    ) -> None:
        loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.status: asyncio.Future[int] = loop.create_future()
        self.lost: asyncio.Future[float] = loop.create_future()  # when TCP went away
        self.inbox: asyncio.Queue[tuple[float, Msg]] = asyncio.Queue()
        self.on_text = on_text
        self.pong_quota = pong_quota
        self.silent = False  # answers nothing: no pong, no close frame
        self.close_code: int | None = None
        self.close_at: float | None = None
        self.pongs = 0
        self.last_pong_at: float | None = None
        self.wire_bytes = 0
        self._buf = bytearray()
        self._state = "head"  # head, frames, denied
        self._close_sent = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.wire_bytes += len(data)
        if self._state == "denied":
            return
        self._buf += data
        if self._state == "head":
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = int(bytes(self._buf[:end]).split(b" ", 2)[1])
            del self._buf[: end + 4]
            self._state = "frames" if status == 101 else "denied"
            if not self.status.done():
                self.status.set_result(status)
            if self._state == "denied":
                self._buf.clear()
                return
        self._frames()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.status.done():
            self.status.set_exception(ConnectionError("connection closed before a response"))
        if not self.lost.done():
            self.lost.set_result(now())

    # frames

    def _frames(self) -> None:
        buf, pos, size = self._buf, 0, len(self._buf)
        while size - pos >= 2:
            opcode, length, start = buf[pos] & 0x0F, buf[pos + 1] & 0x7F, pos + 2
            if length == 126:
                if size - pos < 4:
                    break
                length, start = int.from_bytes(buf[pos + 2 : pos + 4], "big"), pos + 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, start = int.from_bytes(buf[pos + 2 : pos + 10], "big"), pos + 10
            if start + length > size:
                break
            payload = bytes(buf[start : start + length])
            pos = start + length
            self._frame(opcode, payload)
        del buf[:pos]

    def _frame(self, opcode: int, payload: bytes) -> None:
        if opcode == 0x1:
            stamp = now()
            if self.on_text is not None:
                self.on_text(stamp, payload)
            else:
                self.inbox.put_nowait((stamp, json.loads(payload)))
        elif opcode == 0x9:  # ping
            if self.silent:
                return
            self.write(client_frame(payload, 0xA))
            self.pongs += 1
            self.last_pong_at = now()
            if self.pong_quota is not None and self.pongs >= self.pong_quota:
                self.silent = True
        elif opcode == 0x8:
            self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            self.close_at = now()
            if not self.silent and not self._close_sent:
                self._close_sent = True
                self.write(client_frame(payload[:2], 0x8))

    # sending

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def send(self, message: Msg) -> None:
        self.write(client_frame(json.dumps(message).encode()))

    def buffered(self) -> int:
        return 0 if self.transport is None else self.transport.get_write_buffer_size()

    def close(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if self._state == "frames" and not self._close_sent:
            self._close_sent = True
            self.write(client_frame(struct.pack("!H", 1000), 0x8))
        self.transport.close()

    # reading

    async def next(self, within: float = 10.0) -> tuple[float, Msg]:
        return await asyncio.wait_for(self.inbox.get(), within)

    async def until(self, wanted: Callable[[Msg], bool], within: float = 10.0) -> tuple[float, Msg]:
        """The first message (and its arrival time) for which `wanted` holds; others dropped."""
        async with asyncio.timeout(within):
            while True:
                stamp, message = await self.inbox.get()
                if wanted(message):
                    return stamp, message

    async def reply(self, ref: int, within: float = 10.0) -> tuple[float, Msg]:
        return await self.until(lambda m: m.get("ref") == ref, within)


async def ws_open(
    port: int,
    cookie: str | None,
    *,
    on_text: TextHandler | None = None,
    pong_quota: int | None = None,
) -> WsClient:
    """Connect and send the upgrade; returns once the response head is in (see `status`)."""
    loop = asyncio.get_running_loop()
    client = WsClient(on_text=on_text, pong_quota=pong_quota)
    await loop.create_connection(lambda: client, "127.0.0.1", port)
    client.write(upgrade_request(port, cookie))
    await asyncio.wait_for(asyncio.shield(client.status), 15)
    return client


async def ws_lobby(port: int, cookie: str, **kw: Any) -> WsClient:
    """An accepted lobby socket; with an inbox, its `welcome` is already read."""
    client = await ws_open(port, cookie, **kw)
    status = client.status.result()
    if status != 101:
        client.close()
        raise RuntimeError(f"handshake refused with HTTP {status}")
    if client.on_text is None:
        _, welcome = await client.next()
        assert welcome["type"] == "welcome", welcome
    return client


def close_all(clients: list[WsClient]) -> None:
    for client in clients:
        client.close()


async def gather_limited(work: list[Callable[[], Awaitable[T]]], limit: int) -> list[T]:
    """Run `work` (opening sockets, say) with at most `limit` steps in flight; results in
    order."""
    gate = asyncio.Semaphore(limit)

    async def run(step: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await step()

    return list(await asyncio.gather(*(run(step) for step in work)))
