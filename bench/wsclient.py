"""A lean WebSocket client for the load generator: handshake, framing, masking.

The generator holds thousands of sockets per process and must leave the CPU to
the server, so it speaks RFC 6455 itself over an asyncio `Protocol` (uvloop)
instead of running a client library's task per socket: one `data_received`
call per read, a slice per frame, a prefix compare to classify it.

Two dialects share the framing: `json` (the lobby and the plain reference
servers: `{"type": "...", ...}` objects) and `sio` (Socket.IO over Engine.IO v4
on a WebSocket: `42["event", {...}]`, with the `0`/`40` open handshake and the
`2`/`3` ping-pong answered here).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import socket
import time
from typing import Any

KEY = base64.b64encode(b"lobby-bench-key!").decode()
ACCEPT = base64.b64encode(
    hashlib.sha1((KEY + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
)
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


def handshake(host: str, port: int, path: str, headers: dict[str, str]) -> bytes:
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {KEY}",
        "Sec-WebSocket-Version: 13",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One final frame, masked as RFC 6455 requires of clients."""
    mask = os.urandom(4)
    size = len(payload)
    if size < 126:
        head = bytes((0x80 | opcode, 0x80 | size))
    elif size < 1 << 16:
        head = bytes((0x80 | opcode, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + size.to_bytes(8, "big")
    key = int.from_bytes((mask * (size // 4 + 1))[:size], "big")
    body = (int.from_bytes(payload, "big") ^ key).to_bytes(size, "big") if size else b""
    return head + mask + body


def encode(dialect: str, message: dict[str, Any]) -> bytes:
    """A request as the server expects it: a JSON object, or a Socket.IO event."""
    if dialect == "sio":
        data = {k: v for k, v in message.items() if k != "type"}
        return b"42" + json.dumps([message["type"], data], separators=(",", ":")).encode()
    return json.dumps(message, separators=(",", ":")).encode()


def decode(dialect: str, payload: bytes) -> dict[str, Any]:
    if dialect == "sio":
        kind, *rest = json.loads(payload[2:])
        return {"type": kind, **(rest[0] if rest and isinstance(rest[0], dict) else {})}
    message: dict[str, Any] = json.loads(payload)
    return message


def event_prefix(dialect: str, kind: str) -> bytes:
    """How a frame of event `kind` starts: classification is one `startswith`."""
    return f'42["{kind}"'.encode() if dialect == "sio" else f'{{"type":"{kind}"'.encode()


class WS(asyncio.Protocol):
    """One client socket. `ready` resolves on the first application frame.

    Subclasses override `on_text`; everything before `ready` (the lobby's
    `welcome`, Engine.IO's open packets) is handled here and not counted.
    """

    def __init__(self, request: bytes, dialect: str) -> None:
        self.request = request
        self.dialect = dialect
        self.transport: asyncio.Transport | None = None
        self.upgraded = False
        self.is_ready = False
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed = False
        self.close_code: int | None = None
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"closed before ready: {exc}"))

    def send(self, message: dict[str, Any]) -> None:
        assert self.transport is not None
        self.transport.write(client_frame(encode(self.dialect, message)))

    def data_received(self, data: bytes) -> None:
        if self.buf:
            data = self.buf + data
            self.buf = b""
        if not self.upgraded:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.buf = data
                return
            head = data[:end]
            if not head.startswith(b"HTTP/1.1 101") or ACCEPT not in head:
                status = head.split(b"\r\n", 1)[0].decode(errors="replace")
                if not self.ready.done():
                    self.ready.set_exception(ConnectionError(status))
                self.transport.close()  # type: ignore[union-attr]
                return
            self.upgraded = True
            data = data[end + 4 :]
        size = len(data)
        pos = 0
        while size - pos >= 2:
            length = data[pos + 1]  # server frames are never masked
            start = pos + 2
            if length == 126:
                if size - pos < 4:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 4], "big")
                start = pos + 4
            elif length == 127:
                if size - pos < 10:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                start = pos + 10
            end = start + length
            if end > size:
                break
            opcode = data[pos] & 0x0F
            if opcode == 0x1:
                payload = data[start:end]
                if self.is_ready:
                    self.on_text(payload)
                else:
                    self.opening(payload)
            elif opcode == 0x9:  # ping: answer at once
                self.transport.write(client_frame(data[start:end], 0xA))  # type: ignore[union-attr]
            elif opcode == 0x8:
                self.close_code = int.from_bytes(data[start : start + 2], "big") if length else 1005
                self.transport.write(client_frame(data[start : start + 2], 0x8))  # type: ignore[union-attr]
                self.transport.close()  # type: ignore[union-attr]
                return
            pos = end
        if pos < size:
            self.buf = data[pos:]

    def opening(self, payload: bytes) -> None:
        if self.dialect == "sio":
            if payload[:1] == b"0":  # Engine.IO open: connect to the default namespace
                self.transport.write(client_frame(b"40"))  # type: ignore[union-attr]
                return
            if payload[:2] != b"40":
                return
        self.is_ready = True
        if not self.ready.done():
            self.ready.set_result(None)

    def on_text(self, payload: bytes) -> None:
        """An application frame after `ready`; Engine.IO pings are answered here."""


class Peer(WS):
    """A socket the controller drives: every frame goes to an inbox with its arrival time."""

    def __init__(self, request: bytes, dialect: str) -> None:
        super().__init__(request, dialect)
        self.inbox: asyncio.Queue[tuple[int, bytes]] = asyncio.Queue()
        self.arrived = 0  # set by `StampedTransport` before each frame it hands over

    def on_text(self, payload: bytes) -> None:
        if self.dialect == "sio" and payload == b"2":
            self.transport.write(client_frame(b"3"))  # type: ignore[union-attr]
            return
        self.inbox.put_nowait((self.arrived or time.monotonic_ns(), payload))

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.inbox.put_nowait((time.monotonic_ns(), b""))

    async def expect(self, kinds: set[str], timeout: float) -> tuple[int, dict[str, Any]]:  # noqa: ASYNC109 (every wait states its bound)
        """The next frame whose type is in `kinds` (others are skipped); raise on `error`."""
        async with asyncio.timeout(timeout):
            while True:
                stamp, payload = await self.inbox.get()
                if not payload:
                    raise ConnectionError(f"socket closed (code {self.close_code})")
                message = decode(self.dialect, payload)
                if message.get("type") in kinds:
                    return stamp, message
                if message.get("type") == "error":
                    raise PeerError(message)


class PeerError(Exception):
    """The server answered a request with an `error` frame."""

    def __init__(self, message: dict[str, Any]) -> None:
        super().__init__(f"{message.get('code')}: {message.get('message')}")
        self.message = message


SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux; the same number for the cmsg


def kernel_arrival(ancillary: list[tuple[int, int, bytes]]) -> int:
    """A `recvmsg` receive timestamp (CLOCK_REALTIME) as CLOCK_MONOTONIC ns; 0 if absent."""
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            sec = int.from_bytes(data[:8], "little", signed=True)
            nsec = int.from_bytes(data[8:16], "little", signed=True)
            return sec * 1_000_000_000 + nsec - (time.time_ns() - time.monotonic_ns())
    return 0


def _frame_size(head: bytes) -> int | None:
    """The whole size of the server frame starting `head`; None if the head is incomplete."""
    if len(head) < 2:
        return None
    length, start = head[1] & 0x7F, 2
    if length == 126:
        length, start = int.from_bytes(head[2:4], "big"), 4
    elif length == 127:
        length, start = int.from_bytes(head[2:10], "big"), 10
    return None if len(head) < start else start + length


class StampedTransport:
    """What `WS` uses of a transport, over a socket read one frame per `recvmsg`.

    Each frame a `Peer` gets is stamped with the kernel's receive timestamp
    (`SO_TIMESTAMPNS`) of its last byte: when the server's frame *arrived*, not
    when this process got the CPU to read it. On two shared cores the
    controller can wait milliseconds for the CPU behind the generators taking
    in the very fan-out the frame started (a `joined` after a `token`); that is
    the client's time, not the server's. One frame per read, because TCP
    stamps a read with its last segment's time.
    """

    def __init__(self, sock: socket.socket, protocol: Peer) -> None:
        self.sock = sock
        self.protocol = protocol
        self.remaining = 0  # bytes of a frame not read yet
        self.closing = False
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        asyncio.get_running_loop().add_reader(sock.fileno(), self.readable)

    def readable(self) -> None:
        sock = self.sock
        try:
            if not self.protocol.upgraded:
                data, arrived = sock.recv(65536), 0
            else:
                want = self.remaining
                if not want:
                    head = sock.recv(14, socket.MSG_PEEK)
                    size = _frame_size(head)
                    if size is None and head:
                        return  # the rest of the head is on its way: read it whole
                    want = size or 1  # 1: at the end of the stream, read the EOF
                data, ancillary, _, _ = sock.recvmsg(want, socket.CMSG_SPACE(16))
                self.remaining = want - len(data) if data else 0
                arrived = kernel_arrival(ancillary)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self.abort()
            self.protocol.connection_lost(exc)
            return
        if not data:
            self.abort()
            self.protocol.connection_lost(None)
            return
        self.protocol.arrived = arrived
        self.protocol.data_received(data)

    def write(self, data: bytes) -> None:
        if not self.closing:
            self.sock.sendall(data)  # small frames to a blocking socket: never waits here

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.abort()

    def abort(self) -> None:
        if not self.closing:
            self.closing = True
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.sock.close()


async def open_stamped(
    factory: Any,
    host: str,
    port: int,
    *,
    timeout: float = 15.0,  # noqa: ASYNC109 (every wait states its bound)
) -> Peer:
    """`open_socket` for one controller `Peer` whose frames carry kernel arrival times."""
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.settimeout(None)
    protocol = factory()
    assert isinstance(protocol, Peer)
    transport = StampedTransport(sock, protocol)
    protocol.connection_made(transport)  # type: ignore[arg-type]
    try:
        async with asyncio.timeout(timeout):
            await protocol.ready
    except BaseException:
        transport.abort()
        raise
    return protocol


async def open_socket(
    factory: Any,
    host: str,
    port: int,
    *,
    source: str | None = None,
    rcvbuf: int | None = None,
    timeout: float = 15.0,  # noqa: ASYNC109 (every wait states its bound)
) -> WS:
    """Connect from `source` (an address in 127.0.0.0/8) and wait until the socket is ready.

    IP_BIND_ADDRESS_NO_PORT lets the kernel pick the source port at connect
    time, so one source address is good for ~28k sockets per destination.
    """
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    protocol: WS | None = None
    try:
        sock.setblocking(False)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if source is not None:
            sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((source, 0))
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, (host, port))
            _, protocol = await loop.create_connection(factory, sock=sock)
            await protocol.ready
    except BaseException:
        if protocol is not None and protocol.transport is not None:
            protocol.transport.abort()
        else:
            sock.close()
        raise
    return protocol
