"""Cases 1 and 1b: requests that never end. Slowloris (a request head that never
finishes) and a slow body (a whole `POST /login` head, then a body that never comes):
how long the server holds such connections, and what each costs it meanwhile."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field

from bench.hostile.accounts import VICTIM
from bench.hostile.figures import mib, ms, now, pct, secs
from bench.hostile.report import Row
from bench.hostile.server import Bench, RssPeak, Server
from bench.hostile.tcp import closed_by_peer, raw_connect


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
            "timeout and `pages.login` awaits `request.form()` before anything else, so one "
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
            "`pages.login` could treat `ClientDisconnect` as the end of the request."
        )
    return row
