"""Case 2: idle authenticated sockets. What a lobby tab that says nothing costs the
server, and whether that memory comes back when the tabs close."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable

from bench.hostile.accounts import user
from bench.hostile.figures import mib, now
from bench.hostile.raw_client import WsClient, close_all, gather_limited, ws_lobby
from bench.hostile.report import Row
from bench.hostile.server import Bench, Server


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
            sockets = (await srv.readyz())["sockets"]
            rss = await srv.settled_rss(1.5)
        finally:
            close_all(clients)
        async with asyncio.timeout(30):
            # The count lives in another process: polling it is the only way to wait.
            while (await srv.readyz())["sockets"]:  # noqa: ASYNC110
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
        f"in flight); `/readyz` counted {sockets:,}",
        f"RSS {mib(rss0)} → {mib(rss1)} with {count:,} open: **{per_socket:.1f} KiB per socket** "
        f"(user space, kernel buffers not included) → "
        f"{mib(rss2)} after closing (kept by the allocator) → {mib(rss3)} with {count:,} "
        f"again → {mib(rss4)}: reused, not leaked; CPU {cpu / count * 1000:.2f} ms per handshake",
    )
