"""`/healthz` (liveness) and `/readyz` (readiness): what a load balancer or an orchestrator polls.

`/healthz` answers 200 as long as the process answers at all. `/readyz` runs the
named checks of `Readiness` (the database answers, the media back end's breaker is
closed, the instance is not draining, and with Redis: it takes commands) and answers 200 when
none fails, else 503 with a JSON body naming each failing check and a sentence.
Both are cheap enough to poll every second: the database check is one `SELECT 1`
(on the loop, like every other query), the others read a flag.

What strangers learn stays as little as `/healthz` always told them: the status,
and for `/readyz` which checks fail (what users already see as the login page's or
a join's "unavailable"). The socket, participant and room counts, the demo flag and the
media mode go only to a client on the server's own machine that a proxy did not
forward (`curl http://127.0.0.1:5000/readyz`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import sqlite3
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from lobby.store.db import UNAVAILABLE, Database, Unavailable
from lobby.web.state import state_of

CLUSTER_UNAVAILABLE = (
    "The lobby cannot reach its shared state right now; please try again in a moment."
)

# A probe answers None when all is well, else a sentence saying what is wrong.
Probe = Callable[[], Awaitable[str | None]]


@dataclass(frozen=True, slots=True)
class Check:
    """One named condition `/readyz` requires."""

    name: str
    probe: Probe


class Readiness:
    """The checks `/readyz` runs, and the draining flag a graceful shutdown sets.

    The seam for what comes later: Redis adds `Check("redis", …)` with `add`, and
    the drain sets `draining`, which makes the instance unready at once.
    """

    def __init__(self, checks: Iterable[Check] = ()) -> None:
        self.draining = False
        self.checks: list[Check] = [*checks, Check("draining", self._drain)]

    def add(self, check: Check) -> None:
        self.checks.insert(len(self.checks) - 1, check)

    async def failing(self) -> dict[str, str]:
        """Each failing check's name and sentence, in the checks' order; empty when ready."""
        answers = await asyncio.gather(*(check.probe() for check in self.checks))
        return {
            check.name: answer
            for check, answer in zip(self.checks, answers, strict=True)
            if answer is not None
        }

    async def _drain(self) -> str | None:
        return (
            "This instance is shutting down; new sockets go elsewhere." if self.draining else None
        )


def redis_check(healthy: Callable[[], bool]) -> Check:
    """Ready while the shared presence (Redis) takes commands."""

    async def probe() -> str | None:
        return None if healthy() else CLUSTER_UNAVAILABLE

    return Check("redis", probe)


def database_check(db: Database) -> Check:
    async def probe() -> str | None:
        try:
            db.execute("SELECT 1").fetchone()
        except (Unavailable, sqlite3.Error):
            return UNAVAILABLE
        return None

    return Check("database", probe)


def media_check(down: Callable[[], bool]) -> Check:
    """The media back end is reachable: its breaker (`lobby.media.breaker`) is closed."""

    async def probe() -> str | None:
        return "The video service does not answer; joins fail until it does." if down() else None

    return Check("media", probe)


async def healthz(request: Request) -> Response:
    """Liveness: the process answers. Nothing else, for anyone."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Readiness: 200 when every check passes, else 503 naming the failing ones."""
    state = state_of(request)
    failing = await state.readiness.failing()
    body: dict[str, object] = {"status": "unavailable" if failing else "ready"}
    if failing:
        body["failing"] = failing
    if _on_this_machine(request):
        body |= {
            "sockets": len(state.hub),
            "participants": len(state.handler.presence),
            "rooms": state.handler.presence.room_count,
            "demo": state.settings.demo,
            "media": state.settings.media,
        }
    return JSONResponse(body, status_code=503 if failing else 200)


def _on_this_machine(request: Request) -> bool:
    """A loopback client asking directly. A request a proxy forwarded is a stranger's,
    whatever address it names: the proxy on this machine speaks for someone else."""
    if "x-forwarded-for" in request.headers or "forwarded" in request.headers:
        return False
    try:
        address = ipaddress.ip_address(request.client.host if request.client else "")
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback
