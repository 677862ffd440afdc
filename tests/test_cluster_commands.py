"""Presence commands as log entries: every kind survives the trip through JSON."""

from __future__ import annotations

from dataclasses import replace

import pytest

from lobby.cluster import commands
from lobby.cluster.commands import (
    Chat,
    CloseMedia,
    CloseRoom,
    Disconnect,
    Expire,
    Gone,
    InstanceDown,
    Join,
    Kick,
    Leave,
    LockRoom,
    MediaClosed,
    MediaJoined,
    MediaLeft,
    Reassert,
    Reconcile,
    ReplaceGrant,
    ReportCall,
    ReportMedia,
    Reserve,
    Resume,
    Unreserve,
)
from lobby.rules.mediastate import MediaState
from lobby.rules.presence import Participant

ALICE = Participant("p1", "alice", "Alice", "PUBLISHER")
EVERY_KIND = [
    Join("a:1", ALICE, "Room", "digest", "conn-1", 4),
    Join("a:1", ALICE, "Room", "digest", None),
    Leave("a:1", "switched"),
    Disconnect("a:1"),
    Resume("b:7", "digest", "alice"),
    Expire("p1", 1_700_000_000_123),
    Expire("p1"),
    ReplaceGrant("b:7", "p1", "conn-2"),
    InstanceDown("a"),
    Reassert(ALICE, "Room", "digest", "conn-1", None),
    Reassert(ALICE, "Room", "digest", "conn-1", "a:1", "PA_sid"),
    Join("a:1", Participant("p2", "bob", "Bob", "PUBLISHER", "connected"), "Room", "d2", None),
    MediaJoined("p1", "PA_sid"),
    MediaJoined("p1"),
    MediaLeft("p1", "PA_sid"),
    Reconcile("Room", (("p1", "PA_sid"), ("p2", None))),
    Reconcile("Room", ()),
    ReportCall("a:1", "dropped"),
    Join("a:1", ALICE, "Room", "digest", "conn-1", 4, 2),
    Kick("mod", "Room", "p1", "spamming the chat", 300_000),
    Kick("mod", "Room", "p1", "", 0),
    CloseRoom("mod", "Room"),
    LockRoom("mod", "Room", True),
    LockRoom("mod", "Room", False),
    ReportMedia("a:1", MediaState(camera=True, microphone=False, screen=True)),
    Reassert(replace(ALICE, media=MediaState(microphone=True)), "Room", "digest", None, None),
    Chat("a:1", "Hi <b>all</b>\n\tnext line, é 👋", "2026-12-07T06:30:00.123Z"),
    Join("a:1", ALICE, "Room", "digest", "conn-1", 4, 2, "res-1"),
    Reserve("res-1", "Room", "a:1"),
    Unreserve("res-1"),
    CloseMedia("Room", "a"),
    MediaClosed("Room", "a"),
    Gone(("p1", "p2")),
]


@pytest.mark.parametrize("command", EVERY_KIND, ids=lambda c: type(c).__name__)
def test_a_command_decodes_to_what_was_encoded(command: commands.Command) -> None:
    assert commands.decode(commands.encode(command)) == command


def test_every_kind_has_an_op_name() -> None:
    assert {type(c) for c in EVERY_KIND} == set(commands.OPS.values())


@pytest.mark.parametrize(
    "text",
    [
        "",
        "[]",
        '{"op": "reconcile", "room": "R", "present": [["p1"]]}',
        '{"op": "nope"}',
        '{"op": "leave"}',
        '{"op": "join", "socket": "a:1"}',
    ],
)
def test_anything_else_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="not a presence command"):
        commands.decode(text)


def test_a_socket_names_its_instance() -> None:
    assert commands.instance_of("a1b2:17") == "a1b2"
