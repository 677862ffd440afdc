"""Closing sockets whose login session ended somewhere else.

Logout in this process closes its sockets at once. But a password change or a
`lobby users remove` runs in another process (the CLI), and sessions also
expire; SQLite cannot notify us, so a watcher checks now and then: every
second whether another connection committed (`PRAGMA data_version`, nearly
free), and every `full_every` seconds regardless, for expiries. Sockets of
sessions that are no longer valid are closed with 4001 and their participants
leave at once, as on logout.
"""

from __future__ import annotations

import asyncio

from lobby.hub import Hub
from lobby.rooms import Rooms
from lobby.sessions import SessionStore

SESSION_ENDED = 4001


async def watch_sessions(
    sessions: SessionStore,
    hub: Hub,
    rooms: Rooms,
    *,
    interval: float = 1.0,
    full_every: float = 30.0,
) -> None:
    loop = asyncio.get_running_loop()
    seen, last_full = sessions.changed_elsewhere(), loop.time()
    while True:
        await asyncio.sleep(interval)
        version = sessions.changed_elsewhere()
        if version == seen and loop.time() - last_full < full_every:
            continue
        seen, last_full = version, loop.time()
        open_sessions = {conn.session_id for conn in hub}
        for session_id in open_sessions - sessions.alive(open_sessions):
            rooms.end_session(session_id, SESSION_ENDED, "session ended")
