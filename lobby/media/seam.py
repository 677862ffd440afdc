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

Exceptions: every failure is a `MediaError` carrying a stable `code` and a
human `message` the requester may see; details for operators go to the log.
"""

from __future__ import annotations

from typing import Protocol

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
