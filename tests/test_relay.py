"""The relay's routing rules, on presence alone: no sockets, no server."""

from __future__ import annotations

import json
from collections.abc import Mapping

from lobby.rules import signalling
from lobby.rules.presence import Participant, Presence
from lobby.rules.protocol import ProtocolError, Signal, parse
from lobby.rules.relay import Delivery, route
from tests.test_signalling import RECEIVE, SEND, SMUGGLE

ALICE = Participant("p_a", "alice", "Alice", "PUBLISHER")
BOB = Participant("p_b", "bob", "Bob", "PUBLISHER")
CAROL = Participant("p_c", "carol", "Carol", "PUBLISHER")
VIEWER = Participant("p_v", "sub", "Viewer", "SUBSCRIBER")


def lobby() -> Presence[str]:
    """Alice (socket 1), Bob (2) and the viewer (4) in room A; Carol (3) in room B."""
    presence: Presence[str] = Presence()
    presence.join(1, ALICE, "A", "ka", "ga")
    presence.join(2, BOB, "A", "kb", "gb")
    presence.join(3, CAROL, "B", "kc", "gc")
    presence.join(4, VIEWER, "A", "kv", "gv")
    return presence


def signal(
    to: str, data: Mapping[str, object] | None = None, extra: Mapping[str, object] | None = None
) -> Signal:
    data = data or {"kind": "hello", "link": "l1", "peer_link": None}
    frame = {"type": "signal", "to": to, "data": data, "ref": 9, **(extra or {})}
    parsed = parse(json.dumps(frame))
    assert isinstance(parsed, Signal), parsed
    return parsed


def description(sdp: str) -> dict[str, object]:
    return {
        "kind": "description",
        "link": "l1",
        "peer_link": "l2",
        "description": {"type": "offer", "sdp": sdp},
    }


def error_code(result: object) -> str:
    assert isinstance(result, ProtocolError), result
    assert result.ref == 9
    return result.code


def test_a_signal_reaches_the_socket_of_its_participant_stamped_with_the_sender() -> None:
    result = route(lobby(), 1, signal("p_b"))
    assert isinstance(result, Delivery)
    assert result.socket == 2
    assert json.loads(result.text) == {
        "type": "signal",
        "from": "p_a",
        "data": {"kind": "hello", "link": "l1", "peer_link": None},
    }


def test_the_sender_cannot_be_spoofed() -> None:
    result = route(lobby(), 2, signal("p_a", extra={"from": "p_c"}))
    assert isinstance(result, Delivery)
    assert json.loads(result.text)["from"] == "p_b"


def test_no_signalling_across_rooms_or_to_unknown_or_oneself() -> None:
    presence = lobby()
    assert error_code(route(presence, 1, signal("p_c"))) == "unknown_peer"  # Carol is in B
    assert error_code(route(presence, 3, signal("p_a"))) == "unknown_peer"  # and the other way
    assert error_code(route(presence, 1, signal("p_nobody"))) == "unknown_peer"
    assert error_code(route(presence, 1, signal("p_a"))) == "unknown_peer"


def test_a_socket_in_no_room_cannot_signal() -> None:
    presence = lobby()
    assert error_code(route(presence, 99, signal("p_a"))) == "unknown_peer"
    presence.leave(2)
    assert error_code(route(presence, 2, signal("p_a"))) == "unknown_peer"
    # ... and nobody can signal the one who left.
    assert error_code(route(presence, 1, signal("p_b"))) == "unknown_peer"


def test_a_switch_of_rooms_moves_who_can_be_reached() -> None:
    presence = lobby()
    presence.join(2, Participant("p_b2", "bob", "Bob", "PUBLISHER"), "B", "kb2", "gb2")
    assert error_code(route(presence, 1, signal("p_b2"))) == "unknown_peer"
    assert isinstance(route(presence, 3, signal("p_b2")), Delivery)


def test_signals_to_a_participant_that_is_away_are_dropped() -> None:
    presence = lobby()
    presence.disconnect(2)  # Bob's page is reloading: still in A, no socket
    assert route(presence, 1, signal("p_b")) is None
    # Bob's own socket is gone, so nothing comes from it either.
    assert error_code(route(presence, 2, signal("p_a"))) == "unknown_peer"


def test_viewers_receive_but_cannot_offer_to_send_media() -> None:
    presence = lobby()
    assert error_code(route(presence, 4, signal("p_a", description(SEND)))) == "not_allowed"
    assert isinstance(route(presence, 4, signal("p_a", description(RECEIVE))), Delivery)
    # Publishers send what they like, to viewers too.
    assert isinstance(route(presence, 1, signal("p_v", description(SEND))), Delivery)
    candidates: dict[str, object] = {
        "kind": "candidates",
        "link": "l1",
        "peer_link": "l2",
        "candidates": [{"candidate": "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host"}],
    }
    assert isinstance(route(presence, 4, signal("p_a", candidates)), Delivery)


def test_a_viewers_sending_section_hidden_behind_an_odd_line_break_is_not_allowed() -> None:
    """Past `parse` (which refuses the characters), the relay still reads lines as browsers do."""
    data = description(SMUGGLE)
    smuggled = Signal(9, "p_a", data, signalling.sends_media(data))
    assert error_code(route(lobby(), 4, smuggled)) == "not_allowed"
