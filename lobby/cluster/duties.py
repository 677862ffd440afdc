"""What an instance does on a clock: its lease, the lapse watch, grace expiry, snapshots.

- Each instance renews `lease:<instance>` (PX `lease`) every `renew` seconds.
- Each instance watches the instances whose sockets hold participants in its
  replica; when one's lease has lapsed it appends `InstanceDown` for it, through a
  script that lets only one instance do so per lapse. Right after its own start or
  reconnection it waits one lease period first: the others may not have renewed yet.
- One instance at a time holds the `duty` lock (same TTL as a lease, so a dead
  holder is replaced): it appends `Expire` for every away participant whose grace
  period ended (by Redis's clock, the one entries carry), and writes snapshots. An
  `Expire` for a participant that came back is a no-op, so a duplicate costs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from lobby.cluster.commands import Expire
from lobby.cluster.stream import Stream

if TYPE_CHECKING:
    from lobby.cluster.node import RedisPresence

log = logging.getLogger("lobby.cluster")
DUTY = "duty"


@dataclass(frozen=True, slots=True)
class Timing:
    """Seconds. Tests shrink them; the defaults suit a grace period of about 10 s."""

    lease: float = 10.0  # an instance silent this long is down
    renew: float = 3.0  # lease renewal period
    tick: float = 0.5  # how often the watch and the expiry run
    block: float = 1.0  # the longest XREAD BLOCK
    command_timeout: float = 2.0  # one Redis call, or waiting for a command to apply
    retry: float = 0.5  # pause between reconnection attempts
    snapshot_every: float = 30.0
    start_timeout: float = 10.0


class Duties:
    def __init__(self, node: RedisPresence, stream: Stream, grace: float) -> None:
        self._node = node
        self._stream = stream
        self._grace_ms = int(grace * 1000)
        self._healthy_since: float | None = None
        self._next_renew = 0.0
        self._next_snapshot = 0.0
        self._snapshot_seq = 0
        self._sent: set[tuple[str, int]] = set()  # expiries appended, not yet applied
        self.leading = False

    async def run(self) -> None:
        while self._node.running:
            try:
                await self._tick(asyncio.get_running_loop().time())
            except (RedisError, OSError, TimeoutError) as exc:
                log.debug("duties skipped a tick: %s", exc)  # the reader reports outages
            except Exception:
                log.exception("a duty tick failed")  # and the next one tries again
            await asyncio.sleep(self._node.timing.tick)

    async def _tick(self, now: float) -> None:
        node, timing = self._node, self._node.timing
        if not node.healthy:
            self._healthy_since = None
            self.leading = False
            return
        if self._healthy_since is None:
            self._healthy_since, self._next_renew = now, now
            self._next_snapshot = max(self._next_snapshot, now + timing.snapshot_every)
        if await self._stream.current_epoch() != node.epoch:
            # Redis was flushed or restarted empty under a reader that kept its connection.
            node.lost_data()
            return
        node.redeliver()  # a Disconnect that failed while Redis was still reachable
        ttl = int(timing.lease * 1000)
        if now >= self._next_renew:
            await self._stream.renew_lease(node.instance, ttl)
            self._next_renew = now + timing.renew
        if now - self._healthy_since >= timing.lease:
            for instance in sorted(node.replica.owners() - {node.instance}):
                if await node.append_if_lapsed(instance):
                    log.warning("instance %s lost its lease: its participants are away", instance)
        self.leading = await self._stream.hold(DUTY, node.instance, ttl)
        if self.leading:
            await self._expire()
            if now >= self._next_snapshot:
                await self.snapshot()
                self._next_snapshot = now + timing.snapshot_every

    async def _expire(self) -> None:
        away = set(self._node.replica.away())
        self._sent &= away
        due = await self._stream.now_ms() - self._grace_ms
        for pid, since in sorted(away - self._sent):
            if since <= due:
                self._sent.add((pid, since))
                self._node.spawn(self._node.issue(Expire(pid, since)))

    async def snapshot(self) -> bool:
        """Save this replica as the newest snapshot (and trim the log); False if not newer."""
        node = self._node
        if node.epoch is None or node.seq <= self._snapshot_seq:
            return False
        seq = node.seq
        saved = await self._stream.save_snapshot(node.epoch, seq, node.last_id, node.replica)
        self._snapshot_seq = seq
        return saved

    async def release(self) -> None:
        """Give back the lease and the duty (a clean stop): nobody waits for them to lapse."""
        with contextlib.suppress(RedisError, OSError):
            await self._stream.drop_lease(self._node.instance)
        await self._stream.release(DUTY, self._node.instance)
