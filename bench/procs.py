"""The processes of a bench run: servers under test, the OpenVidu stub, generators; /proc readings.

Every process is started here and stopped here (terminate, then kill after a
grace period), with its output in a log file that is shown when it fails.
CPU time comes from /proc/<pid>/task/*/schedstat (nanoseconds, every thread),
the user/kernel split from /proc/<pid>/stat, memory from VmRSS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
SIO_PATH = "/socket.io/?EIO=4&transport=websocket"
PYINSTRUMENT_REPORT = "pyinstrument-last.txt"
BASELINE = "lobby-baseline"
LIVEKIT = "lobby-livekit"


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    label: str
    dialect: str  # "json" or "sio"
    path: str
    auth: bool  # needs a session cookie (the lobby)

    def command(self, port: int, lobby_path: str | None, loop: str | None = None) -> list[str]:
        if self.auth:  # the lobby, an earlier copy of it (`--baseline`), or it with LiveKit
            extra = ["--lobby-path", lobby_path] if lobby_path else []
            extra += ["--loop", loop] if loop else []
            return [PY, "-m", "bench.serve_lobby", "--port", str(port), *extra]
        if self.name == "node-ws":
            return ["node", str(ROOT / "bench/peers/node/server.js"), str(port)]
        script = {"starlette-loop": "starlette_loop.py", "python-socketio": "socketio_server.py"}
        return [PY, str(ROOT / "bench/peers" / script[self.name]), str(port)]


TARGETS = {
    t.name: t
    for t in (
        Target("lobby", "Lobby", "json", "/ws", True),
        # The same lobby with LOBBY_MEDIA=livekit: tokens signed in the process, no call.
        Target(LIVEKIT, "Lobby (LiveKit)", "json", "/ws", True),
        # `--baseline DIR`: an earlier lobby package under the same load in the same run.
        Target(BASELINE, "Lobby (baseline)", "json", "/ws", True),
        Target("node-ws", "Node.js ws", "json", "/ws", False),
        Target("starlette-loop", "Starlette loop", "json", "/ws", False),
        Target("python-socketio", "python-socketio", "sio", SIO_PATH, False),
    )
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Process:
    """A child process with its output in `log`; `stop()` always leaves nothing behind."""

    def __init__(self, cmd: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self._out = log.open("wb")
        self.popen = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=self._out, stderr=self._out
        )
        self.pid = self.popen.pid

    def wait_port(self, port: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.log.name} exited:\n{self.tail()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.log.name} did not listen on {port}:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        self._out.flush()
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, grace: float = 3.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._out.close()


def cpu_ns(pid: int) -> int:
    """CPU time of every thread of `pid` so far, in nanoseconds."""
    total = 0
    with contextlib.suppress(FileNotFoundError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with (
                contextlib.suppress(FileNotFoundError, ProcessLookupError),
                open(f"/proc/{pid}/task/{task}/schedstat") as f,
            ):
                total += int(f.read().split()[0])
    return total


def machine_busy_ns() -> int:
    """CPU time every core of the machine has spent busy so far (from /proc/stat), in ns."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (
        (user + nice + system + irq + softirq + steal) * 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    )


async def wait_quiet(limit: float, patience: float, window: float = 1.0) -> float:
    """Wait (up to `patience` s) until processes that are not ours use under `limit` cores.

    Called between servers, when nothing of the bench runs: other people's test
    runs on this 2-core machine would otherwise be measured too. Returns the
    load last seen (cores).
    """
    deadline = time.monotonic() + patience
    while True:
        before, began = machine_busy_ns(), time.monotonic_ns()
        await asyncio.sleep(window)
        load = (machine_busy_ns() - before) / (time.monotonic_ns() - began)
        if load < limit or time.monotonic() > deadline:
            return load
        await asyncio.sleep(min(4.0, patience))


def cpu_split(pid: int) -> tuple[float, float]:
    """(user, kernel) CPU seconds of `pid` so far (clock ticks, all threads)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _hex(address: tuple[str, int]) -> str:
    """An address as /proc/net/tcp writes it: the IPv4 bytes little-endian, then the port."""
    return socket.inet_aton(address[0])[::-1].hex().upper() + f":{address[1]:04X}"


def tcp_queues(local: tuple[str, int], remote: tuple[str, int]) -> tuple[int, int, int] | None:
    """(state, send queue, receive queue) of the IPv4 socket `local` -> `remote`, if any."""
    key = (_hex(local), _hex(remote))
    with open("/proc/net/tcp") as f:
        for line in f:
            fields = line.split()
            if (fields[1], fields[2]) == key:
                tx, rx = fields[4].split(":")
                return int(fields[3], 16), int(tx, 16), int(rx, 16)
    return None


@contextlib.contextmanager
def profiled(pid: int, tool: str | None, output: Path) -> Iterator[None]:
    """Profile the server `pid` while the block runs: `perf` (native, kernel included) or
    `pyinstrument` (Python frames; the server must run `bench.serve_lobby --pyinstrument`).

    `output` gets a text report. A profiled run is slower: it shows where the time
    goes, not the numbers.
    """
    if tool is None:
        yield
        return
    if tool == "pyinstrument":
        report = output.parent / PYINSTRUMENT_REPORT
        report.unlink(missing_ok=True)
        os.kill(pid, signal.SIGUSR1)
        try:
            yield
        finally:
            os.kill(pid, signal.SIGUSR2)  # the server writes its report (see serve_lobby)
            deadline = time.monotonic() + 60
            while not report.exists() and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(0.5)
            report.replace(output)
        return
    data = output.with_suffix(".data")
    spy = subprocess.Popen(
        ["perf", "record", "-F", "499", "-g", "-p", str(pid), "-o", str(data)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(60)
        with output.open("w") as out:
            for sort in ("dso", "dso,symbol"):
                subprocess.run(
                    ["perf", "report", "-i", str(data), "--no-children", "--sort", sort,
                     "--stdio", "-g", "none", "--percent-limit", "0.5"],
                    stdout=out, stderr=subprocess.DEVNULL, check=False,
                )  # fmt: skip
        data.unlink(missing_ok=True)


class Generator:
    """One `bench.gen` process: `call` sends a command and waits for its reply."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.done = asyncio.Event()
        self._replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls) -> Generator:
        proc = await asyncio.create_subprocess_exec(
            PY, "-m", "bench.gen", cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            limit=1 << 26,
        )  # fmt: skip
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            message = json.loads(line)
            if message.get("event") == "done":
                self.done.set()
            else:
                self._replies.put_nowait(message)

    async def call(self, cmd: dict[str, Any], timeout: float = 600.0) -> dict[str, Any]:  # noqa: ASYNC109 (every wait states its bound)
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd).encode() + b"\n")
        await self.proc.stdin.drain()
        async with asyncio.timeout(timeout):
            return await self._replies.get()

    async def stop(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ConnectionError):
                assert self.proc.stdin is not None
                self.proc.stdin.write(b'{"cmd":"exit"}\n')
                await self.proc.stdin.drain()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        self._reader.cancel()


class Generators:
    """The load generator: N sockets spread over ceil(N / per_process) `bench.gen` processes."""

    def __init__(self, procs: list[Generator]) -> None:
        self.procs = procs

    @classmethod
    async def start(cls, n: int, per_process: int) -> Generators:
        count = max(1, -(-n // per_process))
        return cls(list(await asyncio.gather(*(Generator.start() for _ in range(count)))))

    @property
    def pids(self) -> list[int]:
        return [g.pid for g in self.procs]

    def cpu_ns(self) -> int:
        return sum(cpu_ns(pid) for pid in self.pids)

    async def all(self, cmd: dict[str, Any], timeout: float = 600.0) -> list[dict[str, Any]]:  # noqa: ASYNC109 (every wait states its bound)
        return list(await asyncio.gather(*(g.call(cmd, timeout) for g in self.procs)))

    async def arm(self, dialect: str, kind: str) -> int:
        for g in self.procs:
            g.done.clear()
        replies = await self.all({"cmd": "arm", "dialect": dialect, "kind": kind})
        for g, reply in zip(self.procs, replies, strict=True):
            if reply["expected"] == 0:
                g.done.set()
        return sum(r["expected"] for r in replies)

    async def wait_done(self, timeout: float) -> bool:  # noqa: ASYNC109 (every wait states its bound)
        try:
            async with asyncio.timeout(timeout):
                for g in self.procs:
                    await g.done.wait()
        except TimeoutError:
            return False
        return True

    async def collect(self) -> list[int]:
        replies = await self.all({"cmd": "collect"})
        return [t for r in replies for t in r["times"]]

    async def stop(self) -> None:
        await asyncio.gather(*(g.stop() for g in self.procs))
