"""Property tests of the wire format: random frames never break `protocol.parse`.

Whatever a client sends, `parse` answers with a request that obeys the documented
rules or with a `ProtocolError` carrying a stable code and a sentence, and never
raises. Hypothesis prints the falsifying frame (and a `@reproduce_failure` blob)
when a property fails; `database=None` keeps the run from writing into the repo.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import re
import unicodedata
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from lobby.rules import protocol, render, signalling
from lobby.rules.mediastate import MediaState
from lobby.rules.presence import Participant
from lobby.rules.protocol import (
    CallReport,
    Chat,
    CloseRoom,
    Join,
    Kick,
    Leave,
    LockRoom,
    MediaReport,
    Ping,
    ProtocolError,
    Request,
    Resume,
    Signal,
    parse,
)

MAX_FRAME = 4096  # bytes; the socket closes with 1009 above it (docs/protocol.md)
MAX_SAFE_INTEGER = 2**53 - 1  # a ref number must be a JavaScript safe integer (ditto)
ROOM = re.compile(r"[A-Za-z0-9_-]{1,64}")
PARSE_CODES = {
    "bad_request",
    "unknown_type",
    "invalid_room",
    "invalid_nickname",
    "invalid_signal",
    "invalid_chat",
}
LINK = re.compile(r"[A-Za-z0-9_-]{1,32}")
SIGNAL_KINDS = ("hello", "ack", "description", "candidates", "media")
FAST = settings(max_examples=250, deadline=None, database=None, print_blob=True)

# Strategies: characters, JSON values, frames.

odd_chars = st.sampled_from('\x00\x07\t\n\r\x1b\x7f\x85\xa0\u200b\u2028\u202e\ufeff\ufffd "\\')
wild_chars = st.one_of(st.characters(), st.characters(categories=["Cs"]), odd_chars)
wild_text = st.text(wild_chars, max_size=80)
huge_text = st.builds(lambda piece, times: piece * times, wild_text, st.integers(1, 600))
big_ints = st.integers(-(10**300), 10**300)
safe_ints = st.integers(-MAX_SAFE_INTEGER, MAX_SAFE_INTEGER)
edge_ints = st.sampled_from([MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER, 2**53, -(2**53), 2**64])
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), big_ints, st.floats(), wild_text)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(wild_text, inner, max_size=4),
    max_leaves=20,
)
refs = st.one_of(
    st.none(), st.integers(), big_ints, edge_ints, st.floats(), st.text(wild_chars, max_size=70)
)
finite = st.floats(allow_nan=False, allow_infinity=False)
good_refs = st.one_of(st.none(), safe_ints, finite, st.text(max_size=64))
real_types = st.sampled_from(protocol.CLIENT_TYPES)
types = st.one_of(real_types, real_types, real_types, wild_text, json_values)
spaces = st.text(st.sampled_from(" \t\n\xa0\u3000"), max_size=3)
good_rooms = st.from_regex(ROOM, fullmatch=True)
bad_rooms = st.one_of(st.sampled_from(["", "a b", "R" * 65, "é", "a/../b", "A\n"]), wild_text)
rooms = st.one_of(good_rooms, bad_rooms, json_values)
# No marks, and not only blanks: always accepted. Marks and blanks come in `wild_text`.
good_nicknames = st.text(
    st.characters(exclude_categories=["C", "Z", "M"]), min_size=1, max_size=40
).filter(lambda text: not set(text) <= protocol.BLANKS)
padded_nicknames = st.builds(lambda *parts: "".join(parts), spaces, good_nicknames, spaces)
bad_nicknames = st.one_of(
    st.sampled_from(
        ["", " ", "n" * 41, "bell\x07", "two\nlines", "\u200b", "\x00A", "\u2800", "\u3164"]
    ),
    st.builds(lambda base, marks: base + marks, st.sampled_from("aé"), st.text("\u0301\u20dd")),
    st.builds(lambda *parts: "".join(parts), spaces, wild_text, spaces),
)
nicknames = st.one_of(padded_nicknames, bad_nicknames, json_values)
ascii_chars = st.characters(codec="ascii")
keys = st.one_of(
    st.text(ascii_chars, max_size=140), wild_text, st.sampled_from(["", "k" * 128]), json_values
)
good_links = st.from_regex(LINK, fullmatch=True)
links = st.one_of(good_links, good_links, st.none(), wild_text, json_values)
# SDP-like texts: lines a browser might read as directions or sections, joined by
# real line ends and by characters some parser (not a browser) breaks lines at.
sdp_line_texts = st.one_of(
    st.sampled_from(
        [
            "v=0",
            "s=-",
            "t=0 0",
            "m=audio 9 UDP/TLS/RTP/SAVPF 111",
            "m=video 9 UDP/TLS/RTP/SAVPF 96",
            "m=video\t9 X",
            "m=application 0 x",
            "a=mid:0",
            "a=x:1",
            "a=sendrecv",
            "a=sendonly",
            "a=recvonly",
            "a=inactive",
            "a=sendrecv:1",
            "a=recvonly x",
            "a=recvonly\tx",
            "a=inactivex",
            " a=sendrecv",
            "a=sendrecv ",
            "A=recvonly",
        ]
    ),
    st.text(max_size=12),
)
line_ends = st.sampled_from(["\r\n", "\r\n", "\n", "\r"])
odd_breaks = st.sampled_from(["\x1c", "\x1d", "\x1e", "\x0b", "\x0c", "\x85", "\u2028", "\u2029"])
sdp_breaks = line_ends | line_ends | odd_breaks | st.sampled_from(["\x00", "\x7f", "\t", " ", ""])
sdp_texts = st.lists(st.tuples(sdp_line_texts, sdp_breaks), min_size=1, max_size=14).map(
    lambda lines: "".join(line + end for line, end in lines)
)
sdps = st.one_of(
    st.sampled_from(["v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=recvonly\r\n", "x" * 16385]),
    sdp_texts,
    st.text(max_size=60),
    wild_text,
    json_values,
)
candidate_dicts = st.fixed_dictionaries(
    {"candidate": st.one_of(st.text(max_size=60), st.just("c" * 1025), json_values)},
    optional={
        "sdpMid": st.one_of(st.none(), st.text(max_size=40), json_values),
        "sdpMLineIndex": st.one_of(st.none(), st.integers(-2, 300), json_values),
        "usernameFragment": st.one_of(st.none(), st.text(max_size=10), wild_text, json_values),
    },
)
signal_data = st.fixed_dictionaries(
    {"kind": st.one_of(st.sampled_from(SIGNAL_KINDS), json_values)},
    optional={
        "link": links,
        "peer_link": links,
        "description": st.one_of(
            st.fixed_dictionaries(
                {"type": st.sampled_from(["offer", "answer", "rollback"]), "sdp": sdps}
            ),
            json_values,
        ),
        "candidates": st.one_of(st.lists(candidate_dicts, max_size=18), json_values),
        "video": st.one_of(st.booleans(), json_values),
        "audio": st.one_of(st.booleans(), json_values),
    },
)
good_signal_data = st.fixed_dictionaries(
    {"kind": st.just("hello"), "link": good_links, "peer_link": st.none()}
) | st.fixed_dictionaries(
    {
        "kind": st.just("candidates"),
        "link": good_links,
        "peer_link": good_links,
        "candidates": st.lists(
            st.fixed_dictionaries({"candidate": st.text(max_size=60)}), min_size=1, max_size=16
        ),
    }
)
chat_texts = st.one_of(
    st.text(max_size=60),
    wild_text,
    huge_text,
    st.sampled_from([" hi ", "a\nb\tc", "x" * 500, "x" * 501, "é" * 500, "\n" * 25 + "x"]),
    st.sampled_from(["a" + "\u0301" * 4, "a" + "\u0301" * 5, "\u2066x\u2069", "\u200d"]),
    json_values,
)
participant_ids = st.one_of(st.text(ascii_chars, max_size=70), wild_text, json_values)
field_values = {
    "type": types,
    "ref": st.one_of(good_refs, good_refs, refs, json_values),
    "room": rooms,
    "nickname": nicknames,
    "key": keys,
    "token": st.one_of(st.booleans(), json_values),
    "to": participant_ids,
    "text": chat_texts,
    "data": st.one_of(signal_data, signal_data, json_values),
    "call": st.one_of(
        st.sampled_from(["connected", "dropped", "connecting", "Dropped"]), json_values
    ),
    "participant": participant_ids,
    "reason": st.one_of(nicknames, st.text(max_size=210), json_values),
    "locked": st.one_of(st.booleans(), json_values),
}
typed = st.fixed_dictionaries(
    {"type": types}, optional={k: v for k, v in field_values.items() if k != "type"}
)
frame_dicts = st.builds(
    lambda extra, named: {**extra, **named},
    st.dictionaries(wild_text, json_values, max_size=3),
    typed | st.fixed_dictionaries({}, optional=field_values),
)


@st.composite
def near_valid_dicts(draw: st.DrawFn) -> dict[str, Any]:
    """A well-formed request with a field or two dropped or swapped for a random value."""
    frame: dict[str, Any] = {
        "type": draw(real_types),
        "ref": draw(good_refs),
        "room": draw(good_rooms),
        "nickname": draw(padded_nicknames),
        "key": draw(st.text(ascii_chars, min_size=1, max_size=128)),
        "token": draw(st.booleans()),
        "to": draw(st.text(ascii_chars, min_size=1, max_size=64)),
        "data": draw(good_signal_data),
        "call": draw(st.sampled_from(["connected", "dropped"])),
        "participant": draw(st.text(ascii_chars, min_size=1, max_size=64)),
        "reason": draw(padded_nicknames),
        "locked": draw(st.booleans()),
        "text": draw(st.text(max_size=60)),
    }
    bad = {**field_values, "room": bad_rooms, "nickname": bad_nicknames, "data": signal_data}
    for name in draw(st.sets(st.sampled_from(sorted(frame)), max_size=2)):
        how = draw(st.sampled_from(["drop", "random", "bad"]))
        if how == "drop":
            del frame[name]
        else:
            frame[name] = draw(bad[name] if how == "bad" else field_values[name])
    return frame


# Numbers and literals only raw text can carry (NaN, overflowing floats, over-long ints).
raw_numbers = st.sampled_from(
    ["NaN", "Infinity", "-Infinity", "1e999", "-1E400", "1e-400", "-0", "0.0", "01", "1.", ".5",
     "+1", "0x10", "True", "nul", "9" * 4000, "9" * 4301, "-" + "9" * 5000, "1" + "0" * 308]
)  # fmt: skip


@st.composite
def frame_texts(draw: st.DrawFn) -> str:
    """A frame object rendered as JSON, escaped or raw UTF-8, maybe with a raw-text ref."""
    frame = draw(st.one_of(frame_dicts, near_valid_dicts()))
    text = json.dumps(frame, ensure_ascii=draw(st.booleans()))
    if draw(st.integers(0, 4)) == 4:  # now and then; hypothesis favours small draws
        kind = json.dumps(draw(st.sampled_from(protocol.CLIENT_TYPES)))
        text = f'{{"type":{kind},"ref":{draw(raw_numbers)}}}'
    return text


@st.composite
def truncated(draw: st.DrawFn) -> str:
    text = draw(frame_texts())
    return text[: draw(st.integers(0, max(len(text) - 1, 0)))]


@st.composite
def deeply_nested(draw: st.DrawFn) -> str:
    """Arrays and objects nested as deep as a 4096-byte frame allows, bare or in a frame."""
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}"), ('[{"a":', "}]")]))
    wrap = draw(st.sampled_from(["{}", '{{"type":"ping","ref":7,"x":{}}}', "[{}]"]))
    space = MAX_FRAME - len(wrap) - 1
    depth = draw(st.integers(1, space // (len(opener) + len(closer))))
    inner = opener * depth + draw(st.sampled_from(["0", "null", '""'])) + closer * depth
    if draw(st.booleans()):  # unbalanced
        inner = inner[: draw(st.integers(0, len(inner)))]
    text = wrap.format(inner)
    assert len(text.encode()) <= MAX_FRAME
    return text


any_text = st.one_of(st.text(wild_chars), huge_text, st.sampled_from(["", " ", "\ufeff{}"]))


# The oracle: what docs/protocol.md says a frame means.


NOT_JSON = object()
TOO_DEEP = object()


def decode_deeper(text: str, frames: int = 8) -> object:
    """`json.loads` from a few stack frames deeper than `parse` calls it.

    Nesting near the recursion limit may parse in `parse` and fail here, never
    the reverse, so a frame this decodes is one `parse` decoded too.
    """
    if frames:
        return decode_deeper(text, frames - 1)
    try:
        return json.loads(text)
    except ValueError:
        return NOT_JSON
    except RecursionError:
        return TOO_DEEP


def valid_ref(ref: object) -> bool:
    """A string of up to 64 characters (sendable as UTF-8) or a finite number, a safe integer."""
    if isinstance(ref, str):
        return len(ref) <= protocol.MAX_REF_LENGTH and _utf8(ref)
    if isinstance(ref, float):
        return math.isfinite(ref)
    if isinstance(ref, int) and not isinstance(ref, bool):
        return abs(ref) <= MAX_SAFE_INTEGER
    return ref is None


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def expected(frame: dict[str, Any]) -> Request | str:
    """The request an object frame with a valid ref means, or the error code it earns."""
    ref, kind = frame.get("ref"), frame.get("type")
    if not isinstance(kind, str):
        return "bad_request"
    if kind == "leave":
        return Leave(ref)
    if kind == "ping":
        return Ping(ref)
    if kind == "resume":
        key, token = frame.get("key"), frame.get("token", False)
        # Keys are the server's own URL-safe tokens: ASCII, at most 128 characters.
        if isinstance(key, str) and 1 <= len(key) <= 128 and key.isascii():
            return Resume(ref, key, token) if isinstance(token, bool) else "bad_request"
        return "bad_request"
    if kind == "signal":
        return expected_signal(frame)
    if kind == "call_state":
        call = frame.get("call")
        return CallReport(ref, call) if call in ("connected", "dropped") else "bad_request"
    if kind in ("kick", "close_room", "lock_room"):
        return expected_moderation(kind, frame)
    if kind == "media":
        switches = [frame.get(name) for name in ("camera", "microphone", "screen")]
        if all(isinstance(on, bool) for on in switches):
            return MediaReport(ref, MediaState(*(on is True for on in switches)))
        return "bad_request"
    if kind == "chat":
        return expected_chat(frame)
    if kind != "join":
        return "unknown_type"
    room, nickname = frame.get("room"), frame.get("nickname")
    if not isinstance(room, str) or not isinstance(nickname, str):
        return "bad_request"
    if not ROOM.fullmatch(room):
        return "invalid_room"
    # The code trims all outer whitespace (str.strip); the docs say "spaces".
    cleaned = nickname.strip()
    if not (1 <= len(cleaned) <= protocol.MAX_NICKNAME and cleaned.isprintable()):
        return "invalid_nickname"
    marks = [unicodedata.category(c) in ("Mn", "Me") for c in cleaned]
    runs = [len(list(run)) for is_mark, run in itertools.groupby(marks) if is_mark]
    if max(runs, default=0) > 4 or sum(runs) > 12:
        return "invalid_nickname"
    blank = [
        mark or c == " " or c in protocol.BLANKS for c, mark in zip(cleaned, marks, strict=True)
    ]
    if all(blank):
        return "invalid_nickname"  # nothing visible
    return Join(ref, room, cleaned)


def expected_moderation(kind: str, frame: dict[str, Any]) -> Request | str:
    ref, room = frame.get("ref"), frame.get("room")
    if not isinstance(room, str):
        return "bad_request"
    if not ROOM.fullmatch(room):
        return "invalid_room"
    if kind == "close_room":
        return CloseRoom(ref, room)
    if kind == "lock_room":
        locked = frame.get("locked")
        return LockRoom(ref, room, locked) if isinstance(locked, bool) else "bad_request"
    to, reason = frame.get("participant"), frame.get("reason", "")
    if not isinstance(to, str) or not 1 <= len(to) <= 64 or not to.isascii():
        return "bad_request"
    if not isinstance(reason, str):
        return "bad_request"
    cleaned = reason.strip()  # up to 200 printable characters, maybe none
    if len(cleaned) > 200 or not cleaned.isprintable():
        return "bad_request"
    marks = [unicodedata.category(c) in ("Mn", "Me") for c in cleaned]
    runs = [len(list(run)) for is_mark, run in itertools.groupby(marks) if is_mark]
    if max(runs, default=0) > 4 or sum(runs) > 12:
        return "bad_request"
    blank = [
        mark or c == " " or c in protocol.BLANKS for c, mark in zip(cleaned, marks, strict=True)
    ]
    if cleaned and all(blank):
        return "bad_request"  # something, but nothing visible
    return Kick(ref, room, to, cleaned)


# What a browser reads in an SDP, written apart from `lobby.rules.signalling`.
SDP_SEPARATORS = {"\u2028", "\u2029"}


def sdp_char_ok(char: str) -> bool:
    """Tab, or a character that is neither a control (C0, DEL, C1) nor a line separator."""
    code = ord(char)
    return char == "\t" or (
        code >= 0x20 and not 0x7F <= code <= 0x9F and char not in SDP_SEPARATORS
    )


def browser_lines(sdp: str) -> list[str] | None:
    """The lines of `sdp`, each ended by LF or CRLF; None for any other control character
    or an unended last line."""
    lines: list[str] = []
    current: list[str] = []
    for at, char in enumerate(sdp):
        if char == "\n":
            lines.append("".join(current))
            current = []
        elif char == "\r" and sdp[at + 1 : at + 2] == "\n":
            continue
        elif sdp_char_ok(char):
            current.append(char)
        else:
            return None
    return lines if sdp and not current and sdp[-1] == "\n" else None


def browser_sends(lines: list[str]) -> bool:
    """Chromium's reading: a section's last direction attribute (the name alone or followed
    by ':' or ' '), else the session's, else sendrecv; only audio and video count."""
    session, kinds, directions = "sendrecv", list[str](), list[str | None]()
    for line in lines:
        media = re.match(r"m=([^ \t]*)", line)
        direction = re.fullmatch(r"a=(sendrecv|sendonly|recvonly|inactive)(?:[: ].*)?", line)
        if media:
            kinds.append(media[1])
            directions.append(None)
        elif direction and kinds:
            directions[-1] = direction[1]
        elif direction:
            session = direction[1]
    return any(
        kind in ("audio", "video") and (own or session) in ("sendrecv", "sendonly")
        for kind, own in zip(kinds, directions, strict=True)
    )


def expected_chat(frame: dict[str, Any]) -> Chat | str:
    """What a `chat` frame means, from docs/protocol.md: 1-500 characters once trimmed, at
    most 20 lines, no control character but tab and line feed, no U+2028/U+2029, no
    direction embedding, override or isolate, no lone surrogate, 4 marks in a row at most."""
    text = frame.get("text")
    if not isinstance(text, str):
        return "bad_request"
    cleaned = text.strip()
    if not 1 <= len(cleaned) <= 500 or len(cleaned.split("\n")) > 20:
        return "invalid_chat"
    directional = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
    for c in cleaned:
        category = unicodedata.category(c)
        if category in ("Cc", "Cs", "Zl", "Zp") and c not in "\t\n":
            return "invalid_chat"
        if c in directional:
            return "invalid_chat"
    marks = [unicodedata.category(c) in ("Mn", "Me") for c in cleaned]
    runs = [len(list(run)) for is_mark, run in itertools.groupby(marks) if is_mark]
    if max(runs, default=0) > 4:
        return "invalid_chat"
    return Chat(frame.get("ref"), cleaned)


def expected_signal(frame: dict[str, Any]) -> Signal | str:
    """What a `signal` frame means: the request with its data copied field by field, or a code."""
    to, data = frame.get("to"), frame.get("data")
    if not (isinstance(to, str) and 1 <= len(to) <= 64 and to.isascii()):
        return "bad_request"
    if not isinstance(data, dict):
        return "invalid_signal"
    kind, link, peer = data.get("kind"), data.get("link"), data.get("peer_link")

    def is_link(value: object) -> bool:
        return isinstance(value, str) and LINK.fullmatch(value) is not None

    if kind not in SIGNAL_KINDS or not is_link(link):
        return "invalid_signal"
    if not (is_link(peer) or (peer is None and kind == "hello")):
        return "invalid_signal"
    copied: dict[str, object] = {"kind": kind, "link": link, "peer_link": peer}
    sends = False
    if kind == "description":
        description = data.get("description")
        if not isinstance(description, dict) or description.get("type") not in ("offer", "answer"):
            return "invalid_signal"
        sdp = description.get("sdp")
        if not (isinstance(sdp, str) and 1 <= len(sdp) <= 16384 and _utf8(sdp)):
            return "invalid_signal"
        lines = browser_lines(sdp)
        if lines is None:
            return "invalid_signal"
        sends = browser_sends(lines)
        copied["description"] = {"type": description["type"], "sdp": sdp}
    elif kind == "candidates":
        candidates = data.get("candidates")
        if not (isinstance(candidates, list) and 1 <= len(candidates) <= 16):
            return "invalid_signal"
        copied["candidates"] = [expected_candidate(c) for c in candidates]
        if None in copied["candidates"]:  # type: ignore[operator]
            return "invalid_signal"
    elif kind == "media":
        video, audio = data.get("video"), data.get("audio")
        if not (isinstance(video, bool) and isinstance(audio, bool)):
            return "invalid_signal"
        copied.update(video=video, audio=audio)
        screen = data.get("screen")
        if screen is not None:
            stream_id = isinstance(screen, str) and re.fullmatch(r"[A-Za-z0-9{}_-]{1,64}", screen)
            if not stream_id:
                return "invalid_signal"
            copied["screen"] = screen
    return Signal(frame.get("ref"), to, copied, sends)


def expected_candidate(value: object) -> dict[str, object] | None:
    if not isinstance(value, dict):
        return None
    text, mid = value.get("candidate"), value.get("sdpMid")
    index, fragment = value.get("sdpMLineIndex"), value.get("usernameFragment")
    fits = (
        isinstance(text, str)
        and len(text) <= 1024
        and _utf8(text)
        and (mid is None or (isinstance(mid, str) and len(mid) <= 32 and _utf8(mid)))
        and (index is None or (type(index) is int and 0 <= index <= 255))
        and (fragment is None or (isinstance(fragment, str) and len(fragment) <= 256))
        and (fragment is None or _utf8(fragment))
    )
    if not fits:
        return None
    return {"candidate": text, "sdpMid": mid, "sdpMLineIndex": index, "usernameFragment": fragment}


# The properties.


def reserialise(request: Request) -> str:
    names = {CallReport: "call_state", CloseRoom: "close_room", LockRoom: "lock_room"}
    if isinstance(request, MediaReport):
        return json.dumps(
            {"type": "media", "ref": request.ref, **dataclasses.asdict(request.media)}
        )
    kind = names.get(type(request), type(request).__name__.lower())
    return json.dumps({"type": kind, **dataclasses.asdict(request)})


def check_request(request: Request) -> None:
    ref = request.ref
    assert not isinstance(ref, bool)
    assert ref is None or isinstance(ref, int | str | float)
    assert not isinstance(ref, str) or len(ref) <= protocol.MAX_REF_LENGTH
    assert not isinstance(ref, float) or math.isfinite(ref)
    assert not isinstance(ref, int) or abs(ref) <= MAX_SAFE_INTEGER
    if isinstance(request, Join):
        assert ROOM.fullmatch(request.room)
        nickname = request.nickname
        assert 1 <= len(nickname) <= protocol.MAX_NICKNAME
        assert nickname.isprintable()
        assert nickname == nickname.strip()
    if isinstance(request, Resume):
        assert 1 <= len(request.key) <= 128
        assert request.key.isascii()
        assert isinstance(request.token, bool)
    if isinstance(request, Signal):
        assert json.loads(render.signal("p_1", request.data))["data"] == request.data
    if isinstance(request, Chat):
        assert 1 <= len(request.text) <= 500
        assert request.text == request.text.strip()
        request.text.encode()  # sendable back to everyone: no lone surrogate
    again = parse(reserialise(request))
    assert again == request
    assert type(again.ref) is type(ref)


def check_error(error: ProtocolError) -> None:
    assert error.code in protocol.ERROR_CODES
    assert error.code in PARSE_CODES
    message = error.message
    assert message == message.strip()
    assert message.endswith(".")
    assert message[0].isupper() or message[0] == "'"
    sent = json.loads(render.error(error))
    assert sent == {"type": "error", "ref": error.ref, "code": error.code, "message": message}


def check(text: str) -> Request | ProtocolError:
    result = parse(text)
    if isinstance(result, ProtocolError):
        check_error(result)
    else:
        assert isinstance(
            result,
            Join
            | Leave
            | Resume
            | Ping
            | Signal
            | CallReport
            | Kick
            | CloseRoom
            | LockRoom
            | MediaReport
            | Chat,
        )
        check_request(result)
    frame = decode_deeper(text)
    if frame is TOO_DEEP:
        return result  # `parse` may have decoded it a few stack frames higher up
    ref = frame.get("ref") if isinstance(frame, dict) else None
    if isinstance(frame, dict) and valid_ref(ref):
        assert result.ref == ref
        assert type(result.ref) is type(ref)
        meaning = expected(frame)
        if isinstance(meaning, str):
            assert isinstance(result, ProtocolError)
            assert result.code == meaning
        else:
            assert result == meaning
    else:
        assert isinstance(result, ProtocolError)
        assert (result.code, result.ref) == ("bad_request", None)
    return result


@FAST
@given(any_text)
@example("[" * 3000 + "]" * 3000)
@example("9" * 5000)
def test_any_text_gets_an_answer(text: str) -> None:
    check(text)


@FAST
@given(json_values, st.booleans())
def test_any_json_value_gets_an_answer(value: object, ascii_only: bool) -> None:
    result = check(json.dumps(value, ensure_ascii=ascii_only))
    if not isinstance(value, dict):
        assert result == ProtocolError("bad_request", "Frames must be JSON objects.")


@FAST
@given(frame_texts())
@example('{"type":"ping","ref":NaN}')
@example('{"type":"join","ref":true,"room":"A","nickname":"x"}')
@example('{"type":"join","room":"A","nickname":" Alice "}')
@example('{"type":"join","room":"a b","nickname":"Alice","ref":"r"}')
@example('{"type":"ping","ref":9007199254740991}')
@example('{"type":"ping","ref":-9007199254740992}')
@example('{"type":"join","room":"A","nickname":"\\u0007","ref":1.5}')
def test_frames_with_random_fields_get_an_answer(text: str) -> None:
    check(text)


@FAST
@given(st.one_of(truncated(), deeply_nested()))
def test_truncated_and_deeply_nested_frames_get_an_answer(text: str) -> None:
    check(text)


@FAST
@given(
    st.sampled_from(protocol.CLIENT_TYPES),
    good_rooms,
    good_nicknames,
    st.text(ascii_chars, min_size=1, max_size=128),
    st.booleans(),
    refs.filter(valid_ref),
)
def test_valid_frames_parse_to_their_request(
    kind: str, room: str, nickname: str, key: str, token: bool, ref: Any
) -> None:
    frame = {"type": kind, "ref": ref, "room": room, "nickname": nickname, "key": key, "to": "p_1"}
    frame["data"] = {"kind": "hello", "link": "l1", "peer_link": None}
    frame["call"] = "connected"
    frame["participant"], frame["reason"], frame["locked"] = "p_1", nickname, token
    frame.update(camera=token, microphone=not token, screen=False)
    frame["text"] = nickname  # also a valid chat message
    result = check(json.dumps({**frame, "token": token}))
    assert not isinstance(result, ProtocolError)


SMUGGLE = (  # issue 17: a video section's sendrecv hidden behind \x1c
    "v=0\r\ns=-\r\nt=0 0\r\nm=audio 9 X 111\r\na=recvonly\r\n"
    "m=video 9 X 96\r\na=recvonly\r\na=x:1\x1cm=application 0 x\r\na=sendrecv\r\n"
)


@FAST
@given(sdp_texts)
@example(SMUGGLE)
@example(SMUGGLE.replace("\x1c", "\r\n"))
@example(SMUGGLE.replace("\x1c", "\u2028"))
def test_sdps_are_read_line_by_line_as_browsers_read_them(sdp: str) -> None:
    """Refused unless every line ends in LF or CRLF and holds no control character; else
    judged sending exactly when a browser would send audio or video."""
    data = {"kind": "description", "link": "l", "peer_link": "m"}
    result = signalling.check({**data, "description": {"type": "offer", "sdp": sdp}})
    lines = browser_lines(sdp)
    if lines is None:
        assert isinstance(result, str)
    else:
        assert isinstance(result, dict), result
        assert signalling.sends_media(result) is browser_sends(lines)


@FAST
@given(frame_texts())
@example('{"type":"ping","ref":"\\ud800"}')
@example('{"type":"resume","key":"\\udc00"}')
def test_every_reply_can_be_sent_as_utf8(text: str) -> None:
    """Every string a request carries can be encoded as UTF-8, as the server must.

    Regression: lone surrogates (JSON escapes like "\\ud800") in `ref` broke every
    reply echoing it, and in `key` the digest `lobby.handler` takes of it.
    """
    result = parse(text)
    someone = Participant("p_1", "alice", "Alice", "PUBLISHER")
    if isinstance(result, ProtocolError):
        reply = render.error(result)
    elif isinstance(result, Join):
        reply = render.token(result.ref, result.room, "tok", someone, "key")
    elif isinstance(result, Resume):
        result.key.encode()  # `lobby.handler` hashes it to look the participant up
        reply = render.resumed(result.ref, "A", someone, None)
    elif isinstance(result, Leave):
        reply = render.ok(result.ref)
    elif isinstance(result, Signal):
        reply = render.signal(someone.id, result.data)
    else:
        reply = render.pong(result.ref)
    reply.encode()  # what `Conn.send` does before writing the frame
