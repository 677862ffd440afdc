"""The audit log: what moderators did (kick, close a room, lock or unlock one), for `lobby audit`.

One row per action that took effect: when (seconds since the epoch), who (the
moderator's user name), what (`kick`, `close_room`, `lock_room`, `unlock_room`),
where (the room), whom (a kicked participant's user name; empty otherwise) and
why (a kick's reason; empty when none was given). Written by the instance whose
moderator asked, once per action in the cluster, in SQLite or PostgreSQL alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

from lobby.store.db import Database

Action = Literal["kick", "close_room", "lock_room", "unlock_room"]


@dataclass(frozen=True, slots=True)
class Record:
    at: float
    actor: str
    action: str
    room: str
    target: str = ""
    reason: str = ""

    def json(self) -> dict[str, Any]:
        return asdict(self)


class AuditLog:
    def __init__(self, db: Database, *, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock

    def write(
        self, actor: str, action: Action, room: str, target: str = "", reason: str = ""
    ) -> Record:
        """Record one action, stamped now; blocking: the server calls it in a thread."""
        record = Record(self._clock(), actor, action, room, target, reason)
        self._db.write(
            "INSERT INTO audit (at, actor, action, room, target, reason) VALUES (?, ?, ?, ?, ?, ?)",
            (record.at, actor, action, room, target, reason),
        )
        return record

    def since(self, start: float = 0.0) -> list[Record]:
        """Every action at or after `start` (seconds since the epoch), oldest first."""
        rows = self._db.execute(
            "SELECT at, actor, action, room, target, reason FROM audit WHERE at >= ? ORDER BY at",
            (start,),
        ).fetchall()
        return [Record(*row) for row in rows]
