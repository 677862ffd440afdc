"""`python -m bench.lagprobe LOG -- <serve_lobby args>`: the lobby with an event-loop lag probe.

A task on the lobby's loop asks to wake every `PERIOD` seconds and writes one line to
LOG for each wake-up that came more than `REPORT_MS` late: CLOCK_MONOTONIC ns at the
wake-up and the lag in ms. A late wake-up is a stall: nothing else on the loop ran
either (no frame written, no frame read) for that long. Costs about 100 wake-ups a second.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

PERIOD = 0.01  # seconds between wake-ups
REPORT_MS = 5.0  # lags above this are written down


async def probe(path: str) -> None:
    with open(path, "w", buffering=1) as out:  # noqa: ASYNC230 (before the server starts)
        while True:
            due = time.monotonic() + PERIOD
            await asyncio.sleep(PERIOD)
            now = time.monotonic()
            lag = (now - due) * 1000
            if lag > REPORT_MS:
                out.write(f"{time.monotonic_ns()} {lag:.1f}\n")


def main() -> None:
    log, rest = sys.argv[1], sys.argv[3:]
    import uvicorn

    serve = uvicorn.Server.serve

    async def probed(self: uvicorn.Server, sockets: Any = None) -> None:
        task = asyncio.get_running_loop().create_task(probe(log))
        try:
            await serve(self, sockets)
        finally:
            task.cancel()

    uvicorn.Server.serve = probed  # type: ignore[method-assign]
    sys.argv = ["bench.serve_lobby", *rest]
    from bench import serve_lobby

    serve_lobby.main()


if __name__ == "__main__":
    main()
