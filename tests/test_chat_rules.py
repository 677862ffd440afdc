"""What a chat message may hold (`lobby.rules.chat`) and its wire format (in `protocol`)."""

from __future__ import annotations

import json

import pytest

from lobby.rules import protocol, render
from lobby.rules.chat import CHAT_RULE, HISTORY, MAX_CHAT, ChatLine, History, clean_text
from lobby.rules.presence import Participant
from lobby.rules.protocol import Chat, ProtocolError

NEEDS_TEXT = "'chat' needs a string 'text'."
BOB = Participant("p_b", "bob", "Bob <i>", "PUBLISHER", "connected")


@pytest.mark.parametrize(
    ("text", "cleaned"),
    [
        ("hello", "hello"),
        ("  padded\n ", "padded"),
        ("<b>x</b><img src=x onerror=alert(1)>", "<b>x</b><img src=x onerror=alert(1)>"),
        ("line one\nline two\tand a tab", "line one\nline two\tand a tab"),
        ("x" * MAX_CHAT, "x" * MAX_CHAT),
        (" " + "é" * MAX_CHAT + " ", "é" * MAX_CHAT),
        ("👋" * MAX_CHAT, "👋" * MAX_CHAT),  # code points, not UTF-16 units
        ("नमस्ते", "नमस्ते"),  # Indic vowel signs are combining marks, a few in a row
        ("👩\u200d💻 at work", "👩\u200d💻 at work"),  # the zero-width joiner builds emoji
        ("right\u200fto left", "right\u200fto left"),  # a direction mark, not an override
        ("https://example.com/?a=1&b=<2>", "https://example.com/?a=1&b=<2>"),
        ("\n".join("l" * 19), "\n".join("l" * 19)),
    ],
)
def test_acceptable_text_is_trimmed_and_otherwise_untouched(text: str, cleaned: str) -> None:
    assert clean_text(text) == cleaned


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   \n\t ",
        "x" * (MAX_CHAT + 1),
        "  " + "x" * (MAX_CHAT + 1) + "  ",
        "\n".join("l" * 21),
        "bell\x07",
        "nul\x00",
        "escape \x1b[31mred",
        "carriage\rreturn",
        "del\x7f",
        "next\x85line",
        "line\u2028separator",
        "paragraph\u2029separator",
        "evil\u202etxt.exe",
        "isolate\u2066x\u2069",
        "lone \ud800 surrogate",
        "a" + "\u0301" * 5,
    ],
)
def test_refused_text(text: str) -> None:
    assert clean_text(text) is None


def test_history_keeps_the_last_lines_per_room_and_drops_a_room() -> None:
    history = History(size=3)
    for n in range(5):
        history.add(ChatLine("R", BOB, f"m{n}", "t"))
    history.add(ChatLine("S", BOB, "s", "t"))
    assert [x.text for x in history.of("R")] == ["m2", "m3", "m4"]
    assert len(history) == 4
    history.drop("R")
    history.drop("nowhere")
    assert history.of("R") == []
    assert list(history.rooms()) == ["S"]
    assert History()._size == HISTORY


@pytest.mark.parametrize(
    ("frame", "parsed"),
    [
        ({"type": "chat", "text": " hi ", "ref": 7}, Chat(7, "hi")),
        ({"type": "chat", "text": "x"}, Chat(None, "x")),
        (
            {"type": "chat", "ref": "a"},
            ProtocolError("bad_request", NEEDS_TEXT, "a"),
        ),
        (
            {"type": "chat", "text": 5, "ref": 1},
            ProtocolError("bad_request", NEEDS_TEXT, 1),
        ),
        (
            {"type": "chat", "text": ["hi"]},
            ProtocolError("bad_request", NEEDS_TEXT),
        ),
        ({"type": "chat", "text": "  ", "ref": 2}, ProtocolError("invalid_chat", CHAT_RULE, 2)),
    ],
)
def test_parse(frame: dict[str, object], parsed: object) -> None:
    assert protocol.parse(json.dumps(frame)) == parsed


def test_a_lone_surrogate_in_the_json_is_refused_not_echoed() -> None:
    parsed = protocol.parse('{"type": "chat", "text": "a\\ud800b", "ref": 3}')
    assert parsed == ProtocolError("invalid_chat", CHAT_RULE, 3)


def test_render_chat_and_history() -> None:
    line = ChatLine("R", BOB, "<b>x</b>", "2026-12-07T06:30:00.123Z")
    event = {
        "type": "chat",
        "room": "R",
        "from": {
            "id": "p_b",
            "user": "bob",
            "nickname": "Bob <i>",
            "role": "PUBLISHER",
            "call": "connected",
            "media": None,  # its page has not said what it sends yet
        },
        "text": "<b>x</b>",
        "at": "2026-12-07T06:30:00.123Z",
    }
    assert json.loads(render.chat(line)) == event
    history = json.loads(render.chat_history("R", [line, line]))
    assert history == {"type": "chat_history", "room": "R", "messages": [event, event]}
