"""`python -m bench.gen`: one load-generator process holding up to ~9,000 sockets.

One process may hold at most 20,000 open files here, so the controller
(`bench.run`) spreads N sockets over several of these. It drives each with one
JSON command per line on stdin; every command gets one JSON reply line on
stdout, and `{"event": "done"}` lines arrive on their own when an armed event
has reached every socket of this process.

Commands: `connect` (open `count` sockets), `arm` (record the arrival time of
the next frame of one event type on every socket), `collect` (those times, in
µs of CLOCK_MONOTONIC, which every process on the machine shares), `reset` and
`counts` (events per socket, to check that nobody missed one), `exit`.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import sys
import time
from typing import Any

import uvloop

from bench.wsclient import WS, client_frame, event_prefix, handshake, open_socket

PONG = client_frame(b"3")


class Idle(WS):
    """A socket that only listens: counts frames and stamps the armed one."""

    def __init__(self, request: bytes, dialect: str, worker: Worker) -> None:
        super().__init__(request, dialect)
        self.worker = worker
        self.events = 0

    def on_text(self, payload: bytes) -> None:
        if payload == b"2":  # Engine.IO ping
            self.transport.write(PONG)  # type: ignore[union-attr]
            return
        self.events += 1
        worker = self.worker
        if worker.prefix is not None and payload.startswith(worker.prefix):
            worker.arrive()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self.worker.lost += 1
        self.worker.close_codes[str(self.close_code)] += 1


class Worker:
    def __init__(self) -> None:
        self.sockets: list[Idle] = []
        self.prefix: bytes | None = None
        self.times: list[int] = []
        self.expected = 0
        self.lost = 0
        self.close_codes: collections.Counter[str] = collections.Counter()

    def reply(self, message: dict[str, Any]) -> None:
        sys.stdout.buffer.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
        sys.stdout.buffer.flush()

    def arrive(self) -> None:
        times = self.times
        times.append(time.monotonic_ns())
        if len(times) == self.expected:
            self.reply({"event": "done"})

    async def connect(self, cmd: dict[str, Any]) -> dict[str, Any]:
        host, port, dialect = cmd["host"], cmd["port"], cmd["dialect"]
        cookies: list[str] | None = cmd.get("cookies")
        gate = asyncio.Semaphore(cmd.get("concurrency", 100))
        errors: collections.Counter[str] = collections.Counter()

        async def one(i: int) -> None:
            headers = {"Origin": cmd["origin"]}
            if cookies:
                headers["Cookie"] = f"lobby_session={cookies[i]}"
            request = handshake(host, port, cmd["path"], headers)
            async with gate:
                try:
                    sock = await open_socket(
                        lambda: Idle(request, dialect, self),
                        host,
                        port,
                        source=cmd.get("source"),
                        timeout=cmd.get("timeout", 30.0),
                    )
                except Exception as exc:  # every failure is counted and reported
                    errors[f"{type(exc).__name__}: {exc}"[:120]] += 1
                else:
                    assert isinstance(sock, Idle)
                    self.sockets.append(sock)

        started = time.monotonic()
        await asyncio.gather(*(one(i) for i in range(cmd["count"])))
        return {
            "connected": len(self.sockets),
            "errors": sum(errors.values()),
            "error_kinds": dict(errors.most_common(5)),
            "seconds": time.monotonic() - started,
        }

    def arm(self, cmd: dict[str, Any]) -> dict[str, Any]:
        self.times = []
        self.expected = sum(1 for s in self.sockets if not s.closed)
        self.prefix = event_prefix(cmd["dialect"], cmd["kind"])
        return {"expected": self.expected}

    def collect(self) -> dict[str, Any]:
        self.prefix = None
        return {"times": [t // 1000 for t in self.times], "expected": self.expected}

    def counts(self) -> dict[str, Any]:
        live = [s.events for s in self.sockets if not s.closed]
        return {
            "min": min(live, default=0),
            "max": max(live, default=0),
            "sum": sum(live),
            "open": len(live),
            "lost": self.lost,
            "close_codes": dict(self.close_codes),
        }

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 24)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            cmd = json.loads(line)
            name = cmd["cmd"]
            if name == "connect":
                self.reply(await self.connect(cmd))
            elif name == "arm":
                self.reply(self.arm(cmd))
            elif name == "collect":
                self.reply(self.collect())
            elif name == "reset":
                for sock in self.sockets:
                    sock.events = 0
                self.reply({"ok": True})
            elif name == "counts":
                self.reply(self.counts())
            elif name == "exit":
                break
        sys.stdout.flush()
        # The kernel closes every socket at once; a polite close of thousands would take seconds.
        os._exit(0)


def main() -> None:
    uvloop.run(Worker().run())


if __name__ == "__main__":
    main()
