"""`/healthz` (liveness) and `/readyz` (readiness): what they say, and to whom."""

from __future__ import annotations

import httpx
import pytest

from lobby.media.breaker import Breaker
from lobby.store.db import UNAVAILABLE, connect
from lobby.web.health import Check, Readiness, database_check
from tests.conftest import Client, Lobby, until
from tests.openvidu_standin import OpenViduStandin


async def _never() -> str | None:
    return None


async def test_readiness_names_each_failing_check_and_draining_comes_last() -> None:
    async def broken() -> str | None:
        return "Redis does not answer."

    readiness = Readiness([Check("database", _never)])
    assert await readiness.failing() == {}
    readiness.add(Check("redis", broken))  # where Redis plugs in
    readiness.draining = True
    assert [check.name for check in readiness.checks] == ["database", "redis", "draining"]
    failing = await readiness.failing()
    assert list(failing) == ["redis", "draining"]
    assert failing["redis"] == "Redis does not answer."


async def test_the_database_check_fails_when_the_database_does_not_answer() -> None:
    db = connect(":memory:")
    check = database_check(db)
    assert await check.probe() is None
    db.close()
    assert await check.probe() == UNAVAILABLE


@pytest.mark.parametrize("forwarded", ["203.0.113.9", "127.0.0.1"])
async def test_health_tells_strangers_only_ok(lobby: Lobby, forwarded: str) -> None:
    # Through a proxy (trusted from loopback in tests), even one claiming loopback.
    async with httpx.AsyncClient(base_url=lobby.http) as http:
        proxied = {"X-Forwarded-For": forwarded}
        health = await http.get("/healthz", headers=proxied)
        ready = await http.get("/readyz", headers=proxied)
        local_health = await http.get("/healthz")
    assert health.status_code == ready.status_code == 200
    assert health.json() == local_health.json() == {"status": "ok"}
    assert ready.json() == {"status": "ready"}


async def test_readyz_gives_the_counts_to_a_local_client(lobby: Lobby) -> None:
    alice: Client = await lobby.client("alice")
    await alice.join("R1")
    async with httpx.AsyncClient(base_url=lobby.http) as http:
        reply = await http.get("/readyz")
    assert reply.status_code == 200
    assert reply.json() == {
        "status": "ready",
        "sockets": 1,
        "participants": 1,
        "rooms": 1,
        "demo": False,
        "media": "openvidu",
    }


async def test_readyz_is_503_naming_the_media_server_while_it_is_down_and_when_draining(
    lobby: Lobby, standin: OpenViduStandin
) -> None:
    alice: Client = await lobby.client("alice")
    standin.fault = 503
    await alice.request({"type": "join", "room": "R1", "nickname": "A"})
    assert (await alice.until("error"))["code"] == "media_unavailable"
    async with httpx.AsyncClient(base_url=lobby.http) as http:
        down = await http.get("/readyz", headers={"X-Forwarded-For": "203.0.113.9"})
        assert down.status_code == 503
        assert down.json() == {
            "status": "unavailable",
            "failing": {"media": "The video service does not answer; joins fail until it does."},
        }
        assert (await http.get("/healthz")).status_code == 200  # alive all the same
        standin.fault = None
        lobby.state.readiness.draining = True
        breaker = lobby.state.media
        assert isinstance(breaker, Breaker)
        await until(lambda: not breaker.down, timeout=10)  # its probe notices OpenVidu is back
        drained = await http.get("/readyz")
    assert drained.status_code == 503
    assert list(drained.json()["failing"]) == ["draining"]
    assert drained.json()["sockets"] == 1
