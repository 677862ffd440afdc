"""The wire: request heads have a deadline (slowloris), WebSocket text frames are framed right."""

from __future__ import annotations

import asyncio
import logging
import struct
import tomllib
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from lobby.config import Settings
from lobby.rules.frames import text_frame
from lobby.server import protocols, uvicorn_config
from lobby.web import UVICORN_SERIES, IncompatibleUvicorn
from lobby.web.uvicorn_adapter import (
    RELIED_ON,
    DirectProtocol,
    Flag,
    HeadTimeoutProtocol,
    Inbox,
    head_timeout_protocol,
    missing,
)
from tests.conftest import Lobby, LobbyFactory, until
from tests.conftest import raw_connection as connect

TIMEOUT = 0.5
# How long past the deadline a drop may take on a busy machine.
SLACK = 1.5
# A valid request head, long enough that dribbling it outlasts any deadline here.
LONG_HEAD = b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Pad: " + b"a" * 500 + b"\r\n\r\n"


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Whether the server closes the connection within `seconds`, sending nothing first."""
    try:
        data = await asyncio.wait_for(reader.read(1), seconds)
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True  # an abort with our bytes still unread arrives as a reset
    assert data == b"", f"the server answered {data!r}"
    return True


async def seconds_until_closed(reader: asyncio.StreamReader) -> float:
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await closed_within(reader, TIMEOUT + SLACK), "the connection was not dropped"
    return loop.time() - start


async def read_response(reader: asyncio.StreamReader) -> bytes:
    """One whole HTTP response (the lobby's carry a Content-Length)."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return head + await asyncio.wait_for(reader.readexactly(length), 5)


@pytest.fixture
async def lobby(make_lobby: LobbyFactory) -> Lobby:
    server: Lobby = await make_lobby(header_timeout=TIMEOUT)
    return server


@pytest.mark.parametrize("sent", [b"", b"GET / HTTP/1.1\r\nHost: localhost\r\n"])
async def test_an_unfinished_request_head_is_dropped_at_the_deadline(
    lobby: Lobby, sent: bytes
) -> None:
    async with connect(lobby) as (reader, writer):
        writer.write(sent)
        elapsed = await seconds_until_closed(reader)
        assert elapsed >= TIMEOUT * 0.8


async def test_a_head_dribbled_byte_by_byte_is_dropped_at_the_deadline(lobby: Lobby) -> None:
    async with connect(lobby) as (reader, writer):
        sent = 0
        async with asyncio.timeout(TIMEOUT + SLACK):
            # A byte every 50 ms: far quicker than the deadline, so only a deadline on
            # the whole head (not an idle timer) can stop it.
            while not await closed_within(reader, 0.05):
                writer.write(LONG_HEAD[sent : sent + 1])
                sent += 1
        assert sent < len(LONG_HEAD)


async def test_the_deadline_runs_from_the_connection_not_the_first_byte(
    make_lobby: LobbyFactory,
) -> None:
    lobby = await make_lobby(header_timeout=1.0)
    loop = asyncio.get_running_loop()
    async with connect(lobby) as (reader, writer):
        start = loop.time()
        assert not await closed_within(reader, 0.8)  # silent for most of the deadline
        sent = 0
        async with asyncio.timeout(SLACK):
            while not await closed_within(reader, 0.05):
                writer.write(LONG_HEAD[sent : sent + 1])
                sent += 1
        # Due at 1.0 s; had the first byte restarted the clock, not before 1.8 s.
        assert loop.time() - start < 1.5


async def test_a_stalled_second_request_on_a_kept_alive_connection_is_dropped(
    lobby: Lobby,
) -> None:
    async with connect(lobby) as (reader, writer):
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert (await read_response(reader)).startswith(b"HTTP/1.1 200 ")
        writer.write(b"GET /healthz HTTP/1.1\r\nHo")
        assert await seconds_until_closed(reader) >= TIMEOUT * 0.8


async def test_a_body_that_never_arrives_is_dropped_at_the_deadline(
    lobby: Lobby, caplog: pytest.LogCaptureFixture
) -> None:
    """uvicorn has no deadline for request bodies; ours covers the whole request."""
    uvicorn_log = logging.getLogger("uvicorn.error")  # it does not propagate to caplog's
    uvicorn_log.addHandler(caplog.handler)
    try:
        async with connect(lobby) as (reader, writer):
            writer.write(
                b"POST /login HTTP/1.1\r\nHost: localhost\r\n"
                b"Content-Type: application/x-www-form-urlencoded\r\n"
                b"Content-Length: 4096\r\n\r\nuser=bob"
            )
            assert 0.8 * TIMEOUT <= await seconds_until_closed(reader) <= 3 * TIMEOUT
        await until(lambda: not lobby.live.server.server_state.tasks)  # the handler is done
    finally:
        uvicorn_log.removeHandler(caplog.handler)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]  # no traceback


async def test_a_whole_request_in_time_is_answered(lobby: Lobby) -> None:
    async with connect(lobby) as (reader, writer):
        writer.write(
            b"POST /login HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 8\r\n\r\n"
            b"user=bob"
        )
        assert (await read_response(reader)).startswith(b"HTTP/1.1 403 ")  # no CSRF token
        # The connection stays for the next request (keep-alive), past the deadline.
        assert not await closed_within(reader, 1.5 * TIMEOUT)


async def test_an_idle_websocket_answering_pings_outlives_the_deadline(
    make_lobby: LobbyFactory,
) -> None:
    lobby = await make_lobby(header_timeout=TIMEOUT, ping_interval=0.2, ping_timeout=0.5)
    client = await lobby.client("alice")
    # Several deadlines and pings go by: no frame, and no close (recv would raise).
    await client.nothing(within=3 * TIMEOUT)
    ref = await client.request({"type": "ping"})
    assert (await client.expect("pong"))["ref"] == ref
    await client.close()


def test_the_server_config_carries_the_header_timeout() -> None:
    config = uvicorn_config(Starlette(), Settings(header_timeout=2.5))
    assert isinstance(config.http, type)
    assert issubclass(config.http, HeadTimeoutProtocol)
    assert issubclass(config.http, HttpToolsProtocol)
    assert config.http.header_timeout == 2.5
    assert head_timeout_protocol(7).header_timeout == 7
    assert HeadTimeoutProtocol.header_timeout == 5.0  # a bound class leaves the base alone


@pytest.mark.parametrize(
    ("size", "code", "header_size"),
    [(0, 0, 2), (125, 125, 2), (126, 126, 4), (65535, 126, 4), (65536, 127, 10)],
)
def test_text_frame_length_encodings(size: int, code: int, header_size: int) -> None:
    payload = b"x" * size
    frame = text_frame(payload)
    assert frame[0] == 0x81  # FIN + text opcode
    assert frame[1] == code  # no mask bit: server frames are unmasked
    if code == 126:
        assert struct.unpack("!H", frame[2:4])[0] == size
    elif code == 127:
        assert struct.unpack("!Q", frame[2:10])[0] == size
    assert frame[header_size:] == payload


# -- what an idle socket keeps --------------------------------------------------------


async def test_the_inbox_hands_out_items_in_order_and_waits_for_the_next() -> None:
    inbox = Inbox()
    inbox.put_nowait(1)
    inbox.put_nowait(2)
    assert not inbox.empty()
    assert [await inbox.get(), await inbox.get()] == [1, 2]
    assert inbox.empty()
    waiting = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    assert not waiting.done()
    inbox.put_nowait(3)
    assert await asyncio.wait_for(waiting, 1) == 3


async def test_a_cancelled_get_leaves_the_inbox_usable() -> None:
    inbox = Inbox()
    waiting = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    inbox.put_nowait("after")
    assert await asyncio.wait_for(inbox.get(), 1) == "after"


async def test_the_flag_lets_waiters_through_only_while_set() -> None:
    flag = Flag()
    assert not flag.is_set()
    waiters = [asyncio.create_task(flag.wait()) for _ in range(2)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    flag.set()
    await asyncio.wait_for(asyncio.gather(*waiters), 1)
    await asyncio.wait_for(flag.wait(), 1)  # set: no wait at all
    flag.clear()
    assert not flag.is_set()


async def test_an_accepted_socket_keeps_light_queues(lobby: Lobby) -> None:
    client = await lobby.client("alice")
    protocols = [
        p for p in lobby.live.server.server_state.connections if isinstance(p, DirectProtocol)
    ]
    assert len(protocols) == 1
    (protocol,) = protocols
    assert isinstance(protocol.queue, Inbox)
    assert isinstance(protocol.writable, Flag)
    ref = await client.request({"type": "ping"})  # and it still reads and writes
    assert (await client.expect("pong"))["ref"] == ref
    await client.close()


# The fence around uvicorn's internals


def test_the_installed_uvicorn_has_everything_the_adapter_relies_on() -> None:
    assert missing() == []
    assert len(RELIED_ON[WebSocketsSansIOProtocol]) >= 10
    assert len(RELIED_ON[HttpToolsProtocol]) >= 10
    assert uvicorn.__version__.startswith(UVICORN_SERIES + ".")


def test_a_renamed_attribute_or_method_is_named() -> None:
    relied_on: dict[type[Any], tuple[str, ...]] = {
        WebSocketsSansIOProtocol: ("close_sent", "no_such_flag"),
        HttpToolsProtocol: ("on_headers_complete", "on_no_such_event"),
    }
    assert missing(relied_on) == [
        "WebSocketsSansIOProtocol.no_such_flag",
        "HttpToolsProtocol.on_no_such_event",
    ]


def test_the_server_refuses_an_unfit_uvicorn_in_one_sentence() -> None:
    with pytest.raises(IncompatibleUvicorn) as caught:
        protocols(5.0, relied_on={WebSocketsSansIOProtocol: ("writable", "gone_in_a_rename")})
    assert str(caught.value) == (
        f"lobby needs uvicorn {UVICORN_SERIES}.x, but uvicorn {uvicorn.__version__} is "
        "installed, which lacks WebSocketsSansIOProtocol.gone_in_a_rename"
    )


def test_pyproject_pins_the_uvicorn_series_the_adapter_is_written_for() -> None:
    major, minor = (int(n) for n in UVICORN_SERIES.split("."))
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    [requirement] = [d for d in project["project"]["dependencies"] if d.startswith("uvicorn")]
    assert f">={major}.{minor}" in requirement
    assert f"<{major}.{minor + 1}" in requirement
