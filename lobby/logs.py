"""Log lines: one handler for ours and uvicorn's, plain or JSON, each line with the ids it knows.

`configure` gives the root logger the process's one handler (standard error), and
`route_uvicorn` takes uvicorn's own handlers away so its lines (access, errors)
reach that handler too: the same timestamps, format and redaction for every line.

`LOBBY_LOG_FORMAT=plain` (the default) writes `time level logger: message` and the
ids in brackets; `json` writes one JSON object per line (`JsonFormatter`): timestamp,
level, logger, message, the ids, and a traceback as `exception`. The ids are
`socket`, `user`, `participant`, `room` and `request`: a call's `extra=` gives them,
or the context (`bind`) does: the socket endpoint binds its socket and user for
everything logged while it runs, including the tasks it starts (asyncio copies the
context), and `RequestIds` binds an id to each HTTP request and socket handshake.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import secrets
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import IO, Any

from starlette.types import ASGIApp, Receive, Scope, Send

IDS = ("socket", "user", "participant", "room", "request")
PLAIN = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Loggers with handlers of their own (uvicorn's default config): routed to the root's.
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")

# Immutable, so the default can be shared: `bind` sets a new mapping, never changes one.
_NONE: Mapping[str, str] = MappingProxyType({})
_bound: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar("log_ids", default=_NONE)


@contextlib.contextmanager
def bind(**ids: object) -> Iterator[None]:
    """Every line logged in this context (and tasks started from it) carries `ids`."""
    token = _bound.set({**_bound.get(), **{k: str(v) for k, v in ids.items()}})
    try:
        yield
    finally:
        _bound.reset(token)


def ids_of(record: logging.LogRecord) -> dict[str, str]:
    """The ids a record carries (set by `ContextIds` or by `extra=`), in `IDS` order."""
    return {name: str(value) for name in IDS if (value := getattr(record, name, None)) is not None}


class ContextIds(logging.Filter):
    """Copies the bound ids onto each record, unless the call's `extra=` gave them; drops none."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _bound.get().items():
            if getattr(record, name, None) is None:
                setattr(record, name, value)
        return True


class PlainFormatter(logging.Formatter):
    """`time level logger: message [socket=… user=…]`, the traceback below."""

    def __init__(self) -> None:
        super().__init__(PLAIN)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        ids = ids_of(record)
        return f"{line} [{' '.join(f'{k}={v}' for k, v in ids.items())}]" if ids else line


class JsonFormatter(logging.Formatter):
    """One JSON object per record: timestamp (UTC, ISO 8601), level, logger, message, ids."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": _iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **ids_of(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def _iso(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


def formatter(kind: str) -> logging.Formatter:
    """The formatter `LOBBY_LOG_FORMAT` names."""
    return JsonFormatter() if kind == "json" else PlainFormatter()


def configure(
    level: str, kind: str, filters: Iterable[logging.Filter] = (), stream: IO[str] | None = None
) -> logging.Handler:
    """One handler on the root logger, to `stream` (standard error): `kind`'s format, the ids,
    `filters`."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(kind))
    handler.addFilter(ContextIds())
    for each in filters:
        handler.addFilter(each)
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler


def route_uvicorn() -> None:
    """Send uvicorn's lines to the root's handler (its config gave them handlers of their own)."""
    for name in UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        for old in logger.handlers[:]:
            logger.removeHandler(old)
        logger.propagate = True


# What a proxy's request id may look like (nginx's $request_id is 32 hex digits).
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class RequestIds:
    """ASGI middleware: each HTTP request and socket handshake gets an id for its log lines.

    The proxy's `X-Request-ID` when it sent a sane one (so its log and ours line up),
    else a fresh one.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"")
        text = given.decode("latin-1")
        request = text if _REQUEST_ID.fullmatch(text) else secrets.token_hex(8)
        with bind(request=request):
            await self.app(scope, receive, send)
