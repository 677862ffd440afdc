"""Presence in one process: commands apply at once; the grace period is a timer here."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from lobby.cluster.commands import Disconnect, Join, MediaJoined, Resume
from lobby.cluster.local import LocalPresence
from lobby.cluster.replica import slot
from lobby.cluster.seam import Applied, PresenceStore
from lobby.rules.presence import CallChanged, Joined, Participant
from tests.conftest import until

ALICE = Participant("p1", "alice", "Alice", "PUBLISHER")


def store(heard: list[Applied], cleaned: list[Applied]) -> LocalPresence:
    return LocalPresence(grace=0.05, listener=heard.append, cleaner=cleaned.append)


async def test_execute_applies_at_once_and_tells_the_listener() -> None:
    heard: list[Applied] = []
    presence: PresenceStore = store(heard, [])
    await presence.start()
    applied = await presence.execute(Join(presence.socket_id(1), ALICE, "R", "k1", "h1"))
    assert applied.seq == 1
    assert applied.issuer == "local"
    assert applied.result.outcome.events == (Joined("R", ALICE),)
    assert heard == [applied]
    assert presence.healthy
    await presence.stop()


async def test_an_away_participant_expires_after_grace_and_is_cleaned_up_once() -> None:
    cleaned: list[Applied] = []
    presence = store([], cleaned)
    await presence.execute(Join("local:1", ALICE, "R", "k1", "h1"))
    await presence.execute(Disconnect("local:1"))
    await until(lambda: bool(cleaned), 2)
    assert [a.result.outcome.revoke for a in cleaned] == [(slot("h1", "R"),)]
    assert len(presence.replica.presence) == 0
    await presence.stop()


async def test_a_resumed_participant_does_not_expire() -> None:
    cleaned: list[Applied] = []
    presence = store([], cleaned)
    await presence.execute(Join("local:1", ALICE, "R", "k1", "h1"))
    await presence.execute(Disconnect("local:1"))
    await presence.execute(Resume("local:2", "k1", "alice"))
    await asyncio.sleep(0.15)  # three grace periods: the timer has fired and changed nothing
    assert [a.result.outcome.revoke for a in cleaned] == [()]
    assert len(presence.replica.presence) == 1
    await presence.stop()


async def test_stop_cancels_pending_expiries() -> None:
    cleaned: list[Applied] = []
    presence = store([], cleaned)
    await presence.execute(Join("local:1", ALICE, "R", "k1", "h1"))
    await presence.execute(Disconnect("local:1"))
    await presence.stop()
    await asyncio.sleep(0.1)
    assert cleaned == []


async def test_call_states_are_commands_like_any_other() -> None:
    heard: list[Applied] = []
    presence = store(heard, [])
    await presence.execute(Join("local:1", ALICE, "R", "k1", "h1"))
    applied = await presence.execute(MediaJoined("p1", "S1"))
    connected = replace(ALICE, call="connected")
    assert applied.result.outcome.events == (CallChanged("R", connected),)
    assert heard[-1] is applied
    assert [p for _, ps in presence.replica.presence.rooms() for p in ps] == [connected]
    await presence.stop()
