"""Process start-up: the app under uvicorn, with the socket settings the protocol promises.

uvicorn's internals are reached only through `lobby.web.uvicorn_adapter`, and only
after checking that the installed uvicorn still has everything the adapter
relies on (`IncompatibleUvicorn` otherwise: one sentence, no 403 for every socket), and
that the browser library the pages load is there (`MissingLibrary`: no 404 for its script).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import re
import signal
import socket
import threading
import time
from dataclasses import dataclass, field, replace
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from typing import Any

import redis
import uvicorn
from starlette.types import ASGIApp

from lobby import logs, openfiles
from lobby.app import create_app
from lobby.config import Settings
from lobby.store import db as database
from lobby.web import UVICORN_SERIES, IncompatibleUvicorn, assets
from lobby.web.auth import CSRF_COOKIE, SESSION_COOKIE
from lobby.web.drain import Draining

log = logging.getLogger("lobby")

# Seconds an idle kept-alive HTTP connection stays open between requests: enough
# for a page and then its scripts and styles; a WebSocket is exempt, it lives by pings.
KEEP_ALIVE_TIMEOUT = 5

DEMO_BANNER = """
************************************************************************
*  DEMO MODE: demo users publisher1, publisher2 and subscriber exist,  *
*  all with the password "pass", and the secret key is throw-away.     *
*  Never expose a demo server to anyone else.                          *
************************************************************************"""


# What `Redact` blanks out of a log line, each secret's value replaced by "[redacted]".
_COOKIE_HEADERS = r"(?:set-)?cookie|(?:proxy-)?authorization"
_SECRET_FIELDS = r"key|resume_key|token|password|pass|secret|csrf_token"
_REDACTIONS = (
    # A header line as websockets and h11 print them: "< Cookie: lobby_session=…".
    re.compile(rf"(?im)\b({_COOKIE_HEADERS})(:[ \t]*)[^\r\n]+"),
    # A header pair as httpcore prints them: (b'set-cookie', b'lobby_session=…').
    re.compile(rf"(?i)(b?['\"](?:{_COOKIE_HEADERS})['\"],\s*b?['\"])()[^'\"]+"),
    # Our cookies, wherever they turn up.
    re.compile(rf"\b({SESSION_COOKIE}|{CSRF_COOKIE})(=)[^;,\s'\"]+"),
    # JSON fields of frames ({"type": "resume", "key": "…"}), possibly cut short.
    re.compile(rf'(\\?"(?:{_SECRET_FIELDS})\\?")(\s*:\s*\\?")[^"\\]+'),
    # Query strings and forms: an OpenVidu token URL's "&token=…", a login's "pass=…".
    re.compile(rf"(?<![\w-])({_SECRET_FIELDS})(=)[^&\s'\"]+"),
)


def redact(text: str) -> str:
    """`text` with cookie and authorization values and secret-carrying fields blanked out."""
    for pattern in _REDACTIONS:
        text = pattern.sub(r"\1\2[redacted]", text)
    return text


class Redact(logging.Filter):
    """Blanks secrets out of every record it sees (`redact`); drops none.

    A second line: nothing of ours logs a cookie, resume key, token, password or
    secret, and websockets' dump of headers and frames is off (`DirectProtocol`),
    but a library's debug line may still echo a request.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string: the handler reports it, not us
            return True
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


REDACT = Redact()


def protocols(
    header_timeout: float, *, relied_on: dict[type[Any], tuple[str, ...]] | None = None
) -> tuple[type[asyncio.Protocol], type[asyncio.Protocol]]:
    """uvicorn's HTTP and WebSocket protocol classes for the lobby, from the adapter.

    Raises `IncompatibleUvicorn` unless the installed uvicorn has everything the
    adapter relies on (`relied_on`: the adapter's own list unless given).
    """
    needs = (
        f"lobby needs uvicorn {UVICORN_SERIES}.x, but uvicorn {uvicorn.__version__} is installed"
    )
    try:
        from lobby.web import uvicorn_adapter as adapter
    except ImportError as exc:
        raise IncompatibleUvicorn(f"{needs}: {exc}") from exc
    gaps = adapter.missing(relied_on)
    if gaps:
        raise IncompatibleUvicorn(f"{needs}, which lacks {', '.join(gaps)}")
    return adapter.head_timeout_protocol(header_timeout), adapter.DirectProtocol


def uvicorn_config(app: ASGIApp, settings: Settings) -> uvicorn.Config:
    http, ws = protocols(settings.header_timeout)
    # Where uvicorn and websockets log about connections (a logger's filter sees only
    # its own records; `serve` also puts one on every handler, for everything else).
    logging.getLogger("uvicorn.error").addFilter(REDACT)  # once: a filter is added once
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        # httptools with a deadline on each request head (slowloris).
        http=http,
        timeout_keep_alive=KEEP_ALIVE_TIMEOUT,
        # uvicorn's sans-I/O websockets protocol (max_size enforced with 1009) plus
        # direct frame writes for the hub.
        ws=ws,
        ws_max_size=settings.max_frame_bytes,
        # Its pings are off: a timer and a pong deadline per socket, all firing together
        # for sockets that connected together. The hub's `Keepalive` pings instead.
        ws_ping_interval=None,
        ws_ping_timeout=None,
        # Compression costs tens of KiB per socket for small JSON frames.
        ws_per_message_deflate=False,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        server_header=False,
        log_level=settings.log_level,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )


class RedisUnreachable(RuntimeError):
    """`LOBBY_REDIS_URL` is set but Redis does not answer; `str()` says what happened."""


def require_redis(url: str) -> None:
    """One PING, before uvicorn: else the lifespan would wait for Redis, then fail with a
    traceback. At once, not waiting: a supervisor (systemd's `Restart=on-failure`, compose's
    `restart:`) starts the lobby again, and an operator sees why at the first line."""
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        raise RedisUnreachable(str(exc) or type(exc).__name__) from exc
    finally:
        client.close()


def serve(settings: Settings) -> None:
    """Serve until stopped; `IncompatibleUvicorn` or `MissingLibrary` (one sentence) first,
    then the database's `Unavailable`, `SchemaError` or `sqlite3.Error`, then
    `RedisUnreachable`."""
    assets.require(settings.media)  # before the banner: a refusal is the only line printed
    # The database too (reached, migrated): else uvicorn would print the lifespan's traceback.
    database.connect(settings.database).close()
    if settings.redis_url:
        require_redis(settings.redis_url)
    # One handler for every line, ours and uvicorn's: the format, the ids, redaction.
    logs.configure(settings.log_level, settings.log_format, filters=[REDACT])
    # httpx logs every OpenVidu call at INFO; lobby.media.openvidu logs what matters.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if settings.demo:
        log.warning(DEMO_BANNER)
    # Every socket is an open file: raise the limit, and lower the cap if it still won't fit.
    fit = openfiles.fit_sockets(settings.max_sockets, openfiles.raise_soft_limit())
    if fit.lowered:
        log.warning(fit.lowered)
        settings = replace(settings, max_sockets=fit.max_sockets)
    calls = {
        "openvidu": f"OpenVidu at {settings.openvidu_url}",
        "livekit": f"LiveKit at {settings.livekit_url}",
    }.get(
        settings.media,
        f"peer to peer, rooms of up to {settings.room_size or 'any number of'} people",
    )
    if settings.workers > 1:
        protocols(settings.header_timeout)  # checks uvicorn before any worker starts
        listening = _listen(settings.host, settings.port)
        port = listening.getsockname()[1]
        log.info("Lobby on http://%s:%d, %d workers, calls %s", settings.host, port,
                 settings.workers, calls)  # fmt: skip
        _run_workers(settings, listening)
        return
    log.info("Lobby on http://%s:%d, calls %s", settings.host, settings.port, calls)
    _run(settings)


def _run(settings: Settings, sockets: list[socket.socket] | None = None) -> None:
    app = create_app(settings)
    config = uvicorn_config(app, settings)  # checks uvicorn first
    # uvicorn's config gave its loggers handlers of their own: route them to ours.
    logs.route_uvicorn()
    Draining(config, app).run(sockets=sockets)  # SIGTERM drains the sockets first (lobby.web.drain)


# Several workers: one listening socket, bound here and handed to each process, which
# accepts on it (the kernel spreads the connections). Not uvicorn's own `workers`: it
# spawns processes that rebuild the app from an import string, and our protocol classes
# are made at run time (`protocols`). Each worker's store names a fresh instance.


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=2048)


# A worker that dies is started again after `RESTART_DELAY`, doubled for each one in a row
# that died younger than `YOUNG` seconds (a worker that cannot start would otherwise be
# restarted as fast as it fails), up to `RESTART_DELAY_MAX`.
RESTART_DELAY, RESTART_DELAY_MAX, YOUNG = 0.5, 30.0, 10.0


@dataclass
class _Worker:
    """Worker `n`: its current process (started at once), its young deaths in a row."""

    n: int
    settings: Settings
    listening: socket.socket
    process: BaseProcess = field(init=False)
    started: float = field(init=False)
    failures: int = 0
    due: float | None = None  # when to start a new one, after a death

    def __post_init__(self) -> None:
        self.start()

    def start(self) -> None:
        spawn = multiprocessing.get_context("spawn")
        args = (_nth(self.settings, self.n), self.listening)
        self.process = spawn.Process(target=_worker, args=args, name=f"lobby-worker-{self.n}")
        self.process.start()
        self.started, self.due = time.monotonic(), None

    def check(self, now: float) -> None:
        """If the process ended, note it, and when to start the next."""
        if self.due is not None or self.process.is_alive():
            return
        lived = now - self.started
        self.failures = self.failures + 1 if lived < YOUNG else 0
        delay = min(RESTART_DELAY_MAX, RESTART_DELAY * 2**self.failures)
        self.due = now + delay
        log.warning("worker %d (pid %s) ended with code %s after %.1f s; a new one in %.1f s",
                    self.n, self.process.pid, self.process.exitcode, lived, delay)  # fmt: skip


def _run_workers(settings: Settings, listening: socket.socket) -> None:
    """Run `settings.workers` processes on `listening`, each started again if it dies, until
    this process is told to stop (SIGTERM, SIGINT): then stop them all."""
    slots = [_Worker(n, settings, listening) for n in range(settings.workers)]
    stopping = threading.Event()

    def stop(signum: int, frame: object) -> None:
        stopping.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop)
    while not stopping.is_set():
        # Wakes as soon as a worker ends (its sentinel), and at least twice a second for
        # `stopping` (a signal does not interrupt the wait).
        now = time.monotonic()
        due = [s.due - now for s in slots if s.due is not None]
        wait([s.process.sentinel for s in slots if s.due is None], min([0.5, *due]))
        now = time.monotonic()
        for slot in slots:
            slot.check(now)
            if slot.due is not None and now >= slot.due and not stopping.is_set():
                slot.start()
    for slot in slots:
        if slot.process.is_alive():
            slot.process.terminate()  # SIGTERM: uvicorn shuts the worker down gracefully
    for slot in slots:
        slot.process.join()
    listening.close()


def _nth(settings: Settings, n: int) -> Settings:
    """Worker `n`'s settings. A scrape of the shared port reaches one worker at random, so
    each serves its own metrics on a port of its own: `LOBBY_METRICS_PORT` + n."""
    if settings.metrics_port is None:
        return settings
    return replace(settings, metrics_port=settings.metrics_port + n)


def _worker(settings: Settings, listening: socket.socket) -> None:
    """One worker process: the whole app, accepting on the shared socket."""
    logs.configure(settings.log_level, settings.log_format, filters=[REDACT])
    logging.getLogger("httpx").setLevel(logging.WARNING)
    _run(settings, [listening])
