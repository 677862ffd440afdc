"""Rooms have addresses: `/room/NAME` is the lobby page that enters room NAME.

`lobby.web.pages.room_page` serves it. Logged out, the address sends the browser to the
login form with `next=/room/NAME`, and the login sends it back there. Anyone can craft
`next`, so `local_target` lets through only our own page addresses, never another site's
(`//evil.example`, `/\\evil.example`, `https://…` would make the login an open redirect).
The page itself checks the name (static/lobby.js) and says what is wrong with a bad one,
so the server serves the lobby for any single path segment.
"""

from __future__ import annotations

import re
from urllib.parse import quote

LOBBY = "/lobby"
# What may follow a login: the lobby, or a room's address with a name the lobby accepts.
_TARGET = re.compile(r"/lobby|/room/[A-Za-z0-9_-]{1,64}")


def local_target(value: object) -> str:
    """Where a login may send the browser: `value` if it is one of our pages, else the lobby."""
    if isinstance(value, str) and _TARGET.fullmatch(value):
        return value
    return LOBBY


def room_address(name: str) -> str:
    return "/room/" + quote(name, safe="")
