"""The wire format: parsing client frames and rendering server frames."""

from __future__ import annotations

import json

import pytest

from lobby.rules import protocol, render
from lobby.rules.mediastate import MediaState
from lobby.rules.presence import (
    CallChanged,
    Joined,
    Left,
    MediaChanged,
    Participant,
    RoomClosed,
    RoomLocked,
)
from lobby.rules.protocol import (
    CallReport,
    Join,
    Leave,
    MediaReport,
    Ping,
    ProtocolError,
    Resume,
    parse,
)

ALICE = Participant("p_1", "alice", "Alice", "PUBLISHER")


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        (
            '{"type":"join","room":"A-b_9","nickname":"  Alice  ","ref":1}',
            Join(1, "A-b_9", "Alice"),
        ),
        ('{"type":"leave"}', Leave(None)),
        ('{"type":"leave","ref":"x"}', Leave("x")),
        ('{"type":"resume","key":"k","ref":2.5}', Resume(2.5, "k", False)),
        ('{"type":"resume","key":"k","token":true}', Resume(None, "k", True)),
        ('{"type":"ping","ref":3}', Ping(3)),
        (
            '{"type":"join","room":"' + "R" * 64 + '","nickname":"' + "n" * 40 + '"}',
            Join(None, "R" * 64, "n" * 40),
        ),
        (
            '{"type":"join","room":"r","nickname":"<img src=x onerror=alert(1)>"}',
            Join(None, "r", "<img src=x onerror=alert(1)>"),
        ),
        ('{"type":"join","room":"r","nickname":"Zoë 🎥"}', Join(None, "r", "Zoë 🎥")),
        ('{"type":"call_state","call":"connected"}', CallReport(None, "connected")),
        ('{"type":"call_state","call":"dropped","ref":7}', CallReport(7, "dropped")),
    ],
)
def test_valid_requests(frame: str, expected: object) -> None:
    assert parse(frame) == expected


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "bad_request"),
        ("", "bad_request"),
        ("[1,2]", "bad_request"),
        ('"join"', "bad_request"),
        ("null", "bad_request"),
        ("[" * 3000 + "]" * 3000, "bad_request"),
        ("{}", "bad_request"),
        ('{"type":7}', "bad_request"),
        ('{"type":"join","ref":{"a":1}}', "bad_request"),
        ('{"type":"join","ref":true}', "bad_request"),
        ('{"type":"join","ref":"' + "x" * 65 + '"}', "bad_request"),
        ('{"type":"ping","ref":NaN}', "bad_request"),
        ('{"type":"ping","ref":Infinity}', "bad_request"),
        ('{"type":"dance"}', "unknown_type"),
        ('{"type":"join","nickname":"a"}', "bad_request"),
        ('{"type":"join","room":"a"}', "bad_request"),
        ('{"type":"join","room":5,"nickname":"a"}', "bad_request"),
        ('{"type":"join","room":"","nickname":"a"}', "invalid_room"),
        ('{"type":"join","room":"a b","nickname":"a"}', "invalid_room"),
        ('{"type":"join","room":"é","nickname":"a"}', "invalid_room"),
        ('{"type":"join","room":"a/../b","nickname":"a"}', "invalid_room"),
        ('{"type":"join","room":"' + "R" * 65 + '","nickname":"a"}', "invalid_room"),
        ('{"type":"join","room":"a","nickname":"   "}', "invalid_nickname"),
        ('{"type":"join","room":"a","nickname":""}', "invalid_nickname"),
        ('{"type":"join","room":"a","nickname":"' + "n" * 41 + '"}', "invalid_nickname"),
        ('{"type":"join","room":"a","nickname":"bell\\u0007"}', "invalid_nickname"),
        ('{"type":"join","room":"a","nickname":"two\\nlines"}', "invalid_nickname"),
        ('{"type":"resume"}', "bad_request"),
        ('{"type":"resume","key":""}', "bad_request"),
        ('{"type":"resume","key":"k","token":"yes"}', "bad_request"),
    ],
)
def test_bad_requests_become_errors_never_exceptions(frame: str, code: str) -> None:
    result = parse(frame)
    assert isinstance(result, ProtocolError)
    assert result.code == code
    assert result.code in protocol.ERROR_CODES
    assert result.message.endswith(".")


@pytest.mark.parametrize(
    "nickname",
    [
        "\u2800",  # braille blank
        "\u3164",  # Hangul filler
        "\u115f\u1160",  # Hangul choseong and jungseong fillers
        "\uffa0 \u3164",  # halfwidth Hangul filler, a space, a filler
        "\u200b",  # zero-width space (a format character, Cf)
        "\u2800\u200d\u2800",  # blanks joined by a zero-width joiner
        "\u0301\u0301",  # combining marks with nothing to sit on
        "\u20dd",  # an enclosing mark (Me) alone
        "a" + "\u0301" * 39,  # zalgo: 39 marks on one letter
        "a" + "\u0301" * 5,  # five in a row
        "a\u0301" * 13,  # 13 marks, each alone: too many in all
    ],
)
def test_nicknames_that_render_blank_or_smeared_are_refused(nickname: str) -> None:
    result = parse(json.dumps({"type": "join", "room": "r", "nickname": nickname}))
    assert isinstance(result, ProtocolError)
    assert result.code == "invalid_nickname"
    assert result.message == (
        "Nicknames are 1 to 40 printable characters with at least one visible, "
        "and at most 4 combining marks in a row (12 in all)."
    )


@pytest.mark.parametrize(
    "nickname",
    [
        "Nguye\u0302\u0303n",  # Vietnamese typed decomposed: two marks on one letter
        "\u0e17\u0e35\u0e48",  # Thai: a consonant, a vowel and a tone mark
        "\u0930\u093e\u091c\u0947\u0936 \u0915\u0941\u092e\u093e\u0930",  # Hindi
        "a" + "\u0301" * 4,  # four in a row: allowed
        "\u3164x",  # a filler next to a visible letter
        "\u2800 \u2801",  # the braille blank next to a braille dot
    ],
)
def test_nicknames_with_a_few_marks_or_some_blank_characters_are_fine(nickname: str) -> None:
    assert parse(json.dumps({"type": "join", "room": "r", "nickname": nickname})) == Join(
        None, "r", nickname
    )


def test_errors_echo_a_valid_ref() -> None:
    result = parse('{"type":"join","room":"","nickname":"a","ref":"r1"}')
    assert isinstance(result, ProtocolError)
    assert result.ref == "r1"
    rendered = json.loads(render.error(result))
    assert rendered == {
        "type": "error",
        "ref": "r1",
        "code": "invalid_room",
        "message": result.message,
    }


def test_events_render_as_documented() -> None:
    assert json.loads(render.event(Joined("A", ALICE))) == {
        "type": "joined",
        "room": "A",
        "participant": {
            "id": "p_1",
            "user": "alice",
            "nickname": "Alice",
            "role": "PUBLISHER",
            "call": "connecting",
            "media": None,
        },
    }
    left = json.loads(render.event(Left("A", ALICE, "disconnected")))
    assert left["type"] == "left"
    assert left["reason"] == "disconnected"
    assert json.loads(render.event(RoomClosed("A"))) == {
        "type": "room_closed",
        "room": "A",
    }


def test_replies_render_as_documented() -> None:
    welcome = json.loads(
        render.welcome(
            "alice", "PUBLISHER", [("A", [ALICE])], media={"kind": "openvidu"}, room_size=None
        )
    )
    assert welcome == {
        "type": "welcome",
        "user": {"name": "alice", "role": "PUBLISHER"},
        "media": {"kind": "openvidu"},
        "room_size": None,
        "rooms": [{"name": "A", "participants": [render.participant_json(ALICE)], "locked": False}],
    }
    token = json.loads(render.token(1, "A", "wss://x?token=t", ALICE, "key"))
    assert token["type"] == "token"
    assert token["resume_key"] == "key"
    assert token["ref"] == 1
    assert "token" not in json.loads(render.resumed(2, "A", ALICE, None))
    assert json.loads(render.resumed(2, "A", ALICE, "t"))["token"] == "t"
    assert json.loads(render.ok("r")) == {"type": "ok", "ref": "r"}
    assert json.loads(render.pong(None)) == {"type": "pong", "ref": None}
    assert json.loads(render.taken_over("A", ALICE))["type"] == "taken_over"
    data = {"kind": "hello", "link": "l1", "peer_link": None}
    assert json.loads(render.signal("p_1", data)) == {
        "type": "signal",
        "from": "p_1",
        "data": data,
    }


def test_user_text_is_sent_as_raw_utf8_not_escaped_html() -> None:
    who = Participant("p", "u", "<b>Zoë</b>", "PUBLISHER")
    text = render.event(Joined("A", who))
    assert "<b>Zoë</b>" in text  # JSON text; the page renders it with textContent


@pytest.mark.parametrize(
    "frame",
    [
        '{"type":"ping","ref":"\\ud800"}',  # a lone surrogate: JSON allows it, UTF-8 cannot send it
        '{"type":"resume","key":"\\udfff"}',
        '{"type":"join","room":"r","nickname":"a\\ud800b"}',
        '{"type":"\\ud800"}',
    ],
)
def test_text_that_cannot_be_sent_back_is_refused_and_errors_stay_sendable(frame: str) -> None:
    result = parse(frame)
    assert isinstance(result, ProtocolError)
    render.error(result).encode()  # must not raise


@pytest.mark.parametrize(
    "frame",
    [
        '{"type":"call_state"}',
        '{"type":"call_state","call":"connecting"}',  # the server's own starting point
        '{"type":"call_state","call":"CONNECTED"}',
        '{"type":"call_state","call":true,"ref":4}',
        '{"type":"call_state","call":["connected"]}',
    ],
)
def test_a_call_report_needs_a_state_a_page_may_report(frame: str) -> None:
    result = parse(frame)
    assert isinstance(result, ProtocolError)
    assert result.code == "bad_request"
    assert "'call'" in result.message
    assert result.ref == json.loads(frame).get("ref")


def test_a_call_state_change_names_the_participant_by_id() -> None:
    dropped = Participant("p_1", "alice", "Alice", "PUBLISHER", "dropped")
    assert json.loads(render.event(CallChanged("A", dropped))) == {
        "type": "call_state",
        "room": "A",
        "participant": "p_1",
        "call": "dropped",
    }
    assert render.participant_json(dropped)["call"] == "dropped"


# Moderation requests


def test_moderation_requests_parse_with_a_trimmed_reason() -> None:
    assert parse('{"type":"kick","room":"R","participant":"p_1","reason":"  Spam  ","ref":1}') == (
        protocol.Kick(1, "R", "p_1", "Spam")
    )
    assert parse('{"type":"kick","room":"R","participant":"p_1"}') == protocol.Kick(
        None, "R", "p_1", ""
    )
    assert parse('{"type":"close_room","room":"R","ref":"c"}') == protocol.CloseRoom("c", "R")
    assert parse('{"type":"lock_room","room":"R","locked":false}') == protocol.LockRoom(
        None, "R", False
    )


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"type": "kick", "participant": "p_1"}, "bad_request"),
        ({"type": "kick", "room": "R"}, "bad_request"),
        ({"type": "kick", "room": "R", "participant": ""}, "bad_request"),
        ({"type": "kick", "room": "R", "participant": "p" * 65}, "bad_request"),
        ({"type": "kick", "room": "R", "participant": "p_1", "reason": None}, "bad_request"),
        ({"type": "kick", "room": "R", "participant": "p_1", "reason": "x" * 201}, "bad_request"),
        ({"type": "kick", "room": "R", "participant": "p_1", "reason": "a\u202eb"}, "bad_request"),
        ({"type": "kick", "room": "no room", "participant": "p_1"}, "invalid_room"),
        ({"type": "close_room", "room": 5}, "bad_request"),
        ({"type": "close_room", "room": ""}, "invalid_room"),
        ({"type": "lock_room", "room": "R"}, "bad_request"),
        ({"type": "lock_room", "room": "R", "locked": 1}, "bad_request"),
    ],
)
def test_bad_moderation_requests_are_refused(frame: dict[str, object], code: str) -> None:
    error = parse(json.dumps({**frame, "ref": 9}))
    assert isinstance(error, ProtocolError)
    assert (error.code, error.ref) == (code, 9)


def test_moderation_frames_render_as_documented() -> None:
    assert json.loads(render.kicked("R", "mod", "Spam")) == {
        "type": "kicked",
        "room": "R",
        "by": "mod",
        "reason": "Spam",
    }
    assert json.loads(render.event(RoomLocked("R", True))) == {
        "type": "room_locked",
        "room": "R",
        "locked": True,
    }
    welcome = render.welcome(
        "mod", "MODERATOR", [("R", [ALICE])], media={}, room_size=None, locked=frozenset({"R"})
    )
    assert json.loads(welcome)["rooms"][0]["locked"] is True


# Media reports


@pytest.mark.parametrize(
    ("frame", "media"),
    [
        ('{"type":"media","camera":true,"microphone":false,"screen":false}', (True, False, False)),
        (
            '{"type":"media","camera":false,"microphone":true,"screen":true,"ref":3}',
            (False, True, True),
        ),
    ],
)
def test_a_media_report_parses_to_its_three_switches(frame: str, media: tuple[int, ...]) -> None:
    result = parse(frame)
    switches = [bool(on) for on in media]
    assert result == MediaReport(json.loads(frame).get("ref"), MediaState(*switches))


@pytest.mark.parametrize(
    "frame",
    [
        '{"type":"media"}',
        '{"type":"media","camera":true,"microphone":true}',  # every field is needed
        '{"type":"media","camera":1,"microphone":true,"screen":false,"ref":"r"}',
        '{"type":"media","camera":"true","microphone":true,"screen":false}',
        '{"type":"media","camera":true,"microphone":null,"screen":false}',
        '{"type":"media","camera":true,"microphone":true,"screen":[true]}',
    ],
)
def test_a_media_report_needs_three_booleans(frame: str) -> None:
    result = parse(frame)
    assert isinstance(result, ProtocolError)
    assert result.code == "bad_request"
    assert "'camera', 'microphone' and 'screen'" in result.message
    assert result.ref == json.loads(frame).get("ref")


def test_a_media_change_names_the_participant_and_participants_carry_their_media() -> None:
    sharing = Participant(
        "p_1", "alice", "Alice", "PUBLISHER", "connected", MediaState(True, False, True)
    )
    assert json.loads(render.event(MediaChanged("A", sharing))) == {
        "type": "media",
        "room": "A",
        "participant": "p_1",
        "media": {"camera": True, "microphone": False, "screen": True},
    }
    assert render.participant_json(sharing)["media"] == {
        "camera": True,
        "microphone": False,
        "screen": True,
    }
