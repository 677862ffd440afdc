"""Joining a room and resuming a participant: the requests that need the media server.

`join`, and `resume` with a token, ask the media server for a grant, so they run as
background tasks (the socket keeps reading) and only one may be in flight per socket
(`busy`). After every await the request checks it is still the socket's current one
(`_current`): a socket that closed, left or was taken over meanwhile must not leave a
participant or a grant behind, so whatever it got is given back.

A join reserves its room first (`lobby.cluster.gate`: no instance closes the room's
media session under it), then gets its grant, then appends its `Join`; the reply goes out
at the command's place in the log (a `token` before the `joined` it causes).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from lobby.cluster import commands
from lobby.cluster.limits import LocalJoins
from lobby.cluster.seam import UNAVAILABLE, Applied, ClusterUnavailable
from lobby.flows.moderation import JOIN_REFUSALS
from lobby.hub import Conn
from lobby.media.seam import MediaError
from lobby.rules import render
from lobby.rules.grants import Grant, Identity
from lobby.rules.presence import Outcome, Participant
from lobby.rules.protocol import Join, Ref, Resume

if TYPE_CHECKING:
    from lobby.handler import RequestHandler

log = logging.getLogger("lobby.flows.joining")

RESUME_FAILED = "That call can no longer be resumed; please join again."
InFlight = tuple[object, Ref]  # a request's marker and its ref


class Joining:
    def __init__(self, handler: RequestHandler) -> None:
        self._h = handler
        self._pending: dict[int, InFlight] = {}  # conn id -> the request in flight
        self._claimed: set[int] = set()  # conn ids that asked for a participant (join, resume)

    def forget(self, conn: Conn) -> InFlight | None:
        """`conn`'s request in flight, if any, is moot (it left, closed, was taken over or
        kicked): it gives back whatever it gets. Returns what was in flight."""
        return self._pending.pop(conn.id, None)

    def release(self, conn: Conn) -> bool:
        """`conn` closed: did it ever ask for a participant (so may hold one)?"""
        claimed = conn.id in self._claimed
        self._claimed.discard(conn.id)
        return claimed

    def _begin(self, conn: Conn, ref: Ref) -> object | None:
        """Mark a media request in flight on `conn`; None (and an error) if it may not start."""
        if conn.id in self._pending:
            self._h.error(conn, ref, "busy", "Your previous request is still in progress.")
            return None
        # Every request that reaches here costs OpenVidu calls: limit them per user. In one
        # process the window answers at once; a shared one is asked in the task (`_limited`).
        refused = (
            self._h.joins.hit_now(conn.user) if isinstance(self._h.joins, LocalJoins) else None
        )
        if refused is not None:
            self._h.error(conn, ref, refused.code, refused.message)
            return None
        marker = object()
        self._pending[conn.id] = (marker, ref)
        return marker

    def _current(self, conn: Conn, marker: object) -> bool:
        """Is `marker` still `conn`'s request in flight (not left, closed or taken over)?"""
        pending = self._pending.get(conn.id)
        return conn.open and pending is not None and pending[0] is marker

    def join(self, conn: Conn, request: Join) -> None:
        held = self._h.presence.member_of(self._h.socket_of(conn))
        if held is not None and held.room == request.room and conn.id not in self._pending:
            self._h.error(
                conn, request.ref, "already_joined", f"You are already in room {request.room}."
            )
            return
        if self._h.presence.is_full(request.room, self._h.room_size, self._h.socket_of(conn)):
            self.room_full(conn, request)
            return
        if (refusal := self._h.moderation.refusal(conn, request.room)) is not None:
            self._h.error(conn, request.ref, refusal.code, refusal.message)
            return
        marker = self._begin(conn, request.ref)
        if marker is not None:
            self._h.spawn(self._guard(conn, marker, self._finish_join(conn, request, marker)))

    async def _finish_join(self, conn: Conn, request: Join, marker: object) -> None:
        pid = "p_" + secrets.token_urlsafe(9)
        participant = Participant(pid, conn.user, request.nickname, conn.role)
        # Read before the await: a close from now on refuses this join (commands.Join).
        closes = self._h.presence.sanctions.closes_of(request.room)
        try:  # no instance closes the room's media session from now until the Join
            reservation = await self._h.gate.reserve(self._h.socket_of(conn), request.room)
        except ClusterUnavailable as exc:
            if self._current(conn, marker):
                del self._pending[conn.id]
                self._h.error(conn, request.ref, exc.code, exc.message)
            return
        grant = await self._grant(request.room, participant)
        if not self._current(conn, marker):
            await self._give_back(reservation, request.room, grant)
            return
        del self._pending[conn.id]
        if isinstance(grant, MediaError):
            self._h.error(conn, request.ref, grant.code, grant.message)
            await self._give_back(reservation, request.room, None)
            return
        # Checked again, with no await until the join: others may have filled it meanwhile.
        if self._h.presence.is_full(request.room, self._h.room_size, self._h.socket_of(conn)):
            self.room_full(conn, request)
            await self._give_back(reservation, request.room, grant)
            return
        key = secrets.token_urlsafe(24)
        command = commands.Join(
            self._h.socket_of(conn),
            participant,
            request.room,
            _digest(key),
            grant.connection_id,
            self._h.room_size,
            closes,
            reservation,
        )

        def reply(applied: Applied) -> None:
            if applied.result.rejected is None:
                token = render.token(request.ref, request.room, grant.token, participant, key)
                conn.send(token)
                self._h.chat.history(conn, request.room)

        self._claimed.add(conn.id)  # before the append: a close now must follow the join
        applied = await self._h.run(command, conn, request.ref, reply)
        if applied is None or applied.result.rejected is not None:
            if applied is not None and applied.result.rejected is not None:
                self._refused(conn, request, applied.result.rejected.code)
            await self._give_back(reservation, request.room, grant)
            if applied is None:  # it may apply all the same (or have): its grant is gone
                self._h.execute(commands.Gone((participant.id,)))
            return
        self._h.settle(applied)

    async def _give_back(self, reservation: str, room: str, grant: object) -> None:
        """A join that will not happen: its reservation ends, then its grant is revoked
        and the room closed if it is empty (in that order, or the close is refused)."""
        await self._h.gate.unreserve(reservation)
        self._h.cleanup(Outcome(revoke=(grant,) if isinstance(grant, Grant) else ()), room)

    def _refused(self, conn: Conn, request: Join, code: str) -> None:
        """A join the log refused: the room filled up meanwhile (on another instance)."""
        if code == "room_full":
            self.room_full(conn, request)
        elif code in JOIN_REFUSALS:  # moderation: locked, banned, closed meanwhile
            message = JOIN_REFUSALS[code].format(room=request.room)
            self._h.error(conn, request.ref, code, message)
        elif code == "reservation_lost":  # Redis lost it, or this instance was declared down
            self._h.error(conn, request.ref, ClusterUnavailable.code, UNAVAILABLE)
        else:  # a duplicate id or key: fresh random ones never are
            self._h.error(conn, request.ref, "internal_error", "Something went wrong on our side.")

    def room_full(self, conn: Conn, request: Join) -> None:
        self._h.error(
            conn,
            request.ref,
            "room_full",
            f"Room {request.room} is full ({self._h.room_size} people); try again later.",
        )

    async def _guard(self, conn: Conn, marker: object, work: Coroutine[Any, Any, None]) -> None:
        """Run a request; a bug answers `internal_error` instead of leaving the socket busy."""
        try:
            if await self._limited(conn, marker):
                work.close()  # never started
                return
            await work
        except Exception:
            log.exception("request of %r failed", conn)
            if self._current(conn, marker):
                _, ref = self._pending.pop(conn.id)
                self._h.error(conn, ref, "internal_error", "Something went wrong on our side.")

    async def _limited(self, conn: Conn, marker: object) -> bool:
        """Whether the cluster-wide join limit refuses `conn`'s request (and said so)."""
        if isinstance(self._h.joins, LocalJoins):
            return False  # counted in `_begin`
        refused = await self._h.joins.hit(conn.user)
        if refused is not None and self._current(conn, marker):
            _, ref = self._pending.pop(conn.id)
            self._h.error(conn, ref, refused.code, refused.message)
        return refused is not None

    async def _grant(self, room: str, participant: Participant) -> Grant | MediaError:
        p = participant
        return await self._h.calls.grant(room, Identity(p.id, p.user, p.nickname, p.role))

    def resume(self, conn: Conn, request: Resume) -> None:
        if conn.id in self._pending:
            self._h.error(conn, request.ref, "busy", "Your previous request is still in progress.")
            return

        def reply(applied: Applied) -> None:
            result = applied.result
            member = (
                None
                if result.participant is None
                else self._h.presence.member(result.participant.id)
            )
            if result.rejected is not None or member is None:
                self._h.error(conn, request.ref, "resume_failed", RESUME_FAILED)
                return
            self._h.resumes += 1
            if not request.token:
                conn.send(render.resumed(request.ref, member.room, member.participant, None))
                self._h.chat.history(conn, member.room)
            elif (marker := self._begin(conn, request.ref)) is not None:
                refresh = self._refresh(conn, request.ref, member.participant, marker)
                self._h.spawn(self._guard(conn, marker, refresh))

        self._claimed.add(conn.id)
        command = commands.Resume(self._h.socket_of(conn), _digest(request.key), conn.user)
        self._h.execute(command, conn, request.ref, reply)

    async def _refresh(
        self, conn: Conn, ref: Ref, participant: Participant, marker: object
    ) -> None:
        """A fresh grant for a resumed participant whose page must rejoin the call.

        The stale connection goes first: if it was the session's last active one,
        OpenVidu closes the session on its deletion, which would also kill a
        connection made just before it. The member holds no grant meanwhile, so
        whatever happens to it during the awaits, each connection is revoked once.
        """
        socket, pid = self._h.socket_of(conn), participant.id
        dropped = await self._h.run(commands.ReplaceGrant(socket, pid, None), conn, ref)
        member = self._h.presence.member(pid)
        if dropped is None or dropped.result.rejected is not None or member is None:
            if self._current(conn, marker):
                del self._pending[conn.id]
                self._h.error(conn, ref, "resume_failed", RESUME_FAILED)
            return
        for stale in dropped.result.outcome.revoke:
            if stale is not None:
                await self._h.calls.revoke(stale)
        room = member.room
        grant = await self._grant(room, member.participant)
        if not self._current(conn, marker):
            if isinstance(grant, Grant):
                self._h.cleanup(Outcome(revoke=(grant,)), room)
            return
        del self._pending[conn.id]
        if isinstance(grant, MediaError):
            self._h.error(conn, ref, grant.code, grant.message)
            return

        def reply(applied: Applied) -> None:
            held = self._h.presence.member(pid)
            if applied.result.rejected is None and held is not None:
                conn.send(render.resumed(ref, room, held.participant, grant.token))
                self._h.chat.history(conn, room)

        applied = await self._h.run(
            commands.ReplaceGrant(socket, pid, grant.connection_id), conn, ref, reply
        )
        if applied is None or applied.result.rejected is not None:
            self._h.cleanup(Outcome(revoke=(grant,)), room)


def _digest(resume_key: str) -> str:
    """Resume keys are secrets: memory and the database hold only their digest."""
    return hashlib.sha256(resume_key.encode()).hexdigest()
