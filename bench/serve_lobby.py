"""`python -m bench.serve_lobby --port P [--lobby-path DIR]`: the lobby as the bench runs it.

Exactly what `lobby serve` builds (`uvicorn_config(create_app(settings), settings)`,
settings from the environment) with a listen backlog as deep as the kernel
allows, so a burst of handshakes is queued rather than refused. `--lobby-path`
puts a patched copy of the `lobby` package first on the path, to measure a
change before it is made in the repository. `--lag-log` writes down every event-loop stall
over 5 ms (`bench.phases.paced` reads it).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from dataclasses import replace
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--lobby-path", help="directory holding a variant `lobby` package")
    parser.add_argument("--pyinstrument", help="profile between SIGUSR1 and SIGUSR2 into this file")
    parser.add_argument("--loop", help="uvicorn's event loop instead of its default (auto: uvloop)")
    parser.add_argument(
        "--gc-log", help="write every garbage collection (time, generation, ms) here"
    )
    parser.add_argument("--lag-log", help="write every event-loop stall over 5 ms here")
    parser.add_argument(
        "--hop-log", help="write the time of every append to Redis and every broadcast here"
    )
    parser.add_argument(
        "--no-give-way",
        action="store_true",
        help="never yield the core after reading own entries (to measure what it is worth)",
    )
    args = parser.parse_args()
    if args.lobby_path:
        sys.path.insert(0, args.lobby_path)

    import uvicorn

    import lobby
    from lobby.app import create_app
    from lobby.config import Settings
    from lobby.server import uvicorn_config

    settings = replace(Settings.from_env(), host="127.0.0.1", port=args.port)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(levelname)s %(name)s: %(message)s"
    )
    print(f"lobby from {lobby.__file__}", file=sys.stderr, flush=True)
    config = uvicorn_config(create_app(settings), settings)
    config.backlog = 4096  # net.core.somaxconn here
    if args.loop:
        config.loop = args.loop
    if args.pyinstrument:
        _profile_on_signals(args.pyinstrument)
    if args.gc_log:
        _log_collections(args.gc_log)
    if args.hop_log:
        _log_hops(args.hop_log)
    if args.no_give_way:
        import lobby.cluster.node

        lobby.cluster.node.on_this_machine = lambda url: False
    server = uvicorn.Server(config)
    if args.lag_log:
        _probe_lag(server, args.lag_log)
    server.run()


# The lag probe: how often it asks to wake up, and the lateness worth writing down.
LAG_PERIOD = 0.01
LAG_REPORT_MS = 5.0


def _probe_lag(server: Any, path: str) -> None:
    """A task on the server's loop that wakes every `LAG_PERIOD` s and writes one line per
    wake-up more than `LAG_REPORT_MS` late: CLOCK_MONOTONIC ns then, the lag in ms.

    A late wake-up is a stall: nothing else on the loop ran either (no frame read or
    written) for that long. About 100 wake-ups a second.
    """
    import asyncio
    import time

    async def probe() -> None:
        with open(path, "w", buffering=1) as out:  # noqa: ASYNC230 (once, at start)
            while True:
                due = time.monotonic() + LAG_PERIOD
                await asyncio.sleep(LAG_PERIOD)
                lag = (time.monotonic() - due) * 1000
                if lag > LAG_REPORT_MS:
                    out.write(f"{time.monotonic_ns()} {lag:.1f}\n")

    serve = server.serve

    async def probed(sockets: Any = None) -> None:
        task = asyncio.get_running_loop().create_task(probe())
        try:
            await serve(sockets)
        finally:
            task.cancel()

    server.serve = probed


def _log_collections(path: str) -> None:
    """One line per collection: CLOCK_MONOTONIC ns at its end, generation, duration in ms."""
    import gc
    import time

    out = open(path, "w", buffering=1)  # noqa: SIM115 (open for the life of the process)
    started = 0

    def note(phase: str, info: dict[str, int]) -> None:
        nonlocal started
        now = time.monotonic_ns()
        if phase == "start":
            started = now
        else:
            out.write(f"{now} {info['generation']} {(now - started) / 1e6:.3f}\n")

    gc.callbacks.append(note)


def _log_hops(path: str) -> None:
    """Debug-only timing of the Redis hop (`bench.cluster`), CLOCK_MONOTONIC ns:

    - `p NS BY REF:OP,…`: an append batch about to go out to Redis (this instance, `BY`);
    - `a NS BY REF OP FIRST`: an entry applied (read from the log, any issuer); FIRST is
      when its first broadcast began, 0 if it broadcast nothing;
    - `b NS`: a broadcast about to frame and write to the first socket.

    An event's hop is an entry's `p` on its issuer to its `a`'s FIRST on another
    instance. Wraps the methods on their classes, in this bench process only; one
    buffered line each (about a microsecond), nothing per socket.
    """
    import time

    from lobby.cluster.node import RedisPresence
    from lobby.cluster.stream import Entry, Stream
    from lobby.hub import Hub

    out = open(path, "w", buffering=1)  # noqa: SIM115 (open for the life of the process)
    append_all, apply, broadcast = Stream.append_all, RedisPresence._apply, Hub.broadcast
    first = [0]

    def op(cmd: str) -> str:
        return cmd[7 : cmd.find('"', 7)]  # '{"op":"NAME",…', as `commands.encode` writes it

    async def logged_append(self: Stream, epoch: str, by: str, batch: Any) -> list[Any]:
        refs = ",".join(f"{ref}:{op(cmd)}" for ref, cmd in batch)
        out.write(f"p {time.monotonic_ns()} {by} {refs}\n")
        return await append_all(self, epoch, by, batch)

    def logged_apply(self: RedisPresence, entry: Entry) -> None:
        began, first[0] = time.monotonic_ns(), 0
        apply(self, entry)
        out.write(f"a {began} {entry.by} {entry.ref} {op(entry.cmd)} {first[0]}\n")

    def logged_broadcast(self: Hub, text: str) -> None:
        now = time.monotonic_ns()
        first[0] = first[0] or now
        out.write(f"b {now}\n")
        broadcast(self, text)

    Stream.append_all = logged_append  # type: ignore[method-assign]
    RedisPresence._apply = logged_apply  # type: ignore[method-assign]
    Hub.broadcast = logged_broadcast  # type: ignore[method-assign]


def _profile_on_signals(report: str) -> None:
    """SIGUSR1 starts pyinstrument on the event loop's thread; SIGUSR2 writes `report`."""
    from pyinstrument import Profiler  # type: ignore[import-not-found]  # not a dependency

    profiler = Profiler(interval=0.0002, async_mode="disabled")

    def start(*_: object) -> None:
        if not profiler.is_running:
            profiler.reset()
            profiler.start()

    def stop(*_: object) -> None:
        if profiler.is_running:
            profiler.stop()
            text = profiler.output_text(unicode=True, show_all=True, short_mode=False)
            with open(report, "w") as f:
                f.write(text)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)


if __name__ == "__main__":
    main()
