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
    """Debug-only timing of the Redis hop (`bench.cluster`): one line per append batch sent
    to Redis (`p`, CLOCK_MONOTONIC ns just before the pipeline goes out) and per broadcast
    (`b`, ns just before it frames and writes to the first socket).

    Wraps the two methods on their classes, in this bench process only; one buffered
    line each (about a microsecond), nothing per socket.
    """
    import time

    from lobby.cluster.stream import Stream
    from lobby.hub import Hub

    out = open(path, "w", buffering=1)  # noqa: SIM115 (open for the life of the process)
    append_all, broadcast = Stream.append_all, Hub.broadcast

    async def logged_append(self: Stream, *args: Any) -> list[Any]:
        out.write(f"p {time.monotonic_ns()}\n")
        return await append_all(self, *args)

    def logged_broadcast(self: Hub, text: str) -> None:
        out.write(f"b {time.monotonic_ns()}\n")
        broadcast(self, text)

    Stream.append_all = logged_append  # type: ignore[method-assign]
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
