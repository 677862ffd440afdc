"""Reconciling call states with the media server's own list, against the stand-ins over HTTP:
lost webhooks corrected, connections the lobby does not know removed exactly once, and a
media server that does not answer changes nothing."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import httpx
import pytest

from lobby.media.breaker import Breaker
from lobby.media.livekit import LiveKitBackend
from tests.conftest import Client, Lobby, LobbyFactory, until
from tests.livekit_standin import LiveKitStandin, running_standin
from tests.openvidu_standin import OpenViduStandin
from tests.redis_server import RedisServer

KEY, SECRET = "APIlobby", "reconcile-secret-0123456789-0123456789"


@pytest.fixture
async def livekit() -> AsyncIterator[LiveKitStandin]:
    async with running_standin(KEY, SECRET) as standin:
        yield standin


async def livekit_lobby(
    make_lobby: LobbyFactory, livekit: LiveKitStandin, interval: float = 0
) -> Lobby:
    """A lobby on the LiveKit stand-in; no webhooks reach it (they were all lost)."""
    lobby: Lobby = await make_lobby(
        media="livekit",
        backend=LiveKitBackend(livekit.ws_url, livekit.url, KEY, SECRET, timeout=2),
        livekit_api_key=KEY,
        livekit_api_secret=SECRET,
        call_reconcile_interval=interval,
    )
    return lobby


async def in_room(lobby: Lobby, room: str = "R1") -> tuple[Client, Client, str]:
    alice, bob = await lobby.client("alice"), await lobby.client("bob")
    pid: str = (await alice.join(room))["participant"]["id"]
    await alice.until("joined")
    await bob.until("joined")
    return alice, bob, pid


def removals(livekit: LiveKitStandin) -> list[str]:
    return [c.request["identity"] for c in livekit.calls if c.method == "RemoveParticipant"]


async def test_a_lost_webhook_is_corrected_from_the_participant_list(
    make_lobby: LobbyFactory, livekit: LiveKitStandin
) -> None:
    lobby = await livekit_lobby(make_lobby, livekit)
    alice, bob, pid = await in_room(lobby)
    livekit.join("R1", pid)  # joined the call; its webhook never came

    await lobby.state.call_states.reconcile()
    for client in (alice, bob):
        assert (await client.recv())["call"] == "connected"
    del livekit.rooms["R1"].participants[pid]  # and left it, unheard of too
    await lobby.state.call_states.reconcile()
    for client in (alice, bob):
        assert (await client.recv())["call"] == "dropped"
    listed = [c for c in livekit.calls if c.method == "ListParticipants"]
    assert [(c.request, c.status) for c in listed] == [({"room": "R1"}, 200)] * 2
    await lobby.state.call_states.reconcile()  # nothing new: no event
    await bob.nothing()


async def test_the_periodic_check_runs_by_itself(
    make_lobby: LobbyFactory, livekit: LiveKitStandin
) -> None:
    lobby = await livekit_lobby(make_lobby, livekit, interval=0.05)
    _, bob, pid = await in_room(lobby)
    livekit.join("R1", pid)
    assert (await bob.until("call_state"))["call"] == "connected"


async def test_a_participant_the_lobby_does_not_know_is_removed_exactly_once(
    make_lobby: LobbyFactory, livekit: LiveKitStandin
) -> None:
    lobby = await livekit_lobby(make_lobby, livekit)
    _, bob, pid = await in_room(lobby)
    livekit.join("R1", pid)
    livekit.join("R1", "p_leaked")  # a token that outlived its participant, a stale tab

    # Two rounds at once: the second finds the first's removal under way.
    await asyncio.gather(*(lobby.state.call_states.reconcile() for _ in range(2)))
    await livekit.wait_for(lambda: removals(livekit) == ["p_leaked"])
    await lobby.state.call_states.reconcile()  # gone now: nothing more to remove
    assert removals(livekit) == ["p_leaked"]
    assert list(livekit.rooms["R1"].participants) == [pid]
    assert (await bob.recv())["call"] == "connected"


async def test_a_participant_leaving_during_the_check_is_removed_once_by_its_own_leave(
    make_lobby: LobbyFactory, livekit: LiveKitStandin
) -> None:
    lobby = await livekit_lobby(make_lobby, livekit)
    alice, _, pid = await in_room(lobby)
    livekit.join("R1", pid)

    async def leave_meanwhile(method: str) -> None:
        # The list (with alice) is made; before it reaches the lobby, alice leaves and
        # her leave removes her from LiveKit.
        if method == "ListParticipants":
            await alice.request({"type": "leave"})
            await alice.until("ok")
            await livekit.wait_for(lambda: removals(livekit) == [pid])

    livekit.on_answer = leave_meanwhile
    await lobby.state.call_states.reconcile()
    livekit.on_answer = None
    await lobby.state.call_states.reconcile()
    assert removals(livekit) == [pid]  # her leave's, and no second one from the check


async def test_a_media_server_that_does_not_answer_changes_nothing_and_is_said_once(
    make_lobby: LobbyFactory, livekit: LiveKitStandin, caplog: pytest.LogCaptureFixture
) -> None:
    lobby = await livekit_lobby(make_lobby, livekit)
    _, bob, pid = await in_room(lobby)
    livekit.join("R1", pid)
    livekit.join("R1", "p_leaked")
    livekit.fault = 503
    with caplog.at_level(logging.WARNING, "lobby.flows.callstates"):
        for _ in range(3):
            await lobby.state.call_states.reconcile()
    said = [r for r in caplog.records if r.name == "lobby.flows.callstates"]
    assert len(said) == 1
    # The breaker opened at the first failure: the next rounds did not even ask.
    assert [c.method for c in livekit.calls] == ["ListParticipants"]
    await bob.nothing()
    livekit.fault = None
    breaker = lobby.state.media
    assert isinstance(breaker, Breaker)
    await until(lambda: not breaker.down)
    await lobby.state.call_states.reconcile()
    assert (await bob.recv())["call"] == "connected"
    await livekit.wait_for(lambda: removals(livekit) == ["p_leaked"])


# -- OpenVidu 2 ---------------------------------------------------------------------------


async def test_openvidu_connections_are_checked_and_only_unknown_active_ones_removed(
    make_lobby: LobbyFactory, standin: OpenViduStandin
) -> None:
    lobby: Lobby = await make_lobby(call_reconcile_interval=0)
    _, bob, pid = await in_room(lobby)
    member = lobby.state.handler.presence.member(pid)
    assert member is not None
    assert member.grant is not None
    standin.activate("R1", member.grant.connection_id)  # no webhooks configured: unheard of
    async with httpx.AsyncClient(base_url=standin.url, auth=("OPENVIDUAPP", "MY_SECRET")) as api:
        made = [
            (await api.post("/openvidu/api/sessions/R1/connection", json={})).json()["id"]
            for _ in range(2)
        ]
    leaked, pending = made  # one used by some browser, one a join in flight could hold
    standin.activate("R1", leaked)

    await lobby.state.call_states.reconcile()
    assert (await bob.recv())["call"] == "connected"

    def deleted() -> list[str]:
        return [c.path.rsplit("/", 1)[1] for c in standin.calls if c.method == "DELETE"]

    await standin.wait_for(lambda: deleted() == [leaked])
    assert set(standin.sessions["R1"].connections) == {member.grant.connection_id, pending}
    asked = [c for c in standin.calls if c.method == "GET"]
    assert [(c.path, c.status) for c in asked] == [("/openvidu/api/sessions/R1", 200)]


async def test_peer_to_peer_rooms_have_nothing_to_check(make_lobby: LobbyFactory) -> None:
    lobby: Lobby = await make_lobby(media="p2p", call_reconcile_interval=0)
    alice, bob, _ = await in_room(lobby)
    await lobby.state.call_states.reconcile()
    await alice.send({"type": "call_state", "call": "connected"})
    assert (await bob.recv())["call"] == "connected"  # the page's word is what counts


async def test_in_a_cluster_one_instance_at_a_time_checks_the_calls(
    make_lobby: LobbyFactory, livekit: LiveKitStandin, own_redis: RedisServer
) -> None:
    """Every instance would find the same: only the one holding the duties checks, so a
    stranger is removed by one instance, not raced for by all."""
    a, b = [
        await make_lobby(
            media="livekit",
            backend=LiveKitBackend(livekit.ws_url, livekit.url, KEY, SECRET, timeout=2),
            livekit_api_key=KEY,
            livekit_api_secret=SECRET,
            call_reconcile_interval=0.05,
            redis_url=own_redis.url,
        )
        for _ in range(2)
    ]
    await in_room(a)
    livekit.join("R1", "p_leaked")
    await livekit.wait_for(lambda: removals(livekit) == ["p_leaked"])
    checks = (a.state.call_states, b.state.call_states)
    await until(lambda: sum(c.rounds for c in checks) >= 10)
    assert sorted(c.rounds for c in checks)[0] == 0  # the other instance never checked
    assert removals(livekit) == ["p_leaked"]
