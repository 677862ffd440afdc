"""Per-user quotas counted for the whole cluster: joins per minute and open sockets.

Joins (`RedisJoins`): a sorted set per user of the times of its joins in the last
minute (`<prefix>joins:<user>`), checked and added to by one Lua script on
Redis's clock, so two instances counting at once cannot both take the last one.

Sockets (`RedisSockets`): a hash per user (`<prefix>sockets:<user>`), one field per
instance holding its sockets, its value how many. Each instance's own count, kept
here in memory, is the truth for its field; Redis only adds the instances up.

- Admitting is one script: the other instances' fields (those whose lease,
  `<prefix>lease:<instance>` of `lobby.cluster.node`, is alive) plus what this
  instance would hold, against the cap; within it, the field is written.
  The field of an instance without a lease is dropped there: a killed
  instance's sockets stop counting once its lease lapses.
- Every change of this instance's count writes its field (an absolute value,
  so a lost or repeated write is corrected by the next). All writes go through
  one queue in order, as pipelines, so an older value never lands last.
- Dropping a field also drops that instance's marker, `<prefix>counted:<instance>`,
  which each instance keeps alive (one PEXPIRE a renewal period) while its fields
  are known to be in Redis. An instance that finds its marker gone (its lease
  lapsed during a stall, or Redis restarted empty) or whose writes failed writes
  all its fields again (`resync`, one script) and sets the marker, once it holds
  its lease again (without it, the next admission anywhere would drop them again).

The scripts read lease and marker keys they are not given: one standalone Redis
(or a primary with replicas) holds the whole lobby, as its one stream requires.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from lobby.cluster.limits import JOIN_WINDOW, joins_unavailable, too_many_joins
from lobby.rules.protocol import ProtocolError

log = logging.getLogger("lobby.cluster")
UNREACHABLE = (RedisError, OSError, TimeoutError)

# KEYS: the user's joins. ARGV: limit, window (ms), a member unique to this join.
# Returns 0 (counted) or the milliseconds until the oldest join leaves the window.
_JOIN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return math.max(1, tonumber(oldest[2]) + window - now)
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], window)
return 0
"""

# KEYS: the user's sockets. ARGV: this instance, what it would hold, the cap, the lease
# key prefix, the marker key prefix. Returns 1 (admitted, field written) or 0.
_ADMIT = """
local total = tonumber(ARGV[2])
local fields = redis.call('HGETALL', KEYS[1])
for i = 1, #fields, 2 do
  local instance = fields[i]
  if instance ~= ARGV[1] then
    if redis.call('EXISTS', ARGV[4] .. instance) == 1 then
      total = total + tonumber(fields[i + 1])
    else
      redis.call('HDEL', KEYS[1], instance)
      redis.call('DEL', ARGV[5] .. instance)
    end
  end
end
if total > tonumber(ARGV[3]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# KEYS: the marker, then each user's sockets. ARGV: this instance, the marker's TTL (ms),
# its lease key, then how many sockets it holds of each user (0: none, the field goes).
# Returns 0, writing nothing, while the instance has no lease: others would drop it again.
_RESYNC = """
if redis.call('EXISTS', ARGV[3]) == 0 then return 0 end
for i = 2, #KEYS do
  if tonumber(ARGV[i + 2]) > 0 then
    redis.call('HSET', KEYS[i], ARGV[1], ARGV[i + 2])
  else
    redis.call('HDEL', KEYS[i], ARGV[1])
  end
end
redis.call('SET', KEYS[1], '1', 'PX', ARGV[2])
return 1
"""


class RedisJoins:
    """The `Joins` seam over Redis: at most `per_minute` joins per user in the cluster."""

    def __init__(self, redis: Redis, per_minute: int, instance: str, prefix: str = "lobby:"):
        self.redis = redis
        self._limit = per_minute
        self._prefix = prefix + "joins:"
        self._members = (f"{instance}:{n}" for n in itertools.count(1))
        self._script = redis.register_script(_JOIN)

    async def hit(self, user: str) -> ProtocolError | None:
        args: list[int | str] = [self._limit, int(JOIN_WINDOW * 1000), next(self._members)]
        try:
            wait_ms = int(await self._script(keys=[self._prefix + user], args=args))
        except UNREACHABLE as exc:
            log.warning("join limit unreachable: %s", exc)
            return joins_unavailable()
        return None if wait_ms == 0 else too_many_joins(wait_ms / 1000)


Write = tuple[str, Any]  # ("admit", (user, count, future)), ("sync", user), ("resync", None)


class RedisSockets:
    """The `Sockets` seam over Redis: at most `cap` open sockets per user in the cluster."""

    def __init__(
        self,
        redis: Redis,
        cap: int,
        instance: str,
        *,
        prefix: str = "lobby:",
        lease: float = 10.0,
        renew: float = 3.0,
        timeout: float = 2.0,
    ) -> None:
        self.redis = redis
        self.cap = cap
        self.instance = instance
        self._prefix = prefix
        self._marker = f"{prefix}counted:{instance}"
        self._lease_ms, self._renew, self._timeout = int(lease * 1000), renew, timeout
        self._held: dict[str, int] = {}  # this instance's sockets per user: the truth
        self._stale: set[str] = set()  # users whose last write may not have landed
        self._dirty = False  # a write failed: write everything again when Redis answers
        self._queue: list[Write] = []
        self._writer: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._running = False
        self._admit = redis.register_script(_ADMIT)
        self._resync = redis.register_script(_RESYNC)

    def held(self, user: str) -> int:
        return self._held.get(user, 0)

    async def admit(self, user: str) -> bool:
        if self.held(user) >= self.cap:
            return False  # this instance alone is at the cap: no need to ask
        count = self._held[user] = self.held(user) + 1
        decided: asyncio.Future[bool | None] = asyncio.get_running_loop().create_future()
        self._write(("admit", (user, count, decided)))
        try:
            async with asyncio.timeout(self._timeout):
                admitted = await decided
        except TimeoutError:
            admitted = None
        except BaseException:
            self.release(user)  # cancelled (the handshake went away): nothing was admitted
            raise
        if admitted is None:
            return True  # Redis did not answer: this instance's count decided (failing open)
        if not admitted:
            self.release(user)
        return admitted

    def release(self, user: str) -> None:
        left = self.held(user) - 1
        if left > 0:
            self._held[user] = left
        else:
            self._held.pop(user, None)
        self._write(("sync", user))

    async def start(self) -> None:
        self._running = True
        self._watcher = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        """Let the queued writes go out (briefly), then stop; the lease does the rest."""
        self._running = False
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.wait([self._watcher])
        if self._writer is not None and not self._writer.done():
            await asyncio.wait([self._writer], timeout=self._timeout)
            self._writer.cancel()
            await asyncio.wait([self._writer])

    async def _watch(self) -> None:
        """Keep the marker alive; write every field again when it is gone or writes failed."""
        # `_running` too: a cancellation landing inside redis-py's timeout handling can come
        # out as a timeout error, which this loop would otherwise catch and go on from.
        while self._running:
            try:
                if not await self.redis.pexpire(self._marker, self._lease_ms) or self._dirty:
                    self._dirty = False
                    self._write(("resync", None))
            except UNREACHABLE as exc:
                log.debug("socket counts: marker not renewed: %s", exc)
                self._dirty = True
            await asyncio.sleep(self._renew)

    def _write(self, write: Write) -> None:
        self._queue.append(write)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._send())

    async def _send(self) -> None:
        """Send what is queued as one pipeline, in order; then what came meanwhile."""
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    batch = [(kind, self._add(pipe, kind, item)) for kind, item in batch]
                    replies: list[Any] = await pipe.execute(raise_on_error=False)
            except Exception as exc:  # Redis unreachable; anything else is a bug, logged
                if not isinstance(exc, UNREACHABLE):
                    log.exception("socket counts: writing failed")
                replies = [exc] * len(batch)
            for (kind, item), reply in zip(batch, replies, strict=True):
                self._settle(kind, item, reply)

    def _add(self, pipe: Any, kind: str, item: Any) -> Any:
        """Queue `item`'s command on `pipe`; what `_settle` needs to know of it.

        EVAL with the script's text, as `lobby.cluster.stream` does: EVALSHA in a
        pipeline fails on a Redis that has not loaded the script (just restarted)."""
        if kind == "admit":
            user, count, _ = item
            leases, markers = self._prefix + "lease:", self._prefix + "counted:"
            pipe.eval(_ADMIT, 1, self._key(user), self.instance, count, self.cap, leases, markers)
            return item
        if kind == "sync":
            held = self.held(item)
            if held > 0:
                pipe.hset(self._key(item), self.instance, held)
            else:
                pipe.hdel(self._key(item), self.instance)
            return item
        users = sorted(self._held.keys() | self._stale)
        keys = [self._marker, *(self._key(u) for u in users)]
        counts = [self.held(u) for u in users]
        lease = f"{self._prefix}lease:{self.instance}"
        pipe.eval(_RESYNC, len(keys), *keys, self.instance, self._lease_ms, lease, *counts)
        return users

    def _settle(self, kind: str, item: Any, reply: Any) -> None:
        # A resync that found no lease wrote nothing: it is tried again, as a failed one is.
        failed = isinstance(reply, Exception) or (kind == "resync" and not reply)
        if failed:
            self._dirty = True  # the watcher writes everything again
            log.debug("socket counts: a write failed: %s", reply)
        if kind == "admit":
            user, _, decided = item
            if failed:
                self._stale.add(user)
            if not decided.done():  # its caller may have stopped waiting
                decided.set_result(None if failed else bool(reply))
        elif kind == "sync" and failed:
            self._stale.add(item)
        elif kind == "resync" and not failed:
            self._stale.difference_update(item)

    def _key(self, user: str) -> str:
        return f"{self._prefix}sockets:{user}"
