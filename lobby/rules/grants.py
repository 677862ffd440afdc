"""Roles, and the grant a participant holds: the types media, storage and presence share.

A `Grant` is what a media back end hands out for one participant's stay in a room:
the token its browser uses and the handle (`connection_id`) that revokes it.
Storage keeps the handle (`lobby.store.roster`), so these types live here, where
both media and storage may import them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

Role = str  # one of ROLES; user records are checked against it (`lobby.store.users`)
ROLES: Final[tuple[Role, ...]] = ("PUBLISHER", "SUBSCRIBER", "MODERATOR")


def can_publish(role: Role) -> bool:
    """Whether `role` may send audio and video (viewers, SUBSCRIBER, only receive)."""
    return role != "SUBSCRIBER"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a grant is for: shown to the media server as connection data."""

    participant_id: str
    user: str
    nickname: str
    role: Role


@dataclass(frozen=True, slots=True)
class Grant:
    """A token the browser uses to enter `room`, and the handle that revokes it."""

    room: str
    connection_id: str
    token: str
