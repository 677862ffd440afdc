"""Built-in peer-to-peer calls: the `MediaBackend` when there is no media server.

The browsers of a room connect to each other directly (a full mesh, so rooms
are small: `LOBBY_ROOM_SIZE`); the lobby socket relays their signalling
(`lobby.relay`). So there is nothing to create or delete anywhere: a grant is
only a name for the participant's stay, and "revoking" it is presence dropping
the participant, after which the relay routes nothing to or from it and every
page closes its connection on the `left` event.

What the page needs is its ICE servers. TURN servers configured without a
username get per-user credentials under the TURN REST scheme that coturn's
`use-auth-secret` checks: username `<expiry>:<user>`, password
base64(HMAC-SHA1(secret, username)), so no long-lived TURN password ever
reaches a browser.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from lobby.rules.grants import Grant, Identity


@dataclass(frozen=True, slots=True)
class IceServer:
    """One STUN/TURN server for the browsers' `RTCPeerConnection` (the `RTCIceServer` shape)."""

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = field(default=None, repr=False)

    @property
    def turn(self) -> bool:
        return any(url.startswith(("turn:", "turns:")) for url in self.urls)


ICE_SCHEMES = ("stun:", "stuns:", "turn:", "turns:")


def ice_servers_from_json(name: str, text: str) -> tuple[IceServer, ...]:
    """The setting `name`: a JSON list of `RTCIceServer` objects, checked before pages see it.

    Raises `ValueError` with a sentence that names the setting.
    """
    try:
        parsed = json.loads(text or "[]")
    except ValueError:
        raise ValueError(f"{name} must be a JSON list, not {text!r}") from None
    if not isinstance(parsed, list):
        raise ValueError(f"{name} must be a JSON list of objects with 'urls'")
    return tuple(_ice_server(name, entry) for entry in parsed)


def _ice_server(name: str, entry: object) -> IceServer:
    if not isinstance(entry, dict) or not set(entry) <= {"urls", "username", "credential"}:
        raise ValueError(f"{name}: each server is an object with 'urls', 'username', 'credential'")
    urls = entry.get("urls")
    urls = [urls] if isinstance(urls, str) else urls
    if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
        raise ValueError(f"{name}: 'urls' must be a URL or a non-empty list of URLs")
    for url in urls:
        if not url.startswith(ICE_SCHEMES):
            raise ValueError(f"{name}: {url!r} is not a stun:, stuns:, turn: or turns: URL")
    username, credential = entry.get("username"), entry.get("credential")
    for key, text in (("username", username), ("credential", credential)):
        if text is not None and not isinstance(text, str):
            raise ValueError(f"{name}: {key!r} must be a string")
    return IceServer(tuple(urls), username, credential)


class PeerToPeerBackend:
    peer_to_peer = True

    def __init__(
        self,
        ice_servers: tuple[IceServer, ...] = (),
        *,
        turn_secret: str | None = None,
        turn_ttl: float = 43200.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ice_servers = ice_servers
        self._turn_secret = turn_secret
        self._turn_ttl = turn_ttl
        self._clock = clock

    def __repr__(self) -> str:
        return "PeerToPeerBackend()"

    def page_config(self, user: str) -> dict[str, object]:
        return {"kind": "p2p", "ice_servers": [self._ice_json(s, user) for s in self._ice_servers]}

    def _ice_json(self, server: IceServer, user: str) -> dict[str, object]:
        entry: dict[str, object] = {"urls": list(server.urls)}
        if server.username is not None and server.credential is not None:
            entry.update(username=server.username, credential=server.credential)
        elif server.turn and self._turn_secret is not None:
            entry.update(zip(("username", "credential"), self.turn_credentials(user), strict=True))
        return entry

    def turn_credentials(self, user: str) -> tuple[str, str]:
        """coturn `use-auth-secret` credentials for `user`, valid for `turn_ttl` seconds."""
        assert self._turn_secret is not None
        username = f"{int(self._clock() + self._turn_ttl)}:{user}"
        digest = hmac.new(self._turn_secret.encode(), username.encode(), hashlib.sha1).digest()
        return username, base64.b64encode(digest).decode()

    async def grant(self, room: str, identity: Identity) -> Grant:
        name = "p2p_" + secrets.token_urlsafe(12)
        return Grant(room=room, connection_id=name, token=name)

    async def revoke(self, grant: Grant) -> None:
        """Nothing to delete: the relay stops at once when presence drops the participant."""

    async def close_room(self, room: str) -> None:
        """Nothing to close: a room exists only in presence."""

    async def check(self) -> None:
        """Always up: there is no server to ask."""

    async def aclose(self) -> None:
        """Holds no network resources."""
