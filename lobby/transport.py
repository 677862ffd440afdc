"""A small HTTP/1.1 keep-alive transport for httpx: the OpenVidu client's hot path.

httpx's default transport goes through httpcore, h11 and anyio. For the few small
JSON calls a join makes, that stack is most of the lobby's own time on a token:
about 0.7 ms per call against 0.3 ms here (docs/bench/profile.md). This transport
speaks just what a REST API needs, on asyncio streams:

- requests with a `Content-Length` body (httpx sets it for `json=`);
- responses framed by `Content-Length`, `Transfer-Encoding: chunked` (Spring,
  which OpenVidu runs on, sends that) or the end of the connection;
- idle connections reused per origin, dropped after `keepalive_expiry` seconds
  (httpcore's default: a server closing a connection we are about to reuse is
  then unlikely) or when the server closed them; at most `max_connections` at once;
- TLS with the context httpx would build (`httpx.create_ssl_context`).

`OpenViduBackend` hands it ready-made `httpx.Request`s and gets `httpx.Response`s
back; failures are httpx's own exceptions, as httpcore's would be:
`ConnectError`/`ConnectTimeout` before a request was sent, `ReadTimeout` when
no complete answer came in time (the whole answer, so a slow trickle is cut off too),
`PoolTimeout` while every connection is busy, `ReadError`/`WriteError` for a broken
connection and `RemoteProtocolError` for an answer cut short or malformed. It works
under `httpx.AsyncClient(transport=...)` too (the tests use it so). A request
is never sent twice. Not supported, and not needed for OpenVidu: proxies, HTTP/2,
request bodies streamed without a length, `Expect: 100-continue`.
"""

from __future__ import annotations

import asyncio
import ssl
import time

import httpx

# Longer lines than this in an answer's head are not HTTP we want to parse.
_LIMIT = 64 * 1024
_NO_BODY = frozenset({204, 304})


class _Connection:
    """One TCP (or TLS) connection; `idle_since` is set while it waits in the pool."""

    __slots__ = ("idle_since", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    def usable(self, now: float, expiry: float) -> bool:
        # A server that closed its end while we were idle has fed the reader EOF by now.
        return (
            now - self.idle_since < expiry
            and not self.reader.at_eof()
            and not self.writer.transport.is_closing()
        )

    def close(self) -> None:
        self.writer.transport.abort()


class Http1Transport(httpx.AsyncBaseTransport):
    """HTTP/1.1 over pooled keep-alive connections; see the module docstring."""

    def __init__(
        self,
        *,
        verify: bool | ssl.SSLContext = True,
        max_connections: int = 100,
        keepalive_expiry: float = 5.0,
    ) -> None:
        self._tls = verify if isinstance(verify, ssl.SSLContext) else None
        self._verify = verify
        self._expiry = keepalive_expiry
        self._slots = asyncio.Semaphore(max_connections)
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        await self._acquire(timeouts.get("pool"))
        try:
            conn = await self._checkout(request.url, timeouts.get("connect"))
            try:
                response, reusable = await self._exchange(conn, request, timeouts.get("read"))
            except BaseException:
                # Cancelled, timed out or broken half way: the connection's state is unknown.
                conn.close()
                raise
            self._checkin(request.url, conn, reusable)
            return response
        finally:
            self._slots.release()

    async def aclose(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()

    async def _acquire(self, within: float | None) -> None:
        if not self._slots.locked():
            await self._slots.acquire()  # does not suspend: a free slot is taken at once
            return
        try:
            async with asyncio.timeout(within):
                await self._slots.acquire()
        except TimeoutError as exc:
            raise httpx.PoolTimeout("every connection to the server is busy") from exc

    async def _checkout(self, url: httpx.URL, within: float | None) -> _Connection:
        idle = self._idle.get(_origin(url))
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            if conn.usable(now, self._expiry):
                return conn
            conn.close()
        return await self._connect(url, within)

    def _checkin(self, url: httpx.URL, conn: _Connection, reusable: bool) -> None:
        if not reusable or self._closed:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self._idle.setdefault(_origin(url), []).append(conn)

    async def _connect(self, url: httpx.URL, within: float | None) -> _Connection:
        tls: ssl.SSLContext | None = None
        if url.scheme == "https":
            if self._tls is None:
                # Built once, on first use: what httpx's own transport would use.
                self._tls = httpx.create_ssl_context(verify=self._verify)
            tls = self._tls
        _, host, port = _origin(url)
        try:
            async with asyncio.timeout(within):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=tls, limit=_LIMIT, server_hostname=host if tls else None
                )
        except TimeoutError as exc:
            raise httpx.ConnectTimeout(f"no connection to {host}:{port} in time") from exc
        except OSError as exc:  # refused, unreachable, DNS, TLS (ssl.SSLError is an OSError)
            raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
        return _Connection(reader, writer)

    async def _exchange(
        self, conn: _Connection, request: httpx.Request, within: float | None
    ) -> tuple[httpx.Response, bool]:
        """Send `request` on `conn` and read the whole answer; also: may `conn` be reused?"""
        body = await request.aread()
        lines = [b"%s %s HTTP/1.1\r\n" % (request.method.encode(), request.url.raw_path)]
        lines += [b"%s: %s\r\n" % (name, value) for name, value in request.headers.raw]
        lines.append(b"\r\n")
        head = b"".join(lines)
        # h11 refuses line breaks inside a header or the target; so do we (no injection).
        if head.count(b"\n") != len(lines) or head.count(b"\r") != len(lines):
            raise httpx.LocalProtocolError("a line break inside a header or the request target")
        try:
            conn.writer.write(head + body)
        except OSError as exc:
            raise httpx.WriteError(str(exc) or type(exc).__name__) from exc
        try:
            async with asyncio.timeout(within):
                return await _read_response(conn.reader, request.method)
        except TimeoutError as exc:
            raise httpx.ReadTimeout(f"no complete answer within {within}s") from exc
        except asyncio.IncompleteReadError as exc:
            raise httpx.RemoteProtocolError("the server closed the connection mid-answer") from exc
        except asyncio.LimitOverrunError as exc:
            raise httpx.RemoteProtocolError("an answer's head line is too long") from exc
        except ValueError as exc:  # a status, length or chunk size that is not a number, ...
            raise httpx.RemoteProtocolError(f"malformed answer: {exc}") from exc
        except OSError as exc:  # reset by the peer, ...
            raise httpx.ReadError(str(exc) or type(exc).__name__) from exc


async def _read_response(reader: asyncio.StreamReader, method: str) -> tuple[httpx.Response, bool]:
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise
        # What httpcore says when a reused connection turns out closed.
        raise httpx.RemoteProtocolError("Server disconnected without sending a response.") from exc
    status_line, *lines = raw[:-4].split(b"\r\n")
    version, _, rest = status_line.partition(b" ")
    status_text, _, reason = rest.partition(b" ")
    if not version.startswith(b"HTTP/1.") or len(status_text) != 3 or not status_text.isdigit():
        raise ValueError(f"not an HTTP/1.x status line: {status_line[:80]!r}")
    status = int(status_text)
    if status < 200:  # 100 Continue, 101 Switching Protocols: never asked for
        raise ValueError(f"an informational answer ({status}) to a plain request")
    headers = []
    for line in lines:
        name, colon, value = line.partition(b":")
        if not colon:
            raise ValueError(f"a header line without a colon: {line[:80]!r}")
        headers.append((name.strip(), value.strip()))
    fields = {name.lower(): value for name, value in headers}
    close = fields.get(b"connection", b"").lower() == b"close" or version == b"HTTP/1.0"
    if method == "HEAD" or status in _NO_BODY:
        body = b""
    elif b"chunked" in fields.get(b"transfer-encoding", b"").lower():
        body = await _read_chunks(reader)
    elif b"content-length" in fields:
        body = await reader.readexactly(int(fields[b"content-length"]))
    else:
        body = await reader.read()  # framed by the end of the connection
        close = True
    response = httpx.Response(
        status,
        headers=headers,
        stream=httpx.ByteStream(body),
        extensions={"http_version": version, "reason_phrase": reason},
    )
    return response, not close


async def _read_chunks(reader: asyncio.StreamReader) -> bytes:
    parts = []
    while size := int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16):
        parts.append(await reader.readexactly(size + 2))
        if parts[-1][-2:] != b"\r\n":
            raise ValueError("a chunk longer than its size")
        parts[-1] = parts[-1][:-2]
    while await reader.readuntil(b"\r\n") != b"\r\n":
        pass  # trailer fields: nothing OpenVidu sends that we would use
    return b"".join(parts)


def _origin(url: httpx.URL) -> tuple[str, str, int]:
    port = url.port or (443 if url.scheme == "https" else 80)
    return url.scheme, url.host, port
