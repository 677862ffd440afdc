"""The roster (`lobby.store.roster`): who is in which room, kept in SQLite across restarts.

SQLite only: with PostgreSQL the roster is off (`test_postgres.py` shows the app leaves it out).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lobby.rules.grants import Grant
from lobby.rules.presence import Participant
from lobby.store.roster import Entry, Roster
from lobby.store.sqlite import SQLiteDatabase as Database
from lobby.store.sqlite import connect

ALICE = Participant("p_a", "alice", "Alice", "PUBLISHER")
BOB = Participant("p_b", "bob", "Bob", "SUBSCRIBER")
MOD = Participant("p_m", "mod", "Mod", "MODERATOR")


@pytest.fixture
def db() -> Iterator[Database]:
    database = connect(":memory:")
    yield database
    database.close()


def entry(participant: Participant, room: str = "R1", connection_id: str = "") -> Entry:
    grant = Grant(room, connection_id, "tok_secret_" + participant.id) if connection_id else None
    return Entry(participant, room, "digest-of-" + participant.id, grant)


def dump(db: Database) -> str:
    return "\n".join(db.iterdump())


def test_a_saved_entry_comes_back_without_its_token(db: Database) -> None:
    roster = Roster(db)
    roster.save(entry(ALICE, "R1", "con_1"))
    assert roster.load() == [
        Entry(ALICE, "R1", "digest-of-p_a", Grant("R1", "con_1", token="")),
    ]
    assert "tok_secret" not in dump(db)  # the token is never stored


def test_the_resume_key_is_stored_only_as_given(db: Database) -> None:
    Roster(db).save(entry(ALICE))
    [(stored,)] = db.execute("SELECT resume_key FROM participants").fetchall()
    assert stored == "digest-of-p_a"  # the handler gives a digest; nothing else is derived


def test_entries_load_in_join_order_across_rooms(db: Database) -> None:
    roster = Roster(db)
    for participant, room in ((MOD, "R2"), (ALICE, "R1"), (BOB, "R2")):
        roster.save(entry(participant, room, "con_" + participant.id))
    assert [(e.participant.id, e.room) for e in roster.load()] == [
        ("p_m", "R2"),
        ("p_a", "R1"),
        ("p_b", "R2"),
    ]
    assert [e.participant for e in roster.load()] == [MOD, ALICE, BOB]  # role and nickname too


def test_a_new_grant_replaces_the_connection_or_clears_it(db: Database) -> None:
    roster = Roster(db)
    roster.save(entry(ALICE, "R1", "con_1"))
    roster.new_grant("p_a", None)  # between dropping the stale grant and getting a fresh one
    [between] = roster.load()
    assert between.grant is None
    roster.new_grant("p_a", Grant("R1", "con_2", "tok_secret_2"))
    [after] = roster.load()
    assert after.grant == Grant("R1", "con_2", "")
    assert (after.participant, after.resume_key) == (ALICE, "digest-of-p_a")
    assert "tok_secret" not in dump(db)


def test_delete_removes_one_participant_and_tolerates_an_unknown_one(db: Database) -> None:
    roster = Roster(db)
    roster.save(entry(ALICE))
    roster.save(entry(BOB))
    roster.delete("p_a")
    roster.delete("p_nobody")
    assert [e.participant for e in roster.load()] == [BOB]


def test_the_roster_survives_reopening_the_database_file(tmp_path: Path) -> None:
    path = str(tmp_path / "lobby.sqlite3")
    first = connect(path)
    Roster(first).save(entry(ALICE, "R1", "con_1"))
    first.close()
    second = connect(path)
    try:
        assert Roster(second).load() == [
            Entry(ALICE, "R1", "digest-of-p_a", Grant("R1", "con_1", ""))
        ]
    finally:
        second.close()
