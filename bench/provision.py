"""`python -m bench.provision DB COUNT [--lobby-path DIR]`: users and sessions made up front.

Logging in is never what the bench measures. Each socket is its own user
with its own session (as a tab of a separate person would be), written
straight into a fresh SQLite file through the lobby's own stores, of the same
`lobby` package the server will run (so the schema matches). Passwords are
hashed with the cheapest argon2 settings: nobody logs in with them, and
15,000 real hashes would take minutes. Prints the session ids, one a line.
"""

from __future__ import annotations

import argparse
import sys

TTL = 86400.0


def provision(path: str, count: int) -> list[str]:
    """Create `count` users (`b00000`, …, all PUBLISHER) with one session each; return the ids."""
    from argon2 import PasswordHasher

    from lobby.store import db as database
    from lobby.store.sessions import SessionStore
    from lobby.store.users import UserStore

    cheap = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)
    db = database.connect(path)
    try:
        users = UserStore(db, cheap)
        sessions = SessionStore(db, ttl=TTL)
        db.execute("BEGIN")  # one transaction: one fsync instead of 2 x count
        ids = []
        for i in range(count):
            user = users.add(f"b{i:05d}", "PUBLISHER", "bench")
            ids.append(sessions.create(user))
        db.execute("COMMIT")
        return ids
    finally:
        db.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("db")
    parser.add_argument("count", type=int)
    parser.add_argument("--lobby-path", help="directory holding a variant `lobby` package")
    args = parser.parse_args()
    if args.lobby_path:
        sys.path.insert(0, args.lobby_path)
    print("\n".join(provision(args.db, args.count)))


if __name__ == "__main__":
    main()
