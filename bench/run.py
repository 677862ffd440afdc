"""`python -m bench.run`: the lobby and the reference servers under the same load, in one run.

For each N, each server in turn: start it, open N sockets from the generator
processes, then measure connect rate and memory, fan-out, token latency (the
lobby with OpenVidu 2, the lobby with LiveKit, Node `ws`), churn and a stuck
reader; stop it. Ratios against Node.js `ws` are
taken within one N of one run, because this machine is noisy: absolute times
mean little, ratios measured minutes apart mean a lot. Results go to
`<out>/results.json`, `<out>/results.md` and `<out>/fanout-p99.png`.

    python -m bench.run --quick              # `make bench`: N=1,000, a few minutes
    python -m bench.run                      # `make bench-full`: N=1,000 .. 15,000
    python -m bench.run --n 10000 --servers lobby,node-ws --baseline /tmp/before
                                             # this tree against an earlier one, same run
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import uvloop

from bench import phases, report
from bench.procs import (
    BASELINE,
    LIVEKIT,
    PY,
    PYINSTRUMENT_REPORT,
    ROOT,
    TARGETS,
    Generators,
    Process,
    free_port,
    profiled,
    wait_quiet,
)

# Those whose token latency is measured: the lobby getting tokens from the OpenVidu stub,
# Node `ws` doing the same calls as the reference on this machine, and the lobby signing
# LiveKit tokens itself (its RoomService stub is only called after a leave).
TOKEN_SERVERS = ("lobby", BASELINE, LIVEKIT, "node-ws")
CONTROLLER_SOCKETS = 20  # trigger, token, churners, stuck reader: each its own user
STUB_SECRET = "bench-secret"
# HS256 wants 32 bytes or more (shorter, and the lobby warns at start).
LIVEKIT_KEY, LIVEKIT_SECRET = "bench-key", "bench-livekit-secret-of-32-bytes"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def lobby_env(db: Path, stub_url: str) -> dict[str, str]:
    """The lobby as deployed, with its limits opened up: the generator is one busy client.

    Its default pings (production runs them: the paced phase crosses several
    intervals), and message/join rates high enough for the churners and the
    stuck reader's flood of pings.
    """
    return os.environ | {
        "LOBBY_DATABASE": str(db),
        "LOBBY_SECRET_KEY": secrets.token_urlsafe(32),
        "OPENVIDU_URL": stub_url,
        "OPENVIDU_SECRET": STUB_SECRET,
        "LOBBY_LOG_LEVEL": "warning",
        "LOBBY_RECONNECT_GRACE": "1",
        "LOBBY_MAX_SOCKETS": "19500",
        "LOBBY_MAX_SOCKETS_PER_USER": "20",
        "LOBBY_MESSAGE_RATE": "1000000",
        "LOBBY_MESSAGE_BURST": "1000000",
        "LOBBY_JOINS_PER_MINUTE": "1000000",
        "LOBBY_HEADER_TIMEOUT": "60",
    }


def livekit_env(api_url: str) -> dict[str, str]:
    """The lobby's LiveKit settings: browsers (none here) and RoomService both at the stub."""
    return {
        "LOBBY_MEDIA": "livekit",
        "LIVEKIT_URL": "ws" + api_url.removeprefix("http"),  # the API URL follows from it
        "LIVEKIT_API_KEY": LIVEKIT_KEY,
        "LIVEKIT_API_SECRET": LIVEKIT_SECRET,
    }


async def quiet(args: argparse.Namespace) -> float:
    background = await wait_quiet(0.15, args.patience, 0.5 if args.quick else 1.0)
    if background >= 0.15:
        log(f"the machine is busy with other work ({background:.2f} cores); measuring anyway")
    return background


def server_setup(
    args: argparse.Namespace, name: str, port: int, ctx: dict[str, Any], db: Path
) -> tuple[list[str], dict[str, str] | None, str]:
    """The command and environment of server `name` on `port`, and the stub it calls."""
    env = lobby_env(db, ctx["stub_url"]) if TARGETS[name].auth else None
    stub_url = ctx["stub_url"]
    if name == LIVEKIT:
        assert env is not None
        env |= livekit_env(ctx["livekit_url"])
        stub_url = ctx["livekit_url"]  # its log shows any RoomService call during a join
    if name in TOKEN_SERVERS and env is None:
        # The reference gets its tokens from the same stub, the same way.
        env = os.environ | {"OPENVIDU_URL": ctx["stub_url"], "OPENVIDU_SECRET": STUB_SECRET}
    path = args.baseline if name == BASELINE else args.lobby_path
    return TARGETS[name].command(port, path, args.lobby_loop), env, stub_url


async def run_one(
    args: argparse.Namespace, name: str, n: int, ctx: dict[str, Any]
) -> dict[str, Any]:
    target = TARGETS[name]
    background = await quiet(args)
    port = free_port()
    command, env, stub_url = server_setup(args, name, port, ctx, ctx["db"])
    gc_log = ctx["tmp"] / f"gc-{n}.txt"
    lag_log: Path | None = ctx["tmp"] / f"lag-{name}-{n}.txt"
    if target.auth:
        command += ["--gc-log", str(gc_log), "--lag-log", str(lag_log)]
    elif name == "node-ws":  # with its heartbeat (server.js: HEARTBEAT_MS, 15 s by default)
        env = (env or dict(os.environ)) | {"LAG_LOG": str(lag_log)}
    else:
        lag_log = None
    if target.auth and args.profile == "pyinstrument":
        assert env is not None
        env["PYTHONPATH"] = args.profile_path or ""
        command += ["--pyinstrument", str(ctx["out"] / PYINSTRUMENT_REPORT)]
    server = Process(command, ctx["tmp"] / f"{name}-{n}.log", env)
    result: dict[str, Any] = {
        "server": name, "label": target.label, "n": n, "background_cores": background,
    }  # fmt: skip
    gens: Generators | None = None
    b: phases.Bench | None = None
    try:
        server.wait_port(port)
        await asyncio.sleep(0.5)
        gens = await Generators.start(n, args.per_process)
        b = phases.Bench(
            target,
            n,
            port,
            server,
            gens,
            stub_url,
            list(ctx["sessions"][-CONTROLLER_SOCKETS:]),
        )
        result["generator_processes"] = len(gens.procs)
        result["connect"] = await phases.connect(b, ctx["sessions"], args.concurrency)
        log(f"{name} N={n}: {result['connect']['connected']} connected "
            f"({result['connect']['rate']:.0f}/s, {result['connect']['errors']} errors), "
            f"{result['connect']['rss_per_socket_kib']:.1f} KiB/socket")  # fmt: skip
        await b.peer("trigger")
        if name in TOKEN_SERVERS:
            await b.peer("token", stamped=True)  # the token's arrival, not our wake-up
            await b.peer("host")
        for j in range(args.churners):
            await b.peer(f"churn{j}")
        tool = args.profile if target.auth else None
        if "fanout" in args.phases:
            await phases.fanout(b, 2)  # warm-up
            with profiled(server.pid, tool, ctx["out"] / f"profile-{args.profile}-fanout-{n}.txt"):
                result["fanout"] = fan = await phases.fanout(b, args.rounds)
            log(f"{name} N={n}: fan-out p50/p99 {fan['last_p50']:.1f}/{fan['last_p99']:.1f} ms, "
                f"{fan['cpu_us_per_event']:.1f} µs CPU/event, "
                f"generator {fan['gen_cores']:.2f} cores")  # fmt: skip
        if "paced" in args.phases and name in args.paced_servers:
            result["paced"] = pa = await phases.paced(b, args.paced_seconds, 0.45, lag_log)
            stall = pa.get("stall_max_ms")
            log(f"{name} N={n}: paced rounds over {pa['seconds']:.0f} s: p50/p99/max "
                f"{pa['last_p50']:.1f}/{pa['last_p99']:.1f}/{pa['last_max']:.1f} ms, "
                f"largest stall {stall if stall is None else round(stall)} ms")  # fmt: skip
        if name in TOKEN_SERVERS and "token" in args.phases:
            with profiled(server.pid, tool, ctx["out"] / f"profile-{args.profile}-token-{n}.txt"):
                result["token"] = tok = await phases.token(b, args.token_samples)
            for kind in ("new", "existing"):
                t = tok[kind]
                log(f"{name} N={n}: token into a {kind} room: lobby overhead p50/p99 "
                    f"{t['overhead_p50']:.2f}/{t['overhead_p99']:.2f} ms "
                    f"(handler only {t['overhead_handler_p50']:.2f}/"
                    f"{t['overhead_handler_p99']:.2f}; "
                    f"{t['calls_per_join']:.1f} calls to the media server)")  # fmt: skip
        if "churn" in args.phases:
            result["churn"] = ch = await phases.churn(b, args.churn_seconds)
            log(f"{name} N={n}: churn {ch['ops_per_s']:.1f} joins+leaves/s, {ch['errors']} errors, "
                f"{ch['missed']} missed")  # fmt: skip
        if "stuck" in args.phases:
            readers = 3 if args.quick else 5  # 3: the last two show whether memory is reused
            result["stuck"] = st = await phases.stuck(b, args.rounds, args.push_bytes, readers)
            sf = st["fanout"]
            log(f"{name} N={n}: with a stuck reader p99 {sf['last_p99']} ms, "
                f"stalled={sf['stalled']}, cut off={st.get('cut_off')}")  # fmt: skip
        counts = await gens.all({"cmd": "counts"})
        result["healthy_lost"] = sum(c["lost"] for c in counts)
        if target.auth:
            result["gc"] = phases.gc_summary(gc_log, result)
    except Exception as exc:  # one server failing must not lose the others' numbers
        result["error"] = f"{type(exc).__name__}: {exc}"
        log(f"{name} N={n} FAILED: {result['error']}\n{traceback.format_exc()}\n{server.tail()}")
    finally:
        if b is not None:
            for peer in b.peers.values():
                if peer.transport is not None:
                    peer.transport.abort()
        if gens is not None:
            await gens.stop()
        server.stop()
    return result


async def run_side_by_side(args: argparse.Namespace, n: int, ctx: dict[str, Any]) -> dict[str, Any]:
    """The token servers all up at once, N sockets on each, their token samples interleaved.

    On a machine others share, measuring one server after the other lets a burst
    of someone else's work land on one of them only; here it lands on all alike.
    Each lobby gets its own copy of the database (they would share the roster).
    """
    names = [name for name in args.servers if name in TOKEN_SERVERS]
    result: dict[str, Any] = {"n": n, "servers": names, "background_cores": await quiet(args)}
    servers: list[Process] = []
    benches: list[phases.Bench] = []
    try:
        for name in names:
            db = ctx["tmp"] / f"side-{name}.sqlite3"
            with (
                contextlib.closing(sqlite3.connect(ctx["db"])) as source,
                contextlib.closing(sqlite3.connect(db)) as copy,
            ):
                source.backup(copy)
            port = free_port()
            command, env, stub_url = server_setup(args, name, port, ctx, db)
            servers.append(Process(command, ctx["tmp"] / f"side-{name}-{n}.log", env))
            servers[-1].wait_port(port)
            gens = await Generators.start(n, args.per_process)
            cookies = list(ctx["sessions"][-CONTROLLER_SOCKETS:])
            b = phases.Bench(TARGETS[name], n, port, servers[-1], gens, stub_url, cookies)
            benches.append(b)
            await phases.connect(b, ctx["sessions"], args.concurrency)
            await b.peer("token", stamped=True)
            await b.peer("host")
        measured = await phases.tokens(benches, args.token_samples)
        result["token"] = dict(zip(names, measured, strict=True))
        for name, t in result["token"].items():
            log(f"side by side, N={n}: {name} join→token p50/p99 "
                f"{t['new']['raw_p50']:.2f}/{t['new']['raw_p99']:.2f} ms into a new room, "
                f"{t['existing']['raw_p50']:.2f}/{t['existing']['raw_p99']:.2f} ms into "
                "an existing one")  # fmt: skip
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
        tails = "\n".join(server.tail() for server in servers)
        log(f"side by side N={n} FAILED: {result['error']}\n{traceback.format_exc()}\n{tails}")
    finally:
        for b in benches:
            for peer in b.peers.values():
                if peer.transport is not None:
                    peer.transport.abort()
            await b.gens.stop()
        for server in servers:
            server.stop()
    return result


def prepare(args: argparse.Namespace) -> tuple[Path, Path, list[str]]:
    """The output folder, a scratch folder for logs and the database, the sessions in it."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="lobby-bench-"))
    extra = ["--lobby-path", args.lobby_path] if args.lobby_path else []
    count = str(max(args.n) + CONTROLLER_SOCKETS)
    made = subprocess.run(
        [PY, "-m", "bench.provision", str(tmp / "bench.sqlite3"), count, *extra],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out, tmp, made.stdout.split()


async def run_all(args: argparse.Namespace, out: Path, tmp: Path, sessions: list[str]) -> None:
    started = time.monotonic()
    machine = report.machine(args.lobby_path)
    log(f"machine: {machine['cpu']}, {machine['cores']} cores; logs in {tmp}")
    stub_port = free_port()
    stub = Process([PY, "-m", "bench.openvidu_stub", str(stub_port), STUB_SECRET], tmp / "stub.log")
    livekit_port = free_port()
    livekit = Process([PY, "-m", "bench.livekit_stub", str(livekit_port)], tmp / "livekit.log")
    results: list[dict[str, Any]] = []
    side: list[dict[str, Any]] = []  # the token servers side by side, one entry per N
    data: dict[str, Any] = {}
    try:
        stub.wait_port(stub_port)
        livekit.wait_port(livekit_port)
        ctx = {"tmp": tmp, "out": out, "db": tmp / "bench.sqlite3", "sessions": sessions,
               "stub_url": f"http://127.0.0.1:{stub_port}",
               "livekit_url": f"http://127.0.0.1:{livekit_port}"}  # fmt: skip
        for i, n in enumerate(args.n):
            # Rotate the order at each N so no server always runs first (or last).
            order = args.servers[i % len(args.servers) :] + args.servers[: i % len(args.servers)]
            for name in order:
                results.append(await run_one(args, name, n, ctx))
                data = {"machine": machine, "args": vars(args), "results": results,
                        "side_by_side": side}  # fmt: skip
                (out / "results.json").write_text(json.dumps(data, indent=1) + "\n")
            if "side-by-side" in args.phases:
                side.append(await run_side_by_side(args, n, ctx))
                (out / "results.json").write_text(json.dumps(data, indent=1) + "\n")
    finally:
        stub.stop()
        livekit.stop()
    data["elapsed_s"] = time.monotonic() - started
    (out / "results.json").write_text(json.dumps(data, indent=1) + "\n")
    report.write(data, out)
    log(f"done in {data['elapsed_s']:.0f} s: {out / 'results.md'}, {out / 'fanout-p99.png'}")
    if not args.keep_logs:
        shutil.rmtree(tmp, ignore_errors=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="N=1,000 only, shorter phases")
    parser.add_argument("--n", type=lambda s: [int(x) for x in s.split(",")], default=None)
    parser.add_argument(
        "--servers",
        type=lambda s: s.split(","),
        default=[name for name in TARGETS if name != BASELINE],
    )
    parser.add_argument(
        "--phases",
        type=lambda s: s.split(","),
        default=["fanout", "paced", "token", "churn", "stuck", "side-by-side"],
        help="what to measure after connecting (default: all); side-by-side: the token "
        "servers again, all up at once, their token samples interleaved",
    )
    parser.add_argument("--rounds", type=int, default=None, help="fan-out rounds (at least 20)")
    parser.add_argument(
        "--paced-seconds",
        type=float,
        default=None,
        help="how long the paced rounds last (default 35 s quick, 60 s full: 2 and 4 pings)",
    )
    parser.add_argument(
        "--paced-servers",
        type=lambda s: s.split(","),
        default=["lobby", BASELINE, LIVEKIT, "node-ws"],
        help="the servers that get the paced rounds (default: the lobbies and Node ws)",
    )
    parser.add_argument("--token-samples", type=int, default=None)
    parser.add_argument("--churn-seconds", type=float, default=None)
    parser.add_argument("--churners", type=int, default=8)
    parser.add_argument("--push-bytes", type=int, default=2 << 20, help="asked of the stuck reader")
    parser.add_argument("--per-process", type=int, default=8000, help="sockets per generator")
    parser.add_argument("--concurrency", type=int, default=200, help="handshakes in flight each")
    parser.add_argument(
        "--patience", type=float, default=None, help="seconds to wait for a quiet machine"
    )
    parser.add_argument(
        "--lobby-loop",
        choices=["asyncio", "uvloop"],
        help="the lobby's event loop (default: uvloop)",
    )
    parser.add_argument("--lobby-path", help="run a patched copy of the lobby package from here")
    parser.add_argument(
        "--baseline",
        help="also run the lobby package found here (an earlier commit) as 'lobby-baseline'",
    )
    parser.add_argument(
        "--profile",
        choices=["perf", "pyinstrument"],
        help="profile the lobby's fan-out and token phases (slower: for the profile only)",
    )
    parser.add_argument(
        "--profile-path", help="site-packages holding pyinstrument, for --profile pyinstrument"
    )
    parser.add_argument("--out", default=None)
    parser.add_argument("--keep-logs", action="store_true")
    args = parser.parse_args(argv)
    quick = args.quick
    args.n = args.n or ([1000] if quick else [1000, 5000, 10000, 15000])
    args.rounds = args.rounds or (20 if quick else 30)
    args.token_samples = args.token_samples or (50 if quick else 100)
    args.churn_seconds = args.churn_seconds or (3.0 if quick else 8.0)
    args.paced_seconds = args.paced_seconds or (35.0 if quick else 60.0)
    args.patience = args.patience if args.patience is not None else (3.0 if quick else 600.0)
    args.out = args.out or str(ROOT / ("docs/bench/quick" if quick else "docs/bench"))
    if args.baseline and BASELINE not in args.servers:
        args.servers.insert(
            args.servers.index("lobby") + 1 if "lobby" in args.servers else 0, BASELINE
        )
    if BASELINE in args.servers and not args.baseline:
        parser.error(f"{BASELINE} needs --baseline DIR")
    unknown = set(args.servers) - set(TARGETS)
    if unknown:
        parser.error(f"unknown servers {sorted(unknown)}; choose from {sorted(TARGETS)}")
    return args


def main() -> None:
    args = parse_args()
    uvloop.run(run_all(args, *prepare(args)))


if __name__ == "__main__":
    main()
