"""Two lobby servers sharing presence through one real Redis, seen by real websockets clients.

Each server is a whole app (`create_app` with `LOBBY_REDIS_URL`) served by uvicorn on its
own loopback port, as two instances behind a load balancer would be; both ask the same
OpenVidu stand-in for grants. A user logs in on each server it talks to (each test server
has its own user store).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Client, Lobby, LobbyFactory
from tests.openvidu_standin import OpenViduStandin
from tests.redis_server import RedisServer
from tests.test_p2p import hello

Pair = Callable[..., Awaitable[tuple[Lobby, Lobby]]]


async def pair(
    make_lobby: LobbyFactory, redis: RedisServer, **overrides: Any
) -> tuple[Lobby, Lobby]:
    settings = {"redis_url": redis.url, "reconnect_grace": 3.0, **overrides}
    a = await make_lobby(**settings)
    b = await make_lobby(**settings)
    return a, b


def rooms(message: dict[str, Any]) -> dict[str, list[str]]:
    """A welcome's rooms as room -> participant ids."""
    return {r["name"]: [p["id"] for p in r["participants"]] for r in message["rooms"]}


async def events(client: Client, count: int) -> list[dict[str, Any]]:
    return [await client.recv() for _ in range(count)]


def revokes(standin: OpenViduStandin, connection_id: str) -> int:
    return sum(
        1
        for c in standin.calls
        if c.method == "DELETE" and c.path.endswith(f"/connection/{connection_id}")
    )


def connection_of(standin: OpenViduStandin, participant_id: str) -> str:
    """The stand-in's connection id made for `participant_id` (its server data names it)."""
    for session in standin.sessions.values():
        for connection in session.connections.values():
            if participant_id in connection.server_data:
                return connection.id
    raise AssertionError(f"no connection for {participant_id}")


async def test_a_join_on_one_instance_is_seen_on_the_other_in_order(
    make_lobby: LobbyFactory, own_redis: RedisServer
) -> None:
    a, b = await pair(make_lobby, own_redis)
    watcher = await b.client("mod")
    alice = await a.client("alice")
    bob = await a.client("bob")
    alice_token = await alice.join("R1")
    bob_token = await bob.join("R1")
    await alice.request({"type": "leave"})
    seen = await events(watcher, 3)
    assert [(m["type"], m["participant"]["id"]) for m in seen] == [
        ("joined", alice_token["participant"]["id"]),
        ("joined", bob_token["participant"]["id"]),
        ("left", alice_token["participant"]["id"]),
    ]
    await watcher.nothing()


async def test_a_welcome_on_either_instance_is_the_global_state(
    make_lobby: LobbyFactory, own_redis: RedisServer
) -> None:
    a, b = await pair(make_lobby, own_redis)
    alice = await a.client("alice")
    bob = await b.client("bob")
    first = await alice.join("R1")
    second = await bob.join("R2")
    on_a, on_b = await a.client("mod"), await b.client("mod")
    expected = {"R1": [first["participant"]["id"]], "R2": [second["participant"]["id"]]}
    assert rooms(on_a.welcome) == rooms(on_b.welcome) == expected


async def test_a_page_reloaded_onto_the_other_instance_resumes_unseen(
    make_lobby: LobbyFactory, own_redis: RedisServer, standin: OpenViduStandin
) -> None:
    a, b = await pair(make_lobby, own_redis)
    watchers = [await a.client("mod"), await b.client("mod")]
    alice = await a.client("alice")
    token = await alice.join("R1")
    for watcher in watchers:
        assert (await watcher.expect("joined"))["participant"] == token["participant"]
    await alice.close()
    again = await b.client("alice")
    ref = await again.request({"type": "resume", "key": token["resume_key"], "token": True})
    resumed = await again.until("resumed", timeout=10)
    assert resumed["ref"] == ref
    assert resumed["participant"]["id"] == token["participant"]["id"]
    assert resumed["token"]
    for watcher in watchers:
        await watcher.nothing(within=1.0)


async def test_an_expiry_on_one_instance_is_seen_once_and_revoked_once(
    make_lobby: LobbyFactory, own_redis: RedisServer, standin: OpenViduStandin
) -> None:
    a, b = await pair(make_lobby, own_redis, reconnect_grace=0.5)
    watcher = await b.client("mod")
    alice = await a.client("alice")
    token = await alice.join("R1")
    pid = token["participant"]["id"]
    connection = connection_of(standin, pid)
    assert (await watcher.expect("joined"))["participant"]["id"] == pid
    await alice.close()
    left = await watcher.expect("left", timeout=10)
    assert (left["participant"]["id"], left["reason"]) == (pid, "disconnected")
    assert (await watcher.expect("room_closed"))["room"] == "R1"
    await standin.wait_for(lambda: revokes(standin, connection) >= 1)
    await watcher.nothing(within=1.5)
    assert revokes(standin, connection) == 1


async def test_readyz_checks_redis(make_lobby: LobbyFactory, own_redis: RedisServer) -> None:
    a, _ = await pair(make_lobby, own_redis)
    async with httpx.AsyncClient(base_url=a.http) as http:
        assert (await http.get("/readyz")).status_code == 200
        own_redis.stop()
        async with asyncio.timeout(10):
            # Polled like a load balancer polls it; the check itself has no event to wait on.
            while (reply := await http.get("/readyz")).status_code == 200:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
    assert "redis" in reply.json()["failing"]


def redis_up(scrape: str) -> float:
    [family] = [f for f in text_string_to_metric_families(scrape) if f.name == "lobby_redis_up"]
    [sample] = family.samples
    return sample.value


async def test_metrics_say_whether_redis_answers(
    make_lobby: LobbyFactory, own_redis: RedisServer
) -> None:
    a, _ = await pair(make_lobby, own_redis)
    async with httpx.AsyncClient(base_url=a.http) as http:
        assert redis_up((await http.get("/metrics")).text) == 1
        own_redis.stop()
        async with asyncio.timeout(10):
            # Scraped as Prometheus scrapes it; the gauge has no event to wait on.
            while redis_up((await http.get("/metrics")).text) == 1:  # noqa: ASYNC110
                await asyncio.sleep(0.1)


async def test_a_resume_on_the_other_instance_takes_over_the_open_socket(
    make_lobby: LobbyFactory, own_redis: RedisServer
) -> None:
    a, b = await pair(make_lobby, own_redis)
    alice = await a.client("alice")
    token = await alice.join("R1")
    await alice.until("joined")
    second = await b.client("alice")
    await second.request({"type": "resume", "key": token["resume_key"]})
    assert (await second.until("resumed"))["participant"] == token["participant"]
    taken = await alice.expect("taken_over")
    assert (taken["room"], taken["participant"]) == ("R1", token["participant"])


def view(frames: list[dict[str, Any]]) -> dict[str, list[str]]:
    """What a page shows: its last `welcome`, then the events after it."""
    shown: dict[str, list[str]] = {}
    for m in frames:
        if m["type"] == "welcome":
            shown = rooms(m)
        elif m["type"] == "joined":
            shown.setdefault(m["room"], []).append(m["participant"]["id"])
        elif m["type"] == "left":
            shown[m["room"]].remove(m["participant"]["id"])
        elif m["type"] == "room_closed":
            assert shown.pop(m["room"]) == []
    return shown


async def test_redis_losing_its_data_resends_every_socket_a_welcome(
    make_lobby: LobbyFactory, own_redis: RedisServer
) -> None:
    a, b = await pair(make_lobby, own_redis)
    watcher = await b.client("mod")
    alice = await a.client("alice")
    token = await alice.join("R1")
    await watcher.expect("joined")
    own_redis.flush()
    frames = [
        watcher.welcome,
        {"type": "joined", "room": "R1", "participant": token["participant"]},
    ]
    frames.append(await watcher.expect("welcome", timeout=10))
    expected = {"R1": [token["participant"]["id"]]}
    async with asyncio.timeout(10):
        while view(frames) != expected:
            frames.append(await watcher.recv())
    on_b = await b.client("sub")
    assert rooms(on_b.welcome) == expected


async def test_signals_reach_a_peer_on_the_other_instance_in_order(
    make_lobby: LobbyFactory, own_redis: RedisServer
) -> None:
    a, b = await pair(make_lobby, own_redis, media="p2p")
    alice, bob = await a.client("alice"), await b.client("bob")
    pa = (await alice.join("R1"))["participant"]["id"]
    pb = (await bob.join("R1"))["participant"]["id"]
    await alice.until("joined")
    await alice.until("joined")  # its own, then bob's
    sent = [hello(f"l{i}") for i in range(20)]
    for data in sent:
        await alice.send({"type": "signal", "to": pb, "data": data})
    got = [await bob.until("signal") for _ in sent]
    assert got == [{"type": "signal", "from": pa, "data": data} for data in sent]
    await bob.send({"type": "signal", "to": pa, "data": hello("back")})
    assert await alice.until("signal") == {"type": "signal", "from": pb, "data": hello("back")}


async def test_a_media_report_on_one_instance_is_seen_on_the_other_and_in_its_welcome(
    make_lobby: LobbyFactory, own_redis: RedisServer
) -> None:
    a, b = await pair(make_lobby, own_redis)
    watcher = await b.client("mod")
    alice = await a.client("alice")
    token = await alice.join("R1")
    assert (await watcher.expect("joined"))["participant"]["media"] is None
    sharing = {"camera": False, "microphone": True, "screen": True}
    await alice.send({"type": "media", **sharing})
    changed = await watcher.expect("media")
    assert changed == {
        "type": "media",
        "room": "R1",
        "participant": token["participant"]["id"],
        "media": sharing,
    }
    await alice.send({"type": "media", **sharing})  # no change: nothing anywhere
    await watcher.nothing()
    late = await b.client("bob")
    [person] = late.welcome["rooms"][0]["participants"]
    assert person["media"] == sharing
