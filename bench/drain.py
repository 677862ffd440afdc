"""`python -m bench.drain`: the reconnect rate a second instance sees while the first drains.

Starts two `lobby serve` processes, A and B (peer-to-peer mode, demo users, one
SQLite file and one secret key, so a login session is good on both), opens
`--sockets` lobby sockets to A from `--procs` client processes (each may hold
20,000 open files), then sends A SIGTERM. Every client behaves like a page
(static/socket.js): on close 1012 it waits a random moment within `--jitter`
seconds, then connects to B (the load balancer's other instance) and counts the
moment B's `welcome` arrives; a refused or failed attempt is retried with the
page's backoff (full jitter, 0.5 s doubling to 10 s). Printed: how the closes,
the attempts B sees and the reconnects spread after SIGTERM, as the most and the
mean per 100 ms and per second.

    python -m bench.drain --sockets 10000 --procs 5 --drain 5 --jitter 5
    python -m bench.drain --sockets 10000 --procs 5 --drain 0 --jitter 0   # all at once
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import multiprocessing as mp
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

import httpx
import websockets

SECRET_KEY = "bench-drain-secret-key-0123456789"
RETRIES = 8
# When a page's socket closed, its close code, when it tried B, when B welcomed it (None: never).
Outcome = tuple[float, int | None, list[float], float | None]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def start_lobby(port: int, database: Path, drain: float) -> subprocess.Popen[bytes]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("LOBBY_", "OPENVIDU_"))},
        "LOBBY_DEMO": "true",
        "LOBBY_MEDIA": "p2p",
        "LOBBY_SECRET_KEY": SECRET_KEY,
        "LOBBY_DATABASE": str(database),
        "LOBBY_MAX_SOCKETS": "19000",
        "LOBBY_MAX_SOCKETS_PER_USER": "19000",
        "LOBBY_LOG_LEVEL": "warning",
        "LOBBY_DRAIN_SECONDS": str(drain),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "lobby", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_ready(url: str) -> None:
    for _ in range(600):
        try:
            if httpx.get(f"{url}/healthz").status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.05)
    raise SystemExit(f"no lobby at {url}")


def login(url: str) -> str:
    with httpx.Client(base_url=url) as http:
        page = http.get("/").text
        token = page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        reply = http.post(
            "/login", data={"user": "publisher1", "pass": "pass", "csrf_token": token}
        )
        return reply.cookies["lobby_session"]


async def connect(url: str, cookie: str) -> websockets.ClientConnection:
    ws = await websockets.connect(
        url.replace("http", "ws") + "/ws",
        origin=websockets.Origin(url),
        additional_headers={"Cookie": f"lobby_session={cookie}"},
        open_timeout=60,
        ping_interval=None,
        compression=None,
    )
    await ws.recv()  # welcome
    return ws


async def clients(
    count: int, first: str, second: str, cookie: str, jitter: float, pipe: Connection
) -> None:
    gate = asyncio.Semaphore(100)

    async def open_one() -> websockets.ClientConnection:
        async with gate:
            return await connect(first, cookie)

    sockets = await asyncio.gather(*(open_one() for _ in range(count)))
    pipe.send("ready")
    kept: list[websockets.ClientConnection] = []
    failures: collections.Counter[str] = collections.Counter()

    async def page(ws: websockets.ClientConnection) -> Outcome:
        try:
            async for _ in ws:
                pass
        except websockets.ConnectionClosed:
            pass
        closed, attempts = time.time(), list[float]()
        if ws.close_code != 1012:
            return closed, ws.close_code, attempts, None
        await asyncio.sleep(random.random() * jitter)
        for attempt in range(RETRIES):
            attempts.append(time.time())
            try:
                kept.append(await connect(second, cookie))
            except (OSError, TimeoutError, websockets.InvalidHandshake) as exc:
                status = getattr(getattr(exc, "response", None), "status_code", "")
                failures[f"{type(exc).__name__} {status}".strip()] += 1
                await asyncio.sleep(random.random() * min(10.0, 0.5 * 2**attempt))
                continue
            return closed, ws.close_code, attempts, time.time()
        return closed, ws.close_code, attempts, None

    results = await asyncio.gather(*(page(ws) for ws in sockets))
    pipe.send((results, dict(failures)))
    pipe.recv()  # hold the sockets on B until every process is done
    await asyncio.gather(*(ws.close() for ws in kept), return_exceptions=True)


def client_process(
    count: int, first: str, second: str, cookie: str, jitter: float, pipe: Connection
) -> None:
    asyncio.run(clients(count, first, second, cookie, jitter, pipe))


def rates(times: list[float], start: float, width: float) -> tuple[int, float]:
    """The most reconnects in one `width`-second bucket after `start`, and the mean over the
    buckets from the first to the last one that saw any."""
    if not times:
        return 0, 0.0
    buckets: dict[int, int] = {}
    for t in times:
        key = int((t - start) // width)
        buckets[key] = buckets.get(key, 0) + 1
    span = max(buckets) - min(buckets) + 1
    return max(buckets.values()), len(times) / span


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=10_000)
    parser.add_argument("--procs", type=int, default=5)
    parser.add_argument("--drain", type=float, default=5.0, help="LOBBY_DRAIN_SECONDS of A")
    parser.add_argument("--jitter", type=float, default=5.0, help="pages' random wait after 1012")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        database = Path(folder) / "lobby.sqlite3"
        port_a, port_b = free_port(), free_port()
        a = start_lobby(port_a, database, args.drain)
        wait_ready(f"http://127.0.0.1:{port_a}")  # A migrates the database first
        b = start_lobby(port_b, database, args.drain)
        url_a, url_b = f"http://127.0.0.1:{port_a}", f"http://127.0.0.1:{port_b}"
        wait_ready(url_b)
        try:
            cookie = login(url_a)
            pipes, procs = [], []
            for i in range(args.procs):
                share = args.sockets // args.procs + (i < args.sockets % args.procs)
                ours, theirs = mp.Pipe()
                proc = mp.Process(
                    target=client_process,
                    args=(share, url_a, url_b, cookie, args.jitter, theirs),
                )
                proc.start()
                pipes.append(ours)
                procs.append(proc)
            opened = time.time()
            for pipe in pipes:
                assert pipe.recv() == "ready"
            print(f"{args.sockets} sockets open on A in {time.time() - opened:.1f}s", flush=True)
            time.sleep(1)
            start = time.time()
            a.send_signal(signal.SIGTERM)
            results: list[Outcome] = []
            failures: collections.Counter[str] = collections.Counter()
            for pipe in pipes:
                got, failed = pipe.recv()
                results += got
                failures.update(failed)
            for pipe in pipes:
                pipe.send("done")
            for proc in procs:
                proc.join(30)
            a.wait(30)
        finally:
            for server in (a, b):
                if server.poll() is None:
                    server.kill()
                    server.wait()
    closes = [c for c, _, _, _ in results]
    attempts = [t for _, _, tried, _ in results for t in tried]
    reconnects = [r for _, _, _, r in results if r is not None]
    codes: dict[str, int] = {}
    for _, code, _, _ in results:
        codes[str(code)] = codes.get(str(code), 0) + 1
    summary = {
        "sockets": args.sockets,
        "drain_seconds": args.drain,
        "jitter_seconds": args.jitter,
        "close_codes": codes,
        "closes_spread_s": round(max(closes) - start, 2),
        "attempts": len(attempts),
        "attempts_per_100ms_max_mean": [round(x, 1) for x in rates(attempts, start, 0.1)],
        "attempts_per_s_max_mean": [round(x, 1) for x in rates(attempts, start, 1.0)],
        "failed_attempts": dict(failures),
        "reconnected": len(reconnects),
        "last_reconnect_s": round(max(reconnects) - start, 2) if reconnects else None,
        "reconnects_per_100ms_max_mean": [round(x, 1) for x in rates(reconnects, start, 0.1)],
        "reconnects_per_s_max_mean": [round(x, 1) for x in rates(reconnects, start, 1.0)],
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
