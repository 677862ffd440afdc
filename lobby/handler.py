"""Live rooms: client requests turned into presence commands, media grants and replies.

`RequestHandler.handle` takes one parsed request from a connection. Every change of
presence is a command (`lobby.cluster.commands`) executed by the presence store
(`lobby.cluster.seam.PresenceStore`: in this process, or shared through Redis);
reads come from the store's replica. Requests that need the media server (`join`,
`resume` with a token) run as background tasks so the socket keeps reading
(`lobby.flows.joining`); moderation and chat have their own flows beside it.

Every applied command, this instance's or another's, reaches `_on_applied` in log
order: the issuer's reply goes out first (a `token` before the `joined` it causes),
then the events to every socket of this instance, so each socket sees presence in
log order after its `welcome`. The issuer alone carries out the clean-up (revokes,
closing media rooms), so it happens once in the cluster.

Races we rule out, and how:
- A socket that closes, leaves or is taken over while its grant is being made
  must not leave a participant behind: after every await the request checks it
  is still the socket's current one (`lobby.flows.joining`), and if not, revokes the grant.
- A room's media session must not be closed under a join: `lobby.media.calls`
  keeps joins and closes of one room apart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from lobby.cluster import commands
from lobby.cluster.commands import Command
from lobby.cluster.gate import MediaGate
from lobby.cluster.limits import Joins, LocalJoins
from lobby.cluster.local import LocalPresence
from lobby.cluster.replica import Slot
from lobby.cluster.seam import (
    Applied,
    Cleaner,
    ClusterUnavailable,
    Listener,
    PresenceStore,
    Resetter,
)
from lobby.flows.chat import RoomChat
from lobby.flows.joining import Joining
from lobby.flows.moderation import Moderation
from lobby.hub import Conn, Hub
from lobby.media.calls import Calls
from lobby.media.seam import MediaBackend
from lobby.rules import mediastate, relay, render
from lobby.rules.grants import can_publish
from lobby.rules.presence import Joined, Left, Outcome, Presence
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
        self._replies: dict[Command, Reply] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # Tallies the metrics read when scraped: participants gone after the grace
        # period, and those who came back within it.
        self.grace_expiries = 0
        self.resumes = 0
        # Sends a signal to a socket another instance holds (with Redis: its channel).
        self.remote: Callable[[str, str], None] | None = None
        self.moderation = Moderation(self, ban=kick_ban, audit=audit)
        self.joining = Joining(self)

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
            render.welcome(
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
        self.joining.forget(conn)
        # Sent even when presence shows no participant yet: with Redis, a join of this
        # socket may be in the log ahead of it, not applied here yet. Only this instance
        # issues what gives a socket of its own a participant (a join or a resume, and
        # re-assertions of what those gave), so a socket that never asked holds nobody.
        if self.joining.release(conn):
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
            self.joining.forget(conn)
            self.execute(commands.Leave(self.socket_of(conn), "left"))
            conn.close(code, reason)

    # Requests

    def handle(self, conn: Conn, request: Request | ProtocolError) -> None:
        if isinstance(request, ProtocolError):
            conn.send(render.error(request))
        elif isinstance(request, Join):
            self.joining.join(conn, request)
        elif isinstance(request, Leave):
            self._leave(conn, request)
        elif isinstance(request, Resume):
            self.joining.resume(conn, request)
        elif isinstance(request, Ping):
            conn.send(render.pong(request.ref))
        elif isinstance(request, Signal):
            self._signal(conn, request)
        elif isinstance(request, CallReport):
            self._report(conn, request)
        elif isinstance(request, Kick | CloseRoom | LockRoom):
            self.moderation.handle(conn, request)
        elif isinstance(request, MediaReport):  # viewers send nothing: claiming to is refused
            if request.media.sends and not can_publish(conn.role):
                self.error(conn, request.ref, "not_allowed", mediastate.VIEWERS_SEND_NOTHING)
            else:
                self.execute(commands.ReportMedia(self.socket_of(conn), request.media))
        elif isinstance(request, Chat):
            self.chat.send(conn, request)

    def _leave(self, conn: Conn, request: Leave) -> None:
        pending = self.joining.forget(conn)
        if pending is not None:
            self.error(conn, pending[1], "cancelled", "Your request was cancelled by a leave.")
        conn.send(render.ok(request.ref))
        self.execute(commands.Leave(self.socket_of(conn), "left"), conn, request.ref)

    def _signal(self, conn: Conn, request: Signal) -> None:
        """Relay peer-to-peer signalling to one participant of the sender's room."""
        if not self.calls.media.peer_to_peer:
            self.error(
                conn, request.ref, "unknown_type", "This server's calls use OpenVidu: no 'signal'."
            )
            return
        routed = relay.route(self.presence, self.socket_of(conn), request)
        if isinstance(routed, ProtocolError):
            conn.send(render.error(routed))
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
            self.settle(self.store.apply(command))
        else:
            self.spawn(self._settle_later(command, conn, ref, reply))

    async def _settle_later(
        self, command: Command, conn: Conn | None, ref: Ref, reply: Reply | None
    ) -> None:
        applied = await self.run(command, conn, ref, reply)
        if applied is not None:
            self.settle(applied)

    async def change(self, command: Command) -> Applied | None:
        """Apply `command` and clean up after it; None if shared state is unreachable."""
        applied = await self.run(command)
        if applied is not None:
            self.settle(applied)
        return applied

    async def run(
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
                self.error(conn, ref, exc.code, exc.message)
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
            self.hub.broadcast(render.event(event))
        if applied.result.chat is not None:
            self.chat.deliver(applied.result.chat)
        taken = applied.result.taken_over
        old = None if taken is None else self._local(taken)
        if old is not None and applied.result.participant is not None:
            member = self.presence.member(applied.result.participant.id)
            self.joining.forget(old)
            if member is not None:
                old.send(render.taken_over(member.room, member.participant))

    def _on_reset(self) -> None:
        """The replica was replaced: every socket's view starts over from a fresh `welcome`."""
        self.gate.note()
        for conn in self.hub:
            self._welcome(conn)
            self.chat.history_of_held(conn)

    def forget_request(self, conn: Conn) -> None:
        """`conn`'s request in flight, if any, is moot (its participant was kicked)."""
        self.joining.forget(conn)

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
        self.settle(applied)
        self.gate.unattended(applied)
        command = applied.command
        if isinstance(command, commands.Join) and applied.result.rejected is None:
            self.execute(commands.Gone((command.participant.id,)))

    def settle(self, applied: Applied) -> None:
        """Carry out the clean-up `applied` asks for: on this instance, once."""
        outcome = applied.result.outcome
        if outcome.revoke or outcome.close_rooms:
            self.cleanup(outcome)

    def cleanup(self, outcome: Outcome[Slot], room: str | None = None) -> None:
        rooms = (*outcome.close_rooms, room) if room else outcome.close_rooms
        self.calls.clean_up(outcome.revoke, rooms)

    # Plumbing

    def error(self, conn: Conn, ref: Ref, code: str, message: str) -> None:
        conn.send(render.error(ProtocolError(code, message, ref)))

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
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
