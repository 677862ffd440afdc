"""Hostile clients against the real lobby server: what it does, and what it costs.

    .venv/bin/python bench/hostile.py              # every case, about 2 minutes
    .venv/bin/python bench/hostile.py --only 3,5   # some cases; prints the table only

Each case starts `python -m lobby serve` as a process of its own, with the settings
the case needs, so its memory (VmRSS in /proc/<pid>/status) and CPU time (utime +
stime in /proc/<pid>/stat, every thread) can be read from outside. The OpenVidu
stand-in (`tests/openvidu_standin.py`) runs in this process. Users and login
sessions are written straight into a fresh SQLite file before the server starts.

The clients are hand-made (TCP plus RFC 6455 framing, `WsClient`) so that they can
misbehave exactly: never finish a request head, stop answering pings, stop reading
altogether, flood. Everything stays on loopback; every socket is closed and the
server is stopped (SIGTERM, then SIGKILL) even when a case fails. At most about
3,000 sockets are open per process, far under the 20,000 open-files limit.

The results go to docs/bench/hostile.md (or `--out`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime
import fcntl
import functools
import itertools
import json
import math
import os
import platform
import re
import secrets
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import argon2
import httpx
import uvloop

from lobby.store import db as database
from lobby.store.sessions import SessionStore
from lobby.store.users import UserStore

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # for the stand-in, which lives with the tests
from tests.openvidu_standin import Fault, OpenViduStandin, running_standin  # noqa: E402

Msg = dict[str, Any]
T = TypeVar("T")
now = time.perf_counter

USERS = 200  # u0000 … u0199, cheap hashes, one login session each
VICTIM = "victim"  # the brute-force target: a production-strength argon2id hash
VICTIM_PASSWORD = secrets.token_urlsafe(16)
# Users whose names are as long as names may be (32): their events are as fat as they get.
DRIVERS = [f"driver{i}-" + "x" * 24 for i in range(4)]
# lobby.web.uvicorn_adapter.Writer.cut: seconds between the 4008 close and the abort.
CUT_LINGER = 2.0
UVICORN_CLOSE_TIMEOUT = 10.0  # uvicorn's sans-I/O protocol: wait for the peer's close frame


def user(i: int) -> str:
    return f"u{i:04d}"


# -- measuring ----------------------------------------------------------------------------


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of every thread of `pid`."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "n/a"
    return f"{seconds * 1000:.0f} ms" if seconds >= 0.1 else f"{seconds * 1000:.1f} ms"


def secs(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds:.2f} s"


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB"


def spread(values: list[float]) -> str:
    """p50 / p99 / max of latencies."""
    return f"{ms(pct(values, 50))} / {ms(pct(values, 99))} / {ms(max(values, default=math.nan))}"


@dataclass
class Server:
    """A `python -m lobby serve` process."""

    name: str
    port: int
    proc: asyncio.subprocess.Process
    log: Path

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss(self) -> int:
        return rss_kib(self.proc.pid)

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    async def healthz(self) -> Msg:
        async with httpx.AsyncClient(base_url=self.http, timeout=30) as http:
            reply = await http.get("/healthz")
            reply.raise_for_status()
            answer: Msg = reply.json()
            return answer

    async def healthz_latency(self) -> float:
        """Seconds for a fresh connection to get a whole `/healthz` answer (raw: no client
        library set-up in the number)."""
        loop = asyncio.get_running_loop()
        began = now()
        sock = await raw_connect(self.port)
        try:
            request = f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            await loop.sock_sendall(sock, (request + "Connection: close\r\n\r\n").encode())
            answer = b""
            while chunk := await loop.sock_recv(sock, 4096):
                answer += chunk
        finally:
            sock.close()
        if not answer.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"/healthz answered {answer[:40]!r}")
        return now() - began

    async def settled_rss(self, wait: float = 0.5) -> int:
        await asyncio.sleep(wait)
        return self.rss()


class RssPeak:
    """Samples a server's RSS in the background; `peak` is the largest seen."""

    def __init__(self, server: Server, every: float = 0.02) -> None:
        self.server = server
        self.every = every
        self.peak = server.rss()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(OSError):
                self.peak = max(self.peak, self.server.rss())
            await asyncio.sleep(self.every)

    async def __aenter__(self) -> RssPeak:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


# -- a WebSocket client that can misbehave -------------------------------------------------


def _mask(payload: bytes, key: bytes) -> bytes:
    size = len(payload)
    if not size:
        return b""
    stream = (key * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(stream, "little")).to_bytes(
        size, "little"
    )


def client_frame(opcode: int, payload: bytes) -> bytes:
    """One final, masked frame (clients must mask, RFC 6455 §5.3)."""
    key = os.urandom(4)
    size = len(payload)
    if size < 126:
        head = bytes((0x80 | opcode, 0x80 | size))
    elif size < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, size)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, size)
    return head + key + _mask(payload, key)


def upgrade_request(port: int, cookie: str | None) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        "GET /ws HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        f"Origin: http://127.0.0.1:{port}",
    ]
    if cookie is not None:
        lines.append(f"Cookie: lobby_session={cookie}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


TextHandler = Callable[[float, bytes], None]


class WsClient(asyncio.Protocol):
    """A hand-made client: the handshake, then frames; pings answered unless told not to.

    Text frames go to `on_text(time, payload)` if given, else parsed into `inbox`.
    `pong_quota`: answer that many pings, then go silent (no pongs, no close reply).
    """

    def __init__(
        self, *, on_text: TextHandler | None = None, pong_quota: int | None = None
    ) -> None:
        loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.status: asyncio.Future[int] = loop.create_future()
        self.lost: asyncio.Future[float] = loop.create_future()  # when TCP went away
        self.inbox: asyncio.Queue[tuple[float, Msg]] = asyncio.Queue()
        self.on_text = on_text
        self.pong_quota = pong_quota
        self.silent = False  # answers nothing: no pong, no close frame
        self.close_code: int | None = None
        self.close_at: float | None = None
        self.pongs = 0
        self.last_pong_at: float | None = None
        self.wire_bytes = 0
        self._buf = bytearray()
        self._state = "head"  # head, frames, denied
        self._close_sent = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.wire_bytes += len(data)
        if self._state == "denied":
            return
        self._buf += data
        if self._state == "head":
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status = int(bytes(self._buf[:end]).split(b" ", 2)[1])
            del self._buf[: end + 4]
            self._state = "frames" if status == 101 else "denied"
            if not self.status.done():
                self.status.set_result(status)
            if self._state == "denied":
                self._buf.clear()
                return
        self._frames()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.status.done():
            self.status.set_exception(ConnectionError("connection closed before a response"))
        if not self.lost.done():
            self.lost.set_result(now())

    # frames

    def _frames(self) -> None:
        buf, pos, size = self._buf, 0, len(self._buf)
        while size - pos >= 2:
            opcode, length, start = buf[pos] & 0x0F, buf[pos + 1] & 0x7F, pos + 2
            if length == 126:
                if size - pos < 4:
                    break
                length, start = int.from_bytes(buf[pos + 2 : pos + 4], "big"), pos + 4
            elif length == 127:
                if size - pos < 10:
                    break
                length, start = int.from_bytes(buf[pos + 2 : pos + 10], "big"), pos + 10
            if start + length > size:
                break
            payload = bytes(buf[start : start + length])
            pos = start + length
            self._frame(opcode, payload)
        del buf[:pos]

    def _frame(self, opcode: int, payload: bytes) -> None:
        if opcode == 0x1:
            stamp = now()
            if self.on_text is not None:
                self.on_text(stamp, payload)
            else:
                self.inbox.put_nowait((stamp, json.loads(payload)))
        elif opcode == 0x9:  # ping
            if self.silent:
                return
            self.write(client_frame(0xA, payload))
            self.pongs += 1
            self.last_pong_at = now()
            if self.pong_quota is not None and self.pongs >= self.pong_quota:
                self.silent = True
        elif opcode == 0x8:
            self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
            self.close_at = now()
            if not self.silent and not self._close_sent:
                self._close_sent = True
                self.write(client_frame(0x8, payload[:2]))

    # sending

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def send(self, message: Msg) -> None:
        self.write(client_frame(0x1, json.dumps(message).encode()))

    def buffered(self) -> int:
        return 0 if self.transport is None else self.transport.get_write_buffer_size()

    def close(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if self._state == "frames" and not self._close_sent:
            self._close_sent = True
            self.write(client_frame(0x8, struct.pack("!H", 1000)))
        self.transport.close()

    # reading

    async def next(self, within: float = 10.0) -> tuple[float, Msg]:
        return await asyncio.wait_for(self.inbox.get(), within)

    async def until(self, wanted: Callable[[Msg], bool], within: float = 10.0) -> tuple[float, Msg]:
        """The first message (and its arrival time) for which `wanted` holds; others dropped."""
        async with asyncio.timeout(within):
            while True:
                stamp, message = await self.inbox.get()
                if wanted(message):
                    return stamp, message

    async def reply(self, ref: int, within: float = 10.0) -> tuple[float, Msg]:
        return await self.until(lambda m: m.get("ref") == ref, within)


async def ws_open(
    port: int,
    cookie: str | None,
    *,
    on_text: TextHandler | None = None,
    pong_quota: int | None = None,
) -> WsClient:
    """Connect and send the upgrade; returns once the response head is in (see `status`)."""
    loop = asyncio.get_running_loop()
    client = WsClient(on_text=on_text, pong_quota=pong_quota)
    await loop.create_connection(lambda: client, "127.0.0.1", port)
    client.write(upgrade_request(port, cookie))
    await asyncio.wait_for(asyncio.shield(client.status), 15)
    return client


async def ws_lobby(port: int, cookie: str, **kw: Any) -> WsClient:
    """An accepted lobby socket; with an inbox, its `welcome` is already read."""
    client = await ws_open(port, cookie, **kw)
    status = client.status.result()
    if status != 101:
        client.close()
        raise RuntimeError(f"handshake refused with HTTP {status}")
    if client.on_text is None:
        _, welcome = await client.next()
        assert welcome["type"] == "welcome", welcome
    return client


async def raw_connect(
    port: int, *, rcvbuf: int | None = None, mss: int | None = None
) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # Both before connect: the SYN announces the window and the segment size.
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        if mss is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, mss)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    return sock


async def closed_by_peer(sock: socket.socket, within: float) -> float | None:
    """Read until the peer closes or resets; when that was, or None after `within` seconds."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(within):
            while await loop.sock_recv(sock, 4096):
                pass
    except TimeoutError:
        return None
    except OSError:
        pass  # reset: the server aborted
    return now()


def tcp_state(sock: socket.socket) -> int:
    """tcpi_state: 1 ESTABLISHED, 4 FIN_WAIT1, 7 CLOSE, 8 CLOSE_WAIT, …"""
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]


def unread_bytes(sock: socket.socket) -> int:
    """Bytes in the socket's kernel receive queue (SIOCINQ)."""
    answer: int = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4))[0]
    return answer


@dataclass
class SsInfo:
    state: str
    recv_q: int
    send_q: int
    sndbuf: int  # skmem tb: the socket's send buffer limit


async def ss_info(server_port: int, peer_port: int) -> SsInfo | None:
    """The server side of one loopback connection, as `ss -tnm` shows it."""
    proc = await asyncio.create_subprocess_exec(
        "ss",
        "-tnmH",
        "state",
        "all",
        f"( sport = :{server_port} and dport = :{peer_port} )",
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    out, _ = await proc.communicate()
    words = out.decode().split()
    if len(words) < 5:
        return None
    found = re.search(r"tb(\d+)", out.decode())
    return SsInfo(words[0], int(words[1]), int(words[2]), int(found.group(1)) if found else 0)


# -- the bench: provisioning, servers, results --------------------------------------------


@dataclass
class Row:
    case: str
    setup: str
    did: str
    cost: str
    notes: list[str] = field(default_factory=list)  # details under the table
    findings: list[str] = field(default_factory=list)  # where the server misbehaves
    failed: bool = False


def provision(path: Path) -> dict[str, str]:
    """Users and login sessions straight into SQLite; returns each user's session cookie."""
    db = database.connect(str(path))
    try:
        cheap = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
        users = UserStore(db, hasher=cheap)
        sessions = SessionStore(db, ttl=3600)
        cookies: dict[str, str] = {}
        for name in [user(i) for i in range(USERS)] + DRIVERS:
            users.add(name, "PUBLISHER", secrets.token_urlsafe(12))
            cookies[name] = sessions.create(name)
        # The server's own default hasher (argon2id, 64 MiB): what a real account costs.
        UserStore(db).add(VICTIM, "PUBLISHER", VICTIM_PASSWORD)
    finally:
        db.close()
    return cookies


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Bench:
    def __init__(self, tmp: Path, standin: OpenViduStandin) -> None:
        self.tmp = tmp
        self.standin = standin
        self.template = tmp / "template.sqlite3"
        self.cookies = provision(self.template)
        self.secret_key = secrets.token_urlsafe(32)
        self.logs: dict[str, LogStats] = {}  # per server; a case may take its own out

    @contextlib.asynccontextmanager
    async def server(self, name: str, **settings: str) -> AsyncIterator[Server]:
        """A fresh lobby process (own database copy) with `settings` on top of the defaults."""
        database_path = self.tmp / f"{name}.sqlite3"
        shutil.copyfile(self.template, database_path)
        self.standin.reset()
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LOBBY_", "OPENVIDU_"))}
        env.update(
            LOBBY_DATABASE=str(database_path),
            LOBBY_SECRET_KEY=self.secret_key,
            OPENVIDU_URL=self.standin.url,
            OPENVIDU_SECRET="MY_SECRET",
            LOBBY_HOST="127.0.0.1",
            LOBBY_PORT=str(port),
            LOBBY_LOG_LEVEL="warning",
            PYTHONUNBUFFERED="1",
        )
        env.update(settings)
        log = self.tmp / f"{name}.log"
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "lobby",
                "serve",
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        server = Server(name, port, proc, log)
        try:
            await _ready(server)
            yield server
        finally:
            await _stop(server)
            self.logs[name] = LogStats.of(server.log)

    def log_findings(self) -> list[str]:
        return [
            f"`{name}` server: {log.errors:,} ERROR line(s) and {log.tracebacks:,} "
            f"traceback(s) in its log, first: `{log.first_error}` … `{log.first_exception}`"
            for name, log in self.logs.items()
            if log.errors or log.tracebacks
        ]


@dataclass
class LogStats:
    size: int
    lines: int
    errors: int
    tracebacks: int
    first_error: str
    first_exception: str  # the last line of the first traceback

    @classmethod
    def of(cls, path: Path) -> LogStats:
        text = path.read_text(errors="replace")
        lines = text.splitlines()
        errors = [line for line in lines if line.startswith("ERROR") or " ERROR " in line]
        starts = [i for i, line in enumerate(lines) if line.startswith("Traceback")]
        exception = ""
        if starts:
            rest = lines[starts[0] + 1 :]
            exception = next((line for line in rest if not line.startswith(" ")), "")
        return cls(
            len(text.encode()),
            len(lines),
            len(errors),
            len(starts),
            errors[0] if errors else "",
            exception,
        )


async def _ready(server: Server, within: float = 20.0) -> None:
    deadline = now() + within
    async with httpx.AsyncClient(base_url=server.http) as http:
        while now() < deadline:
            if server.proc.returncode is not None:
                tail = server.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"the lobby exited with {server.proc.returncode}:\n{tail}")
            with contextlib.suppress(httpx.TransportError):
                if (await http.get("/healthz")).status_code == 200:
                    return
            await asyncio.sleep(0.05)
    raise RuntimeError(f"the lobby did not answer /healthz within {within:g} s")


async def _stop(server: Server) -> None:
    """SIGTERM (uvicorn's graceful shutdown), SIGKILL if it takes over 10 s."""
    if server.proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        server.proc.terminate()
    try:
        await asyncio.wait_for(server.proc.wait(), 10)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            server.proc.kill()
        await server.proc.wait()


def close_all(clients: list[WsClient]) -> None:
    for client in clients:
        client.close()


async def gather_limited(work: list[Callable[[], Awaitable[T]]], limit: int) -> list[T]:
    """Run `work` with at most `limit` steps in flight; results in order."""
    gate = asyncio.Semaphore(limit)

    async def run(step: Callable[[], Awaitable[T]]) -> T:
        async with gate:
            return await step()

    return list(await asyncio.gather(*(run(step) for step in work)))


# -- 1. slowloris, and 1b. a slow request body ----------------------------------------------


@dataclass
class Hold:
    """Connections that send `payload` and then nothing, and what became of them."""

    opened: int = 0
    failed: int = 0
    held: int = 0
    max_held: int = 0
    kept: int = 0  # still open when we stopped waiting
    lifetimes: list[float] = field(default_factory=list)  # open → dropped by the server
    healthz: float = math.nan  # a legitimate request's latency while they were held
    rss_held: int = 0
    rss_peak: int = 0


async def hold(server: Server, count: int, payload: bytes, wait: float) -> Hold:
    loop = asyncio.get_running_loop()
    result = Hold()
    gate = asyncio.Semaphore(200)
    all_open = asyncio.Event()

    def settled() -> None:
        if result.opened + result.failed == count:
            all_open.set()

    async def one() -> None:
        async with gate:
            try:
                sock = await raw_connect(server.port)
            except OSError:
                result.failed += 1
                settled()
                return
            try:
                await loop.sock_sendall(sock, payload)
            except OSError:
                sock.close()
                result.failed += 1
                settled()
                return
        opened_at = now()
        result.opened += 1
        result.held += 1
        result.max_held = max(result.max_held, result.held)
        settled()
        try:
            dropped_at = await closed_by_peer(sock, wait)
        finally:
            sock.close()
            result.held -= 1
        if dropped_at is None:
            result.kept += 1
        else:
            result.lifetimes.append(dropped_at - opened_at)

    async with RssPeak(server) as peak:
        tasks = [asyncio.create_task(one()) for _ in range(count)]
        try:
            await asyncio.wait_for(all_open.wait(), 60)
            result.healthz = await server.healthz_latency()
            result.rss_held = server.rss()
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    result.rss_peak = peak.peak
    return result


async def case_slowloris(b: Bench) -> Row:
    count, timeout = 3000, 2.0
    async with b.server("slowloris", LOBBY_HEADER_TIMEOUT=f"{timeout:g}") as srv:
        rss0, cpu0 = await srv.settled_rss(), srv.cpu()
        head = f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\nUpgrade: websocket\r\n"
        held = await hold(srv, count, head.encode(), wait=30.0)
        cpu1 = srv.cpu()
        rss1 = await srv.settled_rss(1.0)
    lives = held.lifetimes
    per_conn = (held.rss_peak - rss0) / max(1, held.max_held)
    row = Row(
        "1. Slowloris flood",
        f"{count:,} TCP connections each send `GET /ws HTTP/1.1`, `Host`, `Upgrade` lines and "
        f"then nothing (the head never ends); `LOBBY_HEADER_TIMEOUT={timeout:g}`",
        f"Dropped {len(lives):,}/{held.opened:,} {secs(pct(lives, 50))} median, "
        f"{secs(max(lives, default=math.nan))} max after they opened; up to "
        f"{held.max_held:,} held at once; `/healthz` answered in {ms(held.healthz)} meanwhile",
        f"RSS {mib(rss0)} before → {mib(held.rss_peak)} peak while held "
        f"(≈{per_conn:.1f} KiB per connection) → {mib(rss1)} after; "
        f"CPU {cpu1 - cpu0:.2f} s for all {count:,} (≈{(cpu1 - cpu0) / count * 1000:.2f} ms each)",
    )
    if held.failed:
        row.notes.append(f"{held.failed} connections could not be opened.")
    if held.kept:
        row.findings.append(
            f"Slowloris: {held.kept:,} connections were still open 30 s after opening, "
            f"despite `LOBBY_HEADER_TIMEOUT={timeout:g}`."
        )
    if lives and max(lives) > timeout + 1.0:
        row.notes.append(
            f"The slowest drop came {max(lives) - timeout:.2f} s after the timeout: "
            "the event loop was busy accepting the rest of the flood."
        )
    return row


async def case_slow_body(b: Bench) -> Row:
    count, wait = 1000, 12.0
    async with b.server("slow-body", LOBBY_HEADER_TIMEOUT="2") as srv:
        rss0, cpu0 = await srv.settled_rss(), srv.cpu()
        head = (
            f"POST /login HTTP/1.1\r\nHost: 127.0.0.1:{srv.port}\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 4096\r\n\r\n"
            f"user={VICTIM}&pass="
        )
        held = await hold(srv, count, head.encode(), wait=wait)
        cpu1 = srv.cpu()
        rss1 = await srv.settled_rss(1.0)
    per_conn = (held.rss_held - rss0) / max(1, held.max_held)
    log = b.logs.pop("slow-body")
    did = (
        f"Dropped {len(held.lifetimes):,}; **{held.kept:,} of {held.opened:,} still open "
        f"{wait:g} s later** (we closed them); `/healthz` answered in {ms(held.healthz)} meanwhile"
        if held.kept
        else f"Dropped all {len(held.lifetimes):,} within {secs(max(held.lifetimes))}"
    )
    if log.tracebacks:
        did += (
            f". When they hung up, the server logged {log.tracebacks:,} tracebacks "
            f"(`{log.first_exception}`, {log.lines / log.tracebacks:.0f} lines each, "
            f"{log.size / 1024:,.0f} KiB in all)"
        )
    row = Row(
        "1b. Slow request body (extra)",
        f"{count:,} connections send a complete `POST /login` head with `Content-Length: 4096`, "
        "then 20 bytes of body and nothing more; `LOBBY_HEADER_TIMEOUT=2`",
        did,
        f"RSS {mib(rss0)} before → {mib(held.rss_held)} while held (≈{per_conn:.1f} KiB each) "
        f"→ {mib(rss1)} after; CPU {cpu1 - cpu0:.2f} s",
    )
    if held.kept:
        row.findings.append(
            f"**Slow request body: no deadline.** {held.kept:,}/{held.opened:,} unauthenticated "
            f"`POST /login` connections whose head was complete but whose body never came were "
            f"all still held {wait:g} s later (header timeout 2 s, keep-alive 5 s), each "
            f"costing ≈{per_conn:.1f} KiB of RSS and a file descriptor for as long as the "
            "client likes. `LOBBY_HEADER_TIMEOUT` times only the head; uvicorn has no body "
            "timeout and `views.login` awaits `request.form()` before anything else, so one "
            "machine opening ~20,000 of them takes every descriptor the server has: the "
            "slowloris hole, one step later (the login form is the only body read without a "
            "session)."
        )
    if log.tracebacks:
        row.findings.append(
            f"**Log flood.** Every client that hangs up in the middle of a `POST /login` body "
            f"makes uvicorn log `ERROR: Exception in ASGI application` with a "
            f"{log.lines / log.tracebacks:.0f}-line traceback ending in `{log.first_exception}`: "
            f"{log.tracebacks:,} hang-ups wrote {log.size / 1024:,.0f} KiB of log. "
            "`views.login` could treat `ClientDisconnect` as the end of the request."
        )
    return row


# -- 2. idle authenticated sockets ----------------------------------------------------------


async def case_idle(b: Bench) -> Row:
    count, per_user = 3000, 20
    cookies = [b.cookies[user(i // per_user)] for i in range(count)]

    async def round_trip(srv: Server) -> tuple[float, float, int, int]:
        """Open `count` sockets, then close them: (seconds, CPU, sockets, RSS while open)."""
        work: list[Callable[[], Awaitable[WsClient]]] = [
            functools.partial(ws_lobby, srv.port, cookie) for cookie in cookies
        ]
        clients: list[WsClient] = []
        try:
            started, cpu = now(), srv.cpu()
            clients = await gather_limited(work, 100)
            opened, cpu = now() - started, srv.cpu() - cpu
            sockets = (await srv.healthz())["sockets"]
            rss = await srv.settled_rss(1.5)
        finally:
            close_all(clients)
        async with asyncio.timeout(30):
            # The count lives in another process: polling it is the only way to wait.
            while (await srv.healthz())["sockets"]:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
        return opened, cpu, sockets, rss

    async with b.server("idle") as srv:
        rss0 = await srv.settled_rss(1.0)
        opened, cpu, sockets, rss1 = await round_trip(srv)
        rss2 = await srv.settled_rss(1.0)
        _, _, _, rss3 = await round_trip(srv)
        rss4 = await srv.settled_rss(1.0)
    per_socket = (rss1 - rss0) / count
    return Row(
        "2. Idle authenticated sockets",
        f"{count:,} lobby sockets ({count // per_user} users x {per_user} tabs): handshake, "
        "read `welcome`, answer pings, send nothing; then all closed, and the same again",
        f"Accepted all {count:,} in {opened:.1f} s ({count / opened:,.0f}/s, 100 handshakes "
        f"in flight); `/healthz` counted {sockets:,}",
        f"RSS {mib(rss0)} → {mib(rss1)} with {count:,} open: **{per_socket:.1f} KiB per socket** "
        f"(user space, kernel buffers not included) → "
        f"{mib(rss2)} after closing (kept by the allocator) → {mib(rss3)} with {count:,} "
        f"again → {mib(rss4)}: reused, not leaked; CPU {cpu / count * 1000:.2f} ms per handshake",
    )


# -- 3. a silent (half-open) client ----------------------------------------------------------


async def case_silent(b: Bench) -> Row:
    interval, timeout, grace = 1.0, 1.0, 1.0
    async with b.server(
        "silent",
        LOBBY_PING_INTERVAL=f"{interval:g}",
        LOBBY_PING_TIMEOUT=f"{timeout:g}",
        LOBBY_RECONNECT_GRACE=f"{grace:g}",
    ) as srv:
        clients: list[WsClient] = []
        try:
            observer = await ws_lobby(srv.port, b.cookies[user(0)])
            clients.append(observer)
            # Answers two pings (a live tab), then nothing: the laptop lid closed.
            silent = await ws_lobby(srv.port, b.cookies[user(1)], pong_quota=2)
            clients.append(silent)
            silent.send({"type": "join", "room": "quiet", "nickname": "silent", "ref": 1})
            _, token = await silent.reply(1)
            assert token["type"] == "token", token
            pid = token["participant"]["id"]
            await observer.until(lambda m: m["type"] == "joined")
            left_at, left = await observer.until(
                lambda m: m["type"] == "left" and m["participant"]["id"] == pid, within=30
            )
        finally:
            close_all(clients)
    last = silent.last_pong_at
    assert last is not None
    total = left_at - last
    expected = interval + timeout + grace
    close = (silent.close_at - last) if silent.close_at is not None else math.nan
    return Row(
        "3. Silent client (half-open)",
        "Raw client joins a room, answers 2 pings, then answers nothing (no pong, no close); "
        f"`LOBBY_PING_INTERVAL={interval:g}`, `LOBBY_PING_TIMEOUT={timeout:g}`, "
        f"`LOBBY_RECONNECT_GRACE={grace:g}`",
        f"Closed it with {silent.close_code} {secs(close)} after its last pong, and another "
        f"client got `left` (reason `{left['reason']}`) **{secs(total)} after its last pong** "
        f"(expected interval + timeout + grace = {expected:g} s)",
        "With the defaults: 15 + 10 + 10 = **35 s** after the last pong (20 to 35 s after the "
        "tab's own last message). Until then the ghost stays listed in its room and keeps its "
        "socket and its OpenVidu connection",
    )


# -- 4. a reader that never reads ------------------------------------------------------------


async def case_stuck_reader(b: Bench) -> Row:
    normals_n, mss = 50, 1460
    room = ("stuck-reader-churn-" + "r" * 64)[:64]
    nickname = "\U0001f600" * 40  # 40 characters, 160 bytes of UTF-8: the fattest allowed
    settings = {
        # Pings would also end a socket that never reads (after 25 s); keep them out of the way.
        "LOBBY_PING_INTERVAL": "300",
        "LOBBY_PING_TIMEOUT": "300",
        "LOBBY_JOINS_PER_MINUTE": "1000000",
        "LOBBY_MESSAGE_RATE": "100000",
        "LOBBY_MESSAGE_BURST": "100000",
    }
    phase = ["before"]
    sent_leave: dict[str, float] = {}
    latencies: dict[str, list[float]] = {"before": [], "during": [], "after": []}
    stamped: list[tuple[float, float]] = []  # (received, latency) of every `left`
    left_prefix, pid_pattern = b'{"type":"left"', re.compile(rb'"id":"(p_[^"]+)"')
    broadcasts = (b'{"type":"joined"', b'{"type":"left"', b'{"type":"room_closed"')

    def on_text(stamp: float, payload: bytes) -> None:
        if payload.startswith(left_prefix) and (found := pid_pattern.search(payload)):
            sent = sent_leave.get(found.group(1).decode())
            if sent is not None:
                latencies[phase[0]].append(stamp - sent)
                stamped.append((stamp, stamp - sent))

    def replies_only(client: WsClient) -> TextHandler:
        """Drivers parse only their own replies: the bench must not be the bottleneck."""

        def handle(stamp: float, payload: bytes) -> None:
            if not payload.startswith(broadcasts):
                client.inbox.put_nowait((stamp, json.loads(payload)))

        return handle

    def ignore(stamp: float, payload: bytes) -> None:
        pass

    cycles = [0]
    stop = asyncio.Event()

    async def drive(driver: WsClient) -> None:
        ref = 0
        while not stop.is_set():
            ref += 1
            driver.send({"type": "join", "room": room, "nickname": nickname, "ref": ref})
            _, reply = await driver.reply(ref)
            if reply["type"] != "token":
                raise RuntimeError(f"join failed: {reply}")
            ref += 1
            sent_leave[reply["participant"]["id"]] = now()
            driver.send({"type": "leave", "ref": ref})
            await driver.reply(ref)
            cycles[0] += 1

    @dataclass
    class Sample:
        at: float
        cycles: int
        wire: int  # bytes the reference client received: what every socket is sent
        cpu: float
        rss: int
        ss: SsInfo | None
        unread: int
        sockets: int

    loop = asyncio.get_running_loop()
    clients: list[WsClient] = []
    tasks: list[asyncio.Task[None]] = []
    stuck: socket.socket | None = None
    stuck_port = 0
    samples: list[Sample] = []
    async with b.server("stuck", **settings) as srv, httpx.AsyncClient(base_url=srv.http) as http:
        port = srv.port

        async def poll(reference: WsClient) -> None:
            """The same sampling in every phase, so that it weighs on each alike."""
            while True:
                info = await ss_info(port, stuck_port) if stuck is not None else None
                unread = unread_bytes(stuck) if stuck is not None and info is not None else 0
                sockets = (await http.get("/healthz")).json()["sockets"]
                samples.append(
                    Sample(
                        at=now(),
                        cycles=cycles[0],
                        wire=reference.wire_bytes,
                        cpu=srv.cpu(),
                        rss=srv.rss(),
                        ss=info,
                        unread=unread,
                        sockets=sockets,
                    )
                )
                await asyncio.sleep(0.1)

        try:
            work: list[Callable[[], Awaitable[WsClient]]] = [
                functools.partial(ws_lobby, port, b.cookies[user(i)], on_text=on_text)
                for i in range(normals_n)
            ]
            normals = await gather_limited(work, 50)
            clients += normals
            anchor = await ws_lobby(port, b.cookies[user(60)])  # keeps the room open
            clients.append(anchor)
            anchor.send({"type": "join", "room": room, "nickname": "anchor", "ref": 1})
            assert (await anchor.reply(1))[1]["type"] == "token"
            anchor.on_text = ignore
            drivers = [await ws_lobby(port, b.cookies[name]) for name in DRIVERS]
            clients += drivers
            for driver in drivers:
                driver.on_text = replies_only(driver)
            expected = normals_n + len(drivers) + 2  # with the anchor and the stuck one
            tasks = [asyncio.create_task(drive(d)) for d in drivers]
            tasks.append(asyncio.create_task(poll(normals[0])))
            await asyncio.sleep(3.0)

            # What the kernel would give a loopback client with the default 64 KiB MSS.
            probe = await raw_connect(port, rcvbuf=4096)
            try:
                await asyncio.sleep(0.05)
                loopback = await ss_info(port, probe.getsockname()[1])
            finally:
                probe.close()
            before = samples[-1]
            phase[0] = "during"
            stuck = await raw_connect(port, rcvbuf=4096, mss=mss)
            await loop.sock_sendall(stuck, upgrade_request(port, b.cookies[user(59)]))
            head = b""
            while not head.endswith(b"\r\n\r\n"):  # byte by byte: leave every frame unread
                chunk = await loop.sock_recv(stuck, 1)
                if not chunk:
                    raise RuntimeError("the stuck socket was refused")
                head += chunk
            assert b" 101 " in head, head
            t_stuck, stuck_port = now(), stuck.getsockname()[1]
            first = len(samples)
            while now() - t_stuck < 60:
                await asyncio.sleep(0.05)
                for task in tasks:
                    if task.done():
                        task.result()  # a driver or the poller failed: surface it
                if samples[-1].sockets < expected and len(samples) > first:
                    break
            dropped = samples[-1]
            phase[0] = "after"
            await asyncio.sleep(3.0)
            after = samples[-1]
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks[:-1]), 15)
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            close_all(clients)
            if stuck is not None:
                stuck.close()  # unread data: the kernel resets, which frees the orphan too

    was_cut = dropped.sockets < expected
    cut_at = dropped.at - CUT_LINGER  # within one poll (0.1 s)
    stuck_samples = [s for s in samples if s.at >= t_stuck]
    wire = [(s.at, s.wire) for s in stuck_samples]
    queued = _interpolate(wire, cut_at) - _interpolate(wire, t_stuck)
    live = [s for s in stuck_samples if s.ss is not None and s.ss.state == "ESTAB"]
    last = live[-1] if live else None
    send_q = last.ss.send_q if last is not None and last.ss is not None else 0
    sndbuf = last.ss.sndbuf if last is not None and last.ss is not None else 0
    unread = last.unread if last is not None else 0
    orphans = [s.ss for s in samples if s.at > dropped.at and s.ss is not None]
    during = [s for s in samples if before.at <= s.at <= dropped.at]
    rss_peak = max(s.rss for s in during)
    # While the 1 MiB user-space bound filled up: the stuck socket at its most expensive.
    worst = [lat for at, lat in stamped if cut_at - 2.0 <= at <= cut_at]

    def rate(a: Sample, z: Sample) -> str:
        return f"{(z.cycles - a.cycles) / (z.at - a.at):.0f}"

    cycle_bytes = (dropped.wire - before.wire) / max(1, dropped.cycles - before.cycles)
    cpu = (dropped.cpu - before.cpu) / (dropped.at - before.at)
    row = Row(
        "4. Stuck reader",
        f"{normals_n} normal sockets + 1 raw socket (`SO_RCVBUF=4096`, MSS {mss} like an "
        f"internet client) that never reads; {len(DRIVERS)} clients churn `join`/`leave` of "
        f"one room (≈{cycle_bytes:.0f} B of events per cycle to every socket: 40-emoji "
        "nicknames, 64-character room); pings at 300 s so only the 4008 cut can end it",
        (
            f"Cut it off (4008, then abort {CUT_LINGER:g} s later) **{secs(cut_at - t_stuck)} "
            f"after it stopped reading**, once ≈{mib(queued / 1024)} had been queued for it: "
            f"{send_q / 1024:.0f} KiB in the server's socket (Send-Q; its limit `tb` "
            f"{sndbuf / 1024:.0f} KiB), {unread / 1024:.0f} KiB in the client's, the rest "
            "the 1 MiB user-space bound. "
            if was_cut
            else f"**Not cut off within {secs(dropped.at - t_stuck)}.** "
        )
        + "Fan-out latency to the 50 others (leave sent → `left` received), p50 / p99 / max: "
        f"before {spread(latencies['before'])}; while it filled {spread(latencies['during'])} "
        f"(the last 2 s before the cut: {spread(worst)}); after {spread(latencies['after'])}",
        f"RSS {mib(before.rss)} before → {mib(rss_peak)} peak → {mib(after.rss)} 3 s after the "
        f"cut; churn {rate(samples[0], before)} → {rate(before, dropped)} → "
        f"{rate(dropped, after)} cycles/s; server CPU {cpu * 100:.0f}% of a core meanwhile",
    )
    if orphans:
        first_orphan = orphans[0]
        row.notes.append(
            f"After the abort the kernel kept the connection as an orphan (state "
            f"{first_orphan.state}, Send-Q {first_orphan.send_q / 1024:.0f} KiB) for as long as "
            f"we watched ({len(orphans)} samples, {secs(samples[-1].at - dropped.at)}): the "
            "process freed its side, the kernel keeps probing the zero window and frees the "
            "buffer when it gives up (or, here, when the bench closes the stuck socket)."
        )
    if loopback is not None:
        row.notes.append(
            f"The MSS matters: with the default loopback MSS (64 KiB) the kernel gives the "
            f"server's socket a send buffer limit (`tb`, payload plus overhead) of "
            f"{mib(loopback.sndbuf / 1024)} at once, so on loopback a stuck tab has megabytes "
            f"queued in the kernel before the 1 MiB bound even starts to fill (the test suite "
            f"pushes 8 MB for that reason); with a {mss}-byte MSS it was "
            f"{sndbuf / 1024:.0f} KiB, which is what a tab across the internet gets."
        )
    if not was_cut:
        row.findings.append(f"Stuck reader: not cut off within {secs(dropped.at - t_stuck)}.")
    return row


def _interpolate(samples: list[tuple[float, int]], at: float) -> float:
    if math.isnan(at):
        return float(samples[-1][1])
    for (t0, v0), (t1, v1) in itertools.pairwise(samples):
        if t0 <= at <= t1:
            return v0 + (v1 - v0) * (at - t0) / max(1e-9, t1 - t0)
    return float(samples[-1][1] if at > samples[-1][0] else samples[0][1])


# -- 5. a message flood ----------------------------------------------------------------------


def ping_frames(first: int, count: int) -> bytes:
    return b"".join(
        client_frame(0x1, f'{{"type":"ping","ref":{ref}}}'.encode())
        for ref in range(first, first + count)
    )


async def case_flood(b: Bench) -> Row:
    count = 20_000
    async with b.server("flood") as srv:
        clients: list[WsClient] = []
        try:
            flooder = await ws_lobby(srv.port, b.cookies[user(0)])
            clients.append(flooder)
            frames = ping_frames(0, count)
            await asyncio.sleep(0.3)
            cpu0, t0 = srv.cpu(), now()
            flooder.write(frames)  # as fast as the kernel takes it
            lost_at = await asyncio.wait_for(asyncio.shield(flooder.lost), 60)
            await asyncio.sleep(0.2)
            cpu1 = srv.cpu()
            kinds: dict[str, int] = {}
            while not flooder.inbox.empty():
                _, message = flooder.inbox.get_nowait()
                kind = message.get("code") or message["type"]
                kinds[kind] = kinds.get(kind, 0) + 1

            # B: the same, but it never answers the close frame and keeps sending.
            rude = await ws_lobby(srv.port, b.cookies[user(1)])
            clients.append(rude)
            rude.silent = True
            batch = ping_frames(0, 1000)
            sent = sent_after = 0
            cpu_close = t_close = math.nan
            tb0 = now()
            while not rude.lost.done() and now() - tb0 < 30:
                if rude.close_at is not None and math.isnan(t_close):
                    cpu_close, t_close = srv.cpu(), rude.close_at
                if rude.buffered() < 1 << 18:
                    rude.write(batch)
                    sent += 1000
                    if rude.close_at is not None:
                        sent_after += 1000
                await asyncio.sleep(0.001)
            rude_lost = rude.lost.result() if rude.lost.done() else math.nan
            cpu_end = srv.cpu()
        finally:
            close_all(clients)
    closed = (flooder.close_at - t0) if flooder.close_at is not None else math.nan
    if math.isnan(t_close):  # the cut: 1008 written, then the connection closed at once
        t_close, cpu_close = tb0, cpu_end
    window = rude_lost - t_close
    seen_close = (
        f"closed with **{flooder.close_code} {ms(closed)}** after the first frame"
        if flooder.close_code is not None
        else "cut off (1008 sent, then the connection closed; with its frames still unread "
        "the kernel answers with a reset, so a flooder may never read the 1008)"
    )
    rude_text = (
        f"(b) 1008 after {ms(t_close - tb0)}, but the connection lived **{secs(window)} longer** "
        f"and took in {sent_after:,} more frames"
        if window > 0.5
        else f"(b) dropped **{ms(rude_lost - tb0)}** after it started, "
        f"{sent:,} frames written in all"
    )
    row = Row(
        "5. Message flood",
        f'One socket writes {count:,} `{{"type":"ping"}}` frames at once (defaults: '
        "`LOBBY_MESSAGE_RATE=10`, `LOBBY_MESSAGE_BURST=30`); (b) the same flooder ignoring "
        "the close frame and sending on",
        f"Answered {kinds.get('pong', 0)} `pong` + {kinds.get('rate_limited', 0)} "
        f"`rate_limited`, then {seen_close}; TCP gone {ms(lost_at - t0)} after the first "
        f"frame. {rude_text}",
        f"CPU {cpu1 - cpu0:.2f} s for the {count:,} frames "
        f"(≈{(cpu1 - cpu0) / count * 1e6:.0f} µs each)"
        + (
            f"; (b) {(cpu_end - cpu_close) / window * 100:.0f}% of a core for those {secs(window)}"
            if window > 0.5
            else ""
        ),
    )
    row.notes.append(
        f"Replies seen by the flooder: {kinds}. After the 1008 the server stops reading the "
        "socket at once (`Conn.cut`), so a flooder that ignores the close costs nothing more."
    )
    if window > 5:
        row.findings.append(
            f"**A flooder can shrug off the 1008.** One that ignores the close frame and sends "
            f"on keeps its connection {secs(window)} longer (uvicorn's close timeout, "
            f"{UVICORN_CLOSE_TIMEOUT:g} s, which lobby settings do not reach), and meanwhile the "
            f"server reads, parses and drops everything it sends: {sent_after:,} frames, "
            f"{(cpu_end - cpu_close) / window * 100:.0f}% of a core for one socket. Reconnecting "
            "after each drop (a handshake costs under a millisecond) would make it last; "
            "aborting the transport shortly after the 1008, as `Writer.cut` does after a 4008, "
            "would end it at once."
        )
    return row


# -- 6. login brute force ---------------------------------------------------------------------


def csrf_from(html: str) -> str:
    found = re.search(r'name="csrf_token"\s+value="([^"]+)"', html) or re.search(
        r'value="([^"]+)"\s+name="csrf_token"', html
    )
    if found is None:
        raise RuntimeError("no csrf_token in the login page")
    return found.group(1)


async def case_brute_force(b: Bench) -> Row:
    honour_for, refused_n, spread_n = 16.0, 300, 30
    async with (
        b.server("login") as srv,
        # Spread guesses queue behind argon2 for seconds: no client-side timeout cuts them.
        httpx.AsyncClient(base_url=srv.http, timeout=120) as http,
    ):
        token = csrf_from((await http.get("/")).text)

        async def attempt() -> tuple[int, str, float, float]:
            cpu, started = srv.cpu(), now()
            reply = await http.post(
                "/login",
                data={"user": VICTIM, "pass": secrets.token_urlsafe(8), "csrf_token": token},
            )
            return (
                reply.status_code,
                reply.headers.get("retry-after", "-"),
                now() - started,
                srv.cpu() - cpu,
            )

        rss0 = await srv.settled_rss()
        async with RssPeak(srv) as peak:
            first = [await attempt() for _ in range(10)]
        # An attacker who obeys Retry-After.
        started, accepted = now(), []
        while (elapsed := now() - started) < honour_for:
            status, retry, _, _ = await attempt()
            if status != 429:
                accepted.append(elapsed)
            else:
                await asyncio.sleep(min(float(retry), honour_for - elapsed + 0.01))
        # Cost of a refusal, measured in bulk (the CPU clock ticks every 10 ms).
        cpu0, t0 = srv.cpu(), now()
        refused = [await attempt() for _ in range(refused_n)]
        cpu_refused = (srv.cpu() - cpu0) / refused_n
        time_refused = (now() - t0) / refused_n

        # The same guesses spread over many accounts and addresses, as a botnet would: no
        # per-key lock slows them, so what bounds argon2's CPU and memory? The addresses
        # come in X-Forwarded-For, which the default LOBBY_FORWARDED_ALLOW_IPS (127.0.0.1)
        # trusts from us, as it would from a local proxy.
        async def spread_guess(i: int) -> int:
            reply = await http.post(
                "/login",
                data={"user": f"nobody{i}", "pass": "guess", "csrf_token": token},
                headers={"X-Forwarded-For": f"198.51.100.{i + 1}"},
            )
            return reply.status_code

        async def healthz_later() -> float:
            await asyncio.sleep(0.5)
            return await srv.healthz_latency()

        rss_spread0 = await srv.settled_rss()
        quiet = [await srv.healthz_latency() for _ in range(5)]
        cpu0, t0 = srv.cpu(), now()
        async with RssPeak(srv) as spread_peak:
            probe = asyncio.create_task(healthz_later())
            codes = await asyncio.gather(*(spread_guess(i) for i in range(spread_n)))
            spread_healthz = await probe
        spread_wall, spread_cpu = now() - t0, srv.cpu() - cpu0
        rss_spread1 = await srv.settled_rss(1.0)
    wrong = [a for a in first if a[0] == 401]
    cpu_401 = statistics.mean(a[3] for a in wrong) if wrong else math.nan
    time_401 = statistics.mean(a[2] for a in wrong) if wrong else math.nan
    statuses = " ".join(f"{s}" + (f"(RA {r})" if s == 429 else "") for s, r, _, _ in first)
    refused_statuses = {s for s, _, _, _ in refused}
    row = Row(
        "6. Login brute force",
        "Wrong passwords for one account (production argon2id hash: t=3, m=64 MiB, p=4) "
        "from one address, back to back, then obeying `Retry-After`",
        f"First 10: {statuses}. Obeying Retry-After, accepted again at "
        f"{', '.join(f'+{t:.0f} s' for t in accepted)}; so 4 back to back, then one after "
        "each lock of 1, 2, 4, 8, 16 s (the next at +31 s): **9 guesses in the first minute**, "
        "then 1 per 300 s (cap) ≈ 0.2/min; unthrottled "
        f"one connection would get ≈{60 / time_401:,.0f}/min",
        f"A 401: {ms(cpu_401)} CPU, {ms(time_401)} wall (argon2 in a thread; RSS "
        f"{mib(rss0)} → peak {mib(peak.peak)}). A 429: **{ms(cpu_refused)} CPU**, "
        f"{ms(time_refused)} wall (no argon2): ≈{cpu_401 / cpu_refused:,.0f} times cheaper; "
        f"{refused_n} refused in a row: statuses {sorted(refused_statuses)}",
    )
    workers = min(32, (os.cpu_count() or 1) + 4)  # asyncio.to_thread's default pool
    row.did += (
        f". Spread out instead ({spread_n} guesses at once, {spread_n} unknown names, "
        f"{spread_n} addresses): statuses {sorted(set(codes))}, none throttled, all done in "
        f"{secs(spread_wall)} (≈{spread_n / spread_wall:.0f} guesses/s: the CPU is the limit)"
    )
    row.cost += (
        f". Spread: {spread_cpu / spread_n * 1000:.0f} ms CPU each, RSS {mib(rss_spread0)} → "
        f"peak {mib(spread_peak.peak)} → {mib(rss_spread1)} 1 s later; `/healthz` took "
        f"{ms(spread_healthz)} meanwhile ({ms(statistics.median(quiet))} before)"
    )
    cores = os.cpu_count() or 1
    # `Auth.login` lets one argon2 verify per core run at once (64 MiB each): more than that
    # in flight means the bound is gone.
    if spread_peak.peak - rss_spread0 > (cores + 1) * 64 * 1024:
        row.findings.append(
            f"**Unauthenticated guesses buy memory.** {spread_n} wrong logins at once, spread "
            f"over names and addresses so that no lock applies, took the server's RSS from "
            f"{mib(rss_spread0)} to {mib(spread_peak.peak)}: more than the {cores} verifies "
            "(64 MiB each) `Auth.login` should let run at once."
        )
    row.notes.append(
        f"argon2 runs in asyncio's default thread pool ({workers} threads), but `Auth.login` "
        f"lets only {cores} verifies (one per core, ≈{cores * 64} MiB) run at once; the "
        "others queue. The throttle keys on account and address, so guesses spread over many "
        f"of both are limited by that queue: here RSS rose by "
        f"{mib(spread_peak.peak - rss_spread0)} for {spread_n} guesses at once."
    )
    if refused_statuses != {429}:
        row.findings.append(f"Login: attempts while locked answered {refused_statuses}.")
    return row


# -- 7. OpenVidu down --------------------------------------------------------------------------


async def case_openvidu_down(b: Bench) -> Row:
    standin = b.standin
    async with b.server(
        "openvidu-down", OPENVIDU_TIMEOUT="1", LOBBY_JOINS_PER_MINUTE="1000"
    ) as srv:
        client = await ws_lobby(srv.port, b.cookies[user(0)])
        try:
            ref = [0]

            async def join() -> tuple[float, float, Msg]:
                """(sent, answered, reply); a token is given back with a `leave` at once."""
                ref[0] += 1
                sent = now()
                client.send({"type": "join", "room": "down", "nickname": "n", "ref": ref[0]})
                answered, reply = await client.reply(ref[0], within=30)
                if reply["type"] == "token":
                    ref[0] += 1
                    client.send({"type": "leave", "ref": ref[0]})
                    await client.reply(ref[0])
                return sent, answered, reply

            s, a, reply = await join()
            assert reply["type"] == "token", reply
            healthy = a - s
            parts, notes = [], []
            outages: list[tuple[Fault, float]] = [("slow", 2.5), (500, 7.5)]
            for fault, outage in outages:
                standin.delay = 5.0
                calls_before = len(standin.calls)
                standin.fault = fault
                s, a, reply = await join()
                assert reply.get("code") == "media_unavailable", reply
                first, tripped = a - s, a
                fast: list[float] = []
                for _ in range(10):
                    s, a, reply = await join()
                    assert reply.get("code") == "media_unavailable", reply
                    fast.append(a - s)
                await asyncio.sleep(max(0.0, tripped + outage - now()))
                standin.fault = None
                back = now()
                during = standin.calls[calls_before:]
                recovered, tries = math.nan, 0
                while now() - back < 40:
                    tries += 1
                    s, a, reply = await join()
                    if reply["type"] == "token":
                        recovered = a - back
                        break
                    await asyncio.sleep(0.2)
                label = "no answer for 5 s" if fault == "slow" else "HTTP 500"
                parts.append(
                    f"**{label}**: first join failed `media_unavailable` after {ms(first)}; the "
                    f"next 10 in {ms(pct(fast, 50))} median, {ms(max(fast))} max; OpenVidu back "
                    f"{outage:g} s after the trip → first successful join **{secs(recovered)} "
                    f"later**"
                )
                probes = sum(1 for c in during if c.method == "GET")
                notes.append(
                    f"{label}: OpenVidu received {len(during)} calls during the outage "
                    f"({probes} of them breaker probe{'' if probes == 1 else 's'}, "
                    f"`GET /sessions`); the 10 fast failures "
                    f"made none. {tries} join attempts, 0.2 s apart, until one succeeded."
                )
        finally:
            standin.fault = None
            client.close()
    row = Row(
        "7. OpenVidu down",
        "`OPENVIDU_TIMEOUT=1`; the stand-in stops answering (5 s delay), later answers 500; "
        "`LOBBY_JOINS_PER_MINUTE=1000` so retries are not rate-limited",
        ". ".join(parts),
        f"A healthy first join (creates the OpenVidu session): {ms(healthy)}. While the "
        "breaker is open a join costs no OpenVidu "
        "call; probes come 1, 2, 4, 8 … s apart (30 s cap), so the recovery delay grows "
        "with the outage: up to as long again",
        notes,
    )
    return row


# -- 8. capacity caps ----------------------------------------------------------------------------


async def case_caps(b: Bench) -> Row:
    cap, per_user = 500, 20
    async with b.server("caps", LOBBY_MAX_SOCKETS=str(cap)) as srv:
        clients: list[WsClient] = []

        async def handshake(cookie: str | None) -> tuple[int, float, WsClient]:
            started = now()
            client = await ws_open(srv.port, cookie)
            return client.status.result(), now() - started, client

        async def refusals(cookie: str | None, n: int) -> tuple[set[int], list[float], float]:
            statuses, times, cpu = set(), [], srv.cpu()
            for _ in range(n):
                status, took, client = await handshake(cookie)
                client.close()
                statuses.add(status)
                times.append(took)
            return statuses, times, (srv.cpu() - cpu) / n

        try:
            accepted: list[float] = []
            for _ in range(per_user):
                status, took, client = await handshake(b.cookies[user(0)])
                clients.append(client)
                assert status == 101, status
                accepted.append(took)
            user_statuses, user_times, user_cpu = await refusals(b.cookies[user(0)], 100)
            cpu0 = srv.cpu()
            for i in range(1, cap // per_user):
                for _ in range(per_user):
                    status, took, client = await handshake(b.cookies[user(i)])
                    clients.append(client)
                    assert status == 101, status
                    accepted.append(took)
            cpu_accept = (srv.cpu() - cpu0) / (cap - per_user)
            sockets = (await srv.healthz())["sockets"]
            full_statuses, full_times, full_cpu = await refusals(
                b.cookies[user(cap // per_user)], 100
            )
            anonymous, anonymous_times, _ = await refusals(None, 3)
            clients.pop().close()
            started, status = now(), 0
            while status != 101 and now() - started < 10:
                status, _, client = await handshake(b.cookies[user(cap // per_user)])
                clients.append(client)
            freed = now() - started
        finally:
            close_all(clients)
    log = b.logs.pop("caps")
    refused = len(user_times) + len(full_times) + len(anonymous_times)
    row = Row(
        "8. Socket caps",
        f"`LOBBY_MAX_SOCKETS={cap}`, `LOBBY_MAX_SOCKETS_PER_USER={per_user}` (default): one "
        f"user opens {per_user + 1}, then {cap} sockets in all and one more",
        f"{per_user + 1}st socket of one user: HTTP **{'/'.join(map(str, sorted(user_statuses)))}**"
        f" in {ms(pct(user_times, 50))} (max {ms(max(user_times))}); with {sockets} open the "
        f"next: HTTP **{'/'.join(map(str, sorted(full_statuses)))}** in "
        f"{ms(pct(full_times, 50))} (max {ms(max(full_times))}), also without a cookie "
        f"({'/'.join(map(str, sorted(anonymous)))}); one socket closed → the next handshake "
        f"was accepted within {ms(freed)}",
        f"An accepted handshake: {ms(pct(accepted, 50))} p50 and ≈{ms(cpu_accept)} CPU; "
        f"a 429 ≈{ms(user_cpu)} CPU, a 503 ≈{ms(full_cpu)} CPU (averages over 100: the CPU "
        "clock ticks every 10 ms)",
    )
    if log.errors:
        row.findings.append(
            f"**Every refused handshake logs an ERROR.** The {refused} refusals (429 and 503) "
            f"wrote {log.errors} lines `{log.first_error.strip()}`: "
            "`ws._deny` answers with `send_denial_response`, and uvicorn's sans-I/O protocol "
            "never marks such a handshake complete, so when the endpoint returns it logs that "
            "error (it sends no second response). Expected refusals at ERROR level mislead "
            "operators, and a client retrying against a full server writes one line per try."
        )
    return row


# -- the report ----------------------------------------------------------------------------------


CASES: dict[str, Callable[[Bench], Awaitable[Row]]] = {
    "1": case_slowloris,
    "1b": case_slow_body,
    "2": case_idle,
    "3": case_silent,
    "4": case_stuck_reader,
    "5": case_flood,
    "6": case_brute_force,
    "7": case_openvidu_down,
    "8": case_caps,
}


def machine() -> list[str]:
    from importlib.metadata import version

    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
        platform.processor() or "unknown",
    )
    stack = ", ".join(f"{p} {version(p)}" for p in ("uvicorn", "uvloop", "httptools", "websockets"))
    return [
        f"CPU: {model}, {os.cpu_count()} cores",
        f"Kernel: Linux {platform.release()}",
        f"Python: {platform.python_version()}; server stack: {stack}",
    ]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(rows: list[Row], log_findings: list[str], elapsed: float, load: float) -> str:
    today = datetime.date.today().isoformat()
    lines = [
        "# Hostile clients",
        "",
        "What the lobby server does when clients misbehave, and what it costs. Produced by "
        f"`.venv/bin/python bench/hostile.py` ({elapsed:.0f} s, {today}); rerun it after changing "
        "`lobby/wire.py`, `lobby/ws.py`, `lobby/hub.py`, `lobby/breaker.py`, `lobby/throttle.py` "
        "or the uvicorn settings.",
        "",
        *[f"- {line}" for line in machine()],
        f"- Load average when the run started: {load:.2f}. The machine is shared (other "
        "benchmarks and browser tests may run alongside), and the clients, the stand-in and "
        "the server share its cores: read times as indicative.",
        "",
        "Each case starts `python -m lobby serve` as a process of its own (README defaults "
        "unless the setup says otherwise) with a fresh SQLite file of provisioned users and "
        "login sessions. The OpenVidu stand-in and the hand-made clients run in the bench "
        "process; everything is on loopback. RSS is the server's `VmRSS`, CPU its user + "
        "system time over all threads, both read from `/proc/<pid>`.",
        "",
        "| Case | Setup | What the server did | What it cost |",
        "| --- | --- | --- | --- |",
    ]
    for row in rows:
        cells = [row.case, row.setup, row.did, row.cost]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    findings = [f for row in rows for f in row.findings] + log_findings
    lines += ["", "## Findings", ""]
    lines += [f"- {f}" for f in findings] or ["- None: every case behaved as documented."]
    lines += ["", "## Details", ""]
    for row in rows:
        if row.notes:
            lines.append(f"- **{row.case}**: " + " ".join(row.notes))
    return "\n".join(lines) + "\n"


async def run(selected: list[str]) -> tuple[str, bool]:
    """Run the `selected` cases; the report and whether any case failed."""
    load = os.getloadavg()[0]
    started = now()
    rows: list[Row] = []
    findings: list[str] = []
    with tempfile.TemporaryDirectory(prefix="lobby-hostile-") as tmp:
        async with running_standin(secret="MY_SECRET") as standin:
            bench = Bench(Path(tmp), standin)
            for key in selected:
                began = now()
                print(f"case {key} …", file=sys.stderr, flush=True)
                try:
                    row = await CASES[key](bench)
                except Exception as exc:
                    traceback.print_exc()
                    row = Row(key, "", f"FAILED: {type(exc).__name__}: {exc}", "", failed=True)
                print(f"case {key}: {now() - began:.1f} s", file=sys.stderr, flush=True)
                rows.append(row)
            findings = bench.log_findings()
    return render(rows, findings, now() - started, load), any(row.failed for row in rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--only", help=f"comma-separated cases out of {', '.join(CASES)}")
    parser.add_argument("--out", type=Path, help="Markdown file to write")
    args = parser.parse_args()
    selected = list(CASES) if args.only is None else args.only.split(",")
    unknown = [key for key in selected if key not in CASES]
    if unknown:
        parser.error(f"unknown cases: {', '.join(unknown)}")
    out: Path | None = args.out
    if out is None and args.only is None:
        out = ROOT / "docs" / "bench" / "hostile.md"
    report, failed = uvloop.run(run(selected))
    print(report)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report)
        print(f"wrote {out}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
