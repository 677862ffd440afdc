"""Joins on the way in and media sessions being closed, as every replica holds them.

A room's media session must never be closed under a join, cluster-wide: instance A
may find a room empty and close its session while instance B has just been granted a
connection in it for a join that is not in the log yet; the session's deletion would
take that connection with it. So both sides go through the log, where order decides:

- A join first appends `Reserve`: until its `Join` (or `Unreserve`, or its instance's
  `InstanceDown`) applies, the room counts as occupied on every replica. Its grant is
  asked for only once the reservation applied.
- A close first appends `CloseMedia`: granted only if the room has nobody in it and
  nobody on the way in, when it applies; then `MediaClosed` once the session is gone.
  A `Reserve` applied in between is refused (`media_closing`): its issuer waits for
  `MediaClosed` and reserves again.

Whichever of `Reserve` and `CloseMedia` comes first in the log wins, on every replica
alike, so a grant and a deletion of one room's session never overlap. A dead
instance's reservations and closes end with its `InstanceDown`: a join cut short must
not pin a room open, nor a close cut short keep it shut.

Pure: stdlib only.
"""

from __future__ import annotations

from typing import Any


def _instance(socket: str) -> str:
    return socket.partition(":")[0]


class Reservations:
    def __init__(self) -> None:
        self._joins: dict[str, tuple[str, str]] = {}  # reservation id -> (room, socket)
        self._closing: dict[str, str] = {}  # room -> the instance closing its session

    def occupied(self, room: str) -> bool:
        """Is a join on its way into `room`?"""
        return any(r == room for r, _ in self._joins.values())

    def closing(self, room: str) -> bool:
        """Is `room`'s media session being closed (no grant may start there)?"""
        return room in self._closing

    def instances(self) -> set[str]:
        """Instances with a join on its way in or a close under way."""
        return {_instance(socket) for _, socket in self._joins.values()} | set(
            self._closing.values()
        )

    def reserve(self, reservation: str, room: str, socket: str) -> bool:
        """Hold `room` open for a join; False while its session is being closed."""
        if room in self._closing:
            return False
        self._joins[reservation] = (room, socket)
        return True

    def take(self, reservation: str, room: str) -> bool:
        """End a reservation (its join applies); was it still held, for `room`?"""
        held = self._joins.pop(reservation, None)
        return held is not None and held[0] == room

    def release(self, reservation: str) -> None:
        self._joins.pop(reservation, None)

    def close(self, room: str, instance: str, in_use: bool) -> bool:
        """May `instance` close `room`'s session? Only if nobody is in it (`in_use`),
        on the way in, or closing it already."""
        if in_use or self.occupied(room) or room in self._closing:
            return False
        self._closing[room] = instance
        return True

    def closed(self, room: str, instance: str) -> None:
        """`instance`'s close of `room` is over (a late word about an older close of
        another instance's changes nothing)."""
        if self._closing.get(room) == instance:
            del self._closing[room]

    def instance_down(self, instance: str) -> None:
        """`instance` died: its joins will not come, its closes will not finish."""
        self._joins = {k: v for k, v in self._joins.items() if _instance(v[1]) != instance}
        self._closing = {r: i for r, i in self._closing.items() if i != instance}

    def snapshot(self) -> dict[str, Any]:
        return {"joins": {k: list(v) for k, v in self._joins.items()}, "closing": self._closing}

    @classmethod
    def from_snapshot(cls, data: dict[str, Any]) -> Reservations:
        made = cls()
        made._joins = {k: (room, socket) for k, (room, socket) in data["joins"].items()}
        made._closing = dict(data["closing"])
        return made
