"""`python -m bench.cluster`: one event's fan-out across lobby instances sharing one Redis.

Issue 13, item 6. For each size N: N tabs on one instance (presence in memory, as a
single process runs, written through to the SQLite roster), on one instance with presence
through Redis (no roster: the same path as a cluster's), then the same N over two
instances (N/2 each, through Redis); a trigger on the first instance joins a room and
leaves it, round after round, and every tab stamps the event's arrival (the generator of
`bench.run`). Then `--hold` sockets over three instances, with a few rounds to all of them.

The hop (publish on one instance → first write on the other) is a debug-only timing:
each instance runs `bench.serve_lobby --hop-log`, which writes the time of every append
sent to Redis and of every broadcast; the hop of an event is the first broadcast on
another instance after the issuing instance's append. Both clocks are CLOCK_MONOTONIC,
which every process on the machine shares.

    python -m bench.cluster                        # `make bench-cluster`: 2,000, 10,000, 30,000
    python -m bench.cluster --sizes 2000 --hold 0  # the shape, in a minute
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
import uvloop

from bench import phases
from bench.procs import (
    PY,
    ROOT,
    TARGETS,
    Generators,
    Process,
    cpu_ns,
    free_port,
    rss_kib,
    wait_quiet,
)
from bench.run import CONTROLLER_SOCKETS, STUB_SECRET, lobby_env, log

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def start_redis(tmp: Path) -> tuple[Process, str]:
    port = free_port()
    # fmt: off
    server = Process([REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                      "--appendonly", "no", "--dir", str(tmp)], tmp / "redis.log")
    # fmt: on
    server.wait_port(port)
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while not client.ping() and time.monotonic() < deadline:
        time.sleep(0.01)
    return server, f"redis://127.0.0.1:{port}/0"


async def spread(
    gens: Generators, ports: list[int], sessions: list[str], concurrency: int
) -> dict[str, Any]:
    """Open len(sessions) tabs, generator i on instance i % len(ports), evenly."""
    procs, n = gens.procs, len(sessions)
    shares = [n // len(procs) + (i < n % len(procs)) for i in range(len(procs))]
    commands, start = [], 0
    for i, share in enumerate(shares):
        port = ports[i % len(ports)]
        commands.append(
            {
                "cmd": "connect", "host": "127.0.0.1", "port": port, "path": "/ws",
                "dialect": "json", "origin": f"http://127.0.0.1:{port}", "count": share,
                "cookies": sessions[start : start + share], "source": f"127.0.0.{2 + i}",
                "concurrency": concurrency,
            }
        )  # fmt: skip
        start += share
    began = time.monotonic()
    replies = await asyncio.gather(*(g.call(c) for g, c in zip(procs, commands, strict=True)))
    kinds: dict[str, int] = {}
    for r in replies:
        for kind, count in r["error_kinds"].items():
            kinds[kind] = kinds.get(kind, 0) + count
    return {
        "connected": sum(r["connected"] for r in replies),
        "errors": sum(r["errors"] for r in replies),
        "error_kinds": kinds,
        "seconds": time.monotonic() - began,
    }


def stamps(path: Path, kind: str, window: tuple[int, int]) -> list[int]:
    """The times of kind `kind` (`p`: an append sent, `b`: a broadcast) in a hop log."""
    lines = path.read_text().split("\n")
    found = (int(line[2:]) for line in lines if line.startswith(kind))
    return sorted(t for t in found if window[0] <= t <= window[1])


def hops(logs: list[Path], window: tuple[int, int]) -> list[float]:
    """Milliseconds from each append of instance 0 to the first broadcast on another instance.

    Rounds run one at a time, so the broadcast that follows an append (before the
    next append) is that append's event."""
    read = functools.partial(stamps, window=window)
    pubs = read(logs[0], "p")
    others = sorted(t for path in logs[1:] for t in read(path, "b"))
    found = []
    for pub, following in zip(pubs, [*pubs[1:], window[1]], strict=True):
        after = next((t for t in others if pub < t <= following), None)
        if after is not None:
            found.append((after - pub) / 1e6)
    return found


def run_delay_ns(pid: int) -> int:
    """Time every thread of `pid` spent runnable but waiting for a CPU so far (schedstat)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            total += int((task / "schedstat").read_text().split()[1])
    return total


def lobby_command(port: int, hop_log: Path, lag_log: Path) -> list[str]:
    # fmt: off
    return [PY, "-m", "bench.serve_lobby", "--port", str(port), "--hop-log", str(hop_log),
            "--lag-log", str(lag_log), "--gc-log", str(lag_log.with_suffix(".gc"))]
    # fmt: on


def stall_max(path: Path, window: tuple[int, int]) -> float:
    """The longest stall (ms, over 5 ms) `serve_lobby --lag-log` wrote in `window`."""
    if not path.exists():
        return 0.0
    lags = (line.split() for line in path.read_text().splitlines())
    return max((float(ms) for t, ms in lags if window[0] <= int(t) <= window[1]), default=0.0)


async def run_config(
    args: argparse.Namespace, ctx: dict[str, Any], n: int, k: int, shared: bool, rounds: int
) -> dict[str, Any]:
    """`n` tabs over `k` instances (`shared`: presence through Redis); `rounds` events."""
    label = f"{k} x {n // k:,}" + (" (Redis)" if shared else " (memory)")
    tag = f"{n}-{k}-{'redis' if shared else 'memory'}"
    env = lobby_env(ctx["db"], ctx["stub_url"])
    if shared:  # each configuration its own keys: a fresh log, no earlier presence
        env |= {"LOBBY_REDIS_URL": ctx["redis_url"], "LOBBY_REDIS_PREFIX": f"bench-{tag}:"}
    ports = [free_port() for _ in range(k)]
    hop_logs = [ctx["tmp"] / f"hops-{tag}-{i}.txt" for i in range(k)]
    lag_logs = [ctx["tmp"] / f"lag-{tag}-{i}.txt" for i in range(k)]
    result: dict[str, Any] = {"label": label, "n": n, "instances": k, "redis": shared}
    result["background_cores"] = await wait_quiet(0.3, args.patience)
    result["load_average"] = os.getloadavg()
    servers = [
        Process(lobby_command(port, hop, lag), ctx["tmp"] / f"lobby-{tag}-{i}.log", env)
        for i, (port, hop, lag) in enumerate(zip(ports, hop_logs, lag_logs, strict=True))
    ]
    gens: Generators | None = None
    b: phases.Bench | None = None
    try:
        for server, port in zip(servers, ports, strict=True):
            server.wait_port(port)
        rss0 = [rss_kib(s.pid) for s in servers]
        per_instance = -(-n // k)
        # Generator i serves instance i % k: each instance gets the same share of them.
        gens = await Generators.start(k * -(-per_instance // args.per_process), 1)
        result["connect"] = c = await spread(gens, ports, ctx["sessions"][:n], args.concurrency)
        log(f"{label}: {c['connected']} connected in {c['seconds']:.1f} s, {c['errors']} errors")
        await asyncio.sleep(1.0)  # let the servers settle (GC, lazily grown buffers)
        result["rss_kib"] = [rss_kib(s.pid) for s in servers]
        result["rss_per_socket_kib"] = [
            (after - before) / max(1, n // k)
            for before, after in zip(rss0, result["rss_kib"], strict=True)
        ]
        cookies = list(ctx["sessions"][-CONTROLLER_SOCKETS:])
        b = phases.Bench(TARGETS["lobby"], n, ports[0], servers[0], gens, ctx["stub_url"], cookies)
        await b.peer("trigger")
        await phases.fanout(b, 2)  # warm-up
        cpu0, wall0 = [cpu_ns(s.pid) for s in servers], time.monotonic_ns()
        redis0, waited0 = cpu_ns(ctx["redis_pid"]), [run_delay_ns(s.pid) for s in servers]
        fan = await phases.fanout(b, rounds)
        wall = time.monotonic_ns() - wall0
        # How long each instance was ready to run but waited for a core: the machine's
        # share of the tails, not the lobby's (ms per round).
        result["cpu_wait_ms_per_round"] = [
            (run_delay_ns(s.pid) - w) / 1e6 / max(1, fan["rounds"])
            for s, w in zip(servers, waited0, strict=True)
        ]
        result["cpu_cores"] = [
            (cpu_ns(s.pid) - c) / wall for s, c in zip(servers, cpu0, strict=True)
        ]
        result["redis_cores"] = (cpu_ns(ctx["redis_pid"]) - redis0) / wall
        keep = ("rounds", "stalled", "missing", "last_ms", "last_p50", "last_p99", "last_max",
                "delivery_p50", "delivery_p99", "events", "gen_cores", "other_cores")  # fmt: skip
        result["fanout"] = {key: fan[key] for key in keep}
        # What the rest of the machine did meanwhile (other people's work): the phase's
        # count leaves out the first instance and the generators only.
        rest = sum(result["cpu_cores"][1:]) + result["redis_cores"]
        result["other_cores"] = fan["other_cores"] - rest
        spans = fan["spans_ns"]
        if spans:  # each instance's longest event-loop stall during the rounds
            window = (spans[0][0], spans[-1][1])
            result["stall_max_ms"] = [stall_max(path, window) for path in lag_logs]
            # One append per change in the cluster, one broadcast per event per instance,
            # whatever the number of tabs (a round: a join and a leave).
            count = len(spans) - 1  # the last round's leave falls outside the window
            appends = sum(len(stamps(path, "p", window)) for path in hop_logs)
            result["appends_per_round"] = appends / count if count else None
            result["broadcasts_per_round"] = [
                len(stamps(path, "b", window)) / count if count else None for path in hop_logs
            ]
        if k > 1 and spans:
            window = (spans[0][0], spans[-1][1])
            hop = hops(hop_logs, window)
            result["hop_ms"] = hop
            result["hop_p50"], result["hop_p99"] = phases.pct(hop, 50), phases.pct(hop, 99)
            result["hop_max"] = max(hop, default=None)
        counts = await gens.all({"cmd": "counts"})
        result["open"] = sum(c["open"] for c in counts)
        result["lost"] = sum(c["lost"] for c in counts)
        log(f"{label}: last-client p50/p99 {fan['last_p50']:.1f}/{fan['last_p99']:.1f} ms, "
            f"hop p50/p99 {result.get('hop_p50')}/{result.get('hop_p99')} ms, "
            f"{result['lost']} lost, stalls {result.get('stall_max_ms')} ms, "
            f"load {result['load_average'][0]:.2f}")  # fmt: skip
    except Exception as exc:  # one configuration failing must not lose the others' numbers
        result["error"] = f"{type(exc).__name__}: {exc}"
        tails = "\n".join(s.tail() for s in servers)
        log(f"{label} FAILED: {result['error']}\n{tails}")
    finally:
        if b is not None:
            for peer in b.peers.values():
                if peer.transport is not None:
                    peer.transport.abort()
        if gens is not None:
            await gens.stop()
        for server in servers:
            server.stop()
    return result


def ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def table(results: list[dict[str, Any]]) -> list[str]:
    rows = [
        "| Instances | Tabs | last-client p50 (ms) | p99 | p99 ÷ one instance (memory / Redis) "
        "| hop p50 / p99 (ms) | CPU per instance (cores) | waited for a core (ms per round) "
        "| longest stall (ms) | Redis (cores) | RSS per instance (MiB) | errors + lost "
        "| other work (cores) | load average |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    single: dict[tuple[int, bool], float] = {}  # (tabs, through Redis): one instance's p99
    for r in results:
        if "error" in r:
            rows.append(f"| {r['label']} | {r['n']:,} | failed: {r['error'][:80]} |")
            continue
        fan = r["fanout"]
        if r["instances"] == 1:
            single[r["n"], r["redis"]] = fan["last_p99"]
        bases = [single.get((r["n"], shared)) for shared in (False, True)]
        ratio = " / ".join(f"{fan['last_p99'] / b:.2f}x" if b else "—" for b in bases)
        ratio = ratio if r["instances"] > 1 else "—"
        hop = f"{ms(r.get('hop_p50'))} / {ms(r.get('hop_p99'))}" if r["instances"] > 1 else "—"
        cpu = " / ".join(f"{c:.2f}" for c in r["cpu_cores"])
        rss = " / ".join(f"{kib / 1024:.0f}" for kib in r["rss_kib"])
        bad = r["connect"]["errors"] + r["lost"] + fan["missing"]
        load = " ".join(f"{x:.2f}" for x in r["load_average"])
        waited = " / ".join(f"{w:.1f}" for w in r.get("cpu_wait_ms_per_round", []))
        stalls = " / ".join(f"{x:.0f}" for x in r.get("stall_max_ms", []))
        rows.append(
            f"| {r['label']} | {r['n']:,} | {ms(fan['last_p50'])} | {ms(fan['last_p99'])} | "
            f"{ratio} | {hop} | {cpu} | {waited or '—'} | {stalls} | {r['redis_cores']:.2f} | "
            f"{rss} | {bad} | {r['other_cores']:.2f} | {load} |"
        )
    return rows


def provision(args: argparse.Namespace, tmp: Path) -> list[str]:
    """One user and session per tab, and the controller's, in a fresh SQLite file."""
    count = str(max([*args.sizes, args.hold]) + CONTROLLER_SOCKETS)
    made = subprocess.run(
        [PY, "-m", "bench.provision", str(tmp / "bench.sqlite3"), count],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return made.stdout.split()


async def run_all(args: argparse.Namespace, tmp: Path, sessions: list[str]) -> dict[str, Any]:
    stub_port = free_port()
    stub = Process([PY, "-m", "bench.openvidu_stub", str(stub_port), STUB_SECRET], tmp / "stub.log")
    redis_server, redis_url = start_redis(tmp)
    ctx = {"tmp": tmp, "db": tmp / "bench.sqlite3", "sessions": sessions,
           "stub_url": f"http://127.0.0.1:{stub_port}", "redis_url": redis_url,
           "redis_pid": redis_server.pid}  # fmt: skip
    results: list[dict[str, Any]] = []
    try:
        stub.wait_port(stub_port)
        for n in args.sizes:
            # One instance as it runs alone (presence in memory, written through to the
            # SQLite roster), the same through Redis, then two instances through Redis.
            configs = [(1, False), (1, True), (2, True)]
            for k, shared in configs:
                results.append(await run_config(args, ctx, n, k, shared, args.rounds))
        if args.hold:
            results.append(await run_config(args, ctx, args.hold, 3, True, args.hold_rounds))
    finally:
        stub.stop()
        redis_server.stop()
        if not args.keep_logs:
            shutil.rmtree(tmp, ignore_errors=True)
    return {"cores": os.cpu_count(), "python": sys.version.split()[0], "args": vars(args),
            "results": results}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--sizes",
        type=lambda s: [int(x) for x in s.split(",") if x],
        default=[2000, 10000],
        help="tabs: on one instance, then on two",
    )
    parser.add_argument(
        "--hold", type=int, default=30000, help="tabs over three instances (0: none)"
    )
    parser.add_argument("--rounds", type=int, default=60, help="events (a join and a leave each)")
    parser.add_argument("--hold-rounds", type=int, default=5)
    parser.add_argument("--per-process", type=int, default=8000, help="tabs per generator")
    parser.add_argument("--concurrency", type=int, default=200, help="handshakes in flight each")
    parser.add_argument(
        "--patience", type=float, default=120.0, help="seconds to wait for a quiet machine"
    )
    parser.add_argument("--out", default=str(ROOT / "docs/bench/cluster"))
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args()
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="lobby-bench-cluster-"))
    data = uvloop.run(run_all(args, tmp, provision(args, tmp)))
    data["elapsed_s"] = time.monotonic() - started
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(data, indent=1) + "\n")
    text = "\n".join(table(data["results"])) + "\n"
    (out / "results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
