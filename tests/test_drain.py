"""The drain: `lobby serve` answers SIGTERM by handing its sockets back a few at a time."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import httpx
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from lobby.web.drain import REASON
from tests.conftest import Lobby, csrf_from
from tests.openvidu_standin import OpenViduStandin
from tests.test_server import Process, lobby_env, lobby_serve

SOCKETS = 200
WINDOW = 3.0  # LOBBY_DRAIN_SECONDS


async def test_a_draining_lobby_refuses_new_sockets_with_503_and_a_sentence(lobby: Lobby) -> None:
    cookie = await lobby.login("alice")
    lobby.state.readiness.draining = True
    with pytest.raises(InvalidStatus) as refused:
        await websockets.connect(
            lobby.ws_url,
            origin=websockets.Origin(lobby.http),
            additional_headers={"Cookie": f"lobby_session={cookie}"},
        )
    assert refused.value.response.status_code == 503
    assert b"restarting" in refused.value.response.body


async def open_sockets(served: Process, count: int) -> list[websockets.ClientConnection]:
    async with httpx.AsyncClient(base_url=served.url) as http:
        token = csrf_from((await http.get("/")).text)
        reply = await http.post(
            "/login", data={"user": "publisher1", "pass": "pass", "csrf_token": token}
        )
    cookie = reply.cookies["lobby_session"]

    async def one() -> websockets.ClientConnection:
        ws = await websockets.connect(
            served.url.replace("http", "ws") + "/ws",
            origin=websockets.Origin(served.url),
            additional_headers={"Cookie": f"lobby_session={cookie}"},
        )
        assert '"welcome"' in str(await ws.recv())
        return ws

    return [await one() for _ in range(count)]


async def closed_at(ws: websockets.ClientConnection) -> tuple[float, int | None, str | None]:
    """When the server closed `ws` (loop time), with its code and reason."""
    try:
        async for _ in ws:
            pass
    except ConnectionClosed:
        pass
    return asyncio.get_running_loop().time(), ws.close_code, ws.close_reason


async def test_sigterm_fails_readiness_at_once_and_spreads_the_closes_over_the_window(
    tmp_path: Path, standin: OpenViduStandin
) -> None:
    env = lobby_env(
        LOBBY_DATABASE=str(tmp_path / "drain.sqlite3"),
        OPENVIDU_URL=standin.url,
        LOBBY_DRAIN_SECONDS=str(WINDOW),
        LOBBY_MAX_SOCKETS_PER_USER=str(SOCKETS + 10),
    )
    async with lobby_serve(env, "--demo") as served:
        sockets = await open_sockets(served, SOCKETS)
        watchers = [asyncio.create_task(closed_at(ws)) for ws in sockets]
        loop = asyncio.get_running_loop()
        started = loop.time()
        served.proc.send_signal(signal.SIGTERM)
        async with httpx.AsyncClient(base_url=served.url) as http:
            # Another process: polling its endpoint is the only way to wait on it.
            while (ready := await http.get("/readyz")).status_code == 200:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        unready_after = loop.time() - started
        assert list(ready.json()["failing"]) == ["draining"]
        closes = await asyncio.wait_for(asyncio.gather(*watchers), WINDOW + 10)
        out = await served.output(stop=False)
    assert unready_after < 0.5 * WINDOW, unready_after
    assert {(code, reason) for _, code, reason in closes} == {(1012, REASON)}
    offsets = sorted(at - started for at, _, _ in closes)
    early = sum(1 for t in offsets if t < 0.1 * WINDOW)
    # Spread, not all at once: a behavioural check, not a speed target.
    assert early < SOCKETS / 2, offsets
    assert offsets[-1] > 0.7 * WINDOW, offsets
    assert offsets[SOCKETS // 2] > 0.3 * WINDOW, offsets
    assert "draining: closing 200 sockets over 3s" in out
    assert "Traceback" not in out
