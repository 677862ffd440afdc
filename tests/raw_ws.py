"""Hand-made WebSocket traffic for tests that send what no client library would.

A logged-in socket opened byte by byte, masked client frames of any shape (RSV bits,
empty fragments, floods), and the server's frames read back one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import struct
from collections.abc import AsyncIterator

from tests.conftest import Lobby, Stream, raw_connection

TEXT, CONT, CLOSE, PING, PONG = 0x1, 0x0, 0x8, 0x9, 0xA


def upgrade_request(lobby: Lobby, cookie: str, *extra: str) -> bytes:
    """A browser's upgrade request for `/ws` with the session `cookie` (and `extra` headers)."""
    lines = [
        "GET /ws HTTP/1.1",
        f"Host: 127.0.0.1:{lobby.live.port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        f"Origin: {lobby.http}",
        f"Cookie: lobby_session={cookie}",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def client_frame(
    opcode: int, payload: bytes = b"", *, fin: bool = True, rsv1: bool = False
) -> bytes:
    """One masked client-to-server frame (RFC 6455 section 5.2)."""
    mask = os.urandom(4)
    size = len(payload)
    head = bytes((0x80 * fin | 0x40 * rsv1 | opcode,))
    if size < 126:
        head += bytes((0x80 | size,))
    elif size < 1 << 16:
        head += struct.pack("!BH", 0x80 | 126, size)
    else:
        head += struct.pack("!BQ", 0x80 | 127, size)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One unmasked server frame: its opcode and payload."""
    first, second = await asyncio.wait_for(reader.readexactly(2), 5)
    size = second & 0x7F
    if size == 126:
        (size,) = struct.unpack("!H", await reader.readexactly(2))
    elif size == 127:
        (size,) = struct.unpack("!Q", await reader.readexactly(8))
    return first & 0x0F, await asyncio.wait_for(reader.readexactly(size), 5)


async def close_code(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int | None:
    """Read until the server's close frame, answering its pings as a live client does.

    None if the connection was reset first: the server stops reading a flooder, so
    its frames still in flight make the kernel reset the connection, and the reset
    can overtake the close frame (as for a message flood, `docs/protocol.md`).
    """
    try:
        while True:
            opcode, payload = await read_frame(reader)
            if opcode == PING:  # written whole between the flood's writes (whole frames)
                writer.write(client_frame(PONG, payload))
            if opcode == CLOSE:
                code: int = struct.unpack("!H", payload[:2])[0]
                return code
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


@contextlib.asynccontextmanager
async def logged_in_socket(lobby: Lobby, name: str = "alice", *extra: str) -> AsyncIterator[Stream]:
    """A hand-made WebSocket of a logged-in user, past its `welcome`."""
    cookie = await lobby.login(name)
    async with raw_connection(lobby) as (reader, writer):
        writer.write(upgrade_request(lobby, cookie, *extra))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert b" 101 " in head.split(b"\r\n")[0], head
        opcode, payload = await read_frame(reader)
        assert (opcode, json.loads(payload)["type"]) == (TEXT, "welcome")
        yield reader, writer
