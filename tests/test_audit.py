"""The audit log (`lobby.store.audit`) on both databases: SQLite and a real PostgreSQL."""

from __future__ import annotations

from lobby.store import db as database
from lobby.store.audit import AuditLog, Record


def test_actions_are_kept_in_order_and_read_since_a_time(db: database.Database) -> None:
    clock = iter([100.0, 200.5, 300.25])
    audit = AuditLog(db, clock=lambda: next(clock))
    first = audit.write("mod", "lock_room", "R1")
    audit.write("mod", "kick", "R1", "alice", "Off topic: «again»")
    audit.write("mod2", "close_room", "R2")
    assert first == Record(100.0, "mod", "lock_room", "R1", "", "")
    assert audit.since() == [
        first,
        Record(200.5, "mod", "kick", "R1", "alice", "Off topic: «again»"),
        Record(300.25, "mod2", "close_room", "R2", "", ""),
    ]
    assert [r.at for r in audit.since(200.5)] == [200.5, 300.25]
    assert audit.since(301) == []
    assert first.json() == {
        "at": 100.0,
        "actor": "mod",
        "action": "lock_room",
        "room": "R1",
        "target": "",
        "reason": "",
    }


def test_another_connection_reads_what_one_wrote(location: str) -> None:
    writer, reader = database.connect(location), database.connect(location)
    try:
        AuditLog(writer).write("mod", "unlock_room", "R1")
        [record] = AuditLog(reader).since()
        assert (record.actor, record.action, record.room) == ("mod", "unlock_room", "R1")
    finally:
        writer.close()
        reader.close()
