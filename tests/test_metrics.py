"""`GET /metrics`, scraped over real HTTP after real actions and read with prometheus-client."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from lobby.rules.limits import LoginThrottle
from lobby.web.metrics import Metrics, Readings
from tests.conftest import Client, Lobby, LobbyFactory, csrf_from, until
from tests.live import free_port
from tests.openvidu_standin import OpenViduStandin

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(lobby: Lobby) -> Samples:
    async with httpx.AsyncClient(base_url=lobby.http) as http:
        reply = await http.get("/metrics")
    assert reply.status_code == 200, reply.text
    assert reply.headers["content-type"].startswith("text/plain; version=")
    return parse(reply.text)


async def wrong_login(lobby: Lobby, name: str) -> int:
    async with httpx.AsyncClient(base_url=lobby.http) as http:
        token = csrf_from((await http.get("/")).text)
        reply = await http.post("/login", data={"user": name, "pass": "wrong", "csrf_token": token})
    return reply.status_code


async def test_metrics_count_what_happened(make_lobby: LobbyFactory) -> None:
    lobby: Lobby = await make_lobby(login_throttle=LoginThrottle(free_failures=1))
    alice: Client = await lobby.client("alice")
    bob: Client = await lobby.client("bob")
    await alice.join("R1")
    await bob.join("R2")
    before = await scrape(lobby)
    assert value(before, "lobby_sockets", process="main") == 2
    assert value(before, "lobby_participants", process="main") == 2
    assert value(before, "lobby_rooms", process="main") == 2
    assert value(before, "lobby_media_breaker_open", process="main") == 0
    assert (
        value(
            before, "lobby_media_calls_total", backend="openvidu", operation="grant", outcome="ok"
        )
        == 2
    )
    assert (
        value(before, "lobby_media_call_seconds_count", backend="openvidu", operation="grant") == 2
    )
    assert value(before, "lobby_logins_total", outcome="ok") == 2

    await bob.request({"type": "leave"})
    await until(lambda: len(lobby.state.handler.presence) == 1)
    answers = [await wrong_login(lobby, "carol") for _ in range(3)]
    assert answers == [401, 401, 429]  # one free failure, a second locks: the third is refused
    after = await scrape(lobby)
    assert value(after, "lobby_participants", process="main") == 1
    assert value(after, "lobby_rooms", process="main") == 1
    assert value(after, "lobby_logins_total", outcome="wrong_password") == 2
    assert value(after, "lobby_logins_total", outcome="throttled") == 1


async def test_metrics_count_media_failures_and_the_breaker(
    lobby: Lobby, standin: OpenViduStandin
) -> None:
    alice: Client = await lobby.client("alice")
    standin.fault = 503
    await alice.request({"type": "join", "room": "R1", "nickname": "A"})
    assert (await alice.until("error"))["code"] == "media_unavailable"
    down = await scrape(lobby)
    assert (
        value(
            down, "lobby_media_calls_total", backend="openvidu", operation="grant", outcome="outage"
        )
        == 1
    )
    assert value(down, "lobby_media_breaker_open", process="main") == 1
    standin.fault = None
    await until(lambda: not lobby.state.handler.calls.media.down, timeout=10)  # type: ignore[attr-defined]
    back = await scrape(lobby)
    assert value(back, "lobby_media_breaker_open", process="main") == 0
    assert (
        value(back, "lobby_media_calls_total", backend="openvidu", operation="probe", outcome="ok")
        == 1
    )


async def test_metrics_count_grace_expiries_and_resumes(lobby: Lobby) -> None:
    alice: Client = await lobby.client("alice")
    kept = (await alice.join("R1"))["resume_key"]
    await alice.close()
    again: Client = await lobby.client("alice", cookie=alice.cookie)
    await again.request({"type": "resume", "key": kept})
    await again.until("resumed")
    bob: Client = await lobby.client("bob")
    await bob.join("R2")
    await bob.close()
    await until(lambda: lobby.state.handler.grace_expiries == 1, timeout=5)
    samples = await scrape(lobby)
    assert value(samples, "lobby_resumes_total", process="main") == 1
    assert value(samples, "lobby_grace_expiries_total", process="main") == 1
    # Alice's joined, Bob's joined, then his left and room_closed after the grace period.
    assert value(samples, "lobby_events_broadcast_total") == 4


async def test_metrics_are_404_for_a_forwarded_request_or_an_address_not_allowed(
    make_lobby: LobbyFactory,
) -> None:
    lobby: Lobby = await make_lobby()
    async with httpx.AsyncClient(base_url=lobby.http) as http:
        forwarded = await http.get("/metrics", headers={"X-Forwarded-For": "127.0.0.1"})
        assert forwarded.status_code == 404
        assert "lobby_" not in forwarded.text
    closed: Lobby = await make_lobby(metrics_allow=("10.0.0.0/8",))
    async with httpx.AsyncClient(base_url=closed.http) as http:
        assert (await http.get("/metrics")).status_code == 404


async def test_metrics_port_serves_metrics_alone(make_lobby: LobbyFactory) -> None:
    port = free_port()
    lobby: Lobby = await make_lobby(metrics_port=port, metrics_allow=())
    await lobby.client("alice")
    async with httpx.AsyncClient() as http:
        reply = await http.get(f"http://127.0.0.1:{port}/metrics")
        assert (await http.get(f"{lobby.http}/metrics")).status_code == 404
    assert value(parse(reply.text), "lobby_sockets", process="main") == 1


def test_broadcast_and_slow_cuts_count_once_per_event() -> None:
    metrics = Metrics("p2p")
    metrics.watch(Readings(*(lambda: 0,) * 6))  # type: ignore[arg-type]
    metrics.broadcast(frames=500, seconds=0.002)
    metrics.slow_cut()
    samples = parse(metrics.text().decode())
    assert value(samples, "lobby_events_broadcast_total") == 1
    assert value(samples, "lobby_frames_written_total") == 500
    assert value(samples, "lobby_fanout_seconds_count") == 1
    assert value(samples, "lobby_slow_sockets_cut_total") == 1
