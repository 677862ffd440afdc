"""Http1Transport under httpx, against real HTTP servers on loopback.

The OpenVidu stand-in (uvicorn) covers the usual answers and faults through
`OpenViduBackend` in test_openvidu.py. Here a bare asyncio server answers each request
with the exact bytes a test scripts, so framing (chunked, by close), keep-alive and
broken answers are checked byte by byte.
"""

from __future__ import annotations

import asyncio
import errno
import gzip
import shutil
import socket
import ssl
import struct
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from lobby.transport import Http1Transport
from lobby.transport import _origin as origin
from tests.conftest import until
from tests.openvidu_standin import closed_port_url

HANG = b"<hang>"  # read the request, never answer
RESET = b"<reset>"  # read the request, then reset the connection (TCP RST)
CLOSE = b"<close>"  # at the end of an answer: then close the connection


def answer(status: str, body: bytes = b"", *headers: str) -> bytes:
    head = "".join(f"{h}\r\n" for h in headers)
    return f"HTTP/1.1 {status}\r\n{head}content-length: {len(body)}\r\n\r\n".encode() + body


class Scripted:
    """Answers the n-th request it reads (on any connection) with `answers[n]`."""

    def __init__(self, answers: list[bytes]) -> None:
        self.answers = answers
        self.requests: list[bytes] = []
        self.connections = 0
        self.hung_up = asyncio.Event()
        self.url = ""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.partition(b":")[2])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                self.requests.append(head + await reader.readexactly(length))
                reply = self.answers[len(self.requests) - 1]
                if reply == HANG:
                    await reader.read()  # until the client hangs up
                    self.hung_up.set()
                    return
                if reply == RESET:
                    linger = struct.pack("ii", 1, 0)  # close() then sends RST, not FIN
                    writer.get_extra_info("socket").setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, linger
                    )
                    writer.transport.abort()
                    return
                writer.write(reply.removesuffix(CLOSE))
                if reply.endswith(CLOSE):
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            self.hung_up.set()  # the client closed its end
        finally:
            writer.close()


Start = Callable[..., Awaitable[Scripted]]


@pytest.fixture
async def scripted() -> AsyncIterator[Start]:
    servers: list[asyncio.Server] = []

    async def start(answers: list[bytes], tls: ssl.SSLContext | None = None) -> Scripted:
        server = Scripted(answers)
        listening = await asyncio.start_server(server.serve, "127.0.0.1", 0, ssl=tls)
        servers.append(listening)
        port = listening.sockets[0].getsockname()[1]
        server.url = f"{'https' if tls else 'http'}://127.0.0.1:{port}"
        return server

    yield start
    for listening in servers:
        listening.close()
        await listening.wait_closed()


def client(transport: Http1Transport | None = None, timeout: float = 1) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=transport or Http1Transport(), timeout=timeout)


# -- requests and framing ----------------------------------------------------------------


async def test_a_request_goes_out_as_httpx_built_it(scripted: Start) -> None:
    server = await scripted([answer("200 OK", b'{"id":"a"}', "content-type: application/json")])
    async with client() as http:
        response = await http.post(f"{server.url}/api/x?y=1", json={"a": 1}, auth=("u", "p"))
    assert response.status_code == 200
    assert response.json() == {"id": "a"}
    assert response.reason_phrase == "OK"
    assert response.http_version == "HTTP/1.1"
    [request] = server.requests
    head, body = request.split(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    assert lines[0] == b"post /api/x?y=1 http/1.1"
    assert f"host: {server.url.removeprefix('http://')}".encode() in lines
    assert b"authorization: basic dtpw" in lines
    assert b"content-length: 7" in lines
    assert body == b'{"a":1}'


async def test_a_line_break_in_a_header_is_refused_before_sending(scripted: Start) -> None:
    server = await scripted([answer("200 OK")])
    async with client() as http:
        with pytest.raises(httpx.LocalProtocolError, match="line break"):
            await http.get(server.url, headers={"x-evil": "a\r\nx-injected: 1"})
        assert (await http.get(server.url)).status_code == 200
    assert len(server.requests) == 1


async def test_connections_are_kept_alive_and_reused(scripted: Start) -> None:
    server = await scripted([answer("200 OK", b"1"), answer("204 No Content"), answer("200 OK")])
    async with client() as http:
        assert (await http.get(f"{server.url}/1")).text == "1"
        assert (await http.delete(f"{server.url}/2")).status_code == 204
        assert (await http.head(f"{server.url}/3")).status_code == 200
    assert len(server.requests) == 3
    assert server.connections == 1


async def test_a_chunked_answer_is_joined_and_the_connection_reused(scripted: Start) -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: application/json\r\n"
        b'\r\n5;ext=1\r\n{"id"\r\n6\r\n: "a"}\r\n0\r\nx-trailer: t\r\n\r\n'
    )
    server = await scripted([chunked, answer("200 OK", b"next")])
    async with client() as http:
        assert (await http.get(server.url)).json() == {"id": "a"}
        assert (await http.get(server.url)).text == "next"
    assert server.connections == 1


async def test_an_answer_framed_by_close_is_read_to_the_end(scripted: Start) -> None:
    server = await scripted([b"HTTP/1.1 200 OK\r\n\r\nuntil the end" + CLOSE, answer("200 OK")])
    async with client() as http:
        assert (await http.get(server.url)).text == "until the end"
        await http.get(server.url)
    assert server.connections == 2


@pytest.mark.parametrize(
    "first",
    [
        answer("200 OK", b"x", "Connection: close"),
        b"HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\nx",
    ],
)
async def test_connection_close_or_http_1_0_is_not_reused(scripted: Start, first: bytes) -> None:
    server = await scripted([first, answer("200 OK")])
    async with client() as http:
        assert (await http.get(server.url)).text == "x"
        await http.get(server.url)
    assert server.connections == 2


async def test_a_gzip_body_is_decoded_by_httpx(scripted: Start) -> None:
    body = gzip.compress(b'{"ok": true}')
    server = await scripted([answer("200 OK", body, "content-encoding: gzip")])
    async with client() as http:
        assert (await http.get(server.url)).json() == {"ok": True}


# -- keep-alive that went stale -------------------------------------------------------------


async def test_a_connection_the_server_closed_while_idle_is_not_reused(scripted: Start) -> None:
    server = await scripted([answer("200 OK") + CLOSE, answer("200 OK", b"fresh")])
    transport = Http1Transport()
    async with client(transport) as http:
        await http.get(server.url)
        # The server's FIN reaches the idle connection's reader.
        await until(lambda: all(c.reader.at_eof() for c in transport._idle[_origin(server)]))
        assert (await http.get(server.url)).text == "fresh"
    assert server.connections == 2


async def test_an_idle_connection_expires(scripted: Start) -> None:
    server = await scripted([answer("200 OK"), answer("200 OK")])
    async with client(Http1Transport(keepalive_expiry=0)) as http:
        await http.get(server.url)
        await http.get(server.url)
    assert server.connections == 2


# -- failures: httpx's own exceptions, as httpcore raises them -------------------------------


async def test_refused_is_a_connect_error_with_its_os_cause() -> None:
    async with client() as http:
        with pytest.raises(httpx.ConnectError) as caught:
            await http.get(closed_port_url())
    assert isinstance(caught.value.__cause__, OSError)
    assert caught.value.__cause__.errno == errno.ECONNREFUSED


async def test_no_answer_in_time_is_a_read_timeout_and_hangs_up(scripted: Start) -> None:
    server = await scripted([HANG])
    async with client(timeout=0.2) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.get(server.url)
    await asyncio.wait_for(server.hung_up.wait(), 2)


async def test_a_server_that_hangs_up_without_answering(scripted: Start) -> None:
    server = await scripted([CLOSE, answer("200 OK")])
    async with client() as http:
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            await http.get(server.url)
        assert (await http.get(server.url)).status_code == 200  # a new connection
    assert server.connections == 2


@pytest.mark.parametrize(
    "broken",
    [
        b'HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{"id": "con' + CLOSE,
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n10\r\nshort" + CLOSE,
        b"HTTP/1.1 200 OK\r\ncontent-length: 5" + CLOSE,
    ],
    ids=["body", "chunk", "head"],
)
async def test_an_answer_cut_short_is_a_remote_protocol_error(
    scripted: Start, broken: bytes
) -> None:
    server = await scripted([broken])
    async with client() as http:
        with pytest.raises(httpx.RemoteProtocolError, match="mid-answer"):
            await http.get(server.url)


@pytest.mark.parametrize(
    "garbage",
    [
        b"SSH-2.0-OpenSSH\r\n\r\n",
        b"HTTP/1.1 2x0 OK\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: many\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nabcd\r\n",
    ],
    ids=["not-http", "status", "1xx", "header", "length", "chunk-size", "chunk-overrun"],
)
async def test_a_malformed_answer_is_a_remote_protocol_error(
    scripted: Start, garbage: bytes
) -> None:
    server = await scripted([garbage, answer("200 OK")])
    async with client() as http:
        with pytest.raises(httpx.RemoteProtocolError, match="malformed"):
            await http.get(server.url)
        await http.get(server.url)
    assert server.connections == 2  # never reused after that


async def test_a_head_line_too_long_is_a_remote_protocol_error(scripted: Start) -> None:
    server = await scripted([b"HTTP/1.1 200 OK\r\nx: " + b"a" * 70_000 + b"\r\n\r\n"])
    async with client() as http:
        with pytest.raises(httpx.RemoteProtocolError, match="too long"):
            await http.get(server.url)


async def test_a_reset_while_reading_is_a_read_error(scripted: Start) -> None:
    server = await scripted([RESET, answer("200 OK")])
    async with client() as http:
        with pytest.raises(httpx.ReadError):
            await http.get(server.url)
        assert (await http.get(server.url)).status_code == 200
    assert server.connections == 2


async def test_all_connections_busy_is_a_pool_timeout(scripted: Start) -> None:
    server = await scripted([HANG, answer("200 OK")])
    async with client(Http1Transport(max_connections=1), timeout=0.1) as http:
        stuck = asyncio.ensure_future(http.get(server.url, timeout=5))
        await until(lambda: bool(server.requests))
        with pytest.raises(httpx.PoolTimeout):
            await http.get(server.url)
        stuck.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stuck
        assert (await http.get(server.url)).status_code == 200  # the slot came back


async def test_a_cancelled_request_drops_its_connection(scripted: Start) -> None:
    server = await scripted([HANG, answer("200 OK")])
    async with client() as http:
        request = asyncio.ensure_future(http.get(server.url))
        await until(lambda: bool(server.requests))
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        await asyncio.wait_for(server.hung_up.wait(), 2)
        assert (await http.get(server.url)).status_code == 200
    assert server.connections == 2


async def test_a_connection_in_use_at_close_is_not_kept(scripted: Start) -> None:
    server = await scripted([answer("200 OK")])
    transport = Http1Transport()
    async with httpx.AsyncClient(transport=transport) as http:
        request = asyncio.ensure_future(http.get(server.url))
        await transport.aclose()
        assert (await request).status_code == 200
    await asyncio.wait_for(server.hung_up.wait(), 2)


# -- TLS ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made with the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext",
         "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


async def test_tls_with_a_trusted_ca(scripted: Start, certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    served = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    served.load_cert_chain(cert, key)
    server = await scripted([answer("200 OK", b"secret"), answer("200 OK")], served)
    trusted = ssl.create_default_context(cafile=str(cert))
    async with client(Http1Transport(verify=trusted)) as http:
        assert (await http.get(server.url)).text == "secret"
        await http.get(server.url)
    assert server.connections == 1


async def test_tls_with_an_unknown_ca_is_a_connect_error(
    scripted: Start, certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    served = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    served.load_cert_chain(cert, key)
    server = await scripted([answer("200 OK")], served)
    async with client() as http:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await http.get(server.url)
    async with client(Http1Transport(verify=False)) as http:
        assert (await http.get(server.url)).status_code == 200


def _origin(server: Scripted) -> tuple[str, str, int]:
    return origin(httpx.URL(server.url))
