"""Who every case's server knows: users and login sessions, written into SQLite up front."""

from __future__ import annotations

import secrets
from pathlib import Path

import argon2

from lobby.store import db as database
from lobby.store.sessions import SessionStore
from lobby.store.users import UserStore

USERS = 200  # u0000 … u0199, cheap hashes, one login session each
VICTIM = "victim"  # the brute-force target: a production-strength argon2id hash
VICTIM_PASSWORD = secrets.token_urlsafe(16)
# Users whose names are as long as names may be (32): their events are as fat as they get.
DRIVERS = [f"driver{i}-" + "x" * 24 for i in range(4)]


def user(i: int) -> str:
    return f"u{i:04d}"


def provision(path: Path) -> dict[str, str]:
    """Users and login sessions straight into SQLite; returns each user's session cookie."""
    db = database.connect(str(path))
    try:
        cheap = argon2.PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
        users = UserStore(db, hasher=cheap)
        sessions = SessionStore(db, ttl=3600)
        cookies: dict[str, str] = {}
        for name in [user(i) for i in range(USERS)] + DRIVERS:
            users.add(name, "PUBLISHER", secrets.token_urlsafe(12))
            cookies[name] = sessions.create(name)
        # The server's own default hasher (argon2id, 64 MiB): what a real account costs.
        UserStore(db).add(VICTIM, "PUBLISHER", VICTIM_PASSWORD)
    finally:
        db.close()
    return cookies
