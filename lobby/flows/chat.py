"""Room chat: a participant's message to its room, and each room's recent history.

A `chat` request becomes a `Chat` command in the presence log, like a join or a
leave: every replica applies it at the same place relative to the joins and
leaves around it, checks there that the sender still holds a participant, and
keeps the room's last messages (`lobby.rules.chat.History`, dropped when the room
closes). So a page that joins or resumes on any instance gets the history exactly
as of its `token` or `resumed`, and every message after it as an event: none lost,
none twice.

Each instance sends an applied message to its own sockets that hold a participant
of that room, framed once; lobby-only sockets and other rooms never see it. The
issuing instance stamps `at` (its clock, UTC) into the command, so every copy of
the message carries the same time.

Besides the socket's message budget (`lobby.web.socket`), a socket may send at most
`per_window` chat messages every `window` seconds: chat is the one request whose
every copy reaches other people's screens.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from datetime import UTC, datetime

from lobby.cluster import commands
from lobby.cluster.commands import Command
from lobby.cluster.seam import Applied, PresenceStore
from lobby.hub import Conn, Hub
from lobby.rules import protocol, render
from lobby.rules.chat import ChatLine
from lobby.rules.frames import text_frame
from lobby.rules.limits import SlidingWindow
from lobby.rules.protocol import ProtocolError, Ref

Reply = Callable[[Applied], None]
Execute = Callable[[Command, Conn | None, Ref, Reply | None], None]

PER_WINDOW = 5
WINDOW = 5.0


def stamp() -> str:
    """Now, as ISO 8601 in UTC to the millisecond (`2026-12-07T06:30:00.123Z`)."""
    now = datetime.now(UTC)
    return now.isoformat(timespec="milliseconds").removesuffix("+00:00") + "Z"


class RoomChat:
    def __init__(
        self,
        store: PresenceStore,
        hub: Hub,
        execute: Execute,
        *,
        per_window: int = PER_WINDOW,
        window: float = WINDOW,
    ) -> None:
        self.store = store
        self.hub = hub
        self._execute = execute
        self._sent = SlidingWindow(per_window, window)

    def send(self, conn: Conn, request: protocol.Chat) -> None:
        """Issue the message; no reply on success (the sender gets its own `chat`)."""
        socket = self.store.socket_id(conn.id)
        if self.store.replica.presence.member_of(socket) is None:
            # Refused before the log, too; the replica checks again where it applies.
            self._error(conn, request.ref, "not_in_room", "You are in no room: join one to chat.")
            return
        now = asyncio.get_running_loop().time()
        key = str(conn.id)
        if not self._sent.hit(key, now):
            wait = math.ceil(self._sent.retry_after(key, now))
            self._error(conn, request.ref, "rate_limited", f"Too many messages; wait {wait} s.")
            return
        if len(self._sent) > 10_000:
            self._sent.forget_idle(now)

        def reply(applied: Applied) -> None:
            rejected = applied.result.rejected
            if rejected is not None:
                self._error(conn, request.ref, rejected.code, rejected.message)

        self._execute(commands.Chat(socket, request.text, stamp()), conn, request.ref, reply)

    def deliver(self, line: ChatLine) -> None:
        """Send an applied message to this instance's sockets in its room, framed once."""
        frame = text_frame(render.chat(line).encode())
        for socket in self._sockets_in(line.room):
            socket.send_frame(frame)

    def history(self, conn: Conn, room: str) -> None:
        """`room`'s last messages, to `conn` alone (right after its `token` or `resumed`).

        Nothing when there are none: a page starts each room with no messages anyway,
        and clients that know nothing of chat see no new frame in a room without it.
        """
        lines = self.store.replica.chats.of(room)
        if lines:
            conn.send(render.chat_history(room, lines))

    def history_of_held(self, conn: Conn) -> None:
        """The history of the room `conn` holds a participant in, if any (after a reset)."""
        member = self.store.replica.presence.member_of(self.store.socket_id(conn.id))
        if member is not None:
            self.history(conn, member.room)

    def _sockets_in(self, room: str) -> list[Conn]:
        found = []
        for member in self.store.replica.presence.members_in(room):
            instance, _, conn_id = str(member.socket).rpartition(":")
            if member.socket is None or instance != self.store.instance:
                continue
            conn = self.hub.get(int(conn_id)) if conn_id.isdigit() else None
            if conn is not None:
                found.append(conn)
        return found

    def _error(self, conn: Conn, ref: Ref, code: str, message: str) -> None:
        conn.send(render.error(ProtocolError(code, message, ref)))
