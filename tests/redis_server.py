"""A real `redis-server` for tests: a temp dir, a free loopback port, no persistence.

`RedisServer.start()` waits until it answers PING (polling, no fixed sleep);
`kill()` stops it at once (SIGKILL, its data gone, as a crash would) and `start()`
brings it back, empty, on the same port: what outage tests need. Without
redis-server the tests that need it are skipped, except under `CI=true`, where
that is a failure (.ci/run installs it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
import redis

from tests.live import free_port

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def require_redis_server() -> None:
    if Path(REDIS_SERVER).exists():
        return
    reason = "redis-server is not installed (apt-get install redis-server)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; under CI=true a missing redis-server is a failure")
    pytest.skip(reason)


class RedisServer:
    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="lobby-redis-")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        log = Path(self.dir, "redis.log")
        # fmt: off
        args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", self.dir, "--logfile", str(log)]
        # fmt: on
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(
                            f"redis-server did not start: {log.read_text()[-2000:]}"
                        ) from None
                    time.sleep(0.01)  # polling for readiness; the wait ends on PING
        finally:
            client.close()

    def kill(self) -> None:
        """Stop it at once, as a crash would: everything it held is gone."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def flush(self) -> None:
        with redis.Redis(port=self.port) as client:
            client.flushall()
