"""Live rooms: client requests applied to presence, the media back end and the hub.

`RequestHandler.handle` takes one parsed request from a connection. Requests that need
the media server (`join`, `resume` with a token) run as background tasks so the
socket keeps reading; everything else is answered at once.

Races we rule out, and how:
- A socket that closes, leaves or is taken over while its grant is being made
  must not leave a participant behind: after every await the request checks it
  is still the socket's current one (`_pending`), and if not, revokes the grant.
- A room's media session must not be closed under a join: `lobby.media.calls`
  keeps joins and closes of one room apart.
- Events are broadcast synchronously right after presence changes, so every
  socket sees them in the order presence applied them, after its `welcome`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import secrets
from collections.abc import Coroutine
from typing import Any

from lobby.hub import Conn, Hub
from lobby.media.calls import Calls
from lobby.media.seam import MediaBackend, MediaError
from lobby.rules import protocol, relay
from lobby.rules.grants import Grant, Identity
from lobby.rules.limits import SlidingWindow
from lobby.rules.presence import (
    Event,
    Joined,
    Left,
    Member,
    Outcome,
    Participant,
    Presence,
    RoomClosed,
)
from lobby.rules.protocol import (
    CallReport,
    Join,
    Leave,
    Ping,
    ProtocolError,
    Ref,
    Request,
    Resume,
    Signal,
)
from lobby.store.roster import Entry, Roster

log = logging.getLogger("lobby.handler")


class RequestHandler:
    def __init__(
        self,
        media: MediaBackend,
        hub: Hub,
        *,
        grace: float,
        joins_per_minute: int = 30,
        room_size: int = 0,
        recovered: asyncio.Event | None = None,
        roster: Roster | None = None,
        calls_from_media: bool = False,
    ) -> None:
        self.hub = hub
        # True when the media server tells us who is in the call (its webhooks): then
        # pages' own `call_state` reports are ignored, so a page cannot claim otherwise.
        self.calls_from_media = calls_from_media
        self.grace = grace
        self.room_size = room_size  # 0: no limit
        self.roster = roster
        # A member's grant is None between dropping a stale connection and getting
        # a fresh one (`_refresh`): then there is nothing of it to revoke.
        self.presence: Presence[Grant | None] = Presence()
        self.calls = Calls(media, occupied=self.presence.has_room, recovered=recovered)
        self._joins = SlidingWindow(joins_per_minute, 60.0)
        self._pending: dict[int, tuple[object, Ref]] = {}  # conn id -> (marker, request ref)
        self._expiry: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Tallies the metrics read when scraped: participants gone after the grace
        # period, and those who came back within it.
        self.grace_expiries = 0
        self.resumes = 0

    # Connections

    def connect(self, conn: Conn) -> None:
        """Register `conn` and send its `welcome`; no await in between keeps them consistent."""
        self.hub.add(conn)
        conn.send(
            protocol.render_welcome(
                conn.user,
                conn.role,
                list(self.presence.rooms()),
                media=self.calls.media.page_config(conn.user),
                room_size=self.room_size or None,
            )
        )

    def disconnect(self, conn: Conn) -> None:
        """`conn` is gone: its participant waits out the grace period."""
        self.hub.remove(conn)
        self._pending.pop(conn.id, None)
        member = self.presence.disconnect(conn.id)
        if member is not None:
            self._expire_later(member.participant.id)

    def restore(self) -> int:
        """Take back the participants of the last run (at start): away, expiring after grace."""
        if self.roster is None:
            return 0
        entries = self.roster.load()
        for entry in entries:
            self.presence.restore(entry.participant, entry.room, entry.resume_key, entry.grant)
            self._expire_later(entry.participant.id)
        return len(entries)

    def _expire_later(self, participant_id: str) -> None:
        self._expiry[participant_id] = asyncio.get_running_loop().call_later(
            self.grace, self._expire, participant_id
        )

    def end_session(self, session_id: str, code: int, reason: str) -> None:
        """A login session ended: its sockets' participants leave now and the sockets close."""
        for conn in self.hub.of_session(session_id):
            self._pending.pop(conn.id, None)
            self._apply(self.presence.leave(conn.id, "left"))
            conn.close(code, reason)

    # Requests

    def handle(self, conn: Conn, request: Request | ProtocolError) -> None:
        if isinstance(request, ProtocolError):
            conn.send(protocol.render_error(request))
        elif isinstance(request, Join):
            self._join(conn, request)
        elif isinstance(request, Leave):
            self._leave(conn, request)
        elif isinstance(request, Resume):
            self._resume(conn, request)
        elif isinstance(request, Ping):
            conn.send(protocol.render_pong(request.ref))
        elif isinstance(request, Signal):
            self._signal(conn, request)
        elif isinstance(request, CallReport):
            self._report(conn, request)

    def _begin(self, conn: Conn, ref: Ref) -> object | None:
        """Mark a media request in flight on `conn`; None (and an error) if it may not start."""
        if conn.id in self._pending:
            self._error(conn, ref, "busy", "Your previous request is still in progress.")
            return None
        # Every request that reaches here costs OpenVidu calls: limit them per user.
        now = asyncio.get_running_loop().time()
        if not self._joins.hit(conn.user, now):
            wait = math.ceil(self._joins.retry_after(conn.user, now))
            self._error(conn, ref, "rate_limited", f"Too many joins; try again in {wait} s.")
            return None
        if len(self._joins) > 10_000:
            self._joins.forget_idle(now)
        marker = object()
        self._pending[conn.id] = (marker, ref)
        return marker

    def _current(self, conn: Conn, marker: object) -> bool:
        """Is `marker` still `conn`'s request in flight (not left, closed or taken over)?"""
        pending = self._pending.get(conn.id)
        return conn.open and pending is not None and pending[0] is marker

    def _join(self, conn: Conn, request: Join) -> None:
        held = self.presence.member_of(conn.id)
        if held is not None and held.room == request.room and conn.id not in self._pending:
            self._error(
                conn, request.ref, "already_joined", f"You are already in room {request.room}."
            )
            return
        if self.presence.is_full(request.room, self.room_size, conn.id):
            self._room_full(conn, request)
            return
        marker = self._begin(conn, request.ref)
        if marker is not None:
            self._spawn(self._guard(conn, marker, self._finish_join(conn, request, marker)))

    async def _finish_join(self, conn: Conn, request: Join, marker: object) -> None:
        pid = "p_" + secrets.token_urlsafe(9)
        participant = Participant(pid, conn.user, request.nickname, conn.role)
        grant = await self._grant(request.room, participant)
        if not self._current(conn, marker):
            if isinstance(grant, Grant):
                self._cleanup(Outcome(revoke=(grant,)), request.room)
            return
        del self._pending[conn.id]
        if isinstance(grant, MediaError):
            self._error(conn, request.ref, grant.code, grant.message)
            self.calls.maybe_close(request.room)
            return
        # Checked again, with no await until the join: others may have filled it meanwhile.
        if self.presence.is_full(request.room, self.room_size, conn.id):
            self._cleanup(Outcome(revoke=(grant,)), request.room)
            self._room_full(conn, request)
            return
        key = secrets.token_urlsafe(24)
        outcome = self.presence.join(conn.id, participant, request.room, _digest(key), grant)
        conn.send(protocol.render_token(request.ref, request.room, grant.token, participant, key))
        self._apply(outcome)

    def _room_full(self, conn: Conn, request: Join) -> None:
        self._error(
            conn,
            request.ref,
            "room_full",
            f"Room {request.room} is full ({self.room_size} people); try again later.",
        )

    async def _guard(self, conn: Conn, marker: object, work: Coroutine[Any, Any, None]) -> None:
        """Run a request; a bug answers `internal_error` instead of leaving the socket busy."""
        try:
            await work
        except Exception:
            log.exception("request of %r failed", conn)
            if self._current(conn, marker):
                _, ref = self._pending.pop(conn.id)
                self._error(conn, ref, "internal_error", "Something went wrong on our side.")

    async def _grant(self, room: str, participant: Participant) -> Grant | MediaError:
        p = participant
        return await self.calls.grant(room, Identity(p.id, p.user, p.nickname, p.role))

    def _leave(self, conn: Conn, request: Leave) -> None:
        pending = self._pending.pop(conn.id, None)
        if pending is not None:
            self._error(conn, pending[1], "cancelled", "Your request was cancelled by a leave.")
        conn.send(protocol.render_ok(request.ref))
        self._apply(self.presence.leave(conn.id, "left"))

    def _resume(self, conn: Conn, request: Resume) -> None:
        if conn.id in self._pending:
            self._error(conn, request.ref, "busy", "Your previous request is still in progress.")
            return
        member = self.presence.resumable(conn.id, _digest(request.key), conn.user)
        if member is None:
            self._error(
                conn,
                request.ref,
                "resume_failed",
                "That call can no longer be resumed; please join again.",
            )
            return
        timer = self._expiry.pop(member.participant.id, None)
        if timer is not None:
            timer.cancel()
        self.resumes += 1
        previous = self.presence.resume(conn.id, member)
        old = self.hub.get(previous) if isinstance(previous, int) else None
        if old is not None and old is not conn:
            self._pending.pop(old.id, None)
            old.send(protocol.render_taken_over(member.room, member.participant))
        if not request.token:
            conn.send(protocol.render_resumed(request.ref, member.room, member.participant, None))
            return
        marker = self._begin(conn, request.ref)
        if marker is not None:
            self._spawn(self._guard(conn, marker, self._refresh(conn, request.ref, member, marker)))

    async def _refresh(
        self, conn: Conn, ref: Ref, member: Member[Grant | None], marker: object
    ) -> None:
        """A fresh grant for a resumed participant whose page must rejoin the call.

        The stale connection goes first: if it was the session's last active one,
        OpenVidu closes the session on its deletion, which would also kill a
        connection made just before it. The member holds no grant meanwhile, so
        whatever happens to it during the awaits, each connection is revoked once.
        """
        stale = self.presence.replace_grant(member, None)
        self._note_grant(member)
        if stale is not None:
            await self.calls.revoke(stale)
        grant = await self._grant(member.room, member.participant)
        if not self._current(conn, marker):
            if isinstance(grant, Grant):
                self._cleanup(Outcome(revoke=(grant,)), member.room)
            return
        del self._pending[conn.id]
        if isinstance(grant, MediaError):
            self._error(conn, ref, grant.code, grant.message)
            return
        self.presence.replace_grant(member, grant)
        self._note_grant(member)
        conn.send(protocol.render_resumed(ref, member.room, member.participant, grant.token))

    def _signal(self, conn: Conn, request: Signal) -> None:
        """Relay peer-to-peer signalling to one participant of the sender's room."""
        if not self.calls.media.peer_to_peer:
            self._error(
                conn, request.ref, "unknown_type", "This server's calls use OpenVidu: no 'signal'."
            )
            return
        routed = relay.route(self.presence, conn.id, request)
        if isinstance(routed, ProtocolError):
            conn.send(protocol.render_error(routed))
        elif routed is not None and isinstance(routed.socket, int):
            target = self.hub.get(routed.socket)
            if target is not None:
                target.send(routed.text)

    def _report(self, conn: Conn, request: CallReport) -> None:
        """The page's word on its own call: no reply; nothing if it holds no participant."""
        if not self.calls_from_media:
            self._apply(self.presence.report_call(conn.id, request.call))

    def _note_grant(self, member: Member[Grant | None]) -> None:
        if self.roster is not None:
            self.roster.new_grant(member.participant.id, member.grant)

    # Consequences

    def _expire(self, participant_id: str) -> None:
        self._expiry.pop(participant_id, None)
        outcome = self.presence.expire(participant_id)
        if outcome.events:
            self.grace_expiries += 1
        self._apply(outcome)

    def apply(self, outcome: Outcome[Grant | None]) -> None:
        """Carry out what a change of presence made elsewhere (call states) returned."""
        self._apply(outcome)

    def _apply(self, outcome: Outcome[Grant | None]) -> None:
        """Record and tell everyone what changed, then clean up on the media server."""
        for event in outcome.events:
            self._record(event)
            self.hub.broadcast(protocol.render_event(event))
        if outcome.revoke or outcome.close_rooms:
            self._cleanup(outcome)

    def _record(self, event: Event) -> None:
        """Write presence through to the roster, so a restart can give it back."""
        if self.roster is None or isinstance(event, RoomClosed):
            return
        pid = event.participant.id
        member = self.presence.member(pid)
        if isinstance(event, Joined) and member is not None:
            self.roster.save(
                Entry(member.participant, member.room, member.resume_key, member.grant)
            )
        elif isinstance(event, Left):
            self.roster.delete(pid)

    def _cleanup(self, outcome: Outcome[Grant | None], room: str | None = None) -> None:
        rooms = (*outcome.close_rooms, room) if room else outcome.close_rooms
        self.calls.clean_up(outcome.revoke, rooms)

    # Plumbing

    def _error(self, conn: Conn, ref: Ref, code: str, message: str) -> None:
        conn.send(protocol.render_error(ProtocolError(code, message, ref)))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("request failed", exc_info=task.exception())

    async def drain(self) -> None:
        """Wait for in-flight joins and clean-ups (at shutdown); cancel timers and retries."""
        for timer in self._expiry.values():
            timer.cancel()
        self._expiry.clear()
        while self._tasks:
            await asyncio.wait(set(self._tasks))
        await self.calls.drain()


def _digest(resume_key: str) -> str:
    """Resume keys are secrets: memory and the database hold only their digest."""
    return hashlib.sha256(resume_key.encode()).hexdigest()
