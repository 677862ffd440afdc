"""How long a presence command takes to reach every instance of a cluster.

    .venv/bin/python -m bench.cluster_rtt [--n 2000] [--rate 500]

Starts a redis-server on a free loopback port (no persistence), an observer
instance in a second process, and an issuing instance in this one (both
`lobby.cluster.node.RedisPresence`). The issuer sends joins and leaves: first one
at a time (each awaited), then `--rate` per second without waiting. For each
command we time, with the machine-wide monotonic clock both processes share:
- issue → applied here: what `execute` costs its caller (append, read back, apply);
- issue → applied on the other instance: when that instance's sockets could be told.
Writes docs/bench/cluster.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from redis.utils import HIREDIS_AVAILABLE  # noqa: E402

from lobby.cluster.commands import Command, Join, Leave  # noqa: E402
from lobby.cluster.node import RedisPresence  # noqa: E402
from lobby.cluster.seam import Applied  # noqa: E402
from lobby.rules.presence import Participant  # noqa: E402


def commands(n: int, tag: str, instance: str) -> list[Command]:
    """`n` commands: a join and the leave of the same socket, over and over."""
    out: list[Command] = []
    for i in range(n // 2):
        person = Participant(f"{tag}{i}", "bench", "Bench", "PUBLISHER")
        socket = f"{instance}:{i}"
        out += [Join(socket, person, "R", f"k{tag}{i}", f"h{i}"), Leave(socket)]
    return out


async def observe(url: str) -> None:
    """The second instance: note when each command applies; print them all at the end."""
    seen: dict[str, int] = {}

    def hear(applied: Applied) -> None:
        seen[f"{applied.seq}"] = time.monotonic_ns()

    node = RedisPresence(url, name="observer", grace=10, listener=hear)
    await node.start()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await node.stop()
    print(json.dumps(seen), flush=True)


async def issue(url: str, n: int, rate: float) -> dict[str, dict[str, int]]:
    node = RedisPresence(url, name="issuer", grace=10)
    await node.start()
    sent: dict[str, dict[str, int]] = {"closed": {}, "open": {}}
    local: dict[str, int] = {}
    for command in commands(n, "c", node.instance):
        start = time.monotonic_ns()
        applied = await node.execute(command)
        local[str(applied.seq)] = time.monotonic_ns()
        sent["closed"][str(applied.seq)] = start

    async def one(command: Command, start: int) -> None:
        applied = await node.execute(command)
        local[str(applied.seq)] = time.monotonic_ns()
        sent["open"][str(applied.seq)] = start

    tasks = []
    began = time.monotonic()
    for i, command in enumerate(commands(n, "o", node.instance)):
        # Open loop: send on schedule, whatever the answers do.
        delay = began + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(command, time.monotonic_ns())))
    await asyncio.gather(*tasks)
    await node.stop()
    return {"local": local, **sent}


def percentiles(samples_ns: list[int]) -> tuple[float, float, float]:
    ms = sorted(s / 1e6 for s in samples_ns)
    q = statistics.quantiles(ms, n=100)
    return q[49], q[98], ms[-1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--observe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.observe:
        asyncio.run(observe(args.observe))
        return
    load = os.getloadavg()[0]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workdir = tempfile.mkdtemp(prefix="bench-redis-")
    redis_server = shutil.which("redis-server") or "/usr/bin/redis-server"
    # fmt: off
    server = subprocess.Popen([redis_server, "--port", str(port), "--bind", "127.0.0.1",
                               "--save", "", "--appendonly", "no", "--dir", workdir],
                              stdout=subprocess.DEVNULL)
    # fmt: on
    url = f"redis://127.0.0.1:{port}/0"
    observer = None
    try:
        time.sleep(0.3)  # redis-server starts in ~20 ms; RedisPresence retries anyway
        observer = subprocess.Popen(
            [sys.executable, "-m", "bench.cluster_rtt", "--observe", url],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert observer.stdout is not None
        assert observer.stdin is not None
        assert observer.stdout.readline().strip() == "ready"
        issued = asyncio.run(issue(url, args.n, args.rate))
        time.sleep(0.5)
        observer.stdin.write("done\n")
        observer.stdin.flush()
        seen = json.loads(observer.stdout.readline())
    finally:
        if observer is not None:
            observer.wait(10)
        server.terminate()
        server.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    version = subprocess.run([redis_server, "--version"], capture_output=True, text=True)
    version = version.stdout.split()[2].removeprefix("v=")
    rows = []
    for phase, label in (("closed", "one at a time"), ("open", f"{args.rate:g}/s, no waiting")):
        starts = issued[phase]
        here = percentiles([issued["local"][s] - t for s, t in starts.items()])
        there = percentiles([seen[s] - t for s, t in starts.items()])
        cells = " | ".join(f"{v:.2f}" for v in here + there)
        rows.append(f"| {label} | {len(starts)} | {cells} |")
    report = "\n".join(
        [
            "# Cluster command round trip",
            "",
            "`python -m bench.cluster_rtt` (bench/cluster_rtt.py): one Redis on loopback, an",
            "issuing instance and an observing instance in two processes; joins and leaves",
            "alternate. Milliseconds from `execute` called to the command applied.",
            f"Machine: {os.cpu_count()} cores, {platform.machine()}, Python "
            f"{platform.python_version()}, redis-server {version}, hiredis "
            f"{'yes' if HIREDIS_AVAILABLE else 'no'}; load average before the run "
            f"{load:.2f} (other work shares these cores).",
            "",
            "| Load | Commands | issuer p50 (ms) | issuer p99 | issuer max "
            "| other instance p50 (ms) | p99 | max |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
            *rows,
            "",
        ]
    )
    out = ROOT / "docs" / "bench" / "cluster.md"
    out.write_text(report)
    print(report)


if __name__ == "__main__":
    main()
