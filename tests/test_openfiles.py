"""Open files: the soft limit raised, the socket cap fitted under it, and a real `lobby serve`
with a low limit refusing tabs beyond the cap with 503, never failing to accept."""

from __future__ import annotations

import asyncio
import contextlib
import resource
from pathlib import Path

import httpx
import pytest
import websockets
from websockets.exceptions import InvalidStatus

from lobby.openfiles import HEADROOM, UNLIMITED, fit_sockets, raise_soft_limit
from tests.conftest import csrf_from
from tests.log_secrets import SECRETS
from tests.test_server import lobby_env, lobby_serve

NOFILE = resource.RLIMIT_NOFILE
FULL = "This server is full; please try again shortly."


class Rlimits:
    """`getrlimit`/`setrlimit` for one process, in memory."""

    def __init__(self, soft: int, hard: int, *, allowed: bool = True) -> None:
        self.limits, self.allowed = (soft, hard), allowed

    def get(self, which: int) -> tuple[int, int]:
        assert which == NOFILE
        return self.limits

    def set(self, which: int, limits: tuple[int, int]) -> None:
        if not self.allowed:
            raise ValueError("not allowed to raise maximum limit")
        self.limits = limits


@pytest.mark.parametrize(
    ("soft", "hard", "allowed", "now"),
    [
        (1024, 20000, True, 20000),  # raised to the hard limit
        (20000, 20000, True, 20000),  # nothing to do
        (1024, 20000, False, 1024),  # refused: kept
        (1024, resource.RLIM_INFINITY, True, UNLIMITED),
        (resource.RLIM_INFINITY, resource.RLIM_INFINITY, True, UNLIMITED),
    ],
)
def test_the_soft_limit_is_raised_to_the_hard_one(
    soft: int, hard: int, allowed: bool, now: int
) -> None:
    limits = Rlimits(soft, hard, allowed=allowed)
    assert raise_soft_limit(limits.get, limits.set) == now
    if allowed and soft not in (now, resource.RLIM_INFINITY):
        assert limits.limits == (now, hard)  # the hard limit itself is left alone


def test_the_cap_is_kept_when_it_fits_and_lowered_with_one_sentence_when_not() -> None:
    assert fit_sockets(18000, 20000).lowered is None
    assert fit_sockets(18000, 18000 + HEADROOM).max_sockets == 18000
    fit = fit_sockets(18000, 1024)
    assert fit.max_sockets == 1024 - HEADROOM
    assert fit.lowered is not None
    assert "LOBBY_MAX_SOCKETS is 18000" in fit.lowered
    assert f"holding at most {1024 - HEADROOM} sockets" in fit.lowered
    assert "LimitNOFILE=" in fit.lowered
    assert f"{18000 + HEADROOM} or more" in fit.lowered
    assert fit_sockets(10, 50).max_sockets == 1  # never 0 or less


LIMIT = HEADROOM + 40  # room for 40 sockets


def low_limit() -> None:
    """In the child, before `lobby serve` starts: a limit it cannot raise."""
    resource.setrlimit(NOFILE, (LIMIT, LIMIT))


async def test_with_a_low_limit_tabs_beyond_the_cap_get_503_never_an_accept_error(
    tmp_path: Path,
) -> None:
    env = lobby_env(
        LOBBY_DATABASE=str(tmp_path / "demo.sqlite3"),
        LOBBY_MAX_SOCKETS_PER_USER="1000",  # the process cap is what this is about
    )
    async with lobby_serve(env, "--demo", preexec_fn=low_limit) as served:
        async with httpx.AsyncClient(base_url=served.url) as http:
            token = csrf_from((await http.get("/")).text)
            data = {"user": "publisher1", "pass": "pass", "csrf_token": token}
            cookie = (await http.post("/login", data=data)).cookies["lobby_session"]
        SECRETS.register(cookie)
        url, origin = served.url.replace("http", "ws") + "/ws", websockets.Origin(served.url)
        headers = {"Cookie": f"lobby_session={cookie}"}
        async with contextlib.AsyncExitStack() as held:
            for _ in range(LIMIT - HEADROOM):
                ws = await held.enter_async_context(
                    websockets.connect(url, origin=origin, additional_headers=headers)
                )
                assert '"welcome"' in str(await ws.recv())
            refused = []
            for _ in range(HEADROOM + 20):  # more than the limit itself: each answered and gone
                with pytest.raises(InvalidStatus) as denied:
                    await websockets.connect(url, origin=origin, additional_headers=headers)
                refused.append(denied.value.response)
            async with httpx.AsyncClient(base_url=served.url) as http:
                assert (await http.get("/healthz")).status_code == 200  # still accepting
        out = await served.output()
    assert {r.status_code for r in refused} == {503}
    assert {r.body.decode() for r in refused} == {FULL}
    assert f"may open only {LIMIT} files: holding at most {LIMIT - HEADROOM} sockets" in out
    assert out.count("LimitNOFILE=") == 1
    # What asyncio and uvloop log when accept() fails for want of a file.
    for sign in ("accept()", "Too many open files", "EMFILE", "Errno 24", "Traceback"):
        assert sign not in out, out


async def test_opening_them_all_at_once_still_gets_answers(tmp_path: Path) -> None:
    """Handshakes in flight together, not one by one: the headroom covers a burst."""
    env = lobby_env(LOBBY_DATABASE=str(tmp_path / "demo.sqlite3"), LOBBY_MAX_SOCKETS_PER_USER="999")
    async with lobby_serve(env, "--demo", preexec_fn=low_limit) as served:
        async with httpx.AsyncClient(base_url=served.url) as http:
            token = csrf_from((await http.get("/")).text)
            data = {"user": "publisher1", "pass": "pass", "csrf_token": token}
            cookie = (await http.post("/login", data=data)).cookies["lobby_session"]
        SECRETS.register(cookie)
        url, origin = served.url.replace("http", "ws") + "/ws", websockets.Origin(served.url)
        headers = {"Cookie": f"lobby_session={cookie}"}

        tries, answered, everyone = LIMIT - HEADROOM + 50, [0], asyncio.Event()

        def answer(status: int) -> int:
            answered[0] += 1
            if answered[0] == tries:
                everyone.set()
            return status

        async def one() -> int:
            try:
                ws = await websockets.connect(url, origin=origin, additional_headers=headers)
            except InvalidStatus as denied:
                return answer(denied.response.status_code)
            status = answer(101)
            await asyncio.wait_for(everyone.wait(), 30)  # held until every try is answered
            await ws.close()
            return status

        answers = await asyncio.gather(*(one() for _ in range(tries)))
        out = await served.output()
    assert answers.count(101) == LIMIT - HEADROOM
    assert answers.count(503) == 50
    assert "Traceback" not in out, out
    assert "Too many open files" not in out, out
