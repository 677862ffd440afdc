"""Who is in each call: the media server's news applied to presence, and a periodic check.

The webhook endpoints (`lobby.web.webhooks`) hand `CallStates` what LiveKit or
OpenVidu said about one connection (`joined`, `left`); it finds the member whose
grant holds that connection and issues the command that lets presence decide
(`lobby.cluster.commands`); the handler tells every socket. News about a
connection no member holds (an unknown room, a stale connection, someone who
already left) changes nothing.

Webhooks can be lost, so with a back end that can list a room's connections
(`ParticipantLister`) `reconcile` asks it about every lobby room now and then, on one
instance of a cluster at a time (the one holding the duties, `lobby.cluster.duties`):
every instance would find the same, and two could both remove the same stranger:
listed members are in the call, missing ones dropped out, and an *active*
connection no member holds is removed from the media server (a leaked token, a
stale tab). Never one the lobby is deleting already (`Calls.revoking`), nor one a
member held when the question was asked (it left meanwhile: its clean-up is
queued), nor a member's own LiveKit identity while its grant is being replaced,
so no connection is revoked twice. A join in flight has no active
connection yet: its token reaches the page only once the member exists.

The media server down: logged once, nothing changes, the next round tries again
(the breaker makes that round fail fast while it is still down).
"""

from __future__ import annotations

import asyncio
import logging

from lobby.cluster.commands import MediaJoined, MediaLeft, Reconcile
from lobby.handler import RequestHandler
from lobby.media.seam import InCall, MediaError, ParticipantLister
from lobby.rules.grants import Grant

log = logging.getLogger("lobby.flows.callstates")


class CallStates:
    def __init__(
        self, handler: RequestHandler, lister: ParticipantLister | None, *, interval: float
    ) -> None:
        self._handler = handler
        self._lister = lister
        self._interval = interval
        self._failing = False  # the last round failed: said once until one succeeds
        self.rounds = 0  # periodic rounds this instance ran

    # News about one connection (webhooks)

    def joined(self, room: str, handle: str, sid: str | None = None) -> None:
        """The media server says connection `handle` of `room` is in the call."""
        pid = self._holder(room, handle)
        if pid is not None:
            self._handler.execute(MediaJoined(pid, sid))

    def left(self, room: str, handle: str, sid: str | None = None) -> None:
        """The media server says connection `handle` of `room` left the call."""
        pid = self._holder(room, handle)
        if pid is not None:
            self._handler.execute(MediaLeft(pid, sid))

    def _holders(self, room: str) -> dict[str, str]:
        """Connection handle -> participant id, for every member of `room` holding a grant."""
        return {
            m.grant.connection_id: m.participant.id
            for m in self._handler.presence.members_in(room)
            if m.grant is not None
        }

    def _holder(self, room: str, handle: str) -> str | None:
        return self._holders(room).get(handle)

    def _known(self, room: str) -> set[str]:
        """Handles the lobby knows in `room`: its grants', and its participant ids, which
        are LiveKit's identities even while a member's grant is being replaced."""
        members = self._handler.presence.members_in(room)
        return set(self._holders(room)) | {m.participant.id for m in members}

    # Reconciliation

    async def run(self) -> None:
        """Reconcile every `interval` seconds, forever (cancelled at shutdown)."""
        if self._lister is None or self._interval <= 0:
            return
        while True:
            await asyncio.sleep(self._interval)
            if not self._handler.store.leading:
                continue  # another instance checks
            self.rounds += 1
            try:
                await self.reconcile()
            except Exception:  # a bug must not end the checks for the rest of the run
                log.exception("reconciling call states failed")

    async def reconcile(self) -> None:
        """One round over every lobby room; stops at the first media failure."""
        if self._lister is None:
            return
        rooms = [room for room, _ in self._handler.presence.rooms()]
        try:
            for room in rooms:
                await self._reconcile_room(self._lister, room)
        except MediaError as error:
            if not self._failing:
                log.warning("could not check who is in the calls: %s; will try again", error)
            self._failing = True
            return
        self._failing = False

    async def _reconcile_room(self, lister: ParticipantLister, room: str) -> None:
        before = self._known(room)
        listed = [c for c in await lister.participants(room) if c.active]
        holders = self._holders(room)
        present = {holders[c.handle]: c.sid for c in listed if c.handle in holders}
        await self._handler.change(Reconcile(room, tuple(present.items())))
        known = before | self._known(room)
        calls = self._handler.calls
        strangers = [c for c in listed if c.handle not in known and not calls.revoking(c.handle)]
        for stranger in strangers:
            log.warning(
                "removing connection %s from room %s: the lobby does not know it",
                stranger.handle,
                room,
            )
        if strangers:
            calls.clean_up((_grant(room, c) for c in strangers), ())


def _grant(room: str, stranger: InCall) -> Grant:
    """A grant for revoking a connection the lobby never handed out: no token of ours."""
    return Grant(room=room, connection_id=stranger.handle, token="")
