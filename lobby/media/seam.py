"""The media back-end seam: who issues call tokens and revokes them.

The lobby's rooms and presence never talk to a media server directly; they ask a
`MediaBackend` for a `Grant` (an opaque token for the browser plus the handle
needed to revoke it) and tell it when a grant or a whole room is done with.
OpenVidu 2 (REST, `lobby.media.openvidu`) is one implementation, built-in
peer-to-peer rooms (`lobby.media.p2p`, the browsers connect to each other and the
lobby socket relays their signalling) another. The LiveKit (OpenVidu 3) back end
(`lobby.media.livekit`) mints a JWT locally in `grant` and calls RoomService in
`revoke`/`close_room`, so nothing here assumes REST; `page_config` tells the
page which client code runs the call and what it needs (a server URL, ICE
servers).

Back ends that can say who is in a room's call right now (LiveKit's
ListParticipants, OpenVidu's session with its connections) are also a
`ParticipantLister`: the lobby reconciles its call states with that list and
removes connections it does not know. Peer-to-peer rooms have no such list.

Exceptions: every failure is a `MediaError` carrying a stable `code` and a
human `message` the requester may see; details for operators go to the log.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar, Protocol, Self, runtime_checkable

from lobby.rules.grants import Grant, Identity


class MediaError(Exception):
    """The media server could not do what was asked.

    `message` is safe to show to users; it never contains secrets or tokens.
    """

    code = "media_unavailable"
    # True when the media server as a whole is down or refuses us (unreachable,
    # timing out, 5xx, wrong credentials), rather than one request being wrong.
    outage = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


UNAVAILABLE = "The video service is unavailable right now; please try again in a moment."


class BackendError(MediaError):
    """A media server failed; `message` is for users, str() and `detail` for operators.

    The five kinds below say how it failed, and with it whether that is an outage
    and what the user reads. Each back end names its own subclass of each kind
    (`OpenViduTimeout(OpenViduError, TimedOut)`), so logs and tests can tell
    which server it was, while the behaviour is written once, here.
    """

    user_message: ClassVar[str] = UNAVAILABLE
    log_level: ClassVar[int] = logging.WARNING

    def __init__(self, detail: str) -> None:
        super().__init__(self.user_message)
        self.detail = detail

    def __str__(self) -> str:
        return self.detail

    @classmethod
    def logged(cls, logger: logging.Logger, detail: str) -> Self:
        """The error, logged once at its level: translate at the boundary with `raise ….logged`."""
        logger.log(cls.log_level, "%s", detail)
        return cls(detail)


class Unreachable(BackendError):
    """No usable connection: connect failed, or the link broke mid-call."""

    outage = True


class TimedOut(BackendError):
    """No answer in time."""

    outage = True


class Misconfigured(BackendError):
    """The server refused our credentials: a configuration problem, not a transient one."""

    outage = True
    user_message = "The video service is not set up correctly; please tell the administrator."
    log_level = logging.ERROR


class ServerFailed(BackendError):
    """The server failed internally (HTTP 5xx)."""

    outage = True


class Unexpected(BackendError):
    """The server answered something the client does not expect."""

    user_message = "The video service gave an unexpected answer; please try again later."
    log_level = logging.ERROR


class MediaBackend(Protocol):
    @property
    def peer_to_peer(self) -> bool:
        """True when the browsers connect to each other and the lobby relays their signalling."""
        ...

    def page_config(self, user: str) -> dict[str, object]:
        """What `user`'s page needs to run calls (`welcome.media`): at least its `kind`."""
        ...

    async def grant(self, room: str, identity: Identity) -> Grant:
        """Create (or reuse) the room on the media server and a connection in it."""
        ...

    async def revoke(self, grant: Grant) -> None:
        """Delete the connection: its token stops working, its browser is evicted.

        Already-gone connections are not an error.
        """
        ...

    async def close_room(self, room: str) -> None:
        """Close the room on the media server; an already-closed room is not an error."""
        ...

    async def check(self) -> None:
        """Raise a `MediaError` unless the media server answers and accepts us."""
        ...

    async def aclose(self) -> None:
        """Release network resources."""
        ...


@dataclass(frozen=True, slots=True)
class InCall:
    """One connection the media server holds in a room.

    `handle` is what the lobby's grant calls `connection_id` (LiveKit: the
    participant identity; OpenVidu: the connection id); `sid` tells apart
    successive connections of one LiveKit identity (None for OpenVidu); `active`
    is False while nobody has used the connection yet (OpenVidu's pending ones).
    """

    handle: str
    sid: str | None
    active: bool


@runtime_checkable
class ParticipantLister(Protocol):
    async def participants(self, room: str) -> list[InCall]:
        """Every connection of `room` on the media server; none for an unknown room."""
        ...
