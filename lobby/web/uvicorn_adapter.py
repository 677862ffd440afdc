"""The one module that knows uvicorn's internals: direct frame writes and a request deadline.

Nothing but `lobby.server` imports it. It subclasses two of uvicorn's private
protocol classes and touches their private attributes, so it is written for one
uvicorn series (`lobby.web.UVICORN_SERIES`, pinned in `pyproject.toml`), and
`missing()` lists what it relies on that the installed uvicorn lacks: the server
refuses to start rather than turn every socket into a 403 after a rename.

Writing WebSocket frames straight to the transport, without a task per socket.

Through plain ASGI every send is an awaited coroutine, so a fan-out either
awaits each recipient (one stuck tab stalls everyone) or runs a queue and a
writer task per socket (a wake-up per socket per event: about twice the CPU).
Neither is needed: a write to an asyncio transport never blocks, it only
buffers. `DirectProtocol` is uvicorn's sans-I/O WebSocket protocol that also
hands the app a `Writer` (ASGI scope extension `lobby.writer`) which writes
ready-made frames with `transport.write` and reports how much is still
buffered, so the hub can cut off a socket whose buffer passes its bound.

Server-to-client frames are not masked, so a text frame is the same bytes for
every recipient: a broadcast frames its message once (`lobby.rules.frames`).

The app's token bucket sees only whole data messages, but uvicorn answers
every ping and buffers every fragment on its own, and the websockets parser
takes a whole read (up to 256 KiB, some 40,000 empty frames: a quarter of a
second of CPU) at a time. So `DirectProtocol` charges every frame to a
`FrameBudget` as the parser yields it, and a frame beyond the budget stops the
parser there: the socket gets a 1008 and is cut (no longer read).

Before any of that, a connection speaks HTTP. uvicorn puts no time limit on
reading a request head, so a client that opens connections and sends a head
slowly, or never finishes it, holds a socket each for as long as it likes
(slowloris). `HeadTimeoutProtocol` is uvicorn's httptools protocol with such a
limit; `head_timeout_protocol` binds it to the `LOBBY_HEADER_TIMEOUT` seconds.
Only the head is timed: an upgraded WebSocket then lives by its pings.

Nor does uvicorn bound a head's size: a 48 MB header took seconds of CPU to
parse, millions of tiny headers hundreds of MB, and a 16 MB head was served.
`HeadTimeoutProtocol` counts a head's bytes before the parser sees them, and
its headers and URL as the parser finds them, and answers a head past the
limits (`MAX_HEAD_BYTES`, `MAX_HEADERS`, `MAX_URL_BYTES`) with 431 or 414 and
`Connection: close`, parsing and reading nothing more.
"""

from __future__ import annotations

import ast
import asyncio
import inspect
import logging
import textwrap
import time
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState
from websockets.exceptions import ProtocolError
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import Protocol
from websockets.server import ServerProtocol

from lobby.hub import FLOODED, WRITER_EXTENSION
from lobby.rules.frames import close_frame
from lobby.rules.limits import FrameBudget
from lobby.rules.protocol import CloseCode

log = logging.getLogger("lobby")

# Seconds a cut socket has to take its close frame before it is aborted.
CUT_LINGER = 2.0

# Request-head limits, as nginx and Node.js have them (Node: 16 KiB a head; nginx
# and Apache: about 8 KiB a request line, Apache: 100 headers). Our own requests
# (a session cookie, a CSRF form, a WebSocket upgrade) take under 2 KiB.
MAX_HEAD_BYTES = 16 * 1024  # request line and headers: beyond, 431
MAX_HEADERS = 100  # beyond, 431
MAX_URL_BYTES = 8 * 1024  # beyond, 414


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

    def ping(self, frame: bytes, payload: bytes) -> bool:
        """Write a ready ping `frame` carrying `payload`, whose pong is then awaited."""
        if not self.write(frame):
            return False
        self._protocol.conn.awaited_pong = payload  # type: ignore[attr-defined]
        return True

    def awaited_pong(self) -> bytes | None:
        """The payload of the ping whose pong has not come yet, if any."""
        awaited: bytes | None = self._protocol.conn.awaited_pong  # type: ignore[attr-defined]
        return awaited

    def cut(self, code: int, reason: str, *, linger: float = CUT_LINGER) -> None:
        """Close a socket that fell behind, without ever buffering more for it.

        The close frame goes behind what is already buffered, for a client that is
        slow rather than stuck; after `linger` seconds the connection is aborted
        and its buffer freed either way.
        """
        protocol = self._protocol
        if protocol.close_sent or protocol.transport.is_closing():
            return
        protocol.transport.write(close_frame(code, reason))
        protocol.close_sent = True  # uvicorn writes nothing more either
        protocol.transport.close()  # flushes, then closes
        protocol.loop.call_later(linger, protocol.transport.abort)


class Inbox:
    """The part of `asyncio.Queue` uvicorn uses (put_nowait, get, empty), without its deques.

    Every socket keeps its receive queue for its whole life. An `asyncio.Queue`
    holds three deques and an `asyncio.Event` (a fourth): about 3 KiB per idle
    socket. Frames arrive one at a time (uvicorn pauses reading until the app
    has taken one), so a list and at most one waiting future are enough.
    """

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def get(self) -> Any:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.pop(0)

    def empty(self) -> bool:
        return not self._items


class Flag:
    """The part of `asyncio.Event` uvicorn uses for `writable`, without its deque."""

    __slots__ = ("_value", "_waiters")

    def __init__(self) -> None:
        self._value = False
        self._waiters: list[asyncio.Future[None]] = []

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        self._value = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._value = False

    async def wait(self) -> None:
        if not self._value:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter


class Flooding(ProtocolError):
    """A frame beyond the socket's `FrameBudget`: raised in the parser to stop it there.

    A `ProtocolError`, because websockets' parser catches those quietly: it
    then stops for good, where any other exception would also log a traceback.
    """


class ChargedServerProtocol(ServerProtocol):
    """websockets' server protocol, charging each incoming frame before handling it."""

    budget: FrameBudget  # set by `DirectProtocol`
    # The payload of the server's ping in flight (the hub's `Keepalive` sends them
    # through `Writer.ping`): the pong answering it is free, so the server's own
    # keepalive (LOBBY_PING_INTERVAL may be short) never counts, and it clears
    # this, which is how the keepalive learns the socket is alive.
    awaited_pong: bytes | None = None

    def recv_frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.PONG and self.awaited_pong == frame.data:
            self.awaited_pong = None
            refused = None
        elif opcode is Opcode.PING or opcode is Opcode.PONG:
            # time.monotonic is what the event loop's clock reads, without needing the loop.
            refused = self.budget.control(time.monotonic())
        elif opcode is Opcode.CLOSE:
            refused = None  # the last frame anyway
        else:
            refused = self.budget.data(
                first=opcode is not Opcode.CONT, fin=frame.fin, size=len(frame.data)
            )
        if refused is not None:
            # Our close code first: the parser's own `fail` on the exception then
            # finds the connection closing and adds nothing.
            self.fail(CloseCode.FLOODING, refused)
            raise Flooding(refused)
        super().recv_frame(frame)


class DirectProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, plus a `Writer` in the ASGI scope.

    It also keeps less per idle socket (a lighter receive queue and `writable`
    flag), and charges every incoming frame to a `FrameBudget`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # uvicorn hands websockets' protocol its "uvicorn.error" logger, and at DEBUG
        # websockets then logs every upgrade request's headers (the session cookie)
        # and the start of every frame (resume keys, tokens). It decides once, here,
        # from the logger's level; its info and error lines stay.
        self.conn.debug = False
        self.queue = Inbox()  # type: ignore[assignment]
        self.writable = Flag()  # type: ignore[assignment]
        self.writable.set()
        # Swapping the class keeps the connection uvicorn configured (size limit,
        # extensions) and adds no per-socket closure or reference cycle.
        self.conn.__class__ = ChargedServerProtocol
        self.conn.budget = FrameBudget(time.monotonic())  # type: ignore[attr-defined]

    def handle_parser_exception(self) -> None:
        flooding = self.conn.parser_exc
        if not isinstance(flooding, Flooding):
            super().handle_parser_exception()
            return
        # Like `Writer.cut`: the close frame (and any pongs already due) go out,
        # nothing more is read, and a peer that does not take them is aborted.
        log.debug("cut %s: %s", self.client, flooding)
        self.queue.put_nowait(
            {  # type: ignore[arg-type]  # an extra key uvicorn's TypedDict does not list
                "type": "websocket.disconnect",
                "code": CloseCode.FLOODING,
                "reason": str(flooding),
                FLOODED: True,  # cut by us, not closed by the peer: the socket counts it
            }
        )
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self.transport.close()
        self.loop.call_later(CUT_LINGER, self.transport.abort)

    async def send(self, message: Any) -> None:
        await super().send(message)
        kind = message["type"]
        if kind == "websocket.http.response.body" and not message.get("more_body"):
            # A denial response (our 429 and 503) ends the handshake too; uvicorn
            # would otherwise log an ERROR for every refused socket.
            self.handshake_complete = True
        elif kind == "websocket.accept" and self.handshake_complete:
            self.forget_handshake()

    def forget_handshake(self) -> None:
        """Drop what an open socket no longer needs (about 3 KiB of its 22).

        The handshake's request and response, and the scope's header list (the app
        reads headers before it accepts, not after; the list is emptied in place,
        as Starlette's `Headers` of it may be held too). websockets' server parser
        keeps the request in its generator's frame for the socket's whole life, so
        the connection gets the bare frame parser instead: right after the 101 is
        written nothing can have come after the request (a client waits for the
        101), so it starts at a frame boundary.
        """
        self.request = None  # type: ignore[assignment]
        self.response = None  # type: ignore[assignment]
        self.scope["headers"].clear()  # type: ignore[attr-defined]
        conn = self.conn
        conn.parser = Protocol.parse(conn)
        next(conn.parser)

    def handle_connect(self, event: Request) -> None:
        super().handle_connect(event)
        # The ASGI task is created but has not run yet, so the scope can still grow.
        scope: dict[str, Any] | None = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"][WRITER_EXTENSION] = Writer(self)


class HeadTooLarge(Exception):
    """Raised in a parser callback: stops httptools there, and says which status to answer."""

    def __init__(self, status: int, phrase: str) -> None:
        super().__init__(phrase)
        self.status = status
        self.phrase = phrase


class HeadTimeoutProtocol(HttpToolsProtocol):
    """uvicorn's httptools HTTP protocol, dropping connections slow to send a request.

    The clock starts when the connection opens and again when a new request
    begins on a kept-alive one (the idle time between requests is uvicorn's
    keep-alive timeout). It stops once the whole request is in: the head of a
    WebSocket upgrade (from then on pings keep the socket honest), the head and
    body of anything else (our forms are tiny; uvicorn itself has no body
    deadline). Sending bytes does not restart it: dribbling gains nothing.

    It also bounds each request head (`MAX_HEAD_BYTES`, `MAX_HEADERS`,
    `MAX_URL_BYTES`), counted afresh for each request on a kept-alive connection.
    """

    header_timeout: float = 5.0  # seconds; `head_timeout_protocol` sets it per server

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._head_timer: asyncio.TimerHandle | None = None
        # Bytes of the current request head so far; None once it is complete.
        self._head_bytes: int | None = 0
        self._url_bytes = 0
        self._header_count = 0

    # The ignore mirrors uvicorn's own: asyncio.Protocol types the argument as a
    # BaseTransport, and both narrow it to the stream Transport they get.
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # The head's bytes are counted before the parser sees them, and it is fed
        # at most what is left of the limit: a huge head is refused after
        # `MAX_HEAD_BYTES`, whatever one read brought in, and never parsed further.
        while data and not self.transport.is_closing():
            if self._head_bytes is None:  # a body: uvicorn's flow control bounds it
                self._feed(data)
                return
            room = MAX_HEAD_BYTES - self._head_bytes
            if room <= 0:
                self._refuse(HeadTooLarge(431, "Request Header Fields Too Large"))
                return
            piece, data = data[:room], data[room:]
            self._head_bytes += len(piece)
            if not self._feed(piece):
                return
            # If the head ended inside `piece` and a pipelined request began there,
            # that request's first bytes went uncounted: under one more limit's
            # worth, so its head stays bounded all the same.

    def _feed(self, data: bytes) -> bool:
        """uvicorn's `data_received`, answering `HeadTooLarge`; False once the socket is done.

        Its own would answer a callback's exception with 400 and log a warning.
        """
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, HeadTooLarge):
                self._refuse(exc.__context__)
                return False
            self._invalid()
            return False
        except httptools.HttpParserError:
            self._invalid()
            return False
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return False
        return True

    def _invalid(self) -> None:
        msg = "Invalid HTTP request received."
        self.logger.warning(msg)
        self.send_400_response(msg)

    def _refuse(self, refusal: HeadTooLarge) -> None:
        # Debug, not warning: under attack this fires for every connection.
        log.debug("refused %s: %s", self.client, refusal.phrase)
        body = f"{refusal.phrase}\n".encode()
        content = [f"HTTP/1.1 {refusal.status} {refusal.phrase}\r\n".encode()]
        for name, value in self.server_state.default_headers:
            content += [name, b": ", value, b"\r\n"]
        content.append(
            b"content-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body)
        )
        content.append(body)
        self.transport.write(b"".join(content))
        # Close, not abort: the answer is flushed first. Reading stops now; the
        # head deadline still aborts a peer that will not take the answer.
        self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._url_bytes = 0
        self._header_count = 0
        # On a new connection the clock already runs from `connection_made`.
        if self._head_timer is None:
            self._start_head_timer()

    def on_url(self, url: bytes) -> None:
        self._url_bytes += len(url)  # httptools may hand the URL over in pieces
        if self._url_bytes > MAX_URL_BYTES:
            raise HeadTooLarge(414, "URI Too Long")
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > MAX_HEADERS:
            raise HeadTooLarge(431, "Request Header Fields Too Large")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_bytes = None
        # First: for a WebSocket upgrade, uvicorn hands the transport to the
        # WebSocket protocol right after this, and this protocol hears no more.
        if self.parser.should_upgrade() and self._should_upgrade():
            self._stop_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._stop_head_timer()
        self._head_bytes = 0  # a kept-alive connection's next request starts afresh
        super().on_message_complete()

    def _start_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        # Debug, not warning: under attack this fires for every connection.
        log.debug("dropped %s: no complete request in %gs", self.client, self.header_timeout)
        # Abort, not close: there is nothing to flush, and the socket is freed now.
        self.transport.abort()


def head_timeout_protocol(timeout: float) -> type[HeadTimeoutProtocol]:
    """A `HeadTimeoutProtocol` class allowing `timeout` seconds, for `uvicorn.Config(http=…)`.

    uvicorn builds protocols from the class and its config alone, so the
    setting travels as a class attribute of a subclass made per server.
    """

    class BoundHeadTimeoutProtocol(HeadTimeoutProtocol):
        header_timeout = timeout

    return BoundHeadTimeoutProtocol


# What the classes above rely on, checked against the installed uvicorn at start.
# Methods we override or call, and attributes we read, write or replace.
RELIED_ON: dict[type[Any], tuple[str, ...]] = {
    WebSocketsSansIOProtocol: (
        "send",
        "handle_connect",
        "queue",
        "writable",
        "close_sent",
        "disconnected",
        "handshake_complete",
        "transport",
        "loop",
        "scope",
        "conn",
        "client",
        "handle_parser_exception",
        "request",
        "response",
    ),
    # websockets (under uvicorn) runs the frame parser; `ChargedServerProtocol`
    # overrides the method each parsed frame goes through and relies on how
    # the parser handles a `ProtocolError` raised there.
    ServerProtocol: (
        "recv_frame",
        "fail",
        "parser_exc",
        "data_to_send",
        "parser",  # replaced by the bare frame parser after the handshake
        "debug",  # websockets' own dump of headers and frames, kept off (secrets)
    ),
    HttpToolsProtocol: (
        "connection_made",
        "connection_lost",
        "data_received",
        "on_message_begin",
        "on_url",
        "on_header",
        "on_headers_complete",
        "on_message_complete",
        "_should_upgrade",
        "_unset_keepalive_if_required",
        "handle_websocket_upgrade",
        "_unsupported_upgrade_warning",
        "send_400_response",
        "parser",
        "transport",
        "loop",
        "client",
        "logger",
        "server_state",
    ),
}


def missing(relied_on: dict[type[Any], tuple[str, ...]] | None = None) -> list[str]:
    """`Class.attribute` for everything in `relied_on` the classes no longer have.

    A method or class attribute shows in `dir`; an instance attribute counts when
    some method of the class (or of a base) assigns `self.<name>`.
    """
    gaps = []
    for cls, names in (RELIED_ON if relied_on is None else relied_on).items():
        assigned = _assigned_on_self(cls)
        gaps += [f"{cls.__name__}.{n}" for n in names if not hasattr(cls, n) and n not in assigned]
    return gaps


def _assigned_on_self(cls: type[Any]) -> set[str]:
    names: set[str] = set()
    for klass in cls.__mro__:
        if klass is object:
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):  # no source: only `dir` can tell
            continue
        for node in ast.walk(tree):
            targets = (
                node.targets
                if isinstance(node, ast.Assign)
                else [node.target]
                if isinstance(node, (ast.AnnAssign, ast.AugAssign))
                else []
            )
            for target in targets:
                if (
                    isinstance(target, ast.Attribute)
                    and isinstance(target.value, ast.Name)
                    and target.value.id == "self"
                ):
                    names.add(target.attr)
    return names
