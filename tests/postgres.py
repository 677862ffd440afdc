"""A real PostgreSQL server for tests: Debian's, in a temp dir, on a free loopback port.

`PostgresServer.create()` runs `initdb` (trust authentication, superuser `lobby`),
`start()` runs `postgres` listening on 127.0.0.1 and on a Unix socket in the
same dir, and waits until a connection succeeds; `stop()` ends it by the pid in
`postmaster.pid` (`immediate=True`: as if killed, no shutdown checkpoint), and
`start()` again brings the same data back. As root, both run as the `postgres`
user (they refuse root). `fresh_database()` makes an empty database per test.

Without PostgreSQL's binaries the tests that need it are skipped, except under
`CI=true`, where that is a failure (`.ci/run` installs the `postgresql` package).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from itertools import count
from pathlib import Path
from typing import IO

import psycopg
import pytest

from tests.live import free_port

BINARIES = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
START_TIMEOUT = 30.0
_names = count()


def binaries() -> Path:
    """The newest installed PostgreSQL's bin directory; skip (fail under CI) without one."""
    if not BINARIES:
        reason = "the PostgreSQL tests need Debian's postgresql (apt-get install postgresql)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; under CI=true a missing PostgreSQL is a failure")
        pytest.skip(reason)
    return BINARIES[-1].parent


class PostgresServer:
    def __init__(self, bin_dir: Path, root: Path) -> None:
        self.bin_dir = bin_dir
        self.root = root
        self.data = root / "data"
        self.log = root / "postgres.log"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @classmethod
    def create(cls) -> PostgresServer:
        root = Path(tempfile.mkdtemp(prefix="lobby-pg-"))
        server = cls(binaries(), root)
        server._chown(root)
        server._run([str(server.bin_dir / "initdb"), "-D", str(server.data), *_INITDB], check=True)
        return server

    def url(self, database: str) -> str:
        return f"postgresql://lobby@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = self._run(
                [
                    str(self.bin_dir / "postgres"),
                    *("-D", str(self.data), "-k", str(self.root), "-p", str(self.port)),
                    *("-c", "listen_addresses=127.0.0.1"),
                    # No fsync: the data outlives a killed server (it is in the page cache
                    # once committed), not a crashed machine, which no test makes.
                    *("-c", "fsync=off", "-c", "full_page_writes=off"),
                ],
                stdout=log,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                psycopg.connect(self.url("postgres"), connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    pytest.fail(f"PostgreSQL did not start:\n{self.log.read_text()}")
                time.sleep(0.05)  # a poll of the condition, not a fixed wait

    def stop(self, *, immediate: bool = False) -> None:
        """End the server (SIGQUIT: at once, as if it crashed; else SIGINT: fast shutdown)."""
        pid_file = self.data / "postmaster.pid"
        with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
            pid = int(pid_file.read_text().split()[0])
            os.kill(pid, signal.SIGQUIT if immediate else signal.SIGINT)
        if self.process is not None:
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def fresh_database(self) -> str:
        """The URL of a new, empty database."""
        name = f"t{os.getpid()}_{next(_names)}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            shutil.chown(path, "postgres")

    def _run(
        self, command: list[str], *, check: bool = False, stdout: IO[bytes] | None = None
    ) -> subprocess.Popen[bytes]:
        # initdb and postgres refuse root: run them as the user the Debian package made.
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        process = subprocess.Popen(
            command,
            stdout=stdout if stdout is not None else subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        if check:
            output, _ = process.communicate(timeout=120)
            if process.returncode != 0:
                pytest.fail(f"{' '.join(command)} failed:\n{output.decode(errors='replace')}")
        return process


_INITDB = ["-A", "trust", "-U", "lobby", "--no-sync", "-E", "UTF8", "--locale=C.UTF-8"]
