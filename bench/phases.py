"""The measurements of one server at one N: connect, fan-out, paced rounds, token latency,
churn, stuck reader.

The N sockets live in the generator processes; the few sockets that act (the
trigger, the token client, the churners, the stuck reader) live here, in the
controller, and connect after the N, so on the lobby (whose hub keeps
insertion order) the trigger hears a broadcast after everyone else.
Times are CLOCK_MONOTONIC, shared by every process on the machine.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import os
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.procs import (
    Generators,
    Process,
    Target,
    cpu_ns,
    cpu_split,
    machine_busy_ns,
    rss_kib,
    tcp_queues,
)
from bench.wsclient import (
    Peer,
    PeerError,
    client_frame,
    encode,
    handshake,
    open_socket,
    open_stamped,
)


def pct(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


@dataclass
class Bench:
    target: Target
    n: int
    port: int
    server: Process
    gens: Generators
    stub_url: str
    cookies: list[str]  # sessions for the controller's own sockets (the lobby only)
    peers: dict[str, Peer] = field(default_factory=dict)

    @property
    def dialect(self) -> str:
        return self.target.dialect

    def round_timeout(self) -> float:
        """Long enough for the slowest reference (python-socketio) to finish a broadcast."""
        return 3.0 + self.n / 1000

    async def peer(self, name: str, *, stamped: bool = False, **kw: Any) -> Peer:
        """A controller socket; `stamped`: its frames carry kernel arrival times."""
        headers = {"Origin": f"http://127.0.0.1:{self.port}"}
        if self.target.auth:
            headers["Cookie"] = f"lobby_session={self.cookies.pop()}"
        request = handshake("127.0.0.1", self.port, self.target.path, headers)
        if stamped:
            peer = await open_stamped(lambda: Peer(request, self.dialect), "127.0.0.1", self.port)
            self.peers[name] = peer
            return peer
        sock = await open_socket(lambda: Peer(request, self.dialect), "127.0.0.1", self.port, **kw)
        assert isinstance(sock, Peer)
        self.peers[name] = sock
        return sock

    def drain(self) -> None:
        """Forget frames the controller's sockets heard during earlier phases."""
        for sock in self.peers.values():
            while not sock.inbox.empty():
                sock.inbox.get_nowait()

    def gen_cpu_ns(self) -> int:
        return self.gens.cpu_ns() + cpu_ns(os.getpid())


async def connect(b: Bench, sessions: list[str], concurrency: int) -> dict[str, Any]:
    """Open the N idle sockets; the server's RSS per socket is measured around it."""
    procs = b.gens.procs
    shares = [b.n // len(procs) + (i < b.n % len(procs)) for i in range(len(procs))]
    rss_before = rss_kib(b.server.pid)
    commands, start = [], 0
    for i, share in enumerate(shares):
        commands.append(
            {
                "cmd": "connect", "host": "127.0.0.1", "port": b.port, "path": b.target.path,
                "dialect": b.dialect, "origin": f"http://127.0.0.1:{b.port}", "count": share,
                "cookies": sessions[start : start + share] if b.target.auth else None,
                "source": f"127.0.0.{2 + i}", "concurrency": concurrency,
            }
        )  # fmt: skip
        start += share
    began = time.monotonic()
    replies = await asyncio.gather(*(g.call(c) for g, c in zip(procs, commands, strict=True)))
    seconds = time.monotonic() - began
    await asyncio.sleep(1.0)  # let the server settle (GC, lazily grown buffers)
    rss_after = rss_kib(b.server.pid)
    connected = sum(r["connected"] for r in replies)
    kinds: collections.Counter[str] = collections.Counter()
    for r in replies:
        kinds.update(r["error_kinds"])
    return {
        "connected": connected,
        "errors": sum(r["errors"] for r in replies),
        "error_kinds": dict(kinds),
        "seconds": seconds,
        "rate": connected / seconds,
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
        "rss_per_socket_kib": (rss_after - rss_before) / max(1, connected),
    }


async def fanout(b: Bench, rounds: int) -> dict[str, Any]:
    """`rounds` times: the trigger joins a room; how long until each of the N has `joined`.

    Server and generator CPU are read just before the join and just after the
    last socket has the event; between rounds the lobby's trigger leaves again
    (the reference servers keep no state, so they need no leave).
    """
    trigger = b.peers["trigger"]
    b.drain()
    lasts: list[float] = []
    deliveries: list[float] = []
    tokens: list[float] = []
    spans: list[tuple[int, int]] = []  # CLOCK_MONOTONIC ns: join sent, last socket had it
    cpu_server = cpu_gen = cpu_machine = wall = events = missing = 0
    stalled = False
    user0, sys0 = cpu_split(b.server.pid)
    for r in range(rounds):
        expected = await b.gens.arm(b.dialect, "joined")
        s0, g0, m0 = cpu_ns(b.server.pid), b.gen_cpu_ns(), machine_busy_ns()
        t0 = time.monotonic_ns()
        trigger.send({"type": "join", "room": "bench", "nickname": f"r{r}", "ref": r})
        complete = await b.gens.wait_done(b.round_timeout())
        t1 = time.monotonic_ns()
        spans.append((t0, t1))
        cpu_server += cpu_ns(b.server.pid) - s0
        cpu_gen += b.gen_cpu_ns() - g0
        cpu_machine += machine_busy_ns() - m0
        wall += t1 - t0
        base = t0 // 1000
        latencies = [(t - base) / 1000 for t in await b.gens.collect()]
        events += len(latencies)
        deliveries += latencies
        if not complete:
            stalled = True
            missing = expected - len(latencies)
            break
        lasts.append(max(latencies, default=0.0))
        stamp, _ = await trigger.expect({"token"}, 30)
        tokens.append((stamp - t0) / 1e6)
        await trigger.expect({"joined"}, 30)
        await _reset(b, trigger)
    user1, sys1 = cpu_split(b.server.pid)
    return {
        "rounds": len(lasts),
        "stalled": stalled,
        "missing": missing,
        "last_ms": lasts,
        "last_p50": pct(lasts, 50),
        "last_p99": pct(lasts, 99),
        "last_max": max(lasts, default=None),
        "delivery_p50": pct(deliveries, 50),
        "delivery_p99": pct(deliveries, 99),
        "events": events,
        "cpu_us_per_event": cpu_server / 1000 / events if events else None,
        "kernel_share": (sys1 - sys0) / max(1e-9, (user1 - user0) + (sys1 - sys0)),
        "gen_cpu_us_per_event": cpu_gen / 1000 / events if events else None,
        "gen_cores": cpu_gen / wall if wall else None,
        "server_cores": cpu_server / wall if wall else None,
        # Everything else the machine did meanwhile (the kernel's own work, the stub,
        # other people's processes): a check that the numbers are the bench's own.
        "other_cores": (cpu_machine - cpu_server - cpu_gen) / wall if wall else None,
        "token_ms": tokens,
        "spans_ns": spans,
    }


async def paced(b: Bench, seconds: float, period: float, lag_log: Path | None) -> dict[str, Any]:
    """Rounds every `period` s for `seconds`, long enough to cross several ping intervals.

    `fanout` fires its rounds back to back for a few seconds; a stall that comes
    once a ping interval (15 s by default) can fall between two such phases. Here
    each round is a `join` (its `joined` to everyone) and then a `leave` (its
    `room_closed` to everyone), both timed to the last socket. With `lag_log` (the
    server's own stall probe: `serve_lobby --lag-log`, or Node's `LAG_LOG`), the
    largest event-loop stall in the window, and the largest outside any round (a
    broadcast to N sockets is itself one long callback; what is left is what the
    pings, the garbage collector or anything else added).
    """
    trigger = b.peers["trigger"]
    b.drain()
    lasts: list[float] = []
    at: list[float] = []
    events = cpu = 0
    r = -2  # two rounds of warm-up, not counted
    start_ns = time.monotonic_ns()
    deadline = time.monotonic() + seconds
    next_round = time.monotonic()
    while time.monotonic() < deadline:
        await asyncio.sleep(max(0.0, next_round - time.monotonic()))
        next_round += period
        join = {"type": "join", "room": "paced", "nickname": f"r{r}", "ref": r}
        for message, kind in ((join, "joined"), ({"type": "leave", "ref": r}, "room_closed")):
            await b.gens.arm(b.dialect, kind)
            c0, t0 = cpu_ns(b.server.pid), time.monotonic_ns()
            trigger.send(message)
            if not await b.gens.wait_done(b.round_timeout()):
                raise RuntimeError(f"paced round {r} ({kind}) did not complete")
            c1 = cpu_ns(b.server.pid)
            times = await b.gens.collect()
            if r >= 0:
                cpu += c1 - c0
                events += len(times)
                lasts.append((max(times) - t0 // 1000) / 1000)  # the generators stamp in µs
                at.append((t0 - start_ns) / 1e9)
        b.drain()
        r += 1
        if r == 0:  # the window opens after the warm-up
            start_ns = time.monotonic_ns()
            deadline = time.monotonic() + seconds
    end_ns = time.monotonic_ns()
    median = pct(lasts, 50) or 0.0
    # A join's broadcast and a leave's differ (the join's comes after a token), so each
    # kind's rounds are compared with that kind's median: even rounds join, odd ones leave.
    worst = max(
        (max(kind) / m for kind in (lasts[0::2], lasts[1::2]) if kind and (m := pct(kind, 50))),
        default=None,
    )
    result: dict[str, Any] = {
        "seconds": (end_ns - start_ns) / 1e9,
        "window_ns": [start_ns, end_ns],
        "rounds": len(lasts),
        "last_ms": [round(x, 2) for x in lasts],
        "at_s": [round(x, 3) for x in at],
        "last_p50": median,
        "last_p99": pct(lasts, 99),
        "last_max": max(lasts, default=None),
        "max_over_median": worst,  # the larger of the joins' and the leaves'
        "joined_p50": pct(lasts[0::2], 50),
        "room_closed_p50": pct(lasts[1::2], 50),
        "cpu_us_per_event": cpu / 1000 / events if events else None,
    }
    if lag_log is not None:
        lags = _lags(lag_log, start_ns, end_ns)
        spans = [(t, t + ms / 1000) for t, ms in zip(at, lasts, strict=True)]
        apart = [
            lag for end, lag in lags if not any(a < end and end - lag / 1000 < z for a, z in spans)
        ]
        result["stall_max_ms"] = max((lag for _, lag in lags), default=0.0)
        result["stall_outside_rounds_ms"] = max(apart, default=0.0)
        result["stalls_over_100ms"] = sum(1 for _, lag in lags if lag > 100)
    return result


def _lags(path: Path, start_ns: int, end_ns: int) -> list[tuple[float, float]]:
    """(seconds after `start_ns`, lag ms) of every stall the probe wrote in the window."""
    if not path.exists():
        return []
    found = []
    for line in path.read_text().splitlines():
        stamp, lag = line.split()
        if start_ns <= int(stamp) <= end_ns:
            found.append(((int(stamp) - start_ns) / 1e9, float(lag)))
    return found


async def _reset(b: Bench, trigger: Peer) -> None:
    if b.target.auth:  # the lobby (or its baseline): it keeps rooms, so leave them
        await b.gens.arm(b.dialect, "room_closed")
        trigger.send({"type": "leave", "ref": "reset"})
        await trigger.expect({"ok"}, 30)
        await trigger.expect({"room_closed"}, 30)
        await b.gens.wait_done(b.round_timeout())
        await b.gens.collect()
    await asyncio.sleep(0.02)  # the lobby deletes the OpenVidu connection and session now


async def _stub_log(url: str) -> list[list[Any]]:
    def fetch() -> list[list[Any]]:
        with urllib.request.urlopen(url + "/_bench/log", timeout=10) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]

    return await asyncio.to_thread(fetch)


async def token(b: Bench, samples: int) -> dict[str, Any]:
    """`join` → `token`, one at a time on a quiet server, minus the OpenVidu stub's own time.

    Two kinds of join: into a new room (the server creates the OpenVidu session,
    then a connection in it) and into a room someone is already in (`host`).
    Before each join the generator has read everything (the server is idle).
    The `token` client's frames carry their kernel arrival time, and the stub
    logs each request's: the overhead is the server's time on the wire, with
    neither the client's nor the stub's wait for a CPU in it (see bench/README.md).
    """
    return (await tokens([b], samples))[0]


async def tokens(benches: list[Bench], samples: int) -> list[dict[str, Any]]:
    """`token` on several servers at once, their samples interleaved.

    One join at a time still, but each round goes through every server (starting
    with a different one each time), so whatever else the machine does meanwhile
    falls on all of them alike, not on whichever one was being measured then.
    Servers may share a stub: a call belongs to the join whose span it falls in.
    """
    for b in benches:
        host = b.peers["host"]
        b.drain()
        host.send({"type": "join", "room": "tok-existing", "nickname": "host", "ref": "host"})
        await host.expect({"token"}, 30)
    await asyncio.sleep(0.5)
    stubs = {b.stub_url for b in benches}
    for url in stubs:
        await _stub_log(url)  # start with empty logs
    marks: list[dict[str, list[tuple[int, int]]]] = [{"new": [], "existing": []} for _ in benches]
    for i in range(samples):
        for j in range(len(benches)):
            k = (i + j) % len(benches)
            await _token_sample(benches[k], i, marks[k])
    logs = {url: [entry for entry in await _stub_log(url) if entry[0] == "POST"] for url in stubs}
    return [_token_result(marks[k], logs[b.stub_url], samples) for k, b in enumerate(benches)]


async def _token_sample(b: Bench, i: int, marks: dict[str, list[tuple[int, int]]]) -> None:
    """One join into a new room and one into `host`'s, each left again before the next."""
    client = b.peers["token"]
    for kind, room, last in (
        ("new", f"tok{i}", "room_closed"),
        ("existing", "tok-existing", "left"),
    ):
        await b.gens.arm(b.dialect, last)
        t0 = time.monotonic_ns()
        client.send({"type": "join", "room": room, "nickname": "tok", "ref": i})
        t1, _ = await client.expect({"token"}, 30)
        marks[kind].append((t0, t1))
        await client.expect({"joined"}, 30)
        client.send({"type": "leave", "ref": i})
        await client.expect({last}, 30)
        await b.gens.wait_done(b.round_timeout())
        await b.gens.collect()
        await asyncio.sleep(0.02)  # the lobby's clean-up calls to OpenVidu end


def _token_result(
    marks: dict[str, list[tuple[int, int]]], log: list[list[Any]], samples: int
) -> dict[str, Any]:
    result: dict[str, Any] = {"samples": samples}
    for kind, spans in marks.items():
        raw, stub, handler, wake, calls = [], [], [], [], 0
        parts: dict[str, list[float]] = {"before": [], "between": [], "after": []}
        for t0, t1 in spans:
            # (arrived on the stub's socket, read by the stub, answered): see bench.openvidu_stub
            inside = [(at, read, end) for _, _, _, at, read, end in log if t0 <= at <= t1]
            calls += len(inside)
            raw.append((t1 - t0) / 1e6)
            stub.append(sum(end - at for at, _, end in inside) / 1e6)
            handler.append(sum(end - read for _, read, end in inside) / 1e6)
            wake.append(sum(read - at for at, read, _ in inside) / 1e6)
            if inside:
                # Where the lobby's own time goes: before its first call to OpenVidu,
                # between calls (reading one answer, writing the next request), after the last.
                parts["before"].append((inside[0][0] - t0) / 1e6)
                gaps = [b[0] - a[2] for a, b in itertools.pairwise(inside)]
                parts["between"].append(sum(gaps) / 1e6)
                parts["after"].append((t1 - inside[-1][2]) / 1e6)
        # The goal's measure: OpenVidu's response time as the lobby sees it on the wire
        # (from the request's arrival to the answer) taken off. `handler` takes off only
        # the stand-in's handler, as runs before 2026-12-01 did: it counts the stand-in's
        # own wake-up as the lobby's.
        overhead = [r - s for r, s in zip(raw, stub, strict=True)]
        overhead_handler = [r - s for r, s in zip(raw, handler, strict=True)]
        result[kind] = {
            "calls_per_join": calls / max(1, len(spans)),
            "raw_p50": pct(raw, 50), "raw_p99": pct(raw, 99),
            "stub_p50": pct(stub, 50), "stub_p99": pct(stub, 99),
            "stub_wake_p50": pct(wake, 50), "stub_wake_p99": pct(wake, 99),
            "overhead_p50": pct(overhead, 50), "overhead_p99": pct(overhead, 99),
            "overhead_max": max(overhead),
            "overhead_handler_p50": pct(overhead_handler, 50),
            "overhead_handler_p99": pct(overhead_handler, 99),
            "overhead_ms": [round(x, 3) for x in overhead],
            "spans_ns": spans,
            "parts_ms": {part: [round(x, 3) for x in values] for part, values in parts.items()},
            "stub_ms": [round(x, 3) for x in stub],
            **{f"{part}_p50": pct(values, 50) for part, values in parts.items()},
        }  # fmt: skip
    return result


async def churn(b: Bench, seconds: float) -> dict[str, Any]:
    """Churners join and leave their own rooms flat out while the N listen; nobody may miss one."""
    await b.gens.all({"cmd": "reset"})
    b.drain()
    churners = [p for name, p in b.peers.items() if name.startswith("churn")]
    errors: collections.Counter[str] = collections.Counter()
    latencies: list[float] = []
    cycles = 0
    stop_at = time.monotonic() + seconds

    async def run(j: int, p: Peer) -> None:
        nonlocal cycles
        while time.monotonic() < stop_at:
            try:
                t0 = time.monotonic_ns()
                p.send({"type": "join", "room": f"c{j}", "nickname": f"c{j}", "ref": j})
                t1, _ = await p.expect({"token"}, 30)
                p.send({"type": "leave", "ref": j})
                await p.expect({"ok"}, 30)
            except (PeerError, TimeoutError, ConnectionError) as exc:
                errors[f"{type(exc).__name__}: {exc}"[:100]] += 1
                if not isinstance(exc, PeerError):
                    return
            else:
                cycles += 1
                latencies.append((t1 - t0) / 1e6)

    began = time.monotonic()
    await asyncio.gather(*(run(j, p) for j, p in enumerate(churners)))
    elapsed = time.monotonic() - began
    expected = 3 * cycles  # joined, left, room_closed per cycle, to every socket
    deadline = time.monotonic() + 30 + b.n / 500
    while True:
        counts = await b.gens.all({"cmd": "counts"})
        if all(c["min"] >= expected for c in counts) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    open_sockets = sum(c["open"] for c in counts)
    return {
        "seconds": elapsed,
        "cycles": cycles,
        "ops_per_s": 2 * cycles / elapsed,
        "errors": sum(errors.values()),
        "error_kinds": dict(errors),
        "missed": expected * open_sockets - sum(c["sum"] for c in counts),
        "lost": sum(c["lost"] for c in counts),
        "token_p50_under_churn": pct(latencies, 50),
        "token_p99_under_churn": pct(latencies, 99),
    }


async def stuck(b: Bench, rounds: int, push_bytes: int, readers: int = 5) -> dict[str, Any]:
    """The fan-out again, with one more socket that stopped reading and whose buffers are full.

    It fills them by asking for replies (pings) it never reads, until both
    kernel buffers stop moving; then the fan-out rounds run; then it asks for
    `push_bytes` more, to see whether the server cuts it off. A server that does
    is then given more stuck readers in turn (`readers` in all): if their memory is freed, each
    reuses the last one's and the RSS levels off; if it leaked, the RSS would
    grow by at least the 1 MiB each one was allowed to hold.
    """
    pid = b.server.pid
    rss_before = rss_kib(pid)
    ping = client_frame(encode(b.dialect, {"type": "ping", "ref": "x" * 60}))
    reader, server, client = await _stuck_reader(b, "stuck")
    fill = await _fill(reader, server, client, ping)
    await fanout(b, 2)  # warm-up, as before the rounds without it
    result: dict[str, Any] = {"fill": fill, "fanout": await fanout(b, rounds)}
    if result["fanout"]["stalled"]:
        result["cut_off"] = None  # the server is stuck behind it: nothing more to learn
        assert reader.transport is not None
        reader.transport.abort()
        return result
    gone, pushed, rss_peak = await _push(b, reader, server, client, ping, push_bytes)
    result |= {
        "cut_off": gone is not None,
        "cut_after_s": gone,
        "requested_bytes": pushed,
        "rss_before_kib": rss_before,
        "rss_peak_kib": rss_peak,
        "rss_after_kib": rss_kib(pid),
    }
    if gone is not None:
        # More stuck readers, one after the other: if each one's memory is freed, the
        # next reuses it and the RSS levels off instead of growing by `held` each time.
        after = []
        for k in range(2, readers + 1):
            reader, server, client = await _stuck_reader(b, f"stuck{k}")
            await _fill(reader, server, client, ping)
            again, _, _ = await _push(b, reader, server, client, ping, push_bytes)
            after.append(rss_kib(pid) if again is not None else None)
        result["later_rss_after_kib"] = after
    return result


async def _stuck_reader(b: Bench, name: str) -> tuple[Peer, tuple[str, int], tuple[str, int]]:
    reader = await b.peer(name)
    assert reader.transport is not None
    reader.transport.pause_reading()
    return reader, ("127.0.0.1", b.port), reader.transport.get_extra_info("sockname")[:2]


async def _push(
    b: Bench,
    reader: Peer,
    server: tuple[str, int],
    client: tuple[str, int],
    ping: bytes,
    push_bytes: int,
) -> tuple[float | None, int, int]:
    """Ask for replies until `push_bytes` of them can only have stayed in the server's process.

    Replies count only once the server's kernel send buffer has stopped
    growing (it grows in steps even towards a closed window). Returns the
    seconds until the server dropped the socket (None: it never did), the bytes
    asked for, and the server's peak RSS.
    """
    assert reader.transport is not None
    reply_size = len(encode(b.dialect, {"type": "pong", "ref": "x" * 60})) + 2
    rss_peak, asked, counted, gone, last_queue = rss_kib(b.server.pid), 0, 0, None, -1
    began = pushed_at = time.monotonic()
    while time.monotonic() - pushed_at < 3.0 and time.monotonic() - began < 60:
        state = tcp_queues(server, client)
        if state is None or state[0] != 1:  # no longer ESTABLISHED on the server's side
            gone = time.monotonic() - began
            break
        if state[1] != last_queue:
            counted, last_queue = 0, state[1]
        if counted < push_bytes:
            reader.transport.write(ping * 1000)
            asked += 1000 * reply_size
            counted += 1000 * reply_size
            pushed_at = time.monotonic()
        await asyncio.sleep(0.05)  # the lobby aborts 2 s after its close frame
        rss_peak = max(rss_peak, rss_kib(b.server.pid))
    reader.transport.abort()
    await asyncio.sleep(2.0 if gone is not None else 0.5)  # let a cut-off socket's memory go
    return gone, asked, rss_peak


async def _fill(
    reader: Peer, server: tuple[str, int], client: tuple[str, int], ping: bytes
) -> dict[str, Any]:
    """Ask for pongs without reading them until the server's kernel send queue stops moving.

    It stops moving when the server's socket buffer is full (what the server
    writes next stays in its own process) or when the server stopped reading
    our pings (it is blocked). Pings are sent only while few are waiting, so
    none are left over to be answered during the fan-out rounds.
    """
    assert reader.transport is not None
    sent, quiet, last = 0, 0, None
    began = time.monotonic()
    while time.monotonic() - began < 30:
        server_side, client_side = tcp_queues(server, client), tcp_queues(client, server)
        if server_side is None or client_side is None:
            break
        pending = server_side[2] + client_side[1] + reader.transport.get_write_buffer_size()
        state = (server_side[1], client_side[2], pending)
        quiet = quiet + 1 if state == last and state[0] > 0 else 0
        last = state
        # Nothing moved for 60 ms with nothing left to read: full. With requests still
        # unread, give a starved server 0.5 s before calling it blocked.
        if quiet >= (3 if pending == 0 else 25):
            break
        if quiet == 0 and pending < 1 << 16:
            # About 95 KB of replies: the last batch before the kernel buffer is full
            # lands in the server's own buffer, well under the lobby's 1 MiB bound.
            reader.transport.write(ping * 1000)
            sent += 1000
        await asyncio.sleep(0.02)
    reader.transport.write(ping * 500)  # now the server's own buffer for it holds some too
    sent += 500
    await asyncio.sleep(0.2)
    server_side = tcp_queues(server, client)
    return {
        "established": server_side is not None and server_side[0] == 1,
        "pings": sent,
        "seconds": time.monotonic() - began,
        "server_send_queue": last[0] if last else None,
        "client_receive_queue": last[1] if last else None,
        "pending_requests_bytes": last[2] if last else None,
    }


def gc_summary(log: Path, result: dict[str, Any]) -> dict[str, Any]:
    """The lobby's full (generation 2) garbage collections: how long, and which fell in a round."""
    full = []
    for line in log.read_text().splitlines():
        end, generation, ms = line.split()
        if generation == "2":
            full.append((int(end), float(ms)))
    in_rounds = []
    for phase in ("fanout", "stuck"):
        spans = (
            result.get(phase, {}).get("fanout") if phase == "stuck" else result.get(phase)
        ) or {}
        for t0, t1 in spans.get("spans_ns", []):
            in_rounds += [ms for end, ms in full if t0 <= end - ms * 1e6 <= t1]
    window = result.get("paced", {}).get("window_ns")
    in_paced = [ms for end, ms in full if window and window[0] <= end <= window[1]]
    return {
        "full": len(full),
        "full_ms": [round(ms, 1) for _, ms in full],
        "in_rounds_ms": [round(ms, 1) for ms in in_rounds],
        "in_paced_ms": [round(ms, 1) for ms in in_paced],
    }
