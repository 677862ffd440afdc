"""Presence in this process only: the embedded default, one lobby without Redis.

Commands apply at once, in the order `execute` is called, to a `Replica` like
every Redis instance holds; the grace period of an away participant is a timer
here (started by a `Disconnect`, an `InstanceDown` or a `Reassert` that leaves
someone away), which applies an `Expire` whose clean-up goes to the `Cleaner`.
"""

from __future__ import annotations

import asyncio
import time

from lobby.cluster.commands import Command, Disconnect, Expire, InstanceDown, Reassert
from lobby.cluster.replica import Replica
from lobby.cluster.seam import Applied, Cleaner, Listener


def _ignore(applied: Applied) -> None:
    pass


class LocalPresence:
    def __init__(
        self,
        *,
        grace: float,
        listener: Listener = _ignore,
        cleaner: Cleaner = _ignore,
        instance: str = "local",
    ) -> None:
        self._instance = instance
        self._replica = Replica()
        self._grace = grace
        self._listener = listener
        self._cleaner = cleaner
        self._seq = 0
        self._timers: set[asyncio.TimerHandle] = set()

    @property
    def instance(self) -> str:
        return self._instance

    @property
    def replica(self) -> Replica:
        return self._replica

    @property
    def healthy(self) -> bool:
        return True

    @property
    def leading(self) -> bool:
        return True  # the only instance

    def socket_id(self, conn_id: int) -> str:
        return f"{self._instance}:{conn_id}"

    async def execute(self, command: Command) -> Applied:
        return self.apply(command)

    def apply(self, command: Command) -> Applied:
        """`execute` without the await, for callers that must not yield in between."""
        self._seq += 1
        at = int(time.time() * 1000)
        applied = Applied(self._seq, command, self._instance, self._replica.apply(command, at))
        self._listener(applied)
        if isinstance(command, InstanceDown):
            for pid, since in self._replica.away():
                if since == at:
                    self._expire_later(pid, since)
        elif isinstance(command, Disconnect | Reassert) and applied.result.participant:
            # Only this command's participant: another one away since the same
            # millisecond has its timer already.
            pid = applied.result.participant.id
            if dict(self._replica.away()).get(pid) == at:
                self._expire_later(pid, at)
        return applied

    def _expire_later(self, pid: str, since: int) -> None:
        def fire() -> None:
            self._timers.discard(timer)
            self._cleaner(self.apply(Expire(pid, since)))

        timer = asyncio.get_running_loop().call_later(self._grace, fire)
        self._timers.add(timer)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
