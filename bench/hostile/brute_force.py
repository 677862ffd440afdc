"""Case 6: login brute force. Wrong passwords for one account from one address (the
throttle's lock), then the same guesses spread over names and addresses (the bound on
argon2 verifies in flight): how many guesses get through, and what each costs."""

from __future__ import annotations

import asyncio
import math
import os
import re
import secrets
import statistics

import httpx

from bench.hostile.accounts import VICTIM
from bench.hostile.figures import mib, ms, now, secs
from bench.hostile.report import Row
from bench.hostile.server import Bench, RssPeak


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
        f"{spread_n} addresses): statuses {sorted(set(codes))} (503: the line of waiting "
        "checks was full), none locked, all done in "
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
