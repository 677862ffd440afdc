"""Live rooms: client requests turned into presence commands, media grants and replies.

`RequestHandler.handle` takes one parsed request from a connection. Every change of
presence is a command (`lobby.cluster.commands`) executed by the presence store
(`lobby.cluster.seam.PresenceStore`: in this process, or shared through Redis);
reads come from the store's replica. Requests that need the media server (`join`,
`resume` with a token) run as background tasks so the socket keeps reading.

Every applied command, this instance's or another's, reaches `_on_applied` in log
order: the issuer's reply goes out first (a `token` before the `joined` it causes),
then the events to every socket of this instance, so each socket sees presence in
log order after its `welcome`. The issuer alone carries out the clean-up (revokes,
closing media rooms), so it happens once in the cluster.

Races we rule out, and how:
- A socket that closes, leaves or is taken over while its grant is being made
  must not leave a participant behind: after every await the request checks it
  is still the socket's current one (`_pending`), and if not, revokes the grant.
- A room's media session must not be closed under a join: `lobby.media.calls`
  keeps joins and closes of one room apart.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
from collections.abc import Callable, Coroutine
from typing import Any

from lobby.chat import RoomChat
from lobby.cluster import commands
from lobby.cluster.commands import Command
from lobby.cluster.gate import MediaGate
from lobby.cluster.limits import Joins, LocalJoins
from lobby.cluster.local import LocalPresence
from lobby.cluster.replica import Slot
from lobby.cluster.seam import (
    UNAVAILABLE,
    Applied,
    Cleaner,
    ClusterUnavailable,
    Listener,
    PresenceStore,
    Resetter,
)
from lobby.hub import Conn, Hub
from lobby.media.calls import Calls
from lobby.media.seam import MediaBackend, MediaError
from lobby.moderation import JOIN_REFUSALS, Moderation
from lobby.rules import mediastate, protocol, relay
from lobby.rules.grants import Grant, Identity, can_publish
from lobby.rules.presence import Joined, Left, Outcome, Participant, Presence
from lobby.rules.protocol import (
    CallReport,
    Chat,
    CloseRoom,
    Join,
    Kick,
    Leave,
    LockRoom,
    MediaReport,
    Ping,
    ProtocolError,
    Ref,
    Request,
    Resume,
    Signal,
)
from lobby.store.audit import AuditLog
from lobby.store.roster import Entry, Roster

log = logging.getLogger("lobby.handler")

# Builds the presence store, given what it must call: the listener (every applied
# command), the cleaner (unattended ones of this instance) and the resetter.
StoreFactory = Callable[[Listener, Cleaner, Resetter], PresenceStore]
Reply = Callable[[Applied], None]  # the issuer's answer, sent at its command's place in the log


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
        store: StoreFactory | None = None,
        kick_ban: float = 300.0,
        audit: AuditLog | None = None,
        joins: Joins | None = None,
    ) -> None:
        self.hub = hub
        # True when the media server tells us who is in the call (its webhooks): then
        # pages' own `call_state` reports are ignored, so a page cannot claim otherwise.
        self.calls_from_media = calls_from_media
        self.grace = grace
        self.room_size = room_size  # 0: no limit
        self.roster = roster
        build = store or (
            lambda listener, cleaner, _: LocalPresence(
                grace=grace, listener=listener, cleaner=cleaner
            )
        )
        self.store = build(self._on_applied, self._unattended, self._on_reset)
        self.gate = MediaGate(self.store)
        self.calls = Calls(media, occupied=self._occupied, recovered=recovered, gate=self.gate)
        self.chat = RoomChat(self.store, hub, self.execute)
        # Joins per user: in this process, or for the whole cluster (`lobby.cluster.quotas`).
        self.joins = joins or LocalJoins(joins_per_minute)
        self._pending: dict[int, tuple[object, Ref]] = {}  # conn id -> (marker, request ref)
        self._claimed: set[int] = set()  # conn ids that asked for a participant (join, resume)
        self._replies: dict[Command, Reply] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Tallies the metrics read when scraped: participants gone after the grace
        # period, and those who came back within it.
        self.grace_expiries = 0
        self.resumes = 0
        # Sends a signal to a socket another instance holds (with Redis: its channel).
        self.remote: Callable[[str, str], None] | None = None
        self.moderation = Moderation(self, ban=kick_ban, audit=audit)

    @property
    def presence(self) -> Presence[Slot]:
        """Presence as this instance's replica holds it now; read only."""
        return self.store.replica.presence

    def _occupied(self, room: str) -> bool:
        return self.presence.has_room(room)

    def socket_of(self, conn: Conn) -> str:
        """`conn`'s id in presence: cluster-wide."""
        return self.store.socket_id(conn.id)

    # Connections

    def connect(self, conn: Conn) -> None:
        """Register `conn` and send its `welcome`; no await in between keeps them consistent."""
        self.hub.add(conn)
        self._welcome(conn)

    def _welcome(self, conn: Conn) -> None:
        conn.send(
            protocol.render_welcome(
                conn.user,
                conn.role,
                list(self.presence.rooms()),
                media=self.calls.media.page_config(conn.user),
                room_size=self.room_size or None,
                locked=frozenset(self.presence.sanctions.locked),
            )
        )

    def disconnect(self, conn: Conn) -> None:
        """`conn` is gone: its participant waits out the grace period (the store's timer)."""
        self.hub.remove(conn)
        self._pending.pop(conn.id, None)
        # Sent even when presence shows no participant yet: with Redis, a join of this
        # socket may be in the log ahead of it, not applied here yet. Only this instance
        # issues what gives a socket of its own a participant (a join or a resume, and
        # re-assertions of what those gave), so a socket that never asked holds nobody.
        if conn.id in self._claimed:
            self._claimed.discard(conn.id)
            self.execute(commands.Disconnect(self.socket_of(conn)))

    def restore(self) -> int:
        """Take back the participants of the last run (at start): away, expiring after grace."""
        if self.roster is None:
            return 0
        entries = self.roster.load()
        for e in entries:
            handle = None if e.grant is None else e.grant.connection_id
            self.execute(commands.Reassert(e.participant, e.room, e.resume_key, handle, None))
        return len(entries)

    def end_session(self, session_id: str, code: int, reason: str) -> None:
        """A login session ended: its sockets' participants leave now and the sockets close."""
        for conn in self.hub.of_session(session_id):
            self._pending.pop(conn.id, None)
            self.execute(commands.Leave(self.socket_of(conn), "left"))
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
        elif isinstance(request, Kick | CloseRoom | LockRoom):
            self.moderation.handle(conn, request)
        elif isinstance(request, MediaReport):  # viewers send nothing: claiming to is refused
            if request.media.sends and not can_publish(conn.role):
                self._error(conn, request.ref, "not_allowed", mediastate.VIEWERS_SEND_NOTHING)
            else:
                self.execute(commands.ReportMedia(self.socket_of(conn), request.media))
        elif isinstance(request, Chat):
            self.chat.send(conn, request)

    def _begin(self, conn: Conn, ref: Ref) -> object | None:
        """Mark a media request in flight on `conn`; None (and an error) if it may not start."""
        if conn.id in self._pending:
            self._error(conn, ref, "busy", "Your previous request is still in progress.")
            return None
        # Every request that reaches here costs OpenVidu calls: limit them per user. In one
        # process the window answers at once; a shared one is asked in the task (`_limited`).
        refused = self.joins.hit_now(conn.user) if isinstance(self.joins, LocalJoins) else None
        if refused is not None:
            self._error(conn, ref, refused.code, refused.message)
            return None
        marker = object()
        self._pending[conn.id] = (marker, ref)
        return marker

    def _current(self, conn: Conn, marker: object) -> bool:
        """Is `marker` still `conn`'s request in flight (not left, closed or taken over)?"""
        pending = self._pending.get(conn.id)
        return conn.open and pending is not None and pending[0] is marker

    def _join(self, conn: Conn, request: Join) -> None:
        held = self.presence.member_of(self.socket_of(conn))
        if held is not None and held.room == request.room and conn.id not in self._pending:
            self._error(
                conn, request.ref, "already_joined", f"You are already in room {request.room}."
            )
            return
        if self.presence.is_full(request.room, self.room_size, self.socket_of(conn)):
            self._room_full(conn, request)
            return
        if (refusal := self.moderation.refusal(conn, request.room)) is not None:
            self._error(conn, request.ref, refusal.code, refusal.message)
            return
        marker = self._begin(conn, request.ref)
        if marker is not None:
            self._spawn(self._guard(conn, marker, self._finish_join(conn, request, marker)))

    async def _finish_join(self, conn: Conn, request: Join, marker: object) -> None:
        pid = "p_" + secrets.token_urlsafe(9)
        participant = Participant(pid, conn.user, request.nickname, conn.role)
        # Read before the await: a close from now on refuses this join (commands.Join).
        closes = self.presence.sanctions.closes_of(request.room)
        try:  # no instance closes the room's media session from now until the Join
            reservation = await self.gate.reserve(self.socket_of(conn), request.room)
        except ClusterUnavailable as exc:
            if self._current(conn, marker):
                del self._pending[conn.id]
                self._error(conn, request.ref, exc.code, exc.message)
            return
        grant = await self._grant(request.room, participant)
        if not self._current(conn, marker):
            await self._give_back(reservation, request.room, grant)
            return
        del self._pending[conn.id]
        if isinstance(grant, MediaError):
            self._error(conn, request.ref, grant.code, grant.message)
            await self._give_back(reservation, request.room, None)
            return
        # Checked again, with no await until the join: others may have filled it meanwhile.
        if self.presence.is_full(request.room, self.room_size, self.socket_of(conn)):
            self._room_full(conn, request)
            await self._give_back(reservation, request.room, grant)
            return
        key = secrets.token_urlsafe(24)
        command = commands.Join(
            self.socket_of(conn),
            participant,
            request.room,
            _digest(key),
            grant.connection_id,
            self.room_size,
            closes,
            reservation,
        )

        def reply(applied: Applied) -> None:
            if applied.result.rejected is None:
                token = protocol.render_token(
                    request.ref, request.room, grant.token, participant, key
                )
                conn.send(token)
                self.chat.history(conn, request.room)

        self._claimed.add(conn.id)  # before the append: a close now must follow the join
        applied = await self._run(command, conn, request.ref, reply)
        if applied is None or applied.result.rejected is not None:
            if applied is not None and applied.result.rejected is not None:
                self._refused(conn, request, applied.result.rejected.code)
            await self._give_back(reservation, request.room, grant)
            if applied is None:  # it may apply all the same (or have): its grant is gone
                self.execute(commands.Gone((participant.id,)))
            return
        self._settle(applied)

    async def _give_back(self, reservation: str, room: str, grant: object) -> None:
        """A join that will not happen: its reservation ends, then its grant is revoked
        and the room closed if it is empty (in that order, or the close is refused)."""
        await self.gate.unreserve(reservation)
        self._cleanup(Outcome(revoke=(grant,) if isinstance(grant, Grant) else ()), room)

    def _refused(self, conn: Conn, request: Join, code: str) -> None:
        """A join the log refused: the room filled up meanwhile (on another instance)."""
        if code == "room_full":
            self._room_full(conn, request)
        elif code in JOIN_REFUSALS:  # moderation: locked, banned, closed meanwhile
            message = JOIN_REFUSALS[code].format(room=request.room)
            self._error(conn, request.ref, code, message)
        elif code == "reservation_lost":  # Redis lost it, or this instance was declared down
            self._error(conn, request.ref, ClusterUnavailable.code, UNAVAILABLE)
        else:  # a duplicate id or key: fresh random ones never are
            self._error(conn, request.ref, "internal_error", "Something went wrong on our side.")

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
            if await self._limited(conn, marker):
                work.close()  # never started
                return
            await work
        except Exception:
            log.exception("request of %r failed", conn)
            if self._current(conn, marker):
                _, ref = self._pending.pop(conn.id)
                self._error(conn, ref, "internal_error", "Something went wrong on our side.")

    async def _limited(self, conn: Conn, marker: object) -> bool:
        """Whether the cluster-wide join limit refuses `conn`'s request (and said so)."""
        if isinstance(self.joins, LocalJoins):
            return False  # counted in `_begin`
        refused = await self.joins.hit(conn.user)
        if refused is not None and self._current(conn, marker):
            _, ref = self._pending.pop(conn.id)
            self._error(conn, ref, refused.code, refused.message)
        return refused is not None

    async def _grant(self, room: str, participant: Participant) -> Grant | MediaError:
        p = participant
        return await self.calls.grant(room, Identity(p.id, p.user, p.nickname, p.role))

    def _leave(self, conn: Conn, request: Leave) -> None:
        pending = self._pending.pop(conn.id, None)
        if pending is not None:
            self._error(conn, pending[1], "cancelled", "Your request was cancelled by a leave.")
        conn.send(protocol.render_ok(request.ref))
        self.execute(commands.Leave(self.socket_of(conn), "left"), conn, request.ref)

    def _resume(self, conn: Conn, request: Resume) -> None:
        if conn.id in self._pending:
            self._error(conn, request.ref, "busy", "Your previous request is still in progress.")
            return

        def reply(applied: Applied) -> None:
            result = applied.result
            member = (
                None if result.participant is None else self.presence.member(result.participant.id)
            )
            if result.rejected is not None or member is None:
                self._error(conn, request.ref, "resume_failed", RESUME_FAILED)
                return
            self.resumes += 1
            if not request.token:
                conn.send(
                    protocol.render_resumed(request.ref, member.room, member.participant, None)
                )
                self.chat.history(conn, member.room)
            elif (marker := self._begin(conn, request.ref)) is not None:
                refresh = self._refresh(conn, request.ref, member.participant, marker)
                self._spawn(self._guard(conn, marker, refresh))

        self._claimed.add(conn.id)
        command = commands.Resume(self.socket_of(conn), _digest(request.key), conn.user)
        self.execute(command, conn, request.ref, reply)

    async def _refresh(
        self, conn: Conn, ref: Ref, participant: Participant, marker: object
    ) -> None:
        """A fresh grant for a resumed participant whose page must rejoin the call.

        The stale connection goes first: if it was the session's last active one,
        OpenVidu closes the session on its deletion, which would also kill a
        connection made just before it. The member holds no grant meanwhile, so
        whatever happens to it during the awaits, each connection is revoked once.
        """
        socket, pid = self.socket_of(conn), participant.id
        dropped = await self._run(commands.ReplaceGrant(socket, pid, None), conn, ref)
        member = self.presence.member(pid)
        if dropped is None or dropped.result.rejected is not None or member is None:
            if self._current(conn, marker):
                del self._pending[conn.id]
                self._error(conn, ref, "resume_failed", RESUME_FAILED)
            return
        for stale in dropped.result.outcome.revoke:
            if stale is not None:
                await self.calls.revoke(stale)
        room = member.room
        grant = await self._grant(room, member.participant)
        if not self._current(conn, marker):
            if isinstance(grant, Grant):
                self._cleanup(Outcome(revoke=(grant,)), room)
            return
        del self._pending[conn.id]
        if isinstance(grant, MediaError):
            self._error(conn, ref, grant.code, grant.message)
            return

        def reply(applied: Applied) -> None:
            held = self.presence.member(pid)
            if applied.result.rejected is None and held is not None:
                conn.send(protocol.render_resumed(ref, room, held.participant, grant.token))
                self.chat.history(conn, room)

        applied = await self._run(
            commands.ReplaceGrant(socket, pid, grant.connection_id), conn, ref, reply
        )
        if applied is None or applied.result.rejected is not None:
            self._cleanup(Outcome(revoke=(grant,)), room)

    def _signal(self, conn: Conn, request: Signal) -> None:
        """Relay peer-to-peer signalling to one participant of the sender's room."""
        if not self.calls.media.peer_to_peer:
            self._error(
                conn, request.ref, "unknown_type", "This server's calls use OpenVidu: no 'signal'."
            )
            return
        routed = relay.route(self.presence, self.socket_of(conn), request)
        if isinstance(routed, ProtocolError):
            conn.send(protocol.render_error(routed))
        elif routed is not None:
            socket = str(routed.socket)
            if commands.instance_of(socket) == self.store.instance:
                self.deliver(socket, routed.text)
            elif self.remote is not None:
                self.remote(socket, routed.text)

    def deliver(self, socket: str, text: str) -> None:
        """Write a relayed signal to this instance's socket `socket`, if it is still open."""
        target = self._local(socket)
        if target is not None:
            target.send(text)

    def _report(self, conn: Conn, request: CallReport) -> None:
        """The page's word on its own call: no reply; nothing if it holds no participant."""
        if not self.calls_from_media:
            self.execute(commands.ReportCall(self.socket_of(conn), request.call))

    # Executing commands

    def execute(
        self,
        command: Command,
        conn: Conn | None = None,
        ref: Ref = None,
        reply: Reply | None = None,
    ) -> None:
        """Apply `command` now, or as soon as the store can; then clean up what it asks.

        The in-process store applies at once, with no await, so a request's answer and
        its events go out before the next frame of the socket is read, as always.
        """
        if isinstance(self.store, LocalPresence):
            if reply is not None:
                self._replies[command] = reply
            self._settle(self.store.apply(command))
        else:
            self._spawn(self._settle_later(command, conn, ref, reply))

    async def _settle_later(
        self, command: Command, conn: Conn | None, ref: Ref, reply: Reply | None
    ) -> None:
        applied = await self._run(command, conn, ref, reply)
        if applied is not None:
            self._settle(applied)

    async def change(self, command: Command) -> Applied | None:
        """Apply `command` and clean up after it; None if shared state is unreachable."""
        applied = await self._run(command)
        if applied is not None:
            self._settle(applied)
        return applied

    async def _run(
        self,
        command: Command,
        conn: Conn | None = None,
        ref: Ref = None,
        reply: Reply | None = None,
    ) -> Applied | None:
        """Execute `command`; None (and a `cluster_unavailable` error to `conn`) if it failed."""
        if reply is not None:
            self._replies[command] = reply
        try:
            return await self.store.execute(command)
        except ClusterUnavailable as exc:
            if conn is not None:
                self._error(conn, ref, exc.code, exc.message)
            return None
        finally:
            self._replies.pop(command, None)

    # Consequences

    def _on_applied(self, applied: Applied) -> None:
        """Every applied command, in log order: the issuer's reply, then the events."""
        self.gate.note()
        if applied.issuer == self.store.instance:
            reply = self._replies.pop(applied.command, None)
            if reply is not None:
                reply(applied)
        self._write_through(applied)
        command = applied.command
        if isinstance(command, commands.Expire) and applied.issuer == self.store.instance:
            # Counted once in the cluster: by the instance whose expiry took effect.
            self.grace_expiries += bool(applied.result.outcome.events)
        self.moderation.applied(applied)  # a kicked page hears why before its `left`
        for event in applied.result.outcome.events:
            self.hub.broadcast(protocol.render_event(event))
        if applied.result.chat is not None:
            self.chat.deliver(applied.result.chat)
        taken = applied.result.taken_over
        old = None if taken is None else self._local(taken)
        if old is not None and applied.result.participant is not None:
            member = self.presence.member(applied.result.participant.id)
            self._pending.pop(old.id, None)
            if member is not None:
                old.send(protocol.render_taken_over(member.room, member.participant))

    def _on_reset(self) -> None:
        """The replica was replaced: every socket's view starts over from a fresh `welcome`."""
        self.gate.note()
        for conn in self.hub:
            self._welcome(conn)
            self.chat.history_of_held(conn)

    def forget_request(self, conn: Conn) -> None:
        """`conn`'s request in flight, if any, is moot (its participant was kicked)."""
        self._pending.pop(conn.id, None)

    def local(self, socket: str) -> Conn | None:
        return self._local(socket)

    def _local(self, socket: str) -> Conn | None:
        """This instance's connection with cluster-wide id `socket`, if it is open here."""
        instance, _, conn_id = socket.rpartition(":")
        if instance != self.store.instance or not conn_id.isdigit():
            return None
        return self.hub.get(int(conn_id))

    def _write_through(self, applied: Applied) -> None:
        """Write presence through to the roster, so a restart can give it back."""
        if self.roster is None:
            return
        for event in applied.result.outcome.events:
            member = (
                self.presence.member(event.participant.id) if isinstance(event, Joined) else None
            )
            if member is not None:
                entry = Entry(member.participant, member.room, member.resume_key, member.grant)
                self.roster.save(entry)
            elif isinstance(event, Left):
                self.roster.delete(event.participant.id)
        command = applied.command
        if isinstance(command, commands.ReplaceGrant) and applied.result.rejected is None:
            member = self.presence.member(command.participant_id)
            if member is not None:
                self.roster.new_grant(member.participant.id, member.grant)

    def _unattended(self, applied: Applied) -> None:
        """A command of this instance nobody waited for: an expiry, or one whose issuer
        gave up (Redis was slow). Its clean-up happens here; a join its tab was told
        failed is undone (its grant was revoked then), so no participant stays that
        nobody holds, and none is revoked twice."""
        self._settle(applied)
        self.gate.unattended(applied)
        command = applied.command
        if isinstance(command, commands.Join) and applied.result.rejected is None:
            self.execute(commands.Gone((command.participant.id,)))

    def _settle(self, applied: Applied) -> None:
        """Carry out the clean-up `applied` asks for: on this instance, once."""
        outcome = applied.result.outcome
        if outcome.revoke or outcome.close_rooms:
            self._cleanup(outcome)

    def _cleanup(self, outcome: Outcome[Slot], room: str | None = None) -> None:
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
        while self._tasks:
            await asyncio.wait(set(self._tasks))
        await self.store.stop()
        await self.calls.drain()
        await self.moderation.drain()


RESUME_FAILED = "That call can no longer be resumed; please join again."


def _digest(resume_key: str) -> str:
    """Resume keys are secrets: memory and the database hold only their digest."""
    return hashlib.sha256(resume_key.encode()).hexdigest()
