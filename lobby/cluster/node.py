"""Presence shared by several lobby instances through one Redis stream.

Every instance appends its commands to the stream (`lobby.cluster.stream`) and
reads the whole stream in order, applying each entry to its own `Replica`: all
replicas pass through the same states, and each command gets the same `Result`
everywhere. The issuer awaits its own entry's application to learn that result
and alone carries out the clean-up (revokes): exactly once in the cluster. Each
instance hands every applied command to its `Listener`, which frames events for
its own sockets: one append per change, however many sockets listen.

Keeping in step:
- Entries carry a sequence number; a skipped one (the reader fell behind a trim)
  reloads the newest snapshot and replays from it (`Resetter`: resend welcomes).
- The epoch tells a Redis that restarted empty. Then every instance starts a new
  replica and re-asserts what it knew: its own open sockets' participants attached,
  everyone else away, so those whose instance is gone expire after the grace period
  (and are revoked once) instead of vanishing.
- While Redis is unreachable the replica still answers reads; `execute` fails at
  once with `ClusterUnavailable`. A `Disconnect` that could not be appended is kept
  and appended on reconnection: a closed socket must never keep its participant.

Leases, the lapse watcher, grace expiry and snapshots run in `lobby.cluster.duties`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import logging
import os
import secrets
import urllib.parse
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from redis.exceptions import RedisError, ResponseError

from lobby.cluster import commands
from lobby.cluster.commands import (
    Command,
    Disconnect,
    Gone,
    InstanceDown,
    MediaClosed,
    Reassert,
    Unreserve,
)
from lobby.cluster.duties import Duties, Timing
from lobby.cluster.outbox import Outbox
from lobby.cluster.replica import GONE_KEPT, Replica, Result
from lobby.cluster.seam import Applied, Cleaner, ClusterUnavailable, Listener, Resetter
from lobby.cluster.stream import EPOCH_CHANGED, Entry, Stream, connect
from lobby.rules.presence import Left

log = logging.getLogger("lobby.cluster")


class EpochMoved(Exception):
    """The log holds entries of another epoch: Redis lost its data under this reader."""


UNREACHABLE = (RedisError, OSError, TimeoutError)


def _ignore(*_: object) -> None:
    pass


def on_this_machine(url: str) -> bool:
    """Whether the Redis that `url` names runs here: a Unix socket, or a loopback host."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "unix":
        return True
    host = parts.hostname or "localhost"  # redis-py's default
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class RedisPresence:
    def __init__(
        self,
        url: str,
        *,
        name: str = "lobby",
        grace: float,
        listener: Listener = _ignore,
        cleaner: Cleaner = _ignore,
        resetter: Resetter = _ignore,
        on_health: Callable[[bool], None] = _ignore,
        prefix: str = "lobby:",
        timing: Timing | None = None,
        give_way: Callable[[], None] | None = None,
    ) -> None:
        """`give_way` runs when a read of the log brings back this instance's own entries,
        before they are applied: by default, with Redis on this machine, it hands the
        core back once (`os.sched_yield`, see `_read`), else it does nothing."""
        if ":" in name:
            raise ValueError("an instance name cannot hold ':' (socket ids use it)")
        # Unique per process start: connection ids restart at 1 in a new process, and the
        # log may still hold the previous one's sockets, commands and `instance_down`.
        self._instance = f"{name}.{secrets.token_hex(4)}"
        self.timing = timing or Timing()
        # One client for commands, one whose connection waits in XREAD BLOCK.
        self._stream = Stream(connect(url, self.timing.command_timeout), prefix)
        self._reader = Stream(connect(url, self.timing.block + self.timing.command_timeout), prefix)
        self._listener, self._cleaner, self._resetter = listener, cleaner, resetter
        self._on_health = on_health
        self._give_way = give_way or (os.sched_yield if on_this_machine(url) else _ignore)
        self._replica = Replica()
        self.epoch: str | None = None
        self.seq = 0
        self.last_id = "0-0"
        self._healthy = False
        self._refs = itertools.count(1)
        self._waiters: dict[str, asyncio.Future[Applied]] = {}
        self._outbox = Outbox(self._stream, self._instance)
        self._undelivered: dict[str, Disconnect] = {}  # socket -> its Disconnect, not appended
        # Ends of reservations and media closes not appended (else a room stays held), and
        # participants gone whose removal must reach the log, even a new one.
        self._unreleased: list[Command] = []
        self._reasserting: list[Command] = []  # what to put back after Redis lost its data
        self._removed: dict[str, None] = {}  # the last participants this instance removed
        self._ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.running = False
        self._background: set[asyncio.Task[None]] = set()
        self.duties = Duties(self, self._stream, grace)

    # The seam

    @property
    def instance(self) -> str:
        return self._instance

    @property
    def replica(self) -> Replica:
        return self._replica

    @property
    def healthy(self) -> bool:
        return self._healthy

    @property
    def leading(self) -> bool:
        return self.duties.leading

    def socket_id(self, conn_id: int) -> str:
        return f"{self._instance}:{conn_id}"

    async def execute(self, command: Command) -> Applied:
        if not self._healthy or self.epoch is None:
            self._keep(command)
            raise ClusterUnavailable("Redis is unreachable")
        ref = str(next(self._refs))
        waiter: asyncio.Future[Applied] = asyncio.get_running_loop().create_future()
        self._waiters[ref] = waiter  # before the append: the reader may apply it first
        try:
            async with asyncio.timeout(self.timing.command_timeout):
                assert self.epoch is not None
                await self._outbox.append(self.epoch, ref, commands.encode(command))
                return await waiter
        except (*UNREACHABLE, ClusterUnavailable) as exc:
            # If it was appended after all, it still applies, and the `Cleaner` gets it.
            self._waiters.pop(ref, None)
            self._keep(command)
            if isinstance(exc, ResponseError) and EPOCH_CHANGED in str(exc):
                self.lost_data()
            raise ClusterUnavailable(f"{type(exc).__name__}: {exc}") from exc

    async def issue(self, command: Command) -> None:
        """Execute a command of the store's own; its clean-up goes to the `Cleaner`."""
        with contextlib.suppress(ClusterUnavailable):
            self._tell(self._cleaner, await self.execute(command))

    async def append_if_lapsed(self, instance: str) -> bool:
        """Append `InstanceDown(instance)` unless its lease is back or another did."""
        assert self.epoch is not None
        cmd = commands.encode(InstanceDown(instance))
        # Until every replica applied it, the instance still looks like an owner: the
        # marker outlives the lease so that a slow replica does not declare it twice.
        ttl = int(self.timing.lease * 3000)
        return await self._stream.append_if_lapsed(
            self.epoch, self._instance, "0", cmd, instance, ttl
        )

    def _keep(self, command: Command) -> None:
        if isinstance(command, Disconnect):
            self._undelivered[command.socket] = command
        elif isinstance(command, Unreserve | MediaClosed | Gone):
            self._unreleased.append(command)

    def redeliver(self) -> None:
        """Append the `Disconnect`s, `Unreserve`s and `MediaClosed`s that failed (the
        duties call this while healthy)."""
        late: list[Command] = [*self._undelivered.values(), *self._unreleased]
        self._undelivered.clear()
        self._unreleased.clear()
        if late:
            self.spawn(self._issue_all(late))

    # Running

    async def start(self) -> None:
        """Catch up with the log, then keep reading it and run the duties."""
        loop = asyncio.get_running_loop()
        self.running = True
        self._tasks = [loop.create_task(self._read()), loop.create_task(self.duties.run())]
        try:
            async with asyncio.timeout(self.timing.start_timeout):
                await self._ready.wait()
        except TimeoutError:
            await self.abandon()
            raise ClusterUnavailable("Redis is unreachable at start") from None

    async def stop(self) -> None:
        """Leave cleanly: stop reading, give back the lease and duty at once."""
        await self._cancel()
        with contextlib.suppress(*UNREACHABLE):
            await self.duties.release()
        await self._close()

    async def abandon(self) -> None:
        """Stop as if killed: no lease or duty given back (tests, and a failed start)."""
        await self._cancel()
        await self._close()

    async def _cancel(self) -> None:
        # The loops also check `running`: a cancellation that lands inside redis-py's own
        # timeout handling can come out as a timeout error, which they would retry.
        self.running = False
        tasks, self._tasks = [*self._tasks, *self._background], []
        tasks += self._outbox.tasks()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        self._fail_waiters()

    async def _close(self) -> None:
        await self._stream.redis.aclose()
        await self._reader.redis.aclose()

    # Reading the log

    async def _read(self) -> None:
        """Apply the log as it grows, for as long as this instance runs.

        With Redis on this machine, one append wakes every instance's reader (and the
        issuer's outbox) in one burst of replies. The kernel puts each woken process on
        Redis's own core, expecting Redis to sleep; the first one woken there preempts
        Redis before it has written the rest. When that one is the issuer, it starts
        its own fan-out while Redis waits behind it, runnable, and the other instances
        wait for Redis: traced on this 2-core machine (`perf sched`), 4 to 10 ms in
        that state while the other core idled. So an instance reading entries it
        issued yields its core once (`give_way`): Redis finishes waking the others,
        then this instance broadcasts. One system call per read that holds an own
        entry; a reader of others' entries never yields, which would only put its own
        broadcast behind whatever else wants its core.
        """
        while self.running:
            try:
                if not self._healthy:
                    await self._sync()
                block = int(self.timing.block * 1000)
                entries = await self._reader.read(self.last_id, block)
                if any(entry.by == self._instance for entry in entries):
                    self._give_way()
                if not self._catch_up(entries):
                    await self._reload()
            except UNREACHABLE as exc:
                self._unhealthy(f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(self.timing.retry)
            except EpochMoved:
                self.lost_data()  # `_sync` re-asserts from the replica as it still is
            except Exception:
                # A bug must not stop this instance from reading: start over from Redis.
                log.exception("reading the log failed; re-syncing")
                self._unhealthy("internal error")
                self.epoch = None
                await asyncio.sleep(self.timing.retry)

    def _apply(self, entry: Entry) -> None:
        try:
            command = commands.decode(entry.cmd)
        except ValueError:
            log.error("skipping entry %s: %s", entry.id, entry.cmd[:200])
            result, command = Result(), InstanceDown("")  # a no-op everywhere alike
        else:
            if isinstance(command, InstanceDown) and command.instance == self._instance:
                # Declared down while alive (a stall longer than the lease): take back the
                # participants of the sockets still open, before they expire.
                self.spawn(self._issue_all(self._reasserts(self._replica, own_only=True)))
            result = self._replica.apply(command, entry.at)
            if entry.by == self._instance:
                self._revoked_by_me(result)
        self.seq, self.last_id = entry.seq, entry.id
        applied = Applied(entry.seq, command, entry.by, result)
        self._tell(self._listener, applied)
        if entry.by == self._instance:
            waiter = self._waiters.pop(entry.ref, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(applied)
            elif entry.ref != "0":
                self._tell(self._cleaner, applied)  # its issuer gave up waiting: clean up here

    async def _sync(self) -> None:
        """(Re)connect: learn the epoch; on a new one start over and re-assert."""
        epoch = await self._reader.epoch(secrets.token_hex(8))
        if self.epoch is None:
            self.epoch = epoch
            await self._reload()
        elif epoch != self.epoch:
            log.warning("Redis lost its data (epoch %s -> %s): re-asserting", self.epoch, epoch)
            # Kept until appended: if the epoch moves again before, the replica is no longer
            # what this instance knew, but this list still is. Sockets that closed meanwhile
            # are re-asserted away: their Disconnects are moot.
            if not self._reasserting:
                # Those this instance removed (and revoked) lately first: a replica that
                # had not applied the removal re-asserts the participant, which the `Gone`
                # undoes (or blocks). Only the issuer knows the revoke happened: another
                # instance's removal this one applied but its issuer never did is revoked
                # by no one yet, and must come back to expire (and be revoked) once.
                removed = tuple(self._removed)
                gone: list[Command] = [Gone(removed)] if removed else []
                self._reasserting = [*gone, *self._reasserts(self._replica, own_only=False)]
            self._undelivered.clear()
            # A new log holds no reservation nor close; a `Gone` still matters there.
            self._unreleased = [c for c in self._unreleased if isinstance(c, Gone)]
            self.epoch = epoch
            await self._reload()
        while entries := await self._reader.read(self.last_id, None):
            if not self._catch_up(entries):
                await self._reload()
        # The lease before any command: others declare down an owner without one.
        await self._stream.renew_lease(self._instance, int(self.timing.lease * 1000))
        self._healthy = True
        self._on_health(True)
        self._ready.set()
        reasserts, self._reasserting = self._reasserting, []
        if reasserts:
            self.spawn(self._issue_all(reasserts))
        self.redeliver()

    def _catch_up(self, entries: list[Entry]) -> bool:
        """Apply `entries` in order; False at a gap (missed entries).

        Raises `EpochMoved` at an entry of another epoch: Redis lost the log this
        replica follows, and what it holds must be re-asserted, not dropped."""
        for entry in entries:
            if entry.epoch != self.epoch:
                raise EpochMoved
            if entry.seq != self.seq + 1:
                log.warning("missed entries %d..%d: reloading", self.seq + 1, entry.seq - 1)
                return False
            self._apply(entry)
        return True

    async def _reload(self) -> None:
        """Start from the newest snapshot (or empty), dropping what this replica held.

        Commands awaited meanwhile fail (their results may be among the skipped
        entries), and the `Resetter` resends every socket its `welcome`."""
        snapshot = await self._reader.load_snapshot()
        if snapshot is None:
            self._replica, self.seq, self.last_id = Replica(), 0, "0-0"
        else:
            self._replica, self.seq, self.last_id = snapshot.replica, snapshot.seq, snapshot.id
        self._fail_waiters()
        self._resetter()

    def _revoked_by_me(self, result: Result) -> None:
        """Remember the participants an own command removed: this instance revokes them."""
        for event in result.outcome.events:
            if isinstance(event, Left):
                self._removed.pop(event.participant.id, None)
                self._removed[event.participant.id] = None
                if len(self._removed) > GONE_KEPT:
                    del self._removed[next(iter(self._removed))]

    def _reasserts(self, known: Replica, *, own_only: bool) -> list[Reassert]:
        """What puts back `known`'s participants: those of this instance's open sockets
        attached, the others (unless `own_only`) away, expiring unless someone resumes them."""
        found = []
        for member in known.members():
            socket = None if member.socket is None else str(member.socket)
            mine = socket is not None and commands.instance_of(socket) == self._instance
            mine = mine and socket not in self._undelivered  # not closed while Redis was away
            if mine or not own_only:
                handle = None if member.grant is None else member.grant.connection_id
                p, room, key = member.participant, member.room, member.resume_key
                attached = socket if mine else None
                found.append(Reassert(p, room, key, handle, attached, member.media_sid))
        return found

    async def _issue_all(self, work: Sequence[Command]) -> None:
        for command in work:
            await self.issue(command)

    @staticmethod
    def _tell(callback: Listener, applied: Applied) -> None:
        """A failing listener or cleaner is logged; it must never stop the reader."""
        try:
            callback(applied)
        except Exception:
            log.exception("handling entry %d failed", applied.seq)

    def lost_data(self) -> None:
        """The epoch moved: stop taking commands; the reader re-syncs and re-asserts."""
        self._unhealthy("Redis lost its data")

    def _unhealthy(self, why: str) -> None:
        if self._healthy:
            log.warning("shared state unreachable: %s", why)
            self._healthy = False
            self._on_health(False)

    def _fail_waiters(self) -> None:
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_exception(ClusterUnavailable("the log was reset"))
        self._waiters.clear()

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
