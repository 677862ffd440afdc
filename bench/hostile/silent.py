"""Case 3: a silent (half-open) client. A tab that stops answering pings without
closing (a laptop lid shut): how long until the server drops it and its room hears."""

from __future__ import annotations

import math

from bench.hostile.accounts import user
from bench.hostile.figures import secs
from bench.hostile.raw_client import WsClient, close_all, ws_lobby
from bench.hostile.report import Row
from bench.hostile.server import Bench


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
