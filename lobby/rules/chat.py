"""Room chat: what a chat message may hold, and the history a room keeps.

A message is user text shown to everyone in a room: 1 to `MAX_CHAT` characters
(code points) after trimming whitespace at both ends, at most `MAX_LINES` lines.
Tabs and line feeds are text; every other control character, the line and
paragraph separators, the bidirectional embeddings, overrides and isolates (which
would reorder what the page shows around them) and lone surrogates (which cannot
be sent back as UTF-8) are refused, never silently stripped: what everyone reads
is exactly what the sender typed. Combining marks are limited in a row, as in
nicknames, so that a message cannot smear over the rows around it.

`History` keeps each room's last `HISTORY` lines while the room lives; the room's
close drops them (the replica calls `drop`). Nothing else is kept anywhere.

Pure: stdlib only.
"""

from __future__ import annotations

import unicodedata
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

from lobby.rules.presence import Participant

MAX_CHAT = 500
MAX_LINES = 20
HISTORY = 50
MAX_MARKS_IN_A_ROW = 4  # as in nicknames: accents and Indic vowels, not a smear
# Reorder the text after them (and, unisolated, the page's text around the message).
BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
ALLOWED_CONTROLS = frozenset("\t\n")
CHAT_RULE = (
    f"Chat messages are 1 to {MAX_CHAT} characters (at most {MAX_LINES} lines), with no "
    "control characters but tabs and line breaks, no direction overrides, and at most "
    f"{MAX_MARKS_IN_A_ROW} combining marks in a row."
)


@dataclass(frozen=True, slots=True)
class ChatLine:
    """One message as everyone in `room` gets it: who sent it, what, and when (ISO 8601)."""

    room: str
    sender: Participant
    text: str
    at: str


def clean_text(text: str) -> str | None:
    """`text` trimmed at both ends, or None when it may not be sent (see the module)."""
    cleaned = text.strip()
    if not 1 <= len(cleaned) <= MAX_CHAT or cleaned.count("\n") >= MAX_LINES:
        return None
    in_a_row = 0
    for char in cleaned:
        category = unicodedata.category(char)
        if category in ("Mn", "Me"):
            in_a_row += 1
            if in_a_row > MAX_MARKS_IN_A_ROW:
                return None
            continue
        in_a_row = 0
        if category in ("Cc", "Cs", "Zl", "Zp") and char not in ALLOWED_CONTROLS:
            return None
        if char in BIDI_CONTROLS:
            return None
    return cleaned


class History:
    """The last `size` chat lines of every live room, oldest first."""

    def __init__(self, size: int = HISTORY) -> None:
        self._size = size
        self._rooms: dict[str, deque[ChatLine]] = {}

    def add(self, line: ChatLine) -> None:
        lines = self._rooms.get(line.room)
        if lines is None:
            lines = self._rooms[line.room] = deque(maxlen=self._size)
        lines.append(line)

    def of(self, room: str) -> list[ChatLine]:
        return list(self._rooms.get(room, ()))

    def drop(self, room: str) -> None:
        """The room closed: its history is gone, for good."""
        self._rooms.pop(room, None)

    def rooms(self) -> Iterator[str]:
        return iter(list(self._rooms))

    def __len__(self) -> int:
        """Lines held, in every room."""
        return sum(len(lines) for lines in self._rooms.values())
