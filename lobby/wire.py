"""Writing WebSocket frames straight to the transport, without a task per socket.

Through plain ASGI every send is an awaited coroutine, so a fan-out either
awaits each recipient (one stuck tab stalls everyone) or runs a queue and a
writer task per socket (a wake-up per socket per event: about twice the CPU).
Neither is needed: a write to an asyncio transport never blocks, it only
buffers. `DirectProtocol` is uvicorn's sans-I/O WebSocket protocol that also
hands the app a `Writer` (ASGI scope extension `lobby.writer`) which writes
ready-made frames with `transport.write` and reports how much is still
buffered, so the hub can cut off a socket whose buffer passes its bound.

Server-to-client frames are not masked, so a text frame is the same bytes for
every recipient: a broadcast frames its message once (`text_frame`).
"""

from __future__ import annotations

import struct
from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.http11 import Request

EXTENSION = "lobby.writer"


def text_frame(payload: bytes) -> bytes:
    """One final, unmasked text frame (RFC 6455 §5.2) carrying `payload` (UTF-8)."""
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, size) + payload
    return struct.pack("!BBQ", 0x81, 127, size) + payload


class Writer:
    """Non-blocking frame writes to one accepted WebSocket."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: WebSocketsSansIOProtocol) -> None:
        self._protocol = protocol

    def write(self, frame: bytes) -> bool:
        """Queue `frame` on the socket; False once the socket is closing or gone."""
        protocol = self._protocol
        # After a close frame nothing may follow it (RFC 6455 §5.5.1).
        if protocol.close_sent or protocol.disconnected or protocol.transport.is_closing():
            return False
        protocol.transport.write(frame)
        return True

    def buffered(self) -> int:
        """Bytes written but not yet taken by the kernel: how far behind the reader is."""
        return self._protocol.transport.get_write_buffer_size()

    def cut(self, code: int, reason: str, *, linger: float = 2.0) -> None:
        """Close a socket that fell behind, without ever buffering more for it.

        The close frame goes behind what is already buffered, for a client that is
        slow rather than stuck; after `linger` seconds the connection is aborted
        and its buffer freed either way.
        """
        protocol = self._protocol
        if protocol.close_sent or protocol.transport.is_closing():
            return
        body = struct.pack("!H", code) + reason.encode()[:120]
        protocol.transport.write(bytes((0x88, len(body))) + body)
        protocol.close_sent = True  # uvicorn writes nothing more either
        protocol.transport.close()  # flushes, then closes
        protocol.loop.call_later(linger, protocol.transport.abort)


class DirectProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, plus a `Writer` in the ASGI scope."""

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        # The ASGI task is created but has not run yet, so the scope can still grow.
        scope: dict[str, Any] | None = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"][EXTENSION] = Writer(self)
