"""Floods below the message level (pings, pongs, fragments) and oversized request heads.

Raw sockets throughout: client libraries refuse to send what these tests send.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lobby.rules.limits import CONTROL_BURST, MAX_FRAGMENTS
from lobby.web.uvicorn_adapter import MAX_HEAD_BYTES, MAX_HEADERS, MAX_URL_BYTES
from tests.conftest import Client, Lobby, LobbyFactory, until
from tests.conftest import raw_connection as connect
from tests.raw_ws import (
    CONT,
    PING,
    PONG,
    TEXT,
    client_frame,
    close_code,
    logged_in_socket,
    read_frame,
)

# Server pings far apart: a flooder that stopped answering them is not what ends it.
LONG_PING_INTERVAL = 60
# Without the budget these floods go on for ever; with it they end in well under this.
FLOOD_TIMEOUT = 20


async def keep_sending(
    writer: asyncio.StreamWriter, data: bytes, *, times: int | None = None
) -> int:
    """Send `data` over and over (`times` times at most), never reading, until the server
    stops taking it; how many times the server took it."""
    sent = 0
    with contextlib.suppress(ConnectionError):
        while not writer.is_closing() and sent != times:
            writer.write(data)
            await writer.drain()
            sent += 1
    return sent


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


def flood_closes(lobby: Lobby) -> float:
    families = text_string_to_metric_families(lobby.state.metrics.text().decode())
    return next(
        s.value for f in families for s in f.samples if s.name == "lobby_flood_closes_total"
    )


async def test_a_ping_flood_is_closed_with_1008(lobby: Lobby) -> None:
    """Empty pings at full speed: uvicorn answered every one and never closed the socket."""
    before = flood_closes(lobby)
    assert await flooded(lobby, b"", client_frame(PING)) in (1008, None)
    assert flood_closes(lobby) == before + 1  # /metrics counts the cut


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


# Request heads


@pytest.fixture
async def patient(make_lobby: LobbyFactory) -> Lobby:
    """A lobby whose head deadline is far off: only the size limits can end a head."""
    server: Lobby = await make_lobby(header_timeout=60)
    return server


def head(size: int, *, path: str = "/healthz", extra: bytes = b"") -> bytes:
    """A GET head of exactly `size` bytes, padded with one header."""
    start = f"GET {path} HTTP/1.1\r\nHost: localhost\r\n".encode() + extra + b"X-Pad: "
    padded = start + b"a" * (size - len(start) - 4) + b"\r\n\r\n"
    assert len(padded) == size
    return padded


async def response(reader: asyncio.StreamReader) -> tuple[int, dict[bytes, bytes]]:
    """The status and headers of one whole response (body read and dropped)."""
    raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    status_line, *lines = raw[:-4].split(b"\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(b":", 1) for line in lines)}
    await asyncio.wait_for(reader.readexactly(int(headers[b"content-length"])), 5)
    return int(status_line.split()[1]), headers


async def refused(lobby: Lobby, request: bytes) -> int:
    """Send `request`; the status of the answer, which must close the connection."""
    async with connect(lobby) as (reader, writer):
        writer.write(request)
        status, headers = await response(reader)
        assert headers[b"connection"] == b"close"
        assert await asyncio.wait_for(reader.read(), 5) == b""  # and it is closed
        return status


async def test_a_head_at_the_limit_is_served_one_byte_more_gets_431(patient: Lobby) -> None:
    async with connect(patient) as (reader, writer):
        writer.write(head(MAX_HEAD_BYTES))
        assert (await response(reader))[0] == 200
    assert await refused(patient, head(MAX_HEAD_BYTES + 1)) == 431


async def test_a_kept_alive_connections_next_head_is_counted_afresh(patient: Lobby) -> None:
    async with connect(patient) as (reader, writer):
        for _ in range(3):  # not added up across requests
            writer.write(head(MAX_HEAD_BYTES))
            assert (await response(reader))[0] == 200
        writer.write(head(MAX_HEAD_BYTES + 1))  # but counted for each
        status, headers = await response(reader)
        assert (status, headers[b"connection"]) == (431, b"close")


async def test_too_many_tiny_headers_get_431(patient: Lobby) -> None:
    many = b"".join(b"X-%d: y\r\n" % i for i in range(MAX_HEADERS - 2))  # with Host and X-Pad
    async with connect(patient) as (reader, writer):
        writer.write(head(2048, extra=many))
        assert (await response(reader))[0] == 200
    assert await refused(patient, head(2048, extra=many + b"X-One-More: y\r\n")) == 431


async def test_a_huge_url_gets_414(patient: Lobby) -> None:
    path = "/healthz?q=" + "a" * (MAX_URL_BYTES - len("/healthz?q="))
    async with connect(patient) as (reader, writer):
        writer.write(head(MAX_HEAD_BYTES, path=path))
        assert (await response(reader))[0] == 200
    assert await refused(patient, head(MAX_HEAD_BYTES, path=path + "a")) == 414


async def test_a_websocket_upgrade_with_a_huge_head_gets_431(patient: Lobby) -> None:
    upgrade = (
        b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    )
    assert await refused(patient, head(MAX_HEAD_BYTES + 1, path="/ws", extra=upgrade)) == 431


async def test_an_endless_header_is_cut_short_and_healthz_stays_answered(
    patient: Lobby,
) -> None:
    """32 MB of one header value: refused after 16 KiB, the rest never read."""
    async with connect(patient) as (reader, writer), httpx.AsyncClient() as http:
        writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Huge: ")
        sender = asyncio.create_task(keep_sending(writer, b"a" * (1 << 20), times=32))
        # A 431, or a reset overtaking it (the server stops reading with bytes in flight).
        with contextlib.suppress(ConnectionError):
            assert (await response(reader))[0] == 431
        assert (await http.get(patient.http + "/healthz")).status_code == 200
        # The server took at most kernel buffers' worth, far from all 32 MB.
        assert await asyncio.wait_for(sender, 10) < 32
