"""Chaos: three `lobby serve` processes on one Redis, tabs churning, instances and Redis
killed at random moments; afterwards every view agrees (issue 13, item 7).

Three real processes (`LOBBY_REDIS_URL` to a redis-server of the test's own, one SQLite
user database, the OpenVidu stand-in as the media server, a 1 s grace period) and a few
real `websockets` tabs. A seeded random script drives the tabs (join, leave, reload =
close and resume on another instance, socket dropped without a close) and, at moments
the same script picks, SIGKILLs an instance (restarted a little later on its port) and
kills Redis (started again, empty, on its port).

Then the tabs come back (reconnect, resume) and the test polls, up to a bound, until:

- every tab's view (its `welcome` and the events after it, applied in order) equals a
  fresh `welcome` from every instance;
- the stand-in's connections are exactly the lobby's participants, room by room: no
  grant without a participant, no participant without its connection (a room's session
  closed by one instance under another's join would take that connection with it);
- every tab that holds a participant (its `token` or `resumed`, not since told `left`)
  sees itself in its room, and the participant of a tab closed for good on an instance
  SIGKILLed at once is gone (its lease lapsed, then its grace period ended);
- and, once settled, no connection was deleted twice (no DELETE of a connection
  answered 404, none was sent twice).

The script is fixed by the seed; the moments the processes see it at are not (this is a
busy machine), so what is checked is only what must hold whatever the interleaving. The
lease is the production one (10 s): the quiet period waits for a killed instance's lapse.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import websockets
from websockets.exceptions import ConnectionClosed

from tests.instances import Instance, login, user_database
from tests.log_secrets import SECRETS
from tests.openvidu_standin import OpenViduStandin
from tests.redis_server import RedisServer

SEED = int(os.environ.get("CHAOS_SEED", "13"))
TABS = 6
ROOMS = ("R1", "R2", "R3")
STEPS = 70
SETTLE = 40.0  # the bound on the quiet period: a lapsed lease (10 s) plus grace, on a busy box

Rooms = dict[
    str, dict[str, tuple[str, str, str]]
]  # room -> participant id -> (user, nickname, call)


def rooms_of(welcome: dict[str, Any]) -> Rooms:
    return {
        r["name"]: {p["id"]: (p["user"], p["nickname"], p["call"]) for p in r["participants"]}
        for r in welcome["rooms"]
        if r["participants"]
    }


class Tab:
    """One browser tab: a socket (or none, between reloads) and the view built from it."""

    def __init__(self, name: str, cookie: str) -> None:
        self.name, self.cookie = name, cookie
        self.socket: websockets.ClientConnection | None = None
        self.reader: asyncio.Task[None] | None = None
        self.view: Rooms = {}
        self.me: tuple[str, str, str] | None = None  # room, participant id, resume key
        self.pending: dict[int, str] = {}  # ref -> request type, unanswered
        self.must_resume = False
        self.ref = 0
        self.lost: list[str] = []  # why the tab stopped holding a participant
        self.resumes = 0
        self.instance: Instance | None = None
        self.away_since = 0.0  # when the socket that last held its participant closed
        self.holding = False  # this socket took (token) or took back (resumed) a participant
        self.gone = False  # closed for good: its participant must expire

    async def connect(self, instance: Instance) -> bool:
        try:
            socket = await websockets.connect(
                instance.ws_url,
                origin=websockets.Origin(instance.url),
                additional_headers={"Cookie": f"lobby_session={self.cookie}"},
                open_timeout=3,
            )
        except (OSError, TimeoutError, websockets.InvalidHandshake):
            return False
        self.socket, self.pending, self.instance = socket, {}, instance
        self.reader = asyncio.create_task(self.read(socket))
        self.must_resume = self.me is not None
        return True

    async def read(self, socket: websockets.ClientConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for frame in socket:
                self.apply(json.loads(frame))
        if self.socket is socket:
            self.socket, self.pending = None, {}
            self.went_away()

    def apply(self, m: dict[str, Any]) -> None:
        kind = m["type"]
        if kind == "welcome":
            self.view = rooms_of(m)
        elif kind == "joined":
            p = m["participant"]
            self.view.setdefault(m["room"], {})[p["id"]] = (p["user"], p["nickname"], p["call"])
        elif kind == "left":
            people = self.view.get(m["room"], {})
            people.pop(m["participant"]["id"], None)
            if not people:
                self.view.pop(m["room"], None)
            if self.me and self.me[1] == m["participant"]["id"]:
                if m["reason"] not in ("left", "switched"):  # not its own leave or join
                    self.lost.append(f"left ({m['reason']})")
                self.me = None
        elif kind == "call_state":
            people = self.view[m["room"]]
            user, nickname, _ = people[m["participant"]]
            people[m["participant"]] = (user, nickname, m["call"])
        elif kind == "room_closed":
            self.view.pop(m["room"], None)
        elif kind == "token":
            self.me = (m["room"], m["participant"]["id"], m["resume_key"])
            self.holding = True
            SECRETS.register(m["resume_key"], m["token"].rpartition("token=")[2])
        elif kind == "resumed":
            assert self.me is not None
            self.me = (m["room"], m["participant"]["id"], self.me[2])
            self.resumes += 1
            self.holding = True
        elif kind == "taken_over":
            self.lost.append("taken over")
            self.me = None
        ref = m.get("ref")
        answered = self.pending.pop(ref, None) if isinstance(ref, int) else None
        if kind == "error" and answered == "resume":
            if m["code"] == "resume_failed":
                self.lost.append(f"resume failed {time.monotonic() - self.away_since:.1f} s away")
                self.me = None
            else:  # cluster_unavailable: try again
                self.must_resume = True

    def went_away(self) -> None:
        if self.holding:
            self.away_since, self.holding = time.monotonic(), False

    async def request(self, frame: dict[str, Any]) -> None:
        if self.socket is None:
            return
        self.ref += 1
        self.pending[self.ref] = frame["type"]
        with contextlib.suppress(ConnectionClosed):
            await self.socket.send(json.dumps({**frame, "ref": self.ref}))

    async def resume(self) -> None:
        if self.me is not None and self.socket is not None:
            self.must_resume = False
            await self.request({"type": "resume", "key": self.me[2]})

    async def hang_up(self, *, clean: bool) -> None:
        socket, self.socket, self.pending = self.socket, None, {}
        if socket is None:
            return
        self.went_away()
        if clean:
            await socket.close()
        else:
            socket.transport.abort()  # a dropped connection: no close frame
        if self.reader is not None:
            await self.reader


class Chaos:
    def __init__(self, instances: list[Instance], redis: RedisServer, tabs: list[Tab]) -> None:
        self.instances, self.redis, self.tabs = instances, redis, tabs
        self.rng = random.Random(SEED)
        self.dead: dict[int, int] = {}  # instance index -> step to restart it at

    def live(self) -> list[Instance]:
        return [i for i in self.instances if i.alive]

    async def reconnect(self, tab: Tab) -> None:
        for instance in self.rng.sample(self.live(), len(self.live())):
            if await tab.connect(instance):
                await tab.resume()
                return

    async def churn(self, tab: Tab) -> None:
        if tab.socket is None:
            await self.reconnect(tab)
            return
        if tab.must_resume:
            await tab.resume()
            return
        roll = self.rng.random()
        if roll < 0.4:
            await tab.request(
                {"type": "join", "room": self.rng.choice(ROOMS), "nickname": tab.name}
            )
        elif roll < 0.55:
            await tab.request({"type": "leave"})
        elif roll < 0.8:
            await tab.hang_up(clean=True)  # a reload: straight back, elsewhere
            await self.reconnect(tab)
        else:
            await tab.hang_up(clean=False)  # dropped; back at its next turn

    async def step(self, n: int) -> None:
        for index, at in list(self.dead.items()):
            if n >= at:
                del self.dead[index]
                await self.instances[index].start()
        roll = self.rng.random()
        if n in (10, 30) and len(self.live()) == len(self.instances):
            index = self.rng.randrange(len(self.instances))
            await self.instances[index].kill()
            self.dead[index] = n + self.rng.randint(5, 15)
        elif n == 45:
            self.redis.kill()
            self.redis.start()  # back at once, empty: a new epoch
        for tab in self.rng.sample(self.tabs, 2 if roll < 0.5 else 3):
            await self.churn(tab)
        await asyncio.sleep(self.rng.uniform(0.02, 0.15))  # pacing the script, not a wait

    def settled_holder(self) -> Tab | None:
        """A connected tab holding a participant, with no request unanswered."""
        for tab in self.tabs:
            if tab.me and tab.socket and not tab.pending and not tab.must_resume:
                return tab
        return None

    async def quit(self) -> None:
        """A tab closed for good on an instance that dies at once: only the lapse of that
        instance's lease (then the grace period) can remove its participant."""
        async with asyncio.timeout(15):
            while (quitter := self.settled_holder()) is None:
                for tab in self.tabs:
                    if tab.socket is None:
                        await self.reconnect(tab)
                    elif tab.must_resume:
                        await tab.resume()
                    elif tab.me is None and not tab.pending:
                        await tab.request({"type": "join", "room": ROOMS[0], "nickname": tab.name})
                await asyncio.sleep(0.1)  # a poll, bounded above
        assert quitter.instance is not None
        await quitter.instance.kill()
        quitter.gone = True
        await quitter.hang_up(clean=False)
        await quitter.instance.start()  # a new process: another instance name


async def fresh_welcome(instance: Instance, cookie: str) -> Rooms:
    async with websockets.connect(
        instance.ws_url,
        origin=websockets.Origin(instance.url),
        additional_headers={"Cookie": f"lobby_session={cookie}"},
        open_timeout=3,
    ) as socket:
        welcome = json.loads(await asyncio.wait_for(socket.recv(), 3))
    assert welcome["type"] == "welcome"
    return rooms_of(welcome)


def media_rooms(standin: OpenViduStandin) -> dict[str, set[str]]:
    """Room -> participant ids the stand-in holds a connection for."""
    found: dict[str, set[str]] = {}
    for session in standin.sessions.values():
        for connection in session.connections.values():
            pid = json.loads(connection.server_data)["participantId"]
            found.setdefault(session.custom_session_id, set()).add(pid)
    return found


def deleted_twice(standin: OpenViduStandin) -> list[str]:
    deletes = [c for c in standin.calls if c.method == "DELETE" and "/connection/" in c.path]
    paths = [c.path for c in deletes]
    return sorted(
        {c.path for c in deletes if c.status == 404} | {p for p in paths if paths.count(p) > 1}
    )


def calls_on(standin: OpenViduStandin, rooms: set[str]) -> list[str]:
    """The stand-in's calls on the sessions of `rooms`, in order: what led to a failure."""
    return [
        f"{c.method} {c.path} {c.status}"
        for c in standin.calls
        if any(c.path.endswith(f"/sessions/{r}") or f"/sessions/{r}/" in c.path for r in rooms)
    ]


def room_of(path: str) -> str:
    """The room (custom session id) of a stand-in path `.../sessions/<room>/...`."""
    return path.partition("/sessions/")[2].partition("/")[0]


async def problems(chaos: Chaos, standin: OpenViduStandin, cookie: str) -> list[str]:
    """What does not hold yet; [] when everything agrees."""
    found = []
    welcomes = [await fresh_welcome(i, cookie) for i in chaos.instances]
    truth = welcomes[0]
    for instance, welcome in zip(chaos.instances, welcomes, strict=True):
        if welcome != truth:
            found.append(
                f"{instance.name}'s welcome {welcome} != {chaos.instances[0].name}'s {truth}"
            )
    for tab in chaos.tabs:
        if tab.gone:
            if tab.me is not None and tab.me[1] in truth.get(tab.me[0], {}):
                found.append(f"{tab.name} closed for good, but {tab.me[:2]} is still there")
            continue
        if tab.socket is None or tab.pending or tab.must_resume:
            found.append(f"{tab.name} not settled: {tab.socket is not None=} {tab.pending=}")
        elif tab.view != truth:
            found.append(f"{tab.name}'s view {tab.view} != the welcome {truth}")
        elif tab.me is not None and tab.me[1] not in truth.get(tab.me[0], {}):
            found.append(f"{tab.name} holds {tab.me[:2]} but it is not in the lobby")
    media = media_rooms(standin)
    lobby = {room: set(people) for room, people in truth.items()}
    if media != lobby:
        rooms = {r for r in media.keys() | lobby.keys() if media.get(r) != lobby.get(r)}
        found.append(
            f"the media server's connections {media} != the lobby's people {lobby}; "
            f"its calls on {sorted(rooms)}: {calls_on(standin, rooms)}"
        )
    return found


@pytest.fixture
async def cluster(
    tmp_path: Path, own_redis: RedisServer, standin: OpenViduStandin
) -> AsyncIterator[list[Instance]]:
    names = [f"user{i}" for i in range(TABS)] + ["watcher"]
    env = {
        "LOBBY_DATABASE": user_database(tmp_path / "users.sqlite3", names),
        "LOBBY_REDIS_URL": own_redis.url,
        "LOBBY_RECONNECT_GRACE": "1",
        "OPENVIDU_URL": standin.url,
        "OPENVIDU_SECRET": "MY_SECRET",
        "OPENVIDU_TIMEOUT": "2",
    }
    instances = [Instance(f"lobby{i}", env, tmp_path) for i in range(3)]
    try:
        await asyncio.gather(*(i.start() for i in instances))
        yield instances
    finally:
        await asyncio.gather(*(i.stop() for i in instances))


async def test_after_kills_and_a_redis_restart_every_view_agrees_with_the_media_server(
    cluster: list[Instance], own_redis: RedisServer, standin: OpenViduStandin, tmp_path: Path
) -> None:
    started = time.monotonic()
    cookies = [await login(cluster[0].url, f"user{i}") for i in range(TABS)]
    watcher = await login(cluster[1].url, "watcher")
    tabs = [Tab(f"user{i}", cookie) for i, cookie in enumerate(cookies)]
    chaos = Chaos(cluster, own_redis, tabs)
    try:
        for tab in tabs:
            await chaos.reconnect(tab)
        for n in range(STEPS):
            await chaos.step(n)
        for instance in cluster:
            if not instance.alive:
                await instance.start()
        await chaos.quit()
        churned = time.monotonic()
        # The quiet period: tabs come back, leases lapse, grace periods end.
        left: list[str] = []
        deadline = time.monotonic() + SETTLE
        while time.monotonic() < deadline:
            for tab in tabs:
                if tab.gone:
                    continue
                if tab.socket is None:
                    await chaos.reconnect(tab)
                elif tab.must_resume:
                    await tab.resume()
            if not (left := await problems(chaos, standin, watcher)):
                break
            await asyncio.sleep(0.2)  # a poll of the invariants, bounded by SETTLE
        logs = "\n".join(f"--- {i.name}\n{i.log()}" for i in cluster)
        twice = deleted_twice(standin)
        assert not left, "\n".join(left) + "\n" + logs
        calls = calls_on(standin, {room_of(path) for path in twice})
        assert not twice, f"deleted twice: {twice}; the calls on their rooms: {calls}\n{logs}"
        held = [tab.me for tab in tabs if tab.me is not None and not tab.gone]
        assert held, "the script left nobody in a room: it checks nothing"
        print(
            f"churn {churned - started:.1f} s, settled in {time.monotonic() - churned:.1f} s; "
            f"{len(held)} tabs in rooms; {sum(t.resumes for t in tabs)} resumes; "
            f"lost: {[(t.name, t.lost) for t in tabs if t.lost]}"
        )
    finally:
        for tab in tabs:
            await tab.hang_up(clean=True)
