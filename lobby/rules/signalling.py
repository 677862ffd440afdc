"""Peer-to-peer signalling payloads: what one page may hand another through the lobby.

Pages of a p2p room negotiate their `RTCPeerConnection`s with `signal` frames
(`docs/protocol.md`). The lobby does not take part in the negotiation, but it
relays only what it has checked: known kinds and fields of bounded size, copied
into a fresh object, so nothing else ever reaches another page. It also reads
one thing out of an SDP: whether it would send audio or video, which viewers
(SUBSCRIBER) may not do.

Stdlib only; no sockets.
"""

from __future__ import annotations

import re
from typing import Any

SIGNAL_KINDS = ("hello", "ack", "description", "candidates", "media")
LINK_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,32}")
# A MediaStream id (Chromium: a UUID; Firefox: one in braces), as the receiving page sees it.
STREAM_PATTERN = re.compile(r"[A-Za-z0-9{}_-]{1,64}")
MAX_SDP = 16384
MAX_CANDIDATES = 16
MAX_CANDIDATE = 1024


def check(data: dict[str, Any]) -> dict[str, object] | str:
    """The signal's fields, checked and copied (nothing unknown is relayed), or what is wrong."""
    kind, link, peer_link = data.get("kind"), data.get("link"), data.get("peer_link")
    if kind not in SIGNAL_KINDS:
        return "'kind' must be one of " + ", ".join(SIGNAL_KINDS) + "."
    if not _is_link(link) or not (_is_link(peer_link) or (peer_link is None and kind == "hello")):
        return "'link' and 'peer_link' are 1 to 32 letters, digits, '_' or '-'."
    checked: dict[str, object] = {"kind": kind, "link": link, "peer_link": peer_link}
    if kind == "description":
        description = data.get("description")
        if not isinstance(description, dict) or description.get("type") not in ("offer", "answer"):
            return "'description' needs 'type' offer or answer and a string 'sdp'."
        sdp = description.get("sdp")
        if not isinstance(sdp, str) or not 0 < len(sdp) <= MAX_SDP or not is_utf8(sdp):
            return f"'sdp' must be a string of up to {MAX_SDP} characters."
        if not is_sdp_text(sdp):
            return (
                "'sdp' must be lines ending in CRLF (or LF), without control characters"
                " (tab aside) or Unicode line separators."
            )
        checked["description"] = {"type": description["type"], "sdp": sdp}
    elif kind == "candidates":
        candidates = data.get("candidates")
        if not isinstance(candidates, list) or not 0 < len(candidates) <= MAX_CANDIDATES:
            return f"'candidates' must be a list of 1 to {MAX_CANDIDATES} ICE candidates."
        copied = [_candidate(c) for c in candidates]
        if None in copied:
            return "Each candidate needs a string 'candidate' and valid 'sdpMid'/'sdpMLineIndex'."
        checked["candidates"] = copied
    elif kind == "media":
        video, audio = data.get("video"), data.get("audio")
        if not isinstance(video, bool) or not isinstance(audio, bool):
            return "'media' needs booleans 'video' and 'audio'."
        checked.update(video=video, audio=audio)
        # Optional: the stream id a shared screen's track arrives with (tells it from the camera).
        screen = data.get("screen")
        if screen is not None:
            if not isinstance(screen, str) or STREAM_PATTERN.fullmatch(screen) is None:
                return "'screen' is null or a stream id of 1 to 64 letters, digits, '{}_-'."
            checked["screen"] = screen
    return checked


def _is_link(value: object) -> bool:
    return isinstance(value, str) and LINK_PATTERN.fullmatch(value) is not None


def _candidate(value: object) -> dict[str, object] | None:
    if not isinstance(value, dict):
        return None
    candidate, mid = value.get("candidate"), value.get("sdpMid")
    index, fragment = value.get("sdpMLineIndex"), value.get("usernameFragment")
    if not isinstance(candidate, str) or len(candidate) > MAX_CANDIDATE or not is_utf8(candidate):
        return None
    if mid is not None and not (isinstance(mid, str) and len(mid) <= 32 and is_utf8(mid)):
        return None
    if index is not None and not (type(index) is int and 0 <= index <= 255):
        return None
    if fragment is not None and not (
        isinstance(fragment, str) and len(fragment) <= 256 and is_utf8(fragment)
    ):
        return None
    return {
        "candidate": candidate,
        "sdpMid": mid,
        "sdpMLineIndex": index,
        "usernameFragment": fragment,
    }


# What may not appear in an SDP: C0 controls but tab (CR and LF only as a line end),
# DEL, C1 controls (U+0085 among them) and the Unicode line and paragraph separators.
# RFC 8866's text allows most of these, but Chromium and Firefox write plain ASCII
# lines, and each is a line break to some parser (Python's `splitlines` breaks at
# \x1c-\x1e, \x85, \u2028...): refusing them leaves one way to read the lines.
_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
_SENDING = ("sendrecv", "sendonly")
_DIRECTIONS = (*_SENDING, "recvonly", "inactive")


def is_sdp_text(sdp: str) -> bool:
    """Whether `sdp` is lines each ending in CRLF or LF, with no other control characters."""
    return sdp.endswith("\n") and not any(
        _FORBIDDEN.search(line.removesuffix("\r")) for line in sdp.split("\n")
    )


def sdp_lines(sdp: str) -> list[str]:
    """The lines of an SDP as browsers split them: at LF only, less a CR before it.

    Chromium takes a line up to each "\n" and drops one "\r" before it; nothing
    else ends a line, and no whitespace is stripped (a line must start with its
    type letter, so " a=sendrecv" is no attribute to a browser and none here).
    """
    lines = [line.removesuffix("\r") for line in sdp.split("\n")]
    if lines and lines[-1] == "":
        lines.pop()  # what follows the last line end
    return lines


def sends_media(data: dict[str, object]) -> bool:
    """Whether checked signal `data` is a description that would send audio or video."""
    description = data.get("description")
    return isinstance(description, dict) and sdp_sends_media(description["sdp"])


def sdp_sends_media(sdp: str) -> bool:
    """Whether an SDP would send audio or video: an m-section that is not recvonly/inactive.

    A section without a direction takes the session's, and that defaults to
    sendrecv (RFC 4566), so leaving the attribute out does not get past this.
    Attributes are recognised as Chromium does: "a=sendrecv" alone or followed
    by ":" or " " ("a=recvonly x" is recvonly to Chromium, so it must be here too,
    or an "a=sendrecv" before it would go unseen); the last one of a section wins.
    """
    session = "sendrecv"
    sections: list[list[str | None]] = []  # [media kind, direction or None]
    for line in sdp_lines(sdp):
        if line.startswith("m="):
            # Chromium splits at spaces; a tab here is no media type it knows,
            # but reading up to either keeps a doubtful "video" counted.
            sections.append([re.split("[ \t]", line[2:], maxsplit=1)[0], None])
        elif (direction := _direction(line)) is not None:
            if sections:
                sections[-1][1] = direction
            else:
                session = direction
    return any(
        kind in ("audio", "video") and (direction or session) in _SENDING
        for kind, direction in sections
    )


def _direction(line: str) -> str | None:
    if not line.startswith("a="):
        return None
    name = re.split("[: ]", line[2:], maxsplit=1)[0]
    return name if name in _DIRECTIONS else None


def is_utf8(text: str) -> bool:
    """False for strings JSON can carry but UTF-8 cannot (lone surrogates like "\\ud800")."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
