"""A lobby instance holding sockets in a process of its own, for tests that SIGKILL it.

    python -m tests.limits_member URL USER N

Starts a `RedisPresence` (a short lease) and its `RedisSockets` with the default
prefix, admits N sockets of USER, prints its instance name, then waits to be killed.
"""

from __future__ import annotations

import asyncio
import sys

from lobby.cluster.node import RedisPresence
from lobby.cluster.quotas import RedisSockets
from lobby.cluster.stream import connect
from tests.cluster_member import TIMING


async def main(url: str, user: str, n: int) -> None:
    node = RedisPresence(url, name="victim", grace=0.3, timing=TIMING)
    await node.start()
    sockets = RedisSockets(
        connect(url, TIMING.command_timeout), 100, node.instance, lease=TIMING.lease
    )
    await sockets.start()
    for _ in range(n):
        assert await sockets.admit(user)
    print(node.instance, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
