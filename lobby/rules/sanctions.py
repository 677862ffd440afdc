"""What moderators imposed on rooms: locks, bans and close counts.

Pure and synchronous. `Presence` (lobby.rules.presence) keeps one `Sanctions`
beside its rooms: it applies kicks, closes and locks to the rooms and records
them here, and the rules that decide a join (lobby.cluster.replica) read them.
Times are milliseconds passed in by the caller (the log entry's time), never a
clock read here, so every replica agrees when a ban ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Sanctions:
    # Rooms only moderators may join; a room forgets its lock when it empties.
    locked: set[str] = field(default_factory=set)
    # (room, user) -> until (ms): a kicked user's ban, which outlives the room.
    bans: dict[tuple[str, str], int] = field(default_factory=dict)
    # room -> how many times a moderator closed it, so a join that began before a
    # close can be told from one that began after it.
    closes: dict[str, int] = field(default_factory=dict)

    def banned(self, room: str, user: str, now: int) -> bool:
        """Is `user` kept out of `room` at `now`?"""
        return self.bans.get((room, user), 0) > now

    def ban(self, room: str, user: str, until: int, now: int) -> None:
        """Keep `user` out of `room` until `until`; bans over at `now` are forgotten."""
        self.bans = {key: end for key, end in self.bans.items() if end > now}
        self.bans[(room, user)] = max(until, self.bans.get((room, user), 0))

    def closed(self, room: str) -> None:
        self.closes[room] = self.closes_of(room) + 1

    def closes_of(self, room: str) -> int:
        """How many times `room` was closed (0: never, or forgotten)."""
        return self.closes.get(room, 0)
