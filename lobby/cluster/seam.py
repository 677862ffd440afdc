"""The presence store seam: where presence lives, in memory or shared through Redis.

`PresenceStore` is what the request handler talks to. It reads the `replica`
directly (synchronously: no await between reading presence and sending a
`welcome`) and changes it only through `execute`, which returns the `Applied`
record of its own command: the same `Outcome` the pure rules return, whose
clean-up (revokes, closing media rooms) and reply the caller carries out.

Every applied command, whoever issued it, also reaches the store's `Listener`
on every instance, in log order: that is where events become frames for the
instance's own sockets. Commands the store issues itself (grace expiry, lease
lapses) or whose issuer stopped waiting reach its `Cleaner` too, on the issuing
instance only: their clean-up then happens once, there.

Exceptions: `ClusterUnavailable` (code `cluster_unavailable`) when shared state
cannot be reached; it carries a sentence for users.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from lobby.cluster.commands import Command
from lobby.cluster.replica import Replica, Result

UNAVAILABLE = "The lobby cannot reach its shared state right now; please try again in a moment."


class ClusterUnavailable(Exception):
    """Shared presence cannot be reached (Redis down or too slow); nothing was changed
    that the caller must act on."""

    code = "cluster_unavailable"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.message = UNAVAILABLE
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Applied:
    """One command as every replica applied it: its place in the log, issuer and result."""

    seq: int  # 1, 2, 3… within one epoch of the log; a gap means entries were missed
    command: Command
    issuer: str  # the instance that appended it
    result: Result


Listener = Callable[[Applied], None]  # every applied command, on every instance, in order
Cleaner = Callable[[Applied], None]  # unattended commands this instance issued: clean up
Resetter = Callable[[], None]  # the replica was replaced (snapshot reload): resend welcomes


class PresenceStore(Protocol):
    @property
    def instance(self) -> str:
        """This instance's name: the prefix of its socket ids."""

    @property
    def replica(self) -> Replica: ...

    @property
    def healthy(self) -> bool:
        """Can commands be executed now? Reads of `replica` always work."""

    @property
    def leading(self) -> bool:
        """Does this instance hold the cluster's duties now (one instance at a time)?"""

    async def execute(self, command: Command) -> Applied:
        """Apply `command` everywhere; its result once this instance applied it."""

    def socket_id(self, conn_id: int) -> str:
        """The cluster-wide id of this instance's connection `conn_id`."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...
