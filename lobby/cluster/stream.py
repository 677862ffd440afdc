"""The shared log in Redis: one stream of commands, its snapshots, epoch, leases and duty.

Keys (under a prefix, `lobby:` by default):
- `log`: the stream. Each entry holds `seq` (1, 2, 3… from `seq`), `epoch`, `by` (the
  issuing instance), `ref` (the issuer's number for it) and `cmd` (the command's JSON). The
  entry id's milliseconds are Redis's clock at append: every replica reads the
  same `at` from it.
- `seq`: the counter behind `seq`; a reader that sees a number skipped missed entries.
- `epoch`: random, set once by whoever finds it missing. Redis restarted empty (or
  flushed) when it differs from what an instance knew: everything shared is gone.
- `snapshot`: a hash (`seq`, `id`, `data`) of one replica after entry `id`.
- `lease:<instance>`, `down:<instance>`, `duty`: see `lobby.cluster.node`.

Appends and snapshots are Lua scripts, so each is one atomic step: the epoch is
checked, the counter bumped and the entry added with nothing in between, and no
instance ever reads, changes and writes back shared presence.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from lobby.cluster.replica import Replica

EPOCH_CHANGED = "EPOCH"  # the error an append or snapshot answers when the epoch moved

# KEYS: epoch, seq, log. ARGV: epoch, by, ref, cmd.
_APPEND = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return redis.error_reply('EPOCH') end
local seq = redis.call('INCR', KEYS[2])
local id = redis.call('XADD', KEYS[3], '*', 'seq', seq, 'epoch', ARGV[1], 'by', ARGV[2],
  'ref', ARGV[3], 'cmd', ARGV[4])
return {id, seq}
"""
# The same, only while `lease` is missing and no other instance claimed `down` first:
# one `instance_down` per lapse, however many instances notice it.
# KEYS: epoch, seq, log, lease, down. ARGV: epoch, by, ref, cmd, down's ttl (ms).
_APPEND_IF_LAPSED = (
    """
if redis.call('EXISTS', KEYS[4]) == 1 then return false end
if not redis.call('SET', KEYS[5], ARGV[2], 'NX', 'PX', ARGV[5]) then return false end
"""
    + _APPEND
)
# Keep the newest snapshot only, and trim the log up to the one it replaces: a reader
# that fell further behind than one snapshot interval reloads instead of replaying.
# KEYS: epoch, snapshot, log. ARGV: epoch, seq, id, data.
_SNAPSHOT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return redis.error_reply('EPOCH') end
local held = tonumber(redis.call('HGET', KEYS[2], 'seq') or '0')
if tonumber(ARGV[2]) <= held then return 0 end
local previous = redis.call('HGET', KEYS[2], 'id')
redis.call('HSET', KEYS[2], 'seq', ARGV[2], 'id', ARGV[3], 'data', ARGV[4])
if previous then redis.call('XTRIM', KEYS[3], 'MINID', previous) end
return 1
"""
# Hold a duty lock: take it when free, extend it when ours. KEYS: lock. ARGV: me, ttl.
_HOLD = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if not holder then return redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) and 1 end
return 0
"""
# Give a lock back only if it is still ours. KEYS: lock. ARGV: me.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def connect(url: str, timeout: float) -> Redis:
    """A client that fails fast: no retries of its own, bounded waits."""
    return Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )


@dataclass(frozen=True, slots=True)
class Entry:
    id: str
    seq: int
    epoch: str
    by: str
    ref: str
    cmd: str

    @property
    def at(self) -> int:
        """Redis's clock (ms) when the entry was appended."""
        return int(self.id.partition("-")[0])


@dataclass(frozen=True, slots=True)
class Snapshot:
    seq: int
    id: str
    replica: Replica


class Stream:
    """The Redis side of one cluster: every key and script, nothing about timing."""

    def __init__(self, redis: Redis, prefix: str = "lobby:") -> None:
        self.redis = redis
        self.prefix = prefix
        self.log = prefix + "log"
        self._keys = [prefix + "epoch", prefix + "seq", self.log]
        self._append = redis.register_script(_APPEND)
        self._append_if_lapsed = redis.register_script(_APPEND_IF_LAPSED)
        self._snapshot = redis.register_script(_SNAPSHOT)
        self._hold = redis.register_script(_HOLD)
        self._release = redis.register_script(_RELEASE)

    async def epoch(self, fresh: str) -> str:
        """The cluster's epoch, set to `fresh` if Redis has none (first use, or lost data)."""
        await self.redis.set(self.prefix + "epoch", fresh, nx=True)
        return str(await self.redis.get(self.prefix + "epoch"))

    async def current_epoch(self) -> str | None:
        epoch = await self.redis.get(self.prefix + "epoch")
        return None if epoch is None else str(epoch)

    async def append(self, epoch: str, by: str, ref: str, cmd: str) -> tuple[str, int]:
        entry_id, seq = await self._append(keys=self._keys, args=[epoch, by, ref, cmd])
        return str(entry_id), int(seq)

    async def append_all(self, epoch: str, by: str, batch: list[tuple[str, str]]) -> list[Any]:
        """Append (ref, cmd) pairs in one round trip, in order: each an entry or an error.

        EVAL with the script's text: a pipeline of EVALSHA would first ask whether the
        script is loaded, a round trip more per batch."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for ref, cmd in batch:
                pipe.eval(_APPEND, len(self._keys), *self._keys, epoch, by, ref, cmd)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
            return replies

    async def append_if_lapsed(
        self, epoch: str, by: str, ref: str, cmd: str, instance: str, ttl_ms: int
    ) -> bool:
        keys = [*self._keys, self.lease_key(instance), self.prefix + "down:" + instance]
        added = await self._append_if_lapsed(keys=keys, args=[epoch, by, ref, cmd, ttl_ms])
        return bool(added)

    async def read(self, after: str, block_ms: int | None, count: int = 500) -> list[Entry]:
        """Entries after id `after`, waiting up to `block_ms` for the first (None: no wait)."""
        reply: Any = await self.redis.xread({self.log: after}, count=count, block=block_ms)
        if not reply:
            return []
        batches = reply.values() if isinstance(reply, dict) else [b for _, b in reply]
        return [_entry(entry_id, fields) for batch in batches for entry_id, fields in batch]

    async def save_snapshot(self, epoch: str, seq: int, entry_id: str, replica: Replica) -> bool:
        data = json.dumps(replica.snapshot(), separators=(",", ":"))
        keys = [self.prefix + "epoch", self.prefix + "snapshot", self.log]
        return bool(await self._snapshot(keys=keys, args=[epoch, seq, entry_id, data]))

    async def load_snapshot(self) -> Snapshot | None:
        held: dict[Any, Any] = await self.redis.hgetall(self.prefix + "snapshot")
        if not held:
            return None
        replica = Replica.from_snapshot(json.loads(held["data"]))
        return Snapshot(int(held["seq"]), held["id"], replica)

    def lease_key(self, instance: str) -> str:
        return self.prefix + "lease:" + instance

    async def renew_lease(self, instance: str, ttl_ms: int) -> None:
        await self.redis.set(self.lease_key(instance), "1", px=ttl_ms)

    async def drop_lease(self, instance: str) -> None:
        await self.redis.delete(self.lease_key(instance))

    async def hold(self, duty: str, me: str, ttl_ms: int) -> bool:
        """Take or extend the lock on `duty`; whether this instance holds it now."""
        return bool(await self._hold(keys=[self.prefix + duty], args=[me, ttl_ms]))

    async def release(self, duty: str, me: str) -> None:
        await self._release(keys=[self.prefix + duty], args=[me])

    async def now_ms(self) -> int:
        """Redis's clock, the one entry ids carry."""
        seconds, micros = await self.redis.time()
        return int(seconds) * 1000 + int(micros) // 1000


def _entry(entry_id: str, fields: dict[str, str]) -> Entry:
    seq, epoch = int(fields["seq"]), fields["epoch"]
    return Entry(entry_id, seq, epoch, fields["by"], fields["ref"], fields["cmd"])
