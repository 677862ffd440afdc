"""Login sessions: creation, lookup, expiry and revocation, on SQLite and on PostgreSQL."""

from __future__ import annotations

import pytest
from argon2 import PasswordHasher

from lobby.store import sqlite
from lobby.store.db import Database, connect
from lobby.store.sessions import SessionStore
from lobby.store.users import User, UserStore

TTL = 3600.0
ALICE = User("alice", "PUBLISHER")
BOB = User("bob", "SUBSCRIBER")


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def users(db: Database) -> UserStore:
    store = UserStore(db, PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))
    store.add(ALICE.name, ALICE.role, "pw")
    store.add(BOB.name, BOB.role, "pw")
    return store


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def sessions(db: Database, users: UserStore, clock: Clock) -> SessionStore:
    return SessionStore(db, ttl=TTL, clock=clock)


def count(db: Database) -> int:
    value: int = db.execute("SELECT count(*) FROM sessions").fetchone()[0]
    return value


def test_create_then_get(sessions: SessionStore) -> None:
    session = sessions.create(ALICE)
    assert len(session) >= 43  # 32 random bytes, base64url
    assert sessions.get(session) == ALICE
    assert sessions.create(ALICE) != session


def test_user_may_be_given_by_name(sessions: SessionStore) -> None:
    assert sessions.get(sessions.create("bob")) == BOB


def test_unknown_session_is_none(sessions: SessionStore) -> None:
    sessions.create(ALICE)
    assert sessions.get("no-such-session") is None
    assert sessions.get("") is None


def test_database_holds_a_digest_not_the_id(db: Database, sessions: SessionStore) -> None:
    session = sessions.create(ALICE)
    stored = db.execute("SELECT id FROM sessions").fetchone()[0]
    assert stored != session
    assert session not in stored


def test_get_is_one_query_by_primary_key() -> None:
    """Seen in SQLite's statement trace and query plan; the SQL is the same in PostgreSQL."""
    db = sqlite.connect(":memory:")
    UserStore(db, PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)).add(
        ALICE.name, ALICE.role, "pw"
    )
    sessions = SessionStore(db, ttl=TTL)
    session = sessions.create(ALICE)
    statements: list[str] = []
    db.set_trace_callback(statements.append)
    try:
        assert sessions.get(session) == ALICE
    finally:
        db.set_trace_callback(None)
    assert len(statements) == 1
    plan = db.execute(f"EXPLAIN QUERY PLAN {statements[0]}").fetchall()
    db.close()
    assert not any("SCAN" in row[-1] for row in plan), plan


def test_session_expires_after_ttl(db: Database, sessions: SessionStore, clock: Clock) -> None:
    session = sessions.create(ALICE)
    clock.now += TTL - 1
    assert sessions.get(session) == ALICE
    clock.now += 1
    assert sessions.get(session) is None
    assert count(db) == 0  # the expired row went with the lookup
    clock.now -= 10  # even if the clock steps back, it stays gone
    assert sessions.get(session) is None


def test_delete_is_logout(sessions: SessionStore) -> None:
    session, other = sessions.create(ALICE), sessions.create(ALICE)
    sessions.delete(session)
    sessions.delete(session)  # twice is fine
    sessions.delete("no-such-session")
    assert sessions.get(session) is None
    assert sessions.get(other) == ALICE


def test_delete_user_ends_only_that_users_sessions(sessions: SessionStore) -> None:
    alice = [sessions.create(ALICE), sessions.create(ALICE)]
    bob = sessions.create(BOB)
    sessions.delete_user(ALICE)
    assert [sessions.get(s) for s in alice] == [None, None]
    assert sessions.get(bob) == BOB
    sessions.delete_user("bob")
    assert sessions.get(bob) is None


def test_purge_expired_counts_and_keeps_live_ones(
    db: Database, sessions: SessionStore, clock: Clock
) -> None:
    old = [sessions.create(ALICE), sessions.create(BOB)]
    clock.now += TTL / 2
    young = sessions.create(ALICE)
    clock.now += TTL / 2
    assert sessions.purge_expired() == 2
    assert sessions.purge_expired() == 0
    assert count(db) == 1
    assert sessions.get(young) == ALICE
    assert [sessions.get(s) for s in old] == [None, None]


def test_password_change_revokes_sessions(users: UserStore, sessions: SessionStore) -> None:
    session = sessions.create(ALICE)
    users.set_password("alice", "new")
    assert sessions.get(session) is None


def test_user_removal_revokes_sessions(users: UserStore, sessions: SessionStore) -> None:
    session = sessions.create(ALICE)
    users.remove("alice")
    assert sessions.get(session) is None


def test_role_comes_from_the_user_row(db: Database, sessions: SessionStore) -> None:
    session = sessions.create(ALICE)
    db.write("UPDATE users SET role = 'MODERATOR' WHERE name = 'alice'")
    assert sessions.get(session) == User("alice", "MODERATOR")


def test_alive_names_the_sessions_still_valid(
    users: UserStore, sessions: SessionStore, clock: Clock
) -> None:
    alice = sessions.create("alice")
    bob = sessions.create("bob")
    gone = sessions.create("alice")
    sessions.delete(gone)
    many = [sessions.create("alice") for _ in range(600)]  # more than one query's worth
    assert sessions.alive([alice, bob, gone, "never-existed", *many]) == {alice, bob, *many}
    clock.now += 10_000  # expiry counts too
    assert sessions.alive([alice, bob]) == set()


def test_changed_elsewhere_sees_commits_of_other_connections(location: str) -> None:
    mine, theirs = connect(location), connect(location)
    try:
        store = SessionStore(mine, ttl=60)
        before = store.changed_elsewhere()
        UserStore(theirs).add("carol", "PUBLISHER", "pw")
        assert store.changed_elsewhere() != before
    finally:
        mine.close()
        theirs.close()
