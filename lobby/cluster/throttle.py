"""Login throttling shared by every instance: the `LoginPolicy` applied inside Redis.

An attacker who spreads guesses over several instances must get no more than
against one, so the failures of every key (pair, address, account; see
`lobby.rules.logins`) live in Redis, and each call (`attempt`, `succeeded`,
`withdrawn`, `check`) is one Lua script over the attempt's three keys: checked,
counted and written back in one atomic step. No instance reads a count, changes
it and writes it back, so concurrent guesses on two instances cannot both slip
through on the same count.

The script repeats `LoginThrottle`'s arithmetic step for step (the same floats,
floor of a true division, the same order of reads), which a test holds it to:
one script of attempts through both gives the same verdicts. Time is Redis's
clock (`TIME`), the one every instance shares; tests may pass a clock instead.

Keys: `<prefix>login:<the key as JSON>`, a hash (`count`, `leak`, `locked`),
each expiring when it would be forgotten (all failures forgiven, no lock), so
memory is bounded by the keys that failed within `forget_after`, not by
`max_keys` (which only the in-process throttle needs).
"""

from __future__ import annotations

import json
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from lobby.cluster.limits import LimitsUnavailable
from lobby.rules.logins import Key, LoginPolicy, LoginThrottle, Verdict

# KEYS: the attempt's pair, address and account keys (`KINDS` order).
# ARGV: op, now (seconds; '' = Redis's clock), free_failures, address_factor, base_delay,
# max_delay, slowdown_base, max_slowdown, forget_after.
# Returns {wait, slowdown} as strings: a Lua number comes back truncated to an integer.
_SCRIPT = """
local op, now = ARGV[1], tonumber(ARGV[2])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local free_failures = tonumber(ARGV[3])
local base, max_delay = tonumber(ARGV[5]), tonumber(ARGV[6])
local slow_base, max_slow = tonumber(ARGV[7]), tonumber(ARGV[8])
local forget = tonumber(ARGV[9])
local free = {free_failures, free_failures * tonumber(ARGV[4]), free_failures}
local YEAR_MS = 31536000000

local function num(x) return string.format('%.17g', x) end

local function doubling(start, cap, excess)
  return math.min(cap, start * 2 ^ math.min(excess - 1, 64))
end

local function save(i, f)
  local done = math.max(f.locked, f.leak + f.count * (forget / free[i]))
  local ttl = math.min(YEAR_MS, math.ceil((done - now) * 1000))
  if f.count == 0 and now >= f.locked then
    redis.call('DEL', KEYS[i])
  else
    redis.call('HSET', KEYS[i], 'count', num(f.count), 'leak', num(f.leak), 'locked', num(f.locked))
    redis.call('PEXPIRE', KEYS[i], math.max(1, ttl))
  end
end

local function current(i)
  local h = redis.call('HMGET', KEYS[i], 'count', 'leak', 'locked')
  if not h[1] then return nil end
  local f = {count = tonumber(h[1]), leak = tonumber(h[2]), locked = tonumber(h[3])}
  local interval = forget / free[i]
  local forgiven = math.floor((now - f.leak) / interval)
  if forgiven > 0 then
    f.count = math.max(0, f.count - forgiven)
    f.leak = f.leak + forgiven * interval
  end
  if f.count == 0 and now >= f.locked then
    redis.call('DEL', KEYS[i])
    return nil
  end
  if forgiven > 0 then save(i, f) end
  return f
end

local function take_back(i)
  local f = current(i)
  if f then
    f.count = math.max(0, f.count - 1)
    save(i, f)
  end
end

if op == 'succeeded' then
  redis.call('DEL', KEYS[1], KEYS[3])
  take_back(2)
  return {'0', '0'}
elseif op == 'withdrawn' then
  for i = 1, 3 do take_back(i) end
  return {'0', '0'}
end
local wait = 0
for i = 1, 3 do
  local f = current(i)
  if f then wait = math.max(wait, f.locked - now) end
end
if op == 'check' or wait > 0 then return {num(wait), '0'} end
for i = 1, 3 do
  local f = current(i)
  if not f then
    f = {count = 0, leak = now, locked = 0}
  elseif f.count == 0 then
    f.leak = now
  end
  f.count = f.count + 1
  local excess = f.count - free[i]
  if excess > 0 and i ~= 3 then f.locked = now + doubling(base, max_delay, excess) end
  save(i, f)
end
local f = current(3)
local slowdown = 0
if f and f.count > free[3] then slowdown = doubling(slow_base, max_slow, f.count - free[3]) end
return {'0', num(slowdown)}
"""

UNREACHABLE = (RedisError, OSError, TimeoutError)


class RedisLogins:
    """The `Logins` seam over Redis; every call may raise `LimitsUnavailable`."""

    def __init__(
        self,
        redis: Redis,
        policy: LoginPolicy,
        *,
        prefix: str = "lobby:",
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.redis = redis
        self._policy = policy
        self._prefix = prefix + "login:"
        self._clock = clock
        self._script = redis.register_script(_SCRIPT)

    async def attempt(self, account: str, address: str) -> Verdict:
        wait, slowdown = await self._run("attempt", account, address)
        return Verdict(wait) if wait > 0 else Verdict(0.0, slowdown)

    async def succeeded(self, account: str, address: str) -> None:
        await self._run("succeeded", account, address)

    async def withdrawn(self, account: str, address: str) -> None:
        await self._run("withdrawn", account, address)

    async def check(self, account: str, address: str) -> float:
        """Seconds until this account may try again from this address; 0 means now."""
        wait, _ = await self._run("check", account, address)
        return wait

    def key(self, key: Key) -> str:
        return self._prefix + json.dumps(list(key), separators=(",", ":"))

    async def _run(self, op: str, account: str, address: str) -> tuple[float, float]:
        p = self._policy
        now = "" if self._clock is None else repr(self._clock())
        keys = [self.key(k) for k in LoginThrottle.keys_of(account, address)]
        numbers = (p.base_delay, p.max_delay, p.slowdown_base, p.max_slowdown, p.forget_after)
        args: list[str | int] = [op, now, p.free_failures, p.address_factor, *map(repr, numbers)]
        try:
            wait, slowdown = await self._script(keys=keys, args=args)
        except UNREACHABLE as exc:
            raise LimitsUnavailable(f"{type(exc).__name__}: {exc}") from exc
        return float(wait), float(slowdown)
