"""Log lines: both formats, the ids they carry, uvicorn's lines routed through ours, and the
session-wide check that no secret reaches a log line (`tests/log_secrets.py`)."""

from __future__ import annotations

import io
import json
import logging
import re
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets

from lobby.logs import (
    UVICORN_LOGGERS,
    ContextIds,
    JsonFormatter,
    PlainFormatter,
    bind,
    configure,
    route_uvicorn,
)
from lobby.server import REDACT
from tests.conftest import Client, Lobby, csrf_from
from tests.log_secrets import SECRETS
from tests.openvidu_standin import OpenViduStandin
from tests.test_server import lobby_env, lobby_serve

log = logging.getLogger("lobby.test_logs")
PLAIN_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ [\w.]+: ")


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    made = log.makeRecord(log.name, logging.INFO, __file__, 1, message, args, None, extra=extra)
    ContextIds().filter(made)
    return made


def test_json_is_one_object_per_line_with_the_ids_it_knows() -> None:
    with bind(socket=7, user="alice"):
        line = JsonFormatter().format(record("joined %s", "R1", room="R1"))
    entry = json.loads(line)
    assert "\n" not in line
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry.pop("timestamp"))
    assert entry == {
        "level": "INFO",
        "logger": "lobby.test_logs",
        "message": "joined R1",
        "socket": "7",
        "user": "alice",
        "room": "R1",
    }


def test_a_traceback_stays_inside_its_json_object() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        made = log.makeRecord(
            log.name, logging.ERROR, __file__, 1, "failed", (), exc_info=sys.exc_info()
        )
    entry = json.loads(JsonFormatter().format(made))
    assert entry["message"] == "failed"
    assert "RuntimeError: boom" in entry["exception"]


def test_plain_lines_have_a_timestamp_and_the_ids_in_brackets() -> None:
    with bind(request="r1"):
        line = PlainFormatter().format(record("login from %s", "127.0.0.1", user="bob"))
    assert PLAIN_LINE.match(line), line
    assert line.endswith("lobby.test_logs: login from 127.0.0.1 [user=bob request=r1]")
    assert not PlainFormatter().format(record("quiet")).endswith("]")


def test_extra_wins_over_the_context_and_the_context_ends_with_its_block() -> None:
    with bind(user="alice", room="A"):
        inner = record("x", room="B")
    after = record("y")
    assert (inner.user, inner.room) == ("alice", "B")  # type: ignore[attr-defined]
    assert not hasattr(after, "user")


class Lines(logging.Handler):
    """What the production handler would print as JSON, kept in a list."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(JsonFormatter())
        self.addFilter(ContextIds())
        self.entries: list[dict[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.entries.append(json.loads(self.format(record)))


@pytest.fixture
def lines() -> Iterator[Lines]:
    handler, root = Lines(), logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


async def test_login_socket_and_join_lines_carry_their_ids(lobby: Lobby, lines: Lines) -> None:
    await lobby.login("alice", headers={"X-Request-ID": "from-the-proxy-1"})
    alice: Client = await lobby.client("alice")
    participant = (await alice.join("R1"))["participant"]["id"]
    await alice.request({"type": "leave"})
    await alice.until("left")
    await alice.close()
    await alice.close_code()
    login = next(e for e in lines.entries if e["message"].startswith("login from"))
    assert login["user"] == "alice"
    assert login["request"] == "from-the-proxy-1"
    ours = [e for e in lines.entries if e.get("socket") and e["logger"] == "lobby.web.socket"]
    assert [e["message"] for e in ours][:3] == ["socket open", "join requested", "leave requested"]
    assert {e["user"] for e in ours} == {"alice"}
    assert len({e["socket"] for e in ours}) == 1
    assert re.fullmatch(r"[0-9a-f]{16}", ours[0]["request"])  # no id from a proxy: a fresh one
    assert ours[1]["room"] == "R1"
    assert (ours[2]["participant"], ours[2]["room"]) == (participant, "R1")


@pytest.mark.parametrize("header", ["", "a b", "x" * 65, "../x;y"])
async def test_an_insane_request_id_is_replaced(lobby: Lobby, lines: Lines, header: str) -> None:
    await lobby.login("bob", headers={"X-Request-ID": header})
    login = next(e for e in lines.entries if e["message"].startswith("login from"))
    assert re.fullmatch(r"[0-9a-f]{16}", login["request"])


async def _a_visit(url: str) -> None:
    """Log in as a demo user and open a socket: a line from each part."""
    async with httpx.AsyncClient(base_url=url) as http:
        token = csrf_from((await http.get("/")).text)
        data = {"user": "publisher1", "pass": "pass", "csrf_token": token}
        cookie = (await http.post("/login", data=data)).cookies["lobby_session"]
    SECRETS.register(cookie)
    async with websockets.connect(
        url.replace("http", "ws") + "/ws",
        origin=websockets.Origin(url),
        additional_headers={"Cookie": f"lobby_session={cookie}"},
    ) as ws:
        await ws.recv()


async def test_lobby_serve_logs_json_for_its_lines_and_uvicorns(
    tmp_path: Path, standin: OpenViduStandin
) -> None:
    env = lobby_env(
        LOBBY_DATABASE=str(tmp_path / "demo.sqlite3"),
        OPENVIDU_URL=standin.url,
        LOBBY_LOG_FORMAT="json",
    )
    async with lobby_serve(env, "--demo") as served:
        await _a_visit(served.url)
        out = await served.output()
    entries = [json.loads(line) for line in out.splitlines()]  # every line is one object
    assert all({"timestamp", "level", "logger", "message"} <= e.keys() for e in entries)
    loggers = {e["logger"] for e in entries}
    assert {"lobby", "uvicorn.error", "uvicorn.access", "lobby.web.socket"} <= loggers
    access = next(e for e in entries if '"GET / HTTP/1.1" 200' in e["message"])
    assert access["logger"] == "uvicorn.access"
    assert "request" in access
    opened = next(e for e in entries if e["message"] == "socket open")
    assert opened["user"] == "publisher1"
    assert "DEMO MODE" in next(e["message"] for e in entries if e["level"] == "WARNING")


async def test_lobby_serve_plain_lines_all_start_with_a_timestamp(tmp_path: Path) -> None:
    env = lobby_env(LOBBY_DATABASE=str(tmp_path / "demo.sqlite3"))
    async with lobby_serve(env, "--demo") as served:
        await _a_visit(served.url)
        out = await served.output()
    # The demo banner's box continues its line; every other line starts with a timestamp.
    starts = [line for line in out.splitlines() if not line.startswith("*")]
    assert all(PLAIN_LINE.match(line) for line in starts if line), out
    assert any(" uvicorn.error: Uvicorn running on" in line for line in starts)
    assert any(" uvicorn.access: " in line for line in starts)


def test_a_secret_in_a_log_line_is_caught_in_both_formats_with_the_line() -> None:
    """The session-wide check can fail: a registered secret logged on purpose is found."""
    secret = "leak-" + secrets.token_hex(8)
    SECRETS.register(secret)
    with SECRETS.quarantine() as quarantined:  # kept out of the session's lines
        log.warning("the key is %s", secret)
        log.warning("a form: user=a&pass=%s", secret)  # redacted, as production would
    leaks = SECRETS.leaks(quarantined)
    assert len(leaks) == 2  # the plain line and the JSON one
    assert f"lobby.test_logs: the key is {secret}" in leaks[0]
    assert json.loads(leaks[1].partition("in log line: ")[2])["message"] == f"the key is {secret}"
    assert not SECRETS.leaks([line for line in quarantined if "a form" in line])


@pytest.fixture
def own_logging() -> Iterator[None]:
    """Lets a test configure logging as `lobby serve` does, then puts pytest's back."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    uvicorns = [logging.getLogger(name) for name in UVICORN_LOGGERS]
    kept = [(u.handlers[:], u.propagate, u.level) for u in uvicorns]
    try:
        yield
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
        for logger, (handlers, propagate, level) in zip(uvicorns, kept, strict=True):
            logger.handlers[:], logger.propagate = handlers, propagate
            logger.setLevel(level)


@pytest.mark.usefixtures("own_logging")
def test_uvicorns_lines_go_through_our_one_handler_redacted() -> None:
    out = io.StringIO()
    configure("info", "json", [REDACT], stream=out)
    access = logging.getLogger("uvicorn.access")
    access.addHandler(logging.StreamHandler(io.StringIO()))  # as uvicorn's config does
    access.propagate = False
    access.setLevel(logging.INFO)
    route_uvicorn()
    assert access.handlers == []
    access.info('%s - "GET /?token=%s HTTP/1.1" 200', "127.0.0.1:5", "tok_secret0123")
    log.warning("with its stack", stack_info=True)
    log.debug("below the level")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["logger"] == "uvicorn.access"
    assert first["message"] == '127.0.0.1:5 - "GET /?token=[redacted] HTTP/1.1" 200'
    assert "test_uvicorns_lines_go_through" in second["stack"]
