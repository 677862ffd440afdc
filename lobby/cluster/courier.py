"""Peer-to-peer signals for sockets another instance holds: one Redis pub/sub channel each.

Signals are not presence: they change nothing and must not wait behind the log,
so they skip the stream. Each instance subscribes to `<prefix>signal:<instance>`;
a signal for a socket held elsewhere is published on that socket's instance's
channel, and that instance writes it to its socket.

Order matters (an offer before its ICE candidates): every publish goes through
one queue and one sender, so signals leave in the order they were routed, and
one channel per receiver keeps them in that order. Pub/sub delivers at most
once: a signal published while Redis is away, or while the receiver is
reconnecting, is lost, as one to an away participant is; pages start their
connections over (`hello`) when their peer comes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable

from lobby.cluster.commands import instance_of
from lobby.cluster.stream import connect

log = logging.getLogger("lobby.cluster")

Deliver = Callable[[str, str], None]  # (socket id, text) for a socket of this instance
MAX_QUEUED = 10_000  # signals waiting for Redis; past that, new ones are dropped


class Courier:
    def __init__(
        self,
        url: str,
        instance: str,
        deliver: Deliver,
        *,
        prefix: str = "lobby:",
        timeout: float = 2.0,
        retry: float = 0.5,
        start_timeout: float = 10.0,
    ) -> None:
        self._start_timeout = start_timeout
        self._client = connect(url, timeout)
        self._listening = connect(url, timeout)
        self._prefix = prefix
        self._channel = self.channel(instance)
        self._deliver = deliver
        self._retry = retry
        self._queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._subscribed = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def channel(self, instance: str) -> str:
        return f"{self._prefix}signal:{instance}"

    def send(self, socket: str, text: str) -> None:
        """Queue `text` for `socket`, held by another instance; never waits."""
        if self._queue.qsize() < MAX_QUEUED:
            self._queue.put_nowait((socket, text))

    async def start(self) -> None:
        """Subscribe (waiting a while for it: Redis may be down, which the store reports)."""
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._listen()), loop.create_task(self._send())]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._start_timeout):
                await self._subscribed.wait()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks)
        self._tasks = []
        await self._client.aclose()
        await self._listening.aclose()

    async def _send(self) -> None:
        while True:
            socket, text = await self._queue.get()
            payload = json.dumps([socket, text])
            try:
                await self._client.publish(self.channel(instance_of(socket)), payload)
            except Exception as exc:  # redis-py's errors and the network's: drop this one
                log.warning("could not relay a signal to %s: %s", socket, exc)

    async def _listen(self) -> None:
        while True:
            try:
                await self._receive()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis went away: subscribe again once it is back
                self._subscribed.clear()
                log.warning("signal channel lost: %s; subscribing again", exc)
                await asyncio.sleep(self._retry)

    async def _receive(self) -> None:
        async with self._listening.pubsub() as pubsub:
            await pubsub.subscribe(self._channel)
            self._subscribed.set()
            while True:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None and message["type"] == "message":
                    self._handle(message["data"])

    def _handle(self, data: str) -> None:
        try:
            socket, text = json.loads(data)
        except (ValueError, TypeError):
            log.error("skipping a malformed signal: %.200s", data)
            return
        self._deliver(str(socket), str(text))
