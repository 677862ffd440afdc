"""Moderators keep order: `kick`, `close_room` and `lock_room` requests, and what follows them.

A request from a MODERATOR becomes a presence command (`lobby.cluster.commands`:
`Kick`, `CloseRoom`, `LockRoom`) that every replica applies alike; the rules there
decide whether it takes effect (`not_found`, `not_allowed` for a moderator or
yourself). This instance, the issuer, replies `ok` or the refusal when its command
is applied, does the media clean-up once (the handler's `_settle`: revoke the
kicked participant's connection, close the emptied media room) and writes the
audit row, in a thread so the event loop never waits on the database.

Every instance, the issuer or not, sees every applied command (`applied`): a
kicked participant's socket may be held by any of them, and the one that holds
it tells its page `kicked` before everyone gets the `left`, and drops that
socket's request in flight (a join elsewhere, a token refresh: its connection is
revoked, unanswered), since the page stops everything on `kicked`. The page knows
not to resume: its participant and resume key are gone, so a `resume` would get
`resume_failed` anyway.

Joins are checked here early (`refusal`: a locked room, a ban) so a refused join
costs no media grant; the log checks again when the `Join` is applied, which is
what holds across instances and for joins already in flight.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from lobby.cluster import commands
from lobby.cluster.replica import BANNED, CLOSED_MEANWHILE, ROOM_LOCKED
from lobby.cluster.seam import Applied
from lobby.hub import Conn
from lobby.rules import render
from lobby.rules.protocol import CloseRoom, Kick, LockRoom, ProtocolError
from lobby.store.audit import Action, AuditLog

if TYPE_CHECKING:
    from lobby.handler import RequestHandler

log = logging.getLogger("lobby.flows.moderation")

MODERATOR = "MODERATOR"
NOT_A_MODERATOR = "Only moderators may kick, close or lock rooms."
# The join refusals the log may answer: code -> sentence (with the room's name).
JOIN_REFUSALS = {
    "room_locked": ROOM_LOCKED,
    "banned": BANNED,
    "room_closed": CLOSED_MEANWHILE,
}


class Moderation:
    def __init__(
        self, handler: RequestHandler, *, ban: float, audit: AuditLog | None = None
    ) -> None:
        self._handler = handler
        self._ban_ms = int(ban * 1000)
        self.audit = audit
        self._writes: set[asyncio.Task[None]] = set()

    # Requests

    def handle(self, conn: Conn, request: Kick | CloseRoom | LockRoom) -> None:
        if conn.role != MODERATOR:
            self._error(conn, ProtocolError("not_allowed", NOT_A_MODERATOR, request.ref))
            return
        command = self._command(conn, request)

        def reply(applied: Applied) -> None:
            rejected = applied.result.rejected
            if rejected is not None:
                self._error(conn, ProtocolError(rejected.code, rejected.message, request.ref))
                return
            conn.send(render.ok(request.ref))
            self._audit(conn.user, request, applied)

        self._handler.execute(command, conn, request.ref, reply)

    def _command(self, conn: Conn, request: Kick | CloseRoom | LockRoom) -> commands.Command:
        if isinstance(request, Kick):
            return commands.Kick(
                conn.user, request.room, request.participant, request.reason, self._ban_ms
            )
        if isinstance(request, CloseRoom):
            return commands.CloseRoom(conn.user, request.room)
        return commands.LockRoom(conn.user, request.room, request.locked)

    def refusal(self, conn: Conn, room: str) -> ProtocolError | None:
        """Why a `join` of `conn` to `room` is refused at once (locked, banned), if it is.

        By this instance's clock; the log decides again by its own when it applies.
        """
        presence = self._handler.presence
        if room in presence.sanctions.locked and conn.role != MODERATOR:
            return ProtocolError("room_locked", ROOM_LOCKED.format(room=room))
        if presence.sanctions.banned(room, conn.user, int(time.time() * 1000)):
            return ProtocolError("banned", BANNED.format(room=room))
        return None

    # Every applied command, on every instance

    def applied(self, applied: Applied) -> None:
        """Tell this instance's kicked sockets why they are out, before the `left` they see."""
        command = applied.command
        if not isinstance(command, commands.Kick) or applied.result.rejected is not None:
            return
        notice = render.kicked(command.room, command.by, command.reason)
        for socket in applied.result.removed:
            conn = self._handler.local(socket)
            if conn is not None:
                self._handler.forget_request(conn)
                conn.send(notice)

    # The audit log

    def _audit(self, actor: str, request: Kick | CloseRoom | LockRoom, applied: Applied) -> None:
        if self.audit is None:
            return
        action: Action
        target = reason = ""
        if isinstance(request, Kick):
            action, reason = "kick", request.reason
            kicked = applied.result.participant
            target = kicked.user if kicked is not None else ""
        elif isinstance(request, CloseRoom):
            action = "close_room"
        else:
            action = "lock_room" if request.locked else "unlock_room"
        task = asyncio.get_running_loop().create_task(
            self._write(self.audit, actor, action, request.room, target, reason)
        )
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write(
        self, audit: AuditLog, actor: str, action: Action, room: str, target: str, reason: str
    ) -> None:
        try:
            await asyncio.to_thread(audit.write, actor, action, room, target, reason)
        except Exception:  # the database is down or failing: the action stands, say so
            log.exception("audit row lost: %s of room %s by %s", action, room, actor)

    async def drain(self) -> None:
        """Wait for the audit rows still being written (at shutdown)."""
        if self._writes:
            await asyncio.wait(set(self._writes))

    def _error(self, conn: Conn, error: ProtocolError) -> None:
        conn.send(render.error(error))
