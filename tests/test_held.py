"""Attacks the second security review tried that the server already withstood: kept true.

Each test sends what a hostile client would over a raw socket (no client library would
send these bytes) and checks the answer the review saw: WebSocket frames the protocol
forbids, HTTP request smuggling, oversized forms, paths out of `static/`.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from tests.conftest import Lobby
from tests.conftest import raw_connection as raw
from tests.raw_ws import CONT, TEXT, client_frame, close_code, logged_in_socket, upgrade_request


async def response_head(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)


# WebSocket frames the protocol forbids


async def test_a_text_frame_that_is_not_utf8_closes_with_1007(lobby: Lobby) -> None:
    async with logged_in_socket(lobby) as (reader, writer):
        writer.write(client_frame(TEXT, b'{"type":"ping","ref":"\xff\xfe"}'))
        assert await close_code(reader, writer) == 1007


async def test_a_frame_with_rsv1_set_closes_with_1002(lobby: Lobby) -> None:
    async with logged_in_socket(lobby) as (reader, writer):
        writer.write(client_frame(TEXT, b'{"type":"ping"}', rsv1=True))
        assert await close_code(reader, writer) == 1002


async def test_fragments_adding_up_past_the_frame_limit_close_with_1009(lobby: Lobby) -> None:
    chunk = b"x" * 125
    fragments = [client_frame(TEXT, chunk, fin=False)]
    fragments += [
        client_frame(CONT, chunk, fin=False) for _ in range(lobby.settings.max_frame_bytes // 125)
    ]
    async with logged_in_socket(lobby) as (reader, writer):
        writer.write(b"".join(fragments))
        assert await close_code(reader, writer) == 1009


async def test_compression_is_never_negotiated(lobby: Lobby) -> None:
    offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"
    cookie = await lobby.login("alice")
    async with raw(lobby) as (reader, writer):
        writer.write(upgrade_request(lobby, cookie, offer))
        head = await response_head(reader)
    assert head.startswith(b"HTTP/1.1 101"), head
    assert b"sec-websocket-extensions" not in head.lower()


# HTTP


@pytest.mark.parametrize(
    "framing",
    [
        # Both lengths: a front proxy and the server could disagree on where the body ends.
        b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n",
        b"Content-Length: 4\r\nContent-Length: 5\r\n",
        b"Transfer-Encoding: chunked, identity\r\n",
        b"Content-Length: +4\r\n",
    ],
)
async def test_ambiguous_request_framing_is_refused_with_400(lobby: Lobby, framing: bytes) -> None:
    request = (
        b"POST /login HTTP/1.1\r\nHost: localhost\r\n"
        + framing
        + b"Content-Type: application/x-www-form-urlencoded\r\n\r\n0\r\n\r\n"
    )
    async with raw(lobby) as (reader, writer):
        writer.write(request)
        head = await response_head(reader)
    assert head.startswith(b"HTTP/1.1 400"), head


async def test_a_20_mb_form_field_is_refused_after_a_megabyte(lobby: Lobby) -> None:
    size = 20 << 20
    head = (
        b"POST /login HTTP/1.1\r\nHost: localhost\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\n"
        + f"Content-Length: {size}\r\n\r\nuser=alice&pass=".encode()
    )
    sent = 0

    async def send(writer: asyncio.StreamWriter) -> None:
        nonlocal sent
        writer.write(head)
        with contextlib.suppress(ConnectionError):
            while sent < size:
                writer.write(b"a" * 65536)
                await writer.drain()
                sent += 65536

    async with raw(lobby) as (reader, writer):
        sending = asyncio.create_task(send(writer))
        try:
            # Read while still sending: the answer comes before the body ends.
            answer = await response_head(reader)
        finally:
            sending.cancel()
    assert answer.startswith(b"HTTP/1.1 400"), answer
    assert sent < size // 2  # refused long before the 20 MB were in


@pytest.mark.parametrize(
    "path",
    [
        "/static/../lobby/config.py",
        "/static/%2e%2e/lobby/config.py",
        "/static/..%2flobby/config.py",
        "/static//etc/passwd",
        "/static/",
        "/static/vendor/",
    ],
)
async def test_nothing_outside_static_files_is_served_and_nothing_is_listed(
    lobby: Lobby, path: str
) -> None:
    async with raw(lobby) as (reader, writer):
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode()
        )
        answer = await asyncio.wait_for(reader.read(), 5)
    assert answer.split(b" ", 2)[1] in (b"400", b"404"), answer[:200]
    assert b"SETTINGS" not in answer
    assert b"root:" not in answer
