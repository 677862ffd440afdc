"""`python -m bench.stalls`: variants of the lobby (and Node) in paced rounds, pings on or off.

`bench.phases.paced` alone, for comparing variants: each gets N idle sockets,
then one `joined` and one `room_closed` broadcast every `--period` seconds for
`--seconds`, with its event-loop stall probe on (`serve_lobby --lag-log`, Node's
`LAG_LOG`). A variant is `name[:key=value,...]`: `path=` a copy of the lobby
package (see bench/README.md), `pings=off` (LOBBY_PING_INTERVAL=3600; Node
without its heartbeat); `node` in the name runs Node `ws`. Variants run one
after another at each N, their order rotated. Results: `<out>/stalls.json`.

    python -m bench.stalls --n 1000,10000,15000 --seconds 60 \
        --variant lobby --variant lobby-nopings:pings=off --variant node-ws \
        --variant before:path=/tmp/before --out /tmp/stalls
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from pathlib import Path
from typing import Any

import uvloop

from bench import phases
from bench.procs import (
    PY,
    TARGETS,
    Generators,
    Process,
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
    return [PY, "-m", "bench.serve_lobby", "--port", str(port), "--lag-log", str(lag_log),
            "--gc-log", str(gc_log), *extra]  # fmt: skip


def env_for(
    spec: dict[str, Any], ctx: dict[str, Any], interval: str, lag_log: Path
) -> dict[str, str]:
    if spec["server"] == "node-ws":
        beat = "0" if spec["pings"] == "off" else str(int(float(interval or "15") * 1000))
        return os.environ | {"HEARTBEAT_MS": beat, "LAG_LOG": str(lag_log)}
    env = lobby_env(ctx["db"], ctx["stub_url"])
    if spec["pings"] == "off":
        env |= {"LOBBY_PING_INTERVAL": "3600", "LOBBY_PING_TIMEOUT": "60"}
    else:  # the production defaults
        env.pop("LOBBY_PING_INTERVAL", None)
        env.pop("LOBBY_PING_TIMEOUT", None)
        if interval:
            env["LOBBY_PING_INTERVAL"] = interval
    return env


async def run_one(args: argparse.Namespace, spec: dict[str, Any], n: int,
                  ctx: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    background = await wait_quiet(0.15, args.patience, 1.0)
    name = spec["name"]
    target = TARGETS[spec["server"]]
    port = free_port()
    lag_log, gc_log = ctx["tmp"] / f"lag-{name}-{n}.txt", ctx["tmp"] / f"gc-{name}-{n}.txt"
    server = Process(command(spec, port, lag_log, gc_log), ctx["tmp"] / f"{name}-{n}.log",
                     env_for(spec, ctx, args.ping_interval, lag_log))  # fmt: skip
    result: dict[str, Any] = {"variant": name, "spec": spec, "n": n, "background_cores": background}
    gens = None
    b = None
    try:
        server.wait_port(port)
        await asyncio.sleep(0.5)
        gens = await Generators.start(n, 8000)
        b = phases.Bench(target, n, port, server, gens, ctx["stub_url"],
                         list(ctx["sessions"][-CONTROLLER_SOCKETS:]))  # fmt: skip
        result["connect"] = c = await phases.connect(b, ctx["sessions"], 200)
        log(f"{name} N={n}: {c['connected']} connected, {c['rss_per_socket_kib']:.1f} KiB/socket")
        if args.seconds <= 0:  # memory only
            return result
        await b.peer("trigger")
        result["paced"] = f = await phases.paced(b, args.seconds, args.period, lag_log)
        result["rss_end_kib"] = rss_kib(server.pid)
        if target.auth:
            result["gc"] = phases.gc_summary(gc_log, result)
        log(f"{name} N={n}: {f['rounds']} rounds, last p50/p99/max {f['last_p50']:.0f}/"
            f"{f['last_p99']:.0f}/{f['last_max']:.0f} ms (max/median {f['max_over_median']:.2f}), "
            f"{f['cpu_us_per_event']:.1f} µs/event, largest stall {f['stall_max_ms']:.0f} ms "
            f"({f['stall_outside_rounds_ms']:.0f} outside rounds), full GCs "
            f"{result.get('gc', {}).get('in_paced_ms')}")  # fmt: skip
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
    (out / "stalls.md").write_text(markdown(data))
    log(f"logs in {tmp}; {out / 'stalls.md'}")


def markdown(data: dict[str, Any]) -> str:
    """One table per N: every variant's paced rounds, stalls, CPU and memory."""
    out = [
        f"Paced rounds: a `joined` and a `room_closed` to all N every {data['args']['period']} s "
        f"for {data['args']['seconds']:.0f} s. Load average at the end: "
        + ", ".join(f"{x:.2f}" for x in data["load"])
        + "."
    ]
    for n in sorted({r["n"] for r in data["results"]}):
        out += [
            "",
            f"### N = {n:,}",
            "",
            "| variant | rounds | last p50 ms | last p99 ms | last max ms | max / median | "
            "CPU µs/event | largest stall ms | outside rounds ms | full GCs in the rounds | "
            "RSS per idle socket KiB |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in (r for r in data["results"] if r["n"] == n):
            if "paced" not in r:
                out.append(f"| {r['variant']} | failed: {r.get('error', '?')} |")
                continue
            f, gcs = r["paced"], r.get("gc", {}).get("in_paced_ms")
            full = "-" if gcs is None else (", ".join(f"{ms:,.0f} ms" for ms in gcs) or "none")
            out.append(
                f"| {r['variant']} | {f['rounds']} | {f['last_p50']:.0f} | {f['last_p99']:.0f} | "
                f"{f['last_max']:.0f} | {f['max_over_median']:.2f} | "
                f"{f['cpu_us_per_event']:.1f} | {f['stall_max_ms']:.0f} | "
                f"{f['stall_outside_rounds_ms']:.0f} | {full} | "
                f"{r['connect']['rss_per_socket_kib']:.1f} |"
            )
    return "\n".join(out) + "\n"


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
    parser.add_argument("--report", help="only write the Markdown of this stalls.json")
    args = parser.parse_args()
    if args.report:
        data = json.loads(Path(args.report).read_text())
        Path(args.report).with_suffix(".md").write_text(markdown(data))
        return
    args.variant = args.variant or ["lobby", "lobby-nopings:pings=off"]
    args.lobby_path = None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    prep = argparse.Namespace(out=args.out, lobby_path=None, n=args.n)
    uvloop.run(run_all(args, *prepare(prep)))


if __name__ == "__main__":
    main()
