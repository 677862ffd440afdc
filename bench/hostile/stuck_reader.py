"""Case 4: a reader that never reads. A socket with a small window that stops reading
while a room churns: when the server cuts it off (4008), how much was queued for it, and
what it did to the fan-out latency of everyone else."""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import math
import re
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from bench.hostile.accounts import DRIVERS, user
from bench.hostile.figures import mib, now, secs, spread
from bench.hostile.raw_client import (
    TextHandler,
    WsClient,
    close_all,
    gather_limited,
    upgrade_request,
    ws_lobby,
)
from bench.hostile.report import Row
from bench.hostile.server import Bench
from bench.hostile.tcp import SsInfo, raw_connect, ss_info, unread_bytes

# lobby.web.uvicorn_adapter.Writer.cut: seconds between the 4008 close and the abort.
CUT_LINGER = 2.0


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
                sockets = (await http.get("/readyz")).json()["sockets"]
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
