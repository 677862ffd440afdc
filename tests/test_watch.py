"""The session watcher: sockets of sessions ended in another process are closed (SQLite and
PostgreSQL); while the database cannot be read, none is."""

from __future__ import annotations

import asyncio

from lobby.handler import RequestHandler
from lobby.hub import Hub
from lobby.media.p2p import PeerToPeerBackend
from lobby.store import db as database
from lobby.store.sessions import SessionStore
from lobby.store.users import UserStore
from lobby.watch import watch_sessions
from tests.conftest import CHEAP_HASHER, until
from tests.fakes import fake_socket


async def test_sessions_are_checked_a_chunk_at_a_time_and_ended_ones_closed(
    location: str,
) -> None:
    path = location
    db = database.connect(path)
    UserStore(db, hasher=CHEAP_HASHER).add("alice", "PUBLISHER", "pw")
    sessions = SessionStore(db, ttl=3600)
    ids = [sessions.create("alice") for _ in range(7)]
    hub = Hub()
    handler = RequestHandler(PeerToPeerBackend(), hub, grace=1.0)
    sockets = {session_id: fake_socket("alice", session_id=session_id) for session_id in ids}
    for socket in sockets.values():
        handler.connect(socket.conn)

    def closed() -> dict[str, list[tuple[int, str]]]:
        return {i: s.closer.closes for i, s in sockets.items() if s.closer.closes}

    watcher = asyncio.create_task(watch_sessions(sessions, hub, handler, interval=0.01, chunk=3))
    await asyncio.sleep(0)  # it has read the database's version and sleeps
    # Another process (the CLI) ends one session in the first chunk of 3 and the last one.
    other = database.connect(path)
    SessionStore(other, ttl=3600).delete(ids[1])
    SessionStore(other, ttl=3600).delete(ids[6])
    try:
        await until(lambda: len(closed()) == 2)
    finally:
        watcher.cancel()
        db.close()
        other.close()
    assert closed() == {ids[1]: [(4001, "session ended")], ids[6]: [(4001, "session ended")]}
