"""`python -m bench.stalls`: rounds spread over several ping intervals, and the loop's stalls.

The fan-out phase of `bench.run` fires its rounds back to back for a few
seconds: shorter than a ping interval, so a stall that comes once an interval
can fall between them. Here each variant gets N idle sockets, then one
`joined` broadcast (and its `left`) every `--period` seconds for `--seconds`,
and the lobby runs under `bench.lagprobe`, which writes down every event-loop
stall over 5 ms. Variants run one after another at each N, their order rotated.

    python -m bench.stalls --n 1000,10000,15000 --seconds 60 \
        --variant lobby --variant lobby-nopings:pings=off --variant node-ws \
        --variant before:path=/tmp/before --out /tmp/stalls
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import uvloop

from bench import phases
from bench.procs import (
    PY,
    TARGETS,
    Generators,
    Process,
    cpu_ns,
    free_port,
    rss_kib,
    wait_quiet,
)
from bench.run import CONTROLLER_SOCKETS, STUB_SECRET, lobby_env, log, prepare


def parse_variant(text: str) -> dict[str, Any]:
    """`name[:key=value,...]`; keys: server (lobby, node-ws), path (lobby copy), pings (on/off)."""
    name, _, rest = text.partition(":")
    spec: dict[str, Any] = {"name": name, "server": "node-ws" if "node" in name else "lobby"}
    spec["pings"] = "on"
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        spec[key] = value
    return spec


def command(spec: dict[str, Any], port: int, lag_log: Path, gc_log: Path) -> list[str]:
    if spec["server"] == "node-ws":
        return ["node", "bench/peers/node/server.js", str(port)]
    extra = ["--lobby-path", spec["path"]] if spec.get("path") else []
    probe = os.environ.get("STALLS_PROBE", "bench.lagprobe")  # another probe, for profiling
    return [PY, "-m", probe, str(lag_log), "--", "--port", str(port),
            "--gc-log", str(gc_log), *extra]  # fmt: skip


def env_for(spec: dict[str, Any], ctx: dict[str, Any], interval: str) -> dict[str, str]:
    if spec["server"] == "node-ws":
        beat = "0" if spec["pings"] == "off" else str(int(float(interval or "15") * 1000))
        return os.environ | {"HEARTBEAT_MS": beat}
    env = lobby_env(ctx["db"], ctx["stub_url"])
    if spec["pings"] == "off":
        env |= {"LOBBY_PING_INTERVAL": "3600", "LOBBY_PING_TIMEOUT": "60"}
    else:  # the production defaults
        env.pop("LOBBY_PING_INTERVAL", None)
        env.pop("LOBBY_PING_TIMEOUT", None)
        if interval:
            env["LOBBY_PING_INTERVAL"] = interval
    return env


def read_lags(path: Path, start_ns: int, end_ns: int) -> list[tuple[float, float]]:
    """(seconds after start, lag ms) of every stall the probe saw in the window."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        at, lag = line.split()
        if start_ns <= int(at) <= end_ns:
            out.append(((int(at) - start_ns) / 1e9, float(lag)))
    return out


def read_gcs(path: Path, start_ns: int, end_ns: int) -> list[tuple[float, int, float]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        at, gen, ms = line.split()
        if start_ns <= int(at) <= end_ns and int(gen) == 2:
            out.append(((int(at) - start_ns) / 1e9, int(gen), float(ms)))
    return out


def outside(lags: list[tuple[float, float]], at: list[float], lasts: list[float]) -> float:
    """The largest stall that overlaps no round (a broadcast to N sockets is itself one long
    callback: this is what the keepalive, the collector or anything else adds)."""
    spans = [(t, t + ms / 1000) for t, ms in zip(at, lasts, strict=True)]
    return max(
        (lag for end, lag in lags if not any(a < end and end - lag / 1000 < b for a, b in spans)),
        default=0.0,
    )


async def run_one(args: argparse.Namespace, spec: dict[str, Any], n: int,
                  ctx: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    background = await wait_quiet(0.15, args.patience, 1.0)
    name = spec["name"]
    target = TARGETS[spec["server"]]
    port = free_port()
    lag_log, gc_log = ctx["tmp"] / f"lag-{name}-{n}.txt", ctx["tmp"] / f"gc-{name}-{n}.txt"
    server = Process(command(spec, port, lag_log, gc_log), ctx["tmp"] / f"{name}-{n}.log",
                     env_for(spec, ctx, args.ping_interval))  # fmt: skip
    result: dict[str, Any] = {"variant": name, "spec": spec, "n": n, "background_cores": background}
    gens = None
    b = None
    try:
        server.wait_port(port)
        await asyncio.sleep(0.5)
        gens = await Generators.start(n, 8000)
        b = phases.Bench(target, n, port, server, gens, ctx["stub_url"],
                         list(ctx["sessions"][-CONTROLLER_SOCKETS:]))  # fmt: skip
        connected_at = time.monotonic_ns()
        result["connect"] = c = await phases.connect(b, ctx["sessions"], 200)
        log(f"{name} N={n}: {c['connected']} connected, {c['rss_per_socket_kib']:.1f} KiB/socket")
        if args.seconds <= 0:  # memory only
            return result
        trigger = await b.peer("trigger")
        b.drain()
        lasts: list[float] = []
        at: list[float] = []
        events = 0
        cpu_rounds = 0
        start_ns = time.monotonic_ns()
        cpu0 = cpu_ns(server.pid)
        deadline = time.monotonic() + args.seconds
        next_round = time.monotonic()
        r = -2  # two rounds of warm-up, not counted
        while time.monotonic() < deadline:
            await asyncio.sleep(max(0.0, next_round - time.monotonic()))
            next_round += args.period
            # Two rounds: the join's `joined` to everyone, then the leave's last broadcast.
            join = {"type": "join", "room": "bench", "nickname": f"r{r}", "ref": r}
            leave = {"type": "leave", "ref": r}
            for message, kind in ((join, "joined"), (leave, "room_closed")):
                await b.gens.arm(b.dialect, kind)
                c0 = cpu_ns(server.pid)
                t0 = time.monotonic_ns()
                trigger.send(message)
                if not await b.gens.wait_done(b.round_timeout()):
                    raise RuntimeError(f"round {r} ({kind}) did not complete")
                cpu_rounds += cpu_ns(server.pid) - c0
                times = await b.gens.collect()
                if r < 0:
                    cpu_rounds = 0
                    continue
                events += len(times)
                lasts.append((max(times) - t0 // 1000) / 1000)  # the generators stamp in µs
                at.append((t0 - start_ns) / 1e9)
            b.drain()
            r += 1
        end_ns = time.monotonic_ns()
        window_cpu = (cpu_ns(server.pid) - cpu0) / (end_ns - start_ns)
        lags = read_lags(lag_log, start_ns, end_ns)
        median = statistics.median(lasts)
        result["rounds"] = {
            "count": len(lasts), "last_ms": lasts, "at_s": at,
            "p50": median, "p99": phases.pct(lasts, 99), "max": max(lasts),
            "max_over_median": max(lasts) / median,
            "cpu_us_per_event": cpu_rounds / 1000 / max(1, events),
            "server_cores_window": window_cpu,
            "rss_end_kib": rss_kib(server.pid),
            "seconds_after_connect": (start_ns - connected_at) / 1e9,
        }  # fmt: skip
        result["stalls"] = {
            "max_ms": max((lag for _, lag in lags), default=0.0),
            "max_outside_rounds_ms": outside(lags, at, lasts),
            "over_50ms": sum(1 for _, lag in lags if lag > 50),
            "worst": sorted(lags, key=lambda x: -x[1])[:5],
        }  # fmt: skip
        result["full_gcs"] = read_gcs(gc_log, start_ns, end_ns)
        r = result["rounds"]
        log(f"{name} N={n}: {r['count']} rounds, last p50/p99/max {r['p50']:.0f}/{r['p99']:.0f}/"
            f"{r['max']:.0f} ms (max/median {r['max_over_median']:.2f}), "
            f"{r['cpu_us_per_event']:.1f} µs/event, largest stall "
            f"{result['stalls']['max_ms']:.0f} ms ({result['stalls']['max_outside_rounds_ms']:.0f} "
            f"outside rounds), full GCs {result['full_gcs']}")  # fmt: skip
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        log(f"{name} N={n} FAILED: {result['error']}\n{server.tail()}")
    finally:
        if b is not None:
            for peer in b.peers.values():
                if peer.transport is not None:
                    peer.transport.abort()
        if gens is not None:
            await gens.stop()
        server.stop()
    return result


async def run_all(args: argparse.Namespace, out: Path, tmp: Path, sessions: list[str]) -> None:
    stub_port = free_port()
    stub = Process([PY, "-m", "bench.openvidu_stub", str(stub_port), STUB_SECRET], tmp / "stub.log")
    results: list[dict[str, Any]] = []
    specs = [parse_variant(v) for v in args.variant]
    try:
        stub.wait_port(stub_port)
        ctx = {"tmp": tmp, "db": tmp / "bench.sqlite3", "sessions": sessions,
               "stub_url": f"http://127.0.0.1:{stub_port}"}  # fmt: skip
        for i, n in enumerate(args.n):
            order = specs[i % len(specs) :] + specs[: i % len(specs)]
            for spec in order:
                results.append(await run_one(args, spec, n, ctx))
                data = {"args": vars(args), "load": os.getloadavg(), "results": results}
                (out / "stalls.json").write_text(json.dumps(data, indent=1) + "\n")
    finally:
        stub.stop()
    log(f"logs in {tmp}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--n", type=lambda s: [int(x) for x in s.split(",")], default=[15000])
    parser.add_argument("--variant", action="append", default=[])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--period", type=float, default=0.45, help="seconds between rounds")
    parser.add_argument("--ping-interval", default="", help="LOBBY_PING_INTERVAL (default: 15)")
    parser.add_argument("--patience", type=float, default=120.0)
    parser.add_argument("--out", default="/tmp/stalls")
    args = parser.parse_args()
    args.variant = args.variant or ["lobby", "lobby-nopings:pings=off"]
    args.lobby_path = None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    prep = argparse.Namespace(out=args.out, lobby_path=None, n=args.n)
    uvloop.run(run_all(args, *prepare(prep)))


if __name__ == "__main__":
    main()
