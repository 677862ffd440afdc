"""`lobby serve` as a real process: what `make run` starts."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from livekit import api
from prometheus_client.parser import text_string_to_metric_families

from lobby.store.db import connect
from lobby.store.users import UserStore
from tests.conftest import CHEAP_HASHER, PASSWORD, Lobby, csrf_from, until
from tests.live import free_port
from tests.log_secrets import SECRETS
from tests.openvidu_standin import OpenViduStandin
from tests.redis_server import RedisServer


class Process:
    """A `lobby serve` child process; `output()` stops it and returns what it printed."""

    def __init__(self, proc: asyncio.subprocess.Process, url: str) -> None:
        self.proc, self.url = proc, url

    async def output(self, *, stop: bool = True) -> str:
        if stop and self.proc.returncode is None:
            self.proc.terminate()
        out, _ = await asyncio.wait_for(self.proc.communicate(), 10)
        SECRETS.add_output(out.decode())  # checked for secrets at the end of the run
        return out.decode()


def lobby_env(**values: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("LOBBY_", "OPENVIDU_", "LIVEKIT_"))
    }
    return env | values


@contextlib.asynccontextmanager
async def lobby_serve(env: dict[str, str], *args: str, **popen: Any) -> AsyncIterator[Process]:
    """Start `python -m lobby serve ARGS` (`popen`: more for the subprocess) and wait until
    /healthz answers."""
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "lobby",
        "serve",
        "--port",
        str(port),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        **popen,
    )
    served = Process(proc, f"http://127.0.0.1:{port}")
    try:
        async with httpx.AsyncClient(base_url=served.url) as http:
            for _ in range(400):  # up to ~20 s on a slow machine
                if proc.returncode is not None:
                    pytest.fail(f"lobby serve exited:\n{await served.output()}")
                try:
                    if (await http.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            else:
                pytest.fail(f"lobby serve did not answer:\n{await served.output()}")
        yield served
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.fixture
async def demo_server(tmp_path: Path, standin: OpenViduStandin) -> AsyncIterator[Process]:
    env = lobby_env(LOBBY_DATABASE=str(tmp_path / "demo.sqlite3"), OPENVIDU_URL=standin.url)
    async with lobby_serve(env, "--demo") as served:
        yield served


async def test_demo_server_serves_demo_users_and_says_so_loudly(demo_server: Process) -> None:
    async with httpx.AsyncClient(base_url=demo_server.url) as http:
        token = csrf_from((await http.get("/")).text)
        reply = await http.post(
            "/login", data={"user": "publisher1", "pass": "pass", "csrf_token": token}
        )
        assert reply.status_code == 303
        cookie = reply.cookies["lobby_session"]
        health = (await http.get("/readyz")).json()
    assert health["demo"] is True
    socket_url = demo_server.url.replace("http", "ws") + "/ws"
    async with websockets.connect(
        socket_url,
        origin=websockets.Origin(demo_server.url),
        additional_headers={"Cookie": f"lobby_session={cookie}"},
    ) as ws:
        assert '"welcome"' in str(await ws.recv())
        demo_server.proc.send_signal(signal.SIGTERM)
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1012  # "restarting": pages reconnect by themselves
    out = await demo_server.output(stop=False)
    # uvicorn re-raises the signal after its graceful shutdown, as a well-behaved child should.
    assert demo_server.proc.returncode in (0, -signal.SIGTERM)
    assert "Traceback" not in out
    assert "DEMO MODE" in out
    assert "publisher1" in out


async def test_make_run_with_nothing_configured_gives_peer_to_peer_calls(tmp_path: Path) -> None:
    """What `make run` does on a fresh machine: no OpenVidu anywhere, calls still work."""
    env = lobby_env(LOBBY_DATABASE=str(tmp_path / "demo.sqlite3"))
    async with lobby_serve(env, "--demo") as served:
        async with httpx.AsyncClient(base_url=served.url) as http:
            token = csrf_from((await http.get("/")).text)
            reply = await http.post(
                "/login", data={"user": "publisher1", "pass": "pass", "csrf_token": token}
            )
            cookie = reply.cookies["lobby_session"]
            assert (await http.get("/readyz")).json()["media"] == "p2p"
        async with websockets.connect(
            served.url.replace("http", "ws") + "/ws",
            origin=websockets.Origin(served.url),
            additional_headers={"Cookie": f"lobby_session={cookie}"},
        ) as ws:
            welcome = json.loads(await ws.recv())
            assert welcome["media"] == {"kind": "p2p", "ice_servers": []}
            assert welcome["room_size"] == 4
            await ws.send(json.dumps({"type": "join", "room": "R", "nickname": "P1", "ref": 1}))
            assert json.loads(await ws.recv())["type"] == "token"
        out = await served.output()
    assert "calls peer to peer, rooms of up to 4 people" in out


# The dev server's secret is `secret`: too short for HS256, which PyJWT says at every check.
@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
async def test_make_run_with_livekit_serves_its_page_and_tokens_for_the_dev_server(
    tmp_path: Path,
) -> None:
    """`LOBBY_MEDIA=livekit make run`: the LiveKit dev server's URL, key and secret."""
    env = lobby_env(LOBBY_DATABASE=str(tmp_path / "demo.sqlite3"), LOBBY_MEDIA="livekit")
    async with lobby_serve(env, "--demo") as served:
        async with httpx.AsyncClient(base_url=served.url) as http:
            token = csrf_from((await http.get("/")).text)
            reply = await http.post(
                "/login", data={"user": "publisher1", "pass": "pass", "csrf_token": token}
            )
            cookie = reply.cookies["lobby_session"]
            page = (await http.get("/lobby")).text
        assert 'data-media="livekit"' in page
        assert '<script src="/static/vendor/livekit-client-' in page
        async with websockets.connect(
            served.url.replace("http", "ws") + "/ws",
            origin=websockets.Origin(served.url),
            additional_headers={"Cookie": f"lobby_session={cookie}"},
        ) as ws:
            welcome = json.loads(await ws.recv())
            assert welcome["media"] == {"kind": "livekit", "url": "ws://localhost:7880"}
            await ws.send(json.dumps({"type": "join", "room": "R", "nickname": "P1", "ref": 1}))
            answer = json.loads(await ws.recv())
        out = await served.output()
    claims = api.TokenVerifier("devkey", "secret").verify(answer["token"])
    assert claims.identity == answer["participant"]["id"]
    assert claims.video is not None
    assert claims.video.room == "R"
    assert "calls LiveKit at ws://localhost:7880" in out


async def test_a_normal_start_removes_demo_users(tmp_path: Path, standin: OpenViduStandin) -> None:
    path = str(tmp_path / "lobby.sqlite3")
    store = UserStore(connect(path))
    store.ensure_demo_users()
    store.add("real", "PUBLISHER", "pw")
    env = lobby_env(
        LOBBY_DATABASE=path,
        OPENVIDU_URL=standin.url,
        OPENVIDU_SECRET="MY_SECRET",
        LOBBY_SECRET_KEY="x" * 32,
    )
    async with lobby_serve(env) as served:
        out = await served.output()
    assert "DEMO MODE" not in out
    assert [u.name for u in store.list()] == ["real"]


def workers_of(pid: int) -> list[int]:
    """The worker processes `pid` spawned (multiprocessing's `spawn_main` children)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            parent = int(stat.read_text().rpartition(")")[2].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
            if parent == pid and b"spawn_main" in cmdline:
                found.append(int(stat.parent.name))
    return found


async def test_serve_with_two_workers_is_one_lobby_on_one_port(
    tmp_path: Path, own_redis: RedisServer
) -> None:
    path = str(tmp_path / "lobby.sqlite3")
    db = connect(path)
    users = UserStore(db, hasher=CHEAP_HASHER)
    for name in ("alice", "bob"):
        users.add(name, "PUBLISHER", PASSWORD)
    db.close()
    metrics_port = free_port()
    env = lobby_env(
        LOBBY_DATABASE=path,
        LOBBY_REDIS_URL=own_redis.url,
        LOBBY_SECRET_KEY="test-secret-key-0123456789",
        LOBBY_METRICS_PORT=str(metrics_port),
    )
    async with lobby_serve(env, "--workers", "2") as served:
        await until(lambda: len(workers_of(served.proc.pid)) == 2, 20)
        # Each worker its own metrics, on a port of its own, labelled with its process.
        processes = set()
        async with httpx.AsyncClient() as http:
            for port in (metrics_port, metrics_port + 1):
                async with asyncio.timeout(20):
                    while True:  # the worker's metrics listener comes up with its app
                        with contextlib.suppress(httpx.TransportError):
                            scrape = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
                            break
                        await asyncio.sleep(0.1)
                [family] = [
                    f for f in text_string_to_metric_families(scrape) if f.name == "lobby_sockets"
                ]
                processes |= {s.labels["process"] for s in family.samples}
        assert len(processes) == 2
        lobby = Lobby.__new__(Lobby)  # not served in this process: only its client helpers
        lobby.http, lobby.ws_url = served.url, served.url.replace("http", "ws") + "/ws"
        # Enough sockets that both workers accept some (the kernel spreads them).
        watchers = [await lobby.client("bob") for _ in range(6)]
        alice = await lobby.client("alice")
        token = await alice.join("R1")
        for watcher in watchers:
            joined = await watcher.expect("joined")
            assert joined["participant"] == token["participant"]
        late = await lobby.client("bob")
        assert [r["name"] for r in late.welcome["rooms"]] == ["R1"]
        for client in [*watchers, alice, late]:
            await client.close()
        out = await served.output()
    assert "2 workers" in out
    assert "Traceback" not in out
    assert served.proc.returncode in (0, -signal.SIGTERM)
    assert workers_of(served.proc.pid) == []


async def lobby_refusal(env: dict[str, str]) -> tuple[int, str]:
    """`python -m lobby serve` that should refuse to start: its exit code and output."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lobby", "serve", "--port", str(free_port()), env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def test_an_unreachable_redis_at_start_is_one_sentence_and_exit_code_1(
    tmp_path: Path,
) -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"  # nobody listens there
    env = lobby_env(
        LOBBY_DATABASE=str(tmp_path / "lobby.sqlite3"),
        LOBBY_SECRET_KEY="test-secret-key-0123456789",
        LOBBY_REDIS_URL=url,
    )
    code, out = await lobby_refusal(env)
    assert code == 1
    [line] = out.splitlines()
    shown = url.replace("hunter2", "***")
    assert line.startswith(f"lobby: cannot reach Redis at {shown} (LOBBY_REDIS_URL): ")
    assert "refused" in line.lower()


async def test_an_unreachable_postgresql_at_start_is_one_sentence_and_exit_code_1() -> None:
    url = f"postgresql://lobby:hunter2@127.0.0.1:{free_port()}/lobby"  # nobody listens there
    env = lobby_env(LOBBY_DATABASE=url, LOBBY_SECRET_KEY="test-secret-key-0123456789")
    code, out = await lobby_refusal(env)
    assert code == 1
    [line] = out.splitlines()
    shown = url.replace("hunter2", "***")
    assert line.startswith(f"lobby: cannot use the database {shown}: PostgreSQL is unreachable: ")


async def test_a_worker_that_dies_is_started_again_and_the_port_keeps_answering(
    tmp_path: Path, own_redis: RedisServer
) -> None:
    path = str(tmp_path / "lobby.sqlite3")
    db = connect(path)
    users = UserStore(db, hasher=CHEAP_HASHER)
    for name in ("alice", "bob"):
        users.add(name, "PUBLISHER", PASSWORD)
    db.close()
    env = lobby_env(
        LOBBY_DATABASE=path,
        LOBBY_REDIS_URL=own_redis.url,
        LOBBY_SECRET_KEY="test-secret-key-0123456789",
    )
    async with lobby_serve(env, "--workers", "2") as served:
        await until(lambda: len(workers_of(served.proc.pid)) == 2, 20)
        first = set(workers_of(served.proc.pid))
        killed = min(first)
        os.kill(killed, signal.SIGKILL)
        async with httpx.AsyncClient(base_url=served.url) as http:
            for _ in range(5):  # the other worker answers meanwhile
                assert (await http.get("/healthz")).status_code == 200
        await until(lambda: len(set(workers_of(served.proc.pid)) - first) == 1, 20)
        # The new one dies young: the next is started after a longer wait (no crash loop).
        [young] = set(workers_of(served.proc.pid)) - first
        os.kill(young, signal.SIGKILL)
        await until(lambda: len(set(workers_of(served.proc.pid)) - first - {young}) == 1, 20)
        assert len(workers_of(served.proc.pid)) == 2
        # One lobby still: an event made on one worker reaches sockets on both.
        lobby = Lobby.__new__(Lobby)  # not served in this process: only its client helpers
        lobby.http, lobby.ws_url = served.url, served.url.replace("http", "ws") + "/ws"
        watchers = [await lobby.client("bob") for _ in range(6)]
        alice = await lobby.client("alice")
        token = await alice.join("R1")
        for watcher in watchers:
            assert (await watcher.expect("joined"))["participant"] == token["participant"]
        for client in [*watchers, alice]:
            await client.close()
        out = await served.output()
    # The second died within seconds of its start: the wait before the next one doubled.
    ended = re.findall(r"worker \d \(pid (\d+)\) ended with code -9 after .* in ([\d.]+) s", out)
    assert [int(pid) for pid, _ in ended] == [killed, young]
    first_wait, second_wait = (float(delay) for _, delay in ended)
    assert first_wait in (0.5, 1.0)  # 1.0 if the first had lived under 10 s too
    assert second_wait == 2 * first_wait
    assert "Traceback" not in out
    assert workers_of(served.proc.pid) == []
