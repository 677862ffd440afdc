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
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
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
    machine_busy_ns,
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
    """The times of the lines of kind `kind` (`b`: a broadcast) in a hop log, in `window`."""
    lines = path.read_text().split("\n")
    found = (int(line.split()[1]) for line in lines if line.startswith(kind + " "))
    return sorted(t for t in found if window[0] <= t <= window[1])


def appended(path: Path, window: tuple[int, int]) -> dict[tuple[str, str], tuple[int, str]]:
    """(issuer, ref) -> (when its batch went out, command) for the appends in a hop log."""
    found = {}
    for line in path.read_text().splitlines():
        if line.startswith("p "):
            _, ns, by, refs = line.split()
            if window[0] <= int(ns) <= window[1]:
                for ref_op in refs.split(","):
                    ref, _, op = ref_op.partition(":")
                    found[by, ref] = (int(ns), op)
    return found


def first_broadcasts(path: Path) -> dict[tuple[str, str], int]:
    """(issuer, ref) -> when applying that entry began its first broadcast, in a hop log."""
    found = {}
    for line in path.read_text().splitlines():
        if line.startswith("a "):
            _, _, by, ref, _, first = line.split()
            if first != "0":
                found[by, ref] = int(first)
    return found


def hops(logs: list[Path], window: tuple[int, int]) -> dict[str, list[float]]:
    """Per command: ms from its append on instance 0 to its first broadcast on each other one.

    Matched by entry (issuer and ref), so neither an entry without a broadcast nor the
    next round's append can be taken for another's."""
    found: dict[str, list[float]] = {}
    sent = appended(logs[0], window)
    for path in logs[1:]:
        for key, first in first_broadcasts(path).items():
            if key in sent:
                began, op = sent[key]
                found.setdefault(op, []).append((first - began) / 1e6)
    return found


def run_delay_ns(pid: int) -> int:
    """Time every thread of `pid` spent runnable but waiting for a CPU so far (schedstat)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            total += int((task / "schedstat").read_text().split()[1])
    return total


def lobby_command(port: int, hop_log: Path, lag_log: Path, no_give_way: bool) -> list[str]:
    # fmt: off
    return [PY, "-m", "bench.serve_lobby", "--port", str(port), "--hop-log", str(hop_log),
            "--lag-log", str(lag_log), "--gc-log", str(lag_log.with_suffix(".gc")),
            *(["--no-give-way"] if no_give_way else [])]
    # fmt: on


def stall_max(path: Path, window: tuple[int, int]) -> float:
    """The longest stall (ms, over 5 ms) `serve_lobby --lag-log` wrote in `window`."""
    if not path.exists():
        return 0.0
    lags = (line.split() for line in path.read_text().splitlines())
    return max((float(ms) for t, ms in lags if window[0] <= int(t) <= window[1]), default=0.0)


class Setup:
    """One configuration: `n` tabs over `k` instances (`shared`: presence through Redis),
    their generators and the trigger; `round()` times one join and its leave.

    Each runs alone (`one_by_one`).
    """

    def __init__(self, ctx: dict[str, Any], n: int, k: int, shared: bool) -> None:
        self.ctx, self.n, self.k = ctx, n, k
        self.label = f"{k} x {n // k:,}" + (" (Redis)" if shared else " (memory)")
        tag = f"{n}-{k}-{'redis' if shared else 'memory'}"
        # Each configuration its own copy of the users and sessions: one database shared
        # by all would have the memory configuration's roster writes wake every other
        # instance's session watcher for a full check (a burst of CPU in their rounds).
        db = ctx["tmp"] / f"lobby-{tag}.sqlite3"
        shutil.copyfile(ctx["db"], db)
        self.env = lobby_env(db, ctx["stub_url"])
        if shared:  # each configuration its own keys: a fresh log, no earlier presence
            self.env |= {"LOBBY_REDIS_URL": ctx["redis_url"], "LOBBY_REDIS_PREFIX": f"b-{tag}:"}
        self.ports = [free_port() for _ in range(k)]
        self.hop_logs = [ctx["tmp"] / f"hops-{tag}-{i}.txt" for i in range(k)]
        self.lag_logs = [ctx["tmp"] / f"lag-{tag}-{i}.txt" for i in range(k)]
        self.logs = [ctx["tmp"] / f"lobby-{tag}-{i}.log" for i in range(k)]
        self.result: dict[str, Any] = {"label": self.label, "n": n, "instances": k, "redis": shared}
        self.servers: list[Process] = []
        self.gens: Generators | None = None
        self.b: phases.Bench | None = None
        self.fans: list[dict[str, Any]] = []
        self.cpu = [0] * k
        self.waited = [0] * k
        self.redis = self.other = self.wall = 0

    async def start(self, args: argparse.Namespace) -> None:
        ctx, r = self.ctx, self.result
        files = zip(self.ports, self.hop_logs, self.lag_logs, self.logs, strict=True)
        for port, hop, lag, out in files:
            command = lobby_command(port, hop, lag, args.no_give_way)
            self.servers.append(Process(command, out, self.env))
        for server, port in zip(self.servers, self.ports, strict=True):
            server.wait_port(port)
        rss0 = [rss_kib(s.pid) for s in self.servers]
        per_instance = -(-self.n // self.k)
        # Generator i serves instance i % k: each instance gets the same share of them.
        self.gens = gens = await Generators.start(self.k * -(-per_instance // args.per_process), 1)
        for pid in gens.pids:  # `--gen-nice`: the tabs' side yields the cores to the lobby's
            os.setpriority(os.PRIO_PROCESS, pid, args.gen_nice)
        sessions = ctx["sessions"][: self.n]
        r["connect"] = c = await spread(gens, self.ports, sessions, args.concurrency)
        log(f"{self.label}: {c['connected']} connected in {c['seconds']:.1f} s, "
            f"{c['errors']} errors")  # fmt: skip
        await asyncio.sleep(1.0)  # let the servers settle (GC, lazily grown buffers)
        r["rss_kib"] = [rss_kib(s.pid) for s in self.servers]
        r["rss_per_socket_kib"] = [
            (after - before) / max(1, self.n // self.k)
            for before, after in zip(rss0, r["rss_kib"], strict=True)
        ]
        cookies = list(ctx["sessions"][-CONTROLLER_SOCKETS:])
        server = self.servers[0]
        b = phases.Bench(TARGETS["lobby"], self.n, self.ports[0], server, gens, "", cookies)
        self.b = b
        await b.peer("trigger")
        await phases.fanout(b, 2)  # warm-up

    def _mine(self) -> int:
        assert self.gens is not None
        pids = [*(s.pid for s in self.servers), self.ctx["redis_pid"], os.getpid()]
        return self.gens.cpu_ns() + sum(cpu_ns(pid) for pid in pids)

    async def round(self) -> None:
        assert self.b is not None
        cpu0 = [cpu_ns(s.pid) for s in self.servers]
        waited0 = [run_delay_ns(s.pid) for s in self.servers]
        redis0, mine0, busy0 = cpu_ns(self.ctx["redis_pid"]), self._mine(), machine_busy_ns()
        wall0 = time.monotonic_ns()
        self.fans.append(await phases.fanout(self.b, 1))
        self.wall += time.monotonic_ns() - wall0
        for i, server in enumerate(self.servers):
            self.cpu[i] += cpu_ns(server.pid) - cpu0[i]
            self.waited[i] += run_delay_ns(server.pid) - waited0[i]
        self.redis += cpu_ns(self.ctx["redis_pid"]) - redis0
        self.other += (machine_busy_ns() - busy0) - (self._mine() - mine0)

    async def finish(self) -> dict[str, Any]:
        """The numbers of the rounds so far; then stop every process of this setup."""
        r, fans = self.result, self.fans
        try:
            lasts = [x for fan in fans for x in fan["last_ms"]]
            spans = [span for fan in fans for span in fan["spans_ns"]]
            r["fanout"] = {
                "rounds": len(lasts), "last_ms": lasts, "last_p50": phases.pct(lasts, 50),
                "last_p99": phases.pct(lasts, 99), "last_max": max(lasts, default=None),
                "missing": sum(fan["missing"] for fan in fans),
                "stalled": any(fan["stalled"] for fan in fans),
            }  # fmt: skip
            wall = max(1, self.wall)
            r["cpu_cores"] = [c / wall for c in self.cpu]
            r["cpu_wait_ms_per_round"] = [w / 1e6 / max(1, len(fans)) for w in self.waited]
            r["redis_cores"], r["other_cores"] = self.redis / wall, self.other / wall
            r.update(self._logs(spans))
            assert self.gens is not None
            counts = await self.gens.all({"cmd": "counts"})
            r["open"], r["lost"] = sum(c["open"] for c in counts), sum(c["lost"] for c in counts)
        except Exception as exc:  # one configuration failing must not lose the others' numbers
            r["error"] = f"{type(exc).__name__}: {exc}"
        await self.stop()
        return r

    def _logs(self, spans: list[tuple[int, int]]) -> dict[str, Any]:
        """From the servers' own logs, over the rounds: stalls, appends, broadcasts, hops."""
        if not spans:
            return {}
        window = (spans[0][0], spans[-1][1])
        # A round is a join and a leave; the window holds every join and all but the last
        # leave. One append per change in the cluster and one broadcast per event on each
        # instance, whatever the number of tabs.
        changes = 2 * len(spans) - 1
        sent = [appended(path, window) for path in self.hop_logs]
        appends = sum(len(entries) for entries in sent)
        ops = Counter(op for entries in sent for _, op in entries.values())
        found: dict[str, Any] = {
            "stall_max_ms": [stall_max(path, window) for path in self.lag_logs],
            "appends_per_change": appends / changes,
            "appends_by_op": dict(sorted(ops.items())),
            "broadcasts_per_change": [
                len(stamps(path, "b", window)) / changes for path in self.hop_logs
            ],
        }
        if self.k > 1:
            # Only this setup's appends and broadcasts are in its logs, and its rounds
            # run one at a time: an append's event is the broadcast that follows it.
            by_op = hops(self.hop_logs, window)
            hop = [ms for found_ms in by_op.values() for ms in found_ms]
            found["hop_by_op"] = {op: [phases.pct(ms, 50), phases.pct(ms, 99), len(ms)]
                                  for op, ms in by_op.items()}  # fmt: skip
            found |= {"hop_ms": hop, "hop_p50": phases.pct(hop, 50), "hop_p99": phases.pct(hop, 99),
                      "hop_max": max(hop, default=None)}  # fmt: skip
        return found

    async def stop(self) -> None:
        if self.b is not None:
            for peer in self.b.peers.values():
                if peer.transport is not None:
                    peer.transport.abort()
        if self.gens is not None:
            await self.gens.stop()
        for server in self.servers:
            server.stop()


async def one_by_one(
    args: argparse.Namespace, ctx: dict[str, Any], configs: list[tuple[int, int, bool]], rounds: int
) -> list[dict[str, Any]]:
    """Each configuration of `configs` ((tabs, instances, through Redis)) alone: started
    on a quiet machine, `rounds` rounds, stopped; their results.

    Alone, because a configuration's processes are never idle: its instances ping their
    tabs every 0.1 s (a batch each time) and its generators answer. Run side by side,
    those bursts land in the other configurations' rounds, where one delays the
    receiving instance's wake-up by a few milliseconds: noise in the hop that no
    deployment of one cluster has."""
    results = []
    for n, k, shared in configs:
        background = await wait_quiet(0.3, args.patience)
        setup = Setup(ctx, n, k, shared)
        failed: dict[str, str] = {}
        try:
            await setup.start(args)
            load = os.getloadavg()
            for _ in range(rounds):
                await setup.round()
        except Exception as exc:  # keep what was measured; say what failed
            failed["error"] = f"{type(exc).__name__}: {exc}"
            log(f"FAILED: {failed['error']}\n" + "\n".join(s.tail() for s in setup.servers))
            load = os.getloadavg()
        result = await setup.finish()
        result |= failed | {"background_cores": background, "load_average": load}
        results.append(result)
        fan = result.get("fanout", {})
        log(f"{result['label']}: last-client p50/p99 {fan.get('last_p50')}/{fan.get('last_p99')} "
            f"ms, hop p50/p99 {result.get('hop_p50')}/{result.get('hop_p99')} ms, "
            f"{result.get('lost')} lost, load {load[0]:.2f}")  # fmt: skip
    return results


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
            configs = [(n, 1, False), (n, 1, True), (n, 2, True)]
            results += await one_by_one(args, ctx, configs, args.rounds)
        if args.hold:
            results += await one_by_one(args, ctx, [(args.hold, 3, True)], args.hold_rounds)
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
    parser.add_argument(
        "--rounds", type=int, default=200, help="rounds of a join and a leave (p99 of 400 hops)"
    )
    parser.add_argument("--hold-rounds", type=int, default=5)
    parser.add_argument("--per-process", type=int, default=8000, help="tabs per generator")
    parser.add_argument("--concurrency", type=int, default=200, help="handshakes in flight each")
    parser.add_argument(
        "--patience", type=float, default=120.0, help="seconds to wait for a quiet machine"
    )
    parser.add_argument(
        "--gen-nice",
        type=int,
        default=0,
        help="nice value of the load generators (10: as if the tabs ran on other machines)",
    )
    parser.add_argument(
        "--no-give-way",
        action="store_true",
        help="instances never yield their core after reading their own entries (before/after)",
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
