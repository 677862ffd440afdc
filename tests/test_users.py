"""The user store (and, below it, the database it lives in), on SQLite and on PostgreSQL.

The `db` fixture (tests/conftest.py) gives each test an empty database of each kind;
what only SQLite has (its file, its pragmas) is tested on SQLite alone, and
PostgreSQL's own (migrations, outages) in tests/test_postgres.py.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Literal

import psycopg
import pytest
from argon2 import PasswordHasher

from lobby.rules.grants import ROLES
from lobby.store.db import SCHEMA_VERSION, Database, SchemaError
from lobby.store.sessions import SessionStore
from lobby.store.sqlite import connect, schema_version
from lobby.store.users import DEMO_USERS, Account, User, UserError, UserStore, check_name


def cheap_hasher(time_cost: int = 1) -> PasswordHasher:
    return PasswordHasher(time_cost=time_cost, memory_cost=8, parallelism=1)


class CountingHasher(PasswordHasher):
    """A cheap hasher that counts verifications, to see the dummy verify happen."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8, parallelism=1)
        self.verified: list[str] = []

    def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
        self.verified.append(str(hash))
        return super().verify(hash, password)


@pytest.fixture
def users(db: Database) -> UserStore:
    return UserStore(db, cheap_hasher())


def stored_hash(db: Database, name: str) -> str:
    value: str = db.execute("SELECT password_hash FROM users WHERE name = ?", (name,)).fetchone()[0]
    return value


# --- adding and reading -----------------------------------------------------------------


def test_add_then_get(users: UserStore) -> None:
    assert users.add("alice", "PUBLISHER", "s3cret") == User("alice", "PUBLISHER")
    assert users.get("alice") == User("alice", "PUBLISHER")
    assert users.get("bob") is None


def test_passwords_are_stored_as_argon2id_hashes(db: Database, users: UserStore) -> None:
    users.add("alice", "PUBLISHER", "s3cret")
    assert stored_hash(db, "alice").startswith("$argon2id$")
    assert "s3cret" not in stored_hash(db, "alice")


def test_production_hasher_is_argon2_defaults(db: Database) -> None:
    store = UserStore(db)
    store.add("alice", "MODERATOR", "s3cret")
    assert not PasswordHasher().check_needs_rehash(stored_hash(db, "alice"))


@pytest.mark.parametrize("name", ["a", "A" * 32, "Alice.B_c-9", "..."])
def test_good_names(users: UserStore, name: str) -> None:
    assert users.add(name, "SUBSCRIBER", "pw").name == name


@pytest.mark.parametrize("name", ["", "a" * 33, "a b", "émile", "a/b", "a\n", "<b>"])
def test_bad_names_are_refused(users: UserStore, name: str) -> None:
    with pytest.raises(UserError, match="must be 1 to 32") as caught:
        users.add(name, "SUBSCRIBER", "pw")
    assert caught.value.code == "bad_name"
    with pytest.raises(UserError):
        check_name(name)
    assert users.list() == []


@pytest.mark.parametrize("role", ["ADMIN", "publisher", ""])
def test_bad_roles_are_refused(users: UserStore, role: str) -> None:
    with pytest.raises(UserError, match="must be one of PUBLISHER") as caught:
        users.add("alice", role, "pw")
    assert caught.value.code == "bad_role"


def test_empty_password_is_refused(users: UserStore) -> None:
    with pytest.raises(UserError, match="must not be empty") as caught:
        users.add("alice", "PUBLISHER", "")
    assert caught.value.code == "empty_password"


def test_duplicate_user_is_refused_and_keeps_the_first(users: UserStore) -> None:
    users.add("alice", "PUBLISHER", "first")
    with pytest.raises(UserError, match="already exists") as caught:
        users.add("alice", "MODERATOR", "second")
    assert caught.value.code == "user_exists"
    assert isinstance(caught.value, ValueError)
    assert users.verify("alice", "first") == User("alice", "PUBLISHER")


def test_list_is_sorted_and_accounts_show_the_demo_flag(users: UserStore) -> None:
    users.add("zoe", "SUBSCRIBER", "pw")
    users.add("adam", "MODERATOR", "pw", demo=True)
    assert users.list() == [User("adam", "MODERATOR"), User("zoe", "SUBSCRIBER")]
    assert users.accounts() == [
        Account("adam", "MODERATOR", demo=True),
        Account("zoe", "SUBSCRIBER", demo=False),
    ]


# --- verifying ----------------------------------------------------------------------------


def test_verify_right_and_wrong_password(users: UserStore) -> None:
    users.add("alice", "PUBLISHER", "s3cret")
    assert users.verify("alice", "s3cret") == User("alice", "PUBLISHER")
    assert users.verify("alice", "S3cret") is None
    assert users.verify("alice", "") is None


def test_unknown_user_costs_an_argon2_verify_too(db: Database) -> None:
    hasher = CountingHasher()
    users = UserStore(db, hasher)
    assert users.verify("nobody", "s3cret") is None
    assert len(hasher.verified) == 1
    assert hasher.verified[0].startswith("$argon2id$")


def test_outdated_hash_is_upgraded_on_login_without_logging_out(db: Database) -> None:
    UserStore(db, cheap_hasher(time_cost=1)).add("alice", "PUBLISHER", "s3cret")
    sessions = SessionStore(db, ttl=60)
    session = sessions.create(User("alice", "PUBLISHER"))
    stronger = cheap_hasher(time_cost=2)
    assert stronger.check_needs_rehash(stored_hash(db, "alice"))

    assert UserStore(db, stronger).verify("alice", "s3cret") == User("alice", "PUBLISHER")
    assert not stronger.check_needs_rehash(stored_hash(db, "alice"))
    assert sessions.get(session) == User("alice", "PUBLISHER")


def test_corrupt_stored_hash_fails_closed(db: Database, users: UserStore) -> None:
    users.add("alice", "PUBLISHER", "s3cret")
    db.write("UPDATE users SET password_hash = 'not a hash' WHERE name = 'alice'")
    assert users.verify("alice", "s3cret") is None


# --- changing and removing ----------------------------------------------------------------


def test_set_password_changes_it_and_ends_sessions(db: Database, users: UserStore) -> None:
    users.add("alice", "PUBLISHER", "old")
    users.add("bob", "PUBLISHER", "pw")
    sessions = SessionStore(db, ttl=60)
    alice_session, bob_session = sessions.create("alice"), sessions.create("bob")

    assert users.set_password("alice", "new") is True
    assert users.verify("alice", "old") is None
    assert users.verify("alice", "new") == User("alice", "PUBLISHER")
    assert sessions.get(alice_session) is None
    assert sessions.get(bob_session) == User("bob", "PUBLISHER")


def test_set_password_for_unknown_user_or_empty_password(users: UserStore) -> None:
    assert users.set_password("nobody", "pw") is False
    users.add("alice", "PUBLISHER", "old")
    with pytest.raises(UserError, match="must not be empty"):
        users.set_password("alice", "")
    assert users.verify("alice", "old") is not None


def test_remove_deletes_the_user_and_its_sessions(db: Database, users: UserStore) -> None:
    users.add("alice", "PUBLISHER", "pw")
    session = SessionStore(db, ttl=60).create("alice")
    assert users.remove("alice") is True
    assert users.get("alice") is None
    assert users.verify("alice", "pw") is None
    assert db.execute("SELECT count(*) FROM sessions").fetchone()[0] == 0
    assert SessionStore(db, ttl=60).get(session) is None
    assert users.remove("alice") is False


# --- demo users ---------------------------------------------------------------------------


def test_demo_users_exist_only_between_ensure_and_remove(users: UserStore) -> None:
    users.add("alice", "MODERATOR", "pw")
    assert users.verify("publisher1", "pass") is None

    expected = [User(name, role) for name, role in DEMO_USERS]
    assert users.ensure_demo_users() == expected
    assert [users.verify(u.name, "pass") for u in expected] == expected
    assert all(a.demo for a in users.accounts() if a.name != "alice")

    assert users.remove_demo_users() == 3
    assert users.list() == [User("alice", "MODERATOR")]
    assert users.remove_demo_users() == 0


def test_ensure_demo_users_again_resets_them_but_keeps_sessions(
    db: Database, users: UserStore
) -> None:
    users.ensure_demo_users()
    users.set_password("publisher1", "changed")
    session = SessionStore(db, ttl=60).create("publisher1")

    assert len(users.ensure_demo_users()) == 3
    assert users.verify("publisher1", "pass") == User("publisher1", "PUBLISHER")
    assert SessionStore(db, ttl=60).get(session) == User("publisher1", "PUBLISHER")


def test_demo_mode_never_touches_a_real_account_with_a_demo_name(users: UserStore) -> None:
    users.add("publisher1", "MODERATOR", "real")
    assert [u.name for u in users.ensure_demo_users()] == ["publisher2", "subscriber"]
    assert users.verify("publisher1", "pass") is None
    assert users.remove_demo_users() == 2
    assert users.verify("publisher1", "real") == User("publisher1", "MODERATOR")


# --- the database -------------------------------------------------------------------------


def test_schema_is_created_once_and_data_survives_reconnecting(tmp_path: Path) -> None:
    path = str(tmp_path / "lobby.sqlite3")
    first = connect(path)
    UserStore(first, cheap_hasher()).add("alice", "PUBLISHER", "pw")
    assert schema_version(first) == SCHEMA_VERSION
    first.close()
    second = connect(path)
    try:
        assert UserStore(second, cheap_hasher()).get("alice") == User("alice", "PUBLISHER")
        assert second.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert second.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    finally:
        second.close()


def test_schema_role_check_matches_media_roles(db: Database) -> None:
    for role in ROLES:
        db.write("INSERT INTO users (name, role, password_hash) VALUES (?, ?, 'x')", (role, role))
    with pytest.raises((sqlite3.IntegrityError, psycopg.IntegrityError)):
        db.write("INSERT INTO users (name, role, password_hash) VALUES ('x', 'ADMIN', 'x')")


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "lobby.sqlite3")
    connect(path).close()
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(SchemaError, match="upgrade lobby"):
        connect(path)


def test_failed_transaction_rolls_back_and_releases_the_lock(db: Database) -> None:
    def insert_then_fail() -> None:
        with db.transaction():
            db.execute(
                "INSERT INTO users (name, role, password_hash) VALUES ('a', 'PUBLISHER', 'x')"
            )
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        insert_then_fail()
    assert db.execute("SELECT count(*) FROM users").fetchone()[0] == 0
    # The lock is free: another thread's write goes through at once.
    worker = threading.Thread(
        target=lambda: UserStore(db, cheap_hasher()).add("b", "PUBLISHER", "x")
    )
    worker.start()
    worker.join(timeout=5)
    assert not worker.is_alive()
    assert db.execute("SELECT count(*) FROM users").fetchone()[0] == 1


def test_store_exposes_its_database(db: Database, users: UserStore) -> None:
    assert users.db is db


def test_store_works_from_a_worker_thread(users: UserStore) -> None:
    users.add("alice", "PUBLISHER", "pw")
    results: list[User | None] = []
    worker = threading.Thread(target=lambda: results.append(users.verify("alice", "pw")))
    worker.start()
    worker.join()
    assert results == [User("alice", "PUBLISHER")]
