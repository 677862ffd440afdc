"""Peer-to-peer signalling: which payloads are relayed, and what an SDP would send."""

from __future__ import annotations

import json

import pytest

from lobby.rules import protocol, signalling
from lobby.rules.protocol import ProtocolError, Request, Signal, parse

SEND = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n" + (
    "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=sendrecv\r\n"
    "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=sendrecv\r\n"
)
RECEIVE = SEND.replace("a=sendrecv", "a=recvonly")


def signal(data: object, to: object = "p_b", **extra: object) -> Request | ProtocolError:
    return parse(json.dumps({"type": "signal", "to": to, "data": data, **extra}))


def hello(link: str = "la") -> dict[str, object]:
    return {"kind": "hello", "link": link, "peer_link": None}


def test_each_kind_is_parsed_and_copied_with_only_its_fields() -> None:
    base = {"link": "la", "peer_link": "lb"}
    cases: list[tuple[dict[str, object], dict[str, object]]] = [
        ({**hello(), "extra": "<script>"}, hello()),
        ({"kind": "ack", **base, "from": "p_admin"}, {"kind": "ack", **base}),
        (
            {"kind": "description", **base, "description": {"type": "offer", "sdp": SEND, "x": 1}},
            {"kind": "description", **base, "description": {"type": "offer", "sdp": SEND}},
        ),
        (
            {"kind": "candidates", **base, "candidates": [{"candidate": "candidate:1 1 udp 1 x"}]},
            {
                "kind": "candidates",
                **base,
                "candidates": [
                    {
                        "candidate": "candidate:1 1 udp 1 x",
                        "sdpMid": None,
                        "sdpMLineIndex": None,
                        "usernameFragment": None,
                    }
                ],
            },
        ),
        (
            {"kind": "media", **base, "video": False, "audio": True, "volume": 11},
            {"kind": "media", **base, "video": False, "audio": True},
        ),
    ]
    for data, relayed in cases:
        result = signal(data, ref=7)
        assert isinstance(result, Signal), (data, result)
        assert (result.ref, result.to, result.data) == (7, "p_b", relayed)


@pytest.mark.parametrize(
    ("data", "to", "code"),
    [
        (hello(), None, "bad_request"),
        (hello(), "", "bad_request"),
        (hello(), "p" * 65, "bad_request"),
        (hello(), "pé", "bad_request"),
        ("hello", "p_b", "invalid_signal"),
        ({"kind": "bye", "link": "la", "peer_link": "lb"}, "p_b", "invalid_signal"),
        ({"kind": "hello", "peer_link": None}, "p_b", "invalid_signal"),
        ({"kind": "hello", "link": "l" * 33, "peer_link": None}, "p_b", "invalid_signal"),
        ({"kind": "hello", "link": "a b", "peer_link": None}, "p_b", "invalid_signal"),
        ({"kind": "ack", "link": "la", "peer_link": None}, "p_b", "invalid_signal"),
        ({"kind": "description", "link": "la", "peer_link": "lb"}, "p_b", "invalid_signal"),
        (
            {"kind": "description", "link": "l", "peer_link": "m", "description": {"type": "pr"}},
            "p_b",
            "invalid_signal",
        ),
        (
            {
                "kind": "description",
                "link": "l",
                "peer_link": "m",
                "description": {"type": "offer", "sdp": "x" * (signalling.MAX_SDP + 1)},
            },
            "p_b",
            "invalid_signal",
        ),
        (
            {
                "kind": "description",
                "link": "l",
                "peer_link": "m",
                "description": {"type": "offer", "sdp": ""},
            },
            "p_b",
            "invalid_signal",
        ),
        (
            {"kind": "candidates", "link": "l", "peer_link": "m", "candidates": []},
            "p_b",
            "invalid_signal",
        ),
        (
            {
                "kind": "candidates",
                "link": "l",
                "peer_link": "m",
                "candidates": [{"candidate": "c"}] * (signalling.MAX_CANDIDATES + 1),
            },
            "p_b",
            "invalid_signal",
        ),
        (
            {"kind": "candidates", "link": "l", "peer_link": "m", "candidates": [{"candidate": 5}]},
            "p_b",
            "invalid_signal",
        ),
        (
            {
                "kind": "candidates",
                "link": "l",
                "peer_link": "m",
                "candidates": [{"candidate": "c", "sdpMLineIndex": True}],
            },
            "p_b",
            "invalid_signal",
        ),
        (
            {
                "kind": "candidates",
                "link": "l",
                "peer_link": "m",
                "candidates": [{"candidate": "c" * (signalling.MAX_CANDIDATE + 1)}],
            },
            "p_b",
            "invalid_signal",
        ),
        (
            {"kind": "media", "link": "l", "peer_link": "m", "video": 1, "audio": True},
            "p_b",
            "invalid_signal",
        ),
    ],
)
def test_bad_signals_get_a_clear_error(data: object, to: object, code: str) -> None:
    result = signal(data, to, ref="r")
    assert isinstance(result, ProtocolError)
    assert (result.code, result.ref) == (code, "r")
    assert result.code in protocol.ERROR_CODES
    assert result.message.endswith(".")


@pytest.mark.parametrize(
    ("sdp", "sends"),
    [
        (SEND, True),
        (RECEIVE, False),
        (RECEIVE.replace("a=recvonly", "a=inactive"), False),
        (SEND.replace("a=sendrecv", "a=sendonly"), True),
        # One sending section is enough, whatever the others say.
        (RECEIVE.replace("a=recvonly", "a=sendonly", 1), True),
        # No direction: the session's, and by default sendrecv (RFC 4566).
        (SEND.replace("a=sendrecv\r\n", ""), True),
        (SEND.replace("t=0 0\r\n", "t=0 0\r\na=recvonly\r\n").replace("a=sendrecv\r\n", ""), False),
        # A data channel is not audio or video.
        ("v=0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\n", False),
        # Bare \n line ends count the same.
        (SEND.replace("\r\n", "\n"), True),
    ],
)
def test_what_an_sdp_would_send(sdp: str, sends: bool) -> None:
    assert signalling.sdp_sends_media(sdp) is sends
    data = {"kind": "description", "link": "l", "peer_link": "m"}
    result = signal({**data, "description": {"type": "answer", "sdp": sdp}})
    assert isinstance(result, Signal)
    assert result.sends_media is sends
