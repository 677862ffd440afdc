"""A real nginx (Debian's) in front of a lobby, running the config the docs give.

`Nginx.start(*lobby_ports)` renders `docs/deploy/nginx.conf` (the file the README points
to) with the test's ports, a certificate made here with openssl (for 127.0.0.1) and
no IPv6 listeners, wraps it in a minimal main config (pid, logs and temp files in a temp
dir, as Debian's /etc/nginx/nginx.conf includes sites in `http {}`), and runs
`nginx -p DIR -c DIR/nginx.conf -g 'daemon off;'` until `stop()`.

Without nginx or openssl the tests that need them are skipped, except under `CI=true`,
where that is a failure (`.ci/run` installs the `nginx` and `openssl` packages).
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.live import free_port

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTED = ROOT / "docs" / "deploy" / "nginx.conf"
NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None
)
START_TIMEOUT = 10.0

# What the documented file says, and what the test puts in its place.
CERT = "/etc/letsencrypt/live/lobby.example.com/fullchain.pem"
KEY = "/etc/letsencrypt/live/lobby.example.com/privkey.pem"
MAIN = """\
worker_processes 1;
error_log {dir}/error.log info;
pid {dir}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/temp/body;
    proxy_temp_path {dir}/temp/proxy;
    fastcgi_temp_path {dir}/temp/fastcgi;
    uwsgi_temp_path {dir}/temp/uwsgi;
    scgi_temp_path {dir}/temp/scgi;
    include {dir}/lobby.conf;
}}
"""


def tools() -> tuple[str, str]:
    """nginx and openssl; skip (fail under CI) without them."""
    openssl = shutil.which("openssl")
    if NGINX is None or openssl is None:
        reason = "the proxy tests need Debian's nginx and openssl (apt-get install nginx openssl)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; under CI=true a missing nginx is a failure")
        pytest.skip(reason)
    return NGINX, openssl


def render(
    conf: str, *, https_port: int, http_port: int, lobby_ports: tuple[int, ...], cert: Path
) -> str:
    """The documented config with this test's ports and certificate (one `server` line in
    the upstream per lobby port); each replaced text must be there, so the docs cannot
    drift from what runs."""
    servers = "\n    ".join(f"server 127.0.0.1:{port};" for port in lobby_ports)
    swaps = {
        "listen 443 ssl;": f"listen 127.0.0.1:{https_port} ssl;",
        "listen 80;": f"listen 127.0.0.1:{http_port};",
        "server 127.0.0.1:5000;": servers,
        CERT: str(cert),
        KEY: str(cert.with_suffix(".key")),
        "server_name lobby.example.com;": "server_name 127.0.0.1;",
    }
    for documented, ours in swaps.items():
        assert documented in conf, f"{DOCUMENTED} no longer says {documented!r}"
        conf = conf.replace(documented, ours)
    # The loopback-only test machine may have no IPv6.
    return "\n".join(line for line in conf.splitlines() if "listen [::]" not in line) + "\n"


class Nginx:
    def __init__(self) -> None:
        self.nginx, self.openssl = tools()
        self.dir = Path(tempfile.mkdtemp(prefix="lobby-nginx-"))
        self.https_port, self.http_port = free_port(), free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.cert = self.dir / "cert.pem"
        subprocess.run(
            [
                *(self.openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
                *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
                *("-keyout", str(self.cert.with_suffix(".key")), "-out", str(self.cert)),
            ],
            check=True,
            capture_output=True,
        )

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    def ssl_context(self) -> ssl.SSLContext:
        """Trusts the test's certificate and nothing else."""
        return ssl.create_default_context(cafile=str(self.cert))

    def start(self, *lobby_ports: int) -> None:
        """nginx in front of the lobbies at `lobby_ports` (several: the documented upstream
        of several instances, no stickiness)."""
        conf = render(
            DOCUMENTED.read_text(),
            https_port=self.https_port,
            http_port=self.http_port,
            lobby_ports=lobby_ports,
            cert=self.cert,
        )
        (self.dir / "lobby.conf").write_text(conf)
        (self.dir / "nginx.conf").write_text(MAIN.format(dir=self.dir))
        (self.dir / "temp").mkdir()
        self.process = subprocess.Popen(
            [
                *(self.nginx, "-p", str(self.dir), "-c", str(self.dir / "nginx.conf")),
                *("-e", str(self.dir / "error.log"), "-g", "daemon off;"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited:\n{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.https_port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"nginx did not listen:\n{self.log()}") from None
                time.sleep(0.02)  # a poll of the condition, not a fixed wait

    def log(self) -> str:
        path = self.dir / "error.log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: nginx's fast shutdown
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
