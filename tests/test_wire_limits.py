"""Floods below the message level (pings, pongs, fragments) and oversized request heads.

Raw sockets throughout: client libraries refuse to send what these tests send.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import struct
from collections.abc import AsyncIterator

import pytest

from lobby.rules.limits import CONTROL_BURST, MAX_FRAGMENTS
from tests.conftest import Client, Lobby, LobbyFactory, until

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


def client_frame(opcode: int, payload: bytes = b"", *, fin: bool = True) -> bytes:
    """One masked client-to-server frame (RFC 6455 section 5.2)."""
    mask = os.urandom(4)
    size = len(payload)
    head = bytes((0x80 * fin | opcode,))
    if size < 126:
        head += bytes((0x80 | size,))
    elif size < 1 << 16:
        head += struct.pack("!BH", 0x80 | 126, size)
    else:
        head += struct.pack("!BQ", 0x80 | 127, size)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


PING, PONG, TEXT, CONT = 0x9, 0xA, 0x1, 0x0
# Server pings far apart: a flooder that stopped answering them is not what ends it.
LONG_PING_INTERVAL = 60
# Without the budget these floods go on for ever; with it they end in well under this.
FLOOD_TIMEOUT = 20


@contextlib.asynccontextmanager
async def logged_in_socket(lobby: Lobby, name: str = "alice") -> AsyncIterator[Stream]:
    """A hand-made WebSocket of a logged-in user, past its `welcome`."""
    cookie = await lobby.login(name)
    reader, writer = await asyncio.open_connection("127.0.0.1", lobby.live.port)
    try:
        writer.write(
            (
                f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{lobby.live.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                f"Origin: {lobby.http}\r\nCookie: lobby_session={cookie}\r\n\r\n"
            ).encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert b" 101 " in head.split(b"\r\n")[0]
        opcode, payload = await read_frame(reader)
        assert (opcode, json.loads(payload)["type"]) == (TEXT, "welcome")
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


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
            if opcode == 0x8:
                code: int = struct.unpack("!H", payload[:2])[0]
                return code
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


async def keep_sending(writer: asyncio.StreamWriter, data: bytes) -> None:
    """Send `data` over and over, never reading, until the server stops taking it."""
    with contextlib.suppress(ConnectionError):
        while not writer.is_closing():
            writer.write(data)
            await writer.drain()


async def round_trip(client: Client) -> None:
    ref = await client.request({"type": "ping"})
    assert (await client.expect("pong"))["ref"] == ref


async def flooded(lobby: Lobby, first: bytes, flood: bytes) -> int | None:
    """Alice sends `first`, then `flood` without end; bob keeps round-tripping meanwhile.

    Returns the close code alice gets (None: reset). The server must forget her socket and
    leave bob's working. Alice answers the server's pings, so only the flood can end
    her socket (and pings are rare here: `LONG_PING_INTERVAL`).
    """
    bob = await lobby.client("bob")
    async with logged_in_socket(lobby) as (reader, writer):
        writer.write(first)
        sender = asyncio.create_task(keep_sending(writer, flood * 2000))
        code_task = asyncio.create_task(close_code(reader, writer))
        try:
            async with asyncio.timeout(FLOOD_TIMEOUT):
                while not code_task.done():  # bob is answered all along
                    await round_trip(bob)
            code = await code_task
            await until(lambda: lobby.state.hub.sockets_of("alice") == 0)
        finally:
            sender.cancel()
            code_task.cancel()
    await round_trip(bob)
    await bob.close()
    return code


async def test_a_ping_flood_is_closed_with_1008(lobby: Lobby) -> None:
    """Empty pings at full speed: uvicorn answered every one and never closed the socket."""
    assert await flooded(lobby, b"", client_frame(PING)) in (1008, None)


async def test_an_unsolicited_pong_flood_is_closed_with_1008(lobby: Lobby) -> None:
    assert await flooded(lobby, b"", client_frame(PONG, b"1234")) in (1008, None)


async def test_an_empty_continuation_flood_is_closed_with_1008(lobby: Lobby) -> None:
    """A message begun and never finished with empty fragments: buffered without end."""
    start = client_frame(TEXT, b'{"type":', fin=False)
    assert await flooded(lobby, start, client_frame(CONT, fin=False)) in (1008, None)


async def test_one_fragment_too_many_gets_the_close_frame(lobby: Lobby) -> None:
    """Nothing left unread: the client sees the 1008 itself, with the reason."""
    async with logged_in_socket(lobby) as (reader, writer):
        writer.write(client_frame(TEXT, b" ", fin=False))
        writer.write(b"".join(client_frame(CONT, b" ", fin=False) for _ in range(MAX_FRAGMENTS)))
        opcode, payload = await read_frame(reader)
        assert (opcode, payload) == (0x8, struct.pack("!H", 1008) + b"too many fragments")


async def test_pings_within_the_burst_are_answered_and_the_socket_stays(lobby: Lobby) -> None:
    async with logged_in_socket(lobby) as (reader, writer):
        for i in range(CONTROL_BURST):
            writer.write(client_frame(PING, b"p%d" % i))
        for i in range(CONTROL_BURST):
            assert await read_frame(reader) == (PONG, b"p%d" % i)
        writer.write(client_frame(TEXT, b'{"type":"ping","ref":1}'))
        opcode, payload = await read_frame(reader)
        assert (opcode, json.loads(payload)) == (TEXT, {"type": "pong", "ref": 1})


async def test_a_message_in_sane_fragments_is_read_as_one(lobby: Lobby) -> None:
    message = b'{"type":"ping","ref":7}'
    pieces = [message[i : i + 1] for i in range(len(message))][: MAX_FRAGMENTS - 1]
    pieces.append(message[len(pieces) :])
    async with logged_in_socket(lobby) as (reader, writer):
        writer.write(client_frame(TEXT, pieces[0], fin=False))
        for piece in pieces[1:-1]:
            writer.write(client_frame(CONT, piece, fin=False))
        writer.write(client_frame(CONT, pieces[-1]))
        opcode, payload = await read_frame(reader)
        assert (opcode, json.loads(payload)) == (TEXT, {"type": "pong", "ref": 7})


async def test_pongs_to_frequent_server_pings_never_count(make_lobby: LobbyFactory) -> None:
    """A browser answers every server ping; at 20 pings a second that outruns the budget."""
    lobby = await make_lobby(ping_interval=0.05, ping_timeout=1)
    async with logged_in_socket(lobby) as (reader, writer):
        for _ in range(4 * CONTROL_BURST):
            opcode, payload = await read_frame(reader)
            assert opcode == PING
            writer.write(client_frame(PONG, payload))
        writer.write(client_frame(TEXT, b'{"type":"ping","ref":2}'))
        while (frame := await read_frame(reader))[0] == PING:
            pass
        assert (frame[0], json.loads(frame[1])) == (TEXT, {"type": "pong", "ref": 2})


@pytest.fixture
async def lobby(make_lobby: LobbyFactory) -> Lobby:
    server: Lobby = await make_lobby(ping_interval=LONG_PING_INTERVAL)
    return server
