"""The participants of every room, kept in SQLite so that a restart gives them back.

Written through on every change (a row per participant; the resume key only as
a SHA-256 digest, the OpenVidu token not at all). On start the server loads the
rows as *away* participants: their pages reconnect and `resume` without anyone
seeing them leave, and those nobody comes back for expire after the grace period
like any other, which deletes their OpenVidu connections. So a restart leaves
neither ghost participants nor orphaned OpenVidu connections.

SQLite only, one instance's own: the rows are this process's participants, and
a lobby sharing a PostgreSQL database with other instances would give back
theirs as its own on a restart. So with PostgreSQL the roster is off (`app.py`)
until presence is shared between instances (Redis); its SQL is SQLite's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from lobby.rules.grants import Grant
from lobby.rules.presence import Participant
from lobby.store.db import Database


@dataclass(frozen=True, slots=True)
class Entry:
    participant: Participant
    room: str
    resume_key: str  # the digest presence holds
    grant: Grant | None  # None: it had none at that moment (between two grants)


class Roster:
    def __init__(self, db: Database) -> None:
        self._db = db

    def save(self, entry: Entry) -> None:
        p = entry.participant
        self._db.write(
            "INSERT OR REPLACE INTO participants"
            " (id, room, user, nickname, role, resume_key, connection_id, joined_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                p.id,
                entry.room,
                p.user,
                p.nickname,
                p.role,
                entry.resume_key,
                entry.grant.connection_id if entry.grant else "",
                time.time(),
            ),
        )

    def new_grant(self, participant_id: str, grant: Grant | None) -> None:
        self._db.write(
            "UPDATE participants SET connection_id = ? WHERE id = ?",
            (grant.connection_id if grant else "", participant_id),
        )

    def delete(self, participant_id: str) -> None:
        self._db.write("DELETE FROM participants WHERE id = ?", (participant_id,))

    def load(self) -> list[Entry]:
        rows = self._db.execute(
            "SELECT id, room, user, nickname, role, resume_key, connection_id"
            " FROM participants ORDER BY joined_at, rowid"
        ).fetchall()
        return [
            Entry(
                Participant(pid, user, nickname, role),
                room,
                key,
                Grant(room=room, connection_id=connection_id, token="") if connection_id else None,
            )
            for pid, room, user, nickname, role, key, connection_id in rows
        ]
