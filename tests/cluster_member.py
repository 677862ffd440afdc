"""A lobby instance in a process of its own, for tests that SIGKILL it.

    python -m tests.cluster_member URL PREFIX N

Starts a `RedisPresence` (the tests' short timings), joins N participants held by
its own sockets, prints its instance name, then waits to be killed.
"""

from __future__ import annotations

import asyncio
import sys

from lobby.cluster.commands import Join
from lobby.cluster.duties import Timing
from lobby.cluster.node import RedisPresence
from lobby.rules.presence import Participant

# A longer lease than the in-process instances': a process starved of CPU on a busy
# machine must not lose its lease before the test kills it.
TIMING = Timing(lease=1.5, renew=0.15, tick=0.05, block=0.2, command_timeout=1.0, retry=0.05)


async def main(url: str, prefix: str, n: int) -> None:
    node = RedisPresence(url, name="victim", grace=0.3, prefix=prefix, timing=TIMING)
    await node.start()
    for i in range(n):
        person = Participant(f"v{i}", "victim", "Victim", "PUBLISHER")
        await node.execute(Join(node.socket_id(i), person, "R", f"kv{i}", f"hv{i}"))
    print(node.instance, flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
