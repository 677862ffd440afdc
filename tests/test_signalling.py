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
# Issue 17: \x1c is a line break to Python's `splitlines` but not to a browser, so
# the old check saw an application section take the video section's last direction
# (sendrecv: the last one wins) and the video stay recvonly, and Chromium accepted
# the viewer's video.
SMUGGLE = RECEIVE.replace(
    "a=mid:1\r\na=recvonly\r\n",
    "a=mid:1\r\na=recvonly\r\na=x:1\x1cm=application 0 x\r\na=sendrecv\r\n",
)
# An offer as Chromium writes it (audio and video, one track each; keys shortened).
CHROMIUM_OFFER = "\r\n".join(
    [
        "v=0",
        "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
        "s=-",
        "t=0 0",
        "a=group:BUNDLE 0 1",
        "a=extmap-allow-mixed",
        "a=msid-semantic: WMS 5bd3a9d1-4a47-4a3f-9e0e-1b2c3d4e5f60",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126",
        "c=IN IP4 0.0.0.0",
        "a=rtcp:9 IN IP4 0.0.0.0",
        "a=ice-ufrag:Xq3v",
        "a=ice-pwd:f8Gm2LqKp1tWv9yZ0aB3cD4e",
        "a=ice-options:trickle",
        "a=fingerprint:sha-256 5E:1B:0A:7C:33:9D:AB:42:6F:18:C2:91:E4:07:5D:3A:"
        "88:B6:21:FE:4C:90:13:7A:D5:62:0E:B9:44:1F:8C:A7",
        "a=setup:actpass",
        "a=mid:0",
        "a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
        "a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
        "a=sendrecv",
        "a=msid:5bd3a9d1-4a47-4a3f-9e0e-1b2c3d4e5f60 0f6a1b2c-3d4e-4f50-8a9b-c0d1e2f3a4b5",
        "a=rtcp-mux",
        "a=rtpmap:111 opus/48000/2",
        "a=rtcp-fb:111 transport-cc",
        "a=fmtp:111 minptime=10;useinbandfec=1",
        "a=rtpmap:126 telephone-event/8000",
        "a=ssrc:3735928559 cname:Qm9vZ2llV29vZ2ll",
        "m=video 9 UDP/TLS/RTP/SAVPF 96 97",
        "c=IN IP4 0.0.0.0",
        "a=rtcp:9 IN IP4 0.0.0.0",
        "a=ice-ufrag:Xq3v",
        "a=ice-pwd:f8Gm2LqKp1tWv9yZ0aB3cD4e",
        "a=ice-options:trickle",
        "a=setup:actpass",
        "a=mid:1",
        "a=sendrecv",
        "a=rtcp-mux",
        "a=rtcp-rsize",
        "a=rtpmap:96 VP8/90000",
        "a=rtcp-fb:96 goog-remb",
        "a=rtcp-fb:96 nack pli",
        "a=rtpmap:97 rtx/90000",
        "a=fmtp:97 apt=96",
        "a=ssrc-group:FID 2882400001 2882400002",
        "a=ssrc:2882400001 cname:Qm9vZ2llV29vZ2ll",
        "",
    ]
)


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
        (  # a shared screen names its stream; null is the same as none
            {"kind": "media", **base, "video": True, "audio": True, "screen": "{a1-B2_c}"},
            {"kind": "media", **base, "video": True, "audio": True, "screen": "{a1-B2_c}"},
        ),
        (
            {"kind": "media", **base, "video": True, "audio": True, "screen": None},
            {"kind": "media", **base, "video": True, "audio": True},
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
        *(
            (
                {
                    "kind": "media",
                    "link": "l",
                    "peer_link": "m",
                    "video": True,
                    "audio": True,
                    "screen": screen,
                },
                "p_b",
                "invalid_signal",
            )
            for screen in ("", "a b", "x" * 65, 7, True)
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
        (CHROMIUM_OFFER, True),
        (CHROMIUM_OFFER.replace("a=sendrecv", "a=recvonly"), False),
        # Chromium reads "a=sendrecv" followed by ":" or " " as sendrecv, the last one wins...
        (RECEIVE + "a=sendrecv:1\r\n", True),
        (SEND.replace("a=sendrecv", "a=sendrecv\r\na=recvonly x"), False),
        # ...but not a line that does not start with its type letter, nor a longer name.
        (SEND.replace("a=sendrecv", "a=sendrecv\r\n a=recvonly"), True),
        (SEND.replace("a=sendrecv", "a=sendrecv\r\na=recvonlyx"), True),
        (RECEIVE + "a=sendrecvx\r\n", False),
        # A tab is text (RFC 8866), not a separator that hides an attribute.
        (SEND.replace("a=sendrecv", "a=sendrecv\r\na=x\ta=recvonly"), True),
    ],
)
def test_what_an_sdp_would_send(sdp: str, sends: bool) -> None:
    assert signalling.sdp_sends_media(sdp) is sends
    data = {"kind": "description", "link": "l", "peer_link": "m"}
    result = signal({**data, "description": {"type": "answer", "sdp": sdp}})
    assert isinstance(result, Signal)
    assert result.sends_media is sends


def description_data(sdp: str) -> dict[str, object]:
    return {
        "kind": "description",
        "link": "l",
        "peer_link": "m",
        "description": {"type": "offer", "sdp": sdp},
    }


def test_a_line_break_browsers_do_not_see_cannot_hide_a_sending_section() -> None:
    refused = signal(description_data(SMUGGLE), ref=3)
    assert isinstance(refused, ProtocolError)
    assert (refused.code, refused.ref) == ("invalid_signal", 3)
    assert "control characters" in refused.message
    # Read as a browser reads it, the video section sends.
    assert signalling.sdp_sends_media(SMUGGLE)


@pytest.mark.parametrize(
    "odd",
    [
        "\x1c",
        "\x1d",
        "\x1e",
        "\x1f",
        "\x0b",
        "\x0c",
        "\x00",
        "\x07",
        "\x7f",
        "\x85",
        "\x9f",
        "\u2028",
        "\u2029",
        "\r",
        "\rx",
    ],
)
def test_sdps_with_control_characters_or_line_separators_are_refused(odd: str) -> None:
    sdp = SEND.replace("s=-", f"s=-{odd}")
    assert not signalling.is_sdp_text(sdp)
    result = signal(description_data(sdp))
    assert isinstance(result, ProtocolError)
    assert result.code == "invalid_signal"
    assert result.message.endswith(".")


def test_an_sdp_must_end_its_last_line() -> None:
    # Chromium refuses an unterminated last line; another parser might drop it or read it:
    # its "a=recvonly" would count here and not there.
    result = signal(description_data(SEND + "a=recvonly"))
    assert isinstance(result, ProtocolError)
    assert result.code == "invalid_signal"


@pytest.mark.parametrize(
    "sdp",
    [SEND, RECEIVE, CHROMIUM_OFFER, SEND.replace("\r\n", "\n"), SEND.replace("s=-", "s=a\tb é")],
)
def test_browser_sdps_pass(sdp: str) -> None:
    assert signalling.is_sdp_text(sdp)
    assert isinstance(signal(description_data(sdp)), Signal)
