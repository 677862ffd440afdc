"""No secret in any log line the test suite produces, in either log format.

`SECRETS` collects two things over the whole run:

- the secrets the tests make or use (`register`): the test settings' secret key and
  media secrets, the test password, every session cookie a login returned, every
  token and resume key a join handed out (the fixtures in `conftest.py` feed it);
- every log record of the run (`watching` wraps `logging.Logger.handle`, so records
  of loggers that do not propagate, like uvicorn's access log, are seen too),
  formatted as production would print it: through `lobby.server.REDACT`, with the
  context's ids, once in the plain format and once as JSON; and the output of the
  `lobby serve` processes tests start (`add_output`).

At the end of the session `conftest.py` fails the run, naming each offending line,
if any registered secret occurs in any of them. `quarantine` sets lines aside
(a test that logs a secret on purpose to show the check catches it).
"""

from __future__ import annotations

import base64
import contextlib
import copy
import logging
import threading
from collections.abc import Iterator

import pytest

from lobby.logs import ContextIds, JsonFormatter, PlainFormatter
from lobby.server import REDACT

# Shorter values (the demo password `pass`, LiveKit's dev secret `secret`) occur in
# innocent lines; the tests' own secrets are all longer.
MIN_LENGTH = 8


class LogSecrets:
    def __init__(self) -> None:
        self.secrets: set[str] = set()
        self.lines: list[str] = []
        self._formatters = (PlainFormatter(), JsonFormatter())
        self._ids = ContextIds()
        self._lock = threading.Lock()

    def register(self, *secrets: str | None) -> None:
        """Secrets that must never reach a log line (too short or empty ones are skipped)."""
        with self._lock:
            self.secrets.update(s for s in secrets if s and len(s) >= MIN_LENGTH)

    def register_openvidu_secret(self, secret: str) -> None:
        """OpenVidu's secret, and the Basic credentials it travels in."""
        basic = base64.b64encode(f"OPENVIDUAPP:{secret}".encode()).decode()
        self.register(secret, basic)

    def record(self, record: logging.LogRecord) -> None:
        """`record` as both formats would print it, after production's redaction."""
        shown = copy.copy(record)
        try:
            REDACT.filter(shown)
            self._ids.filter(shown)
            lines = [formatter.format(shown) for formatter in self._formatters]
        except Exception:  # a bad format string: logging reports it, and nothing is printed
            return
        with self._lock:
            self.lines.extend(lines)

    def add_output(self, text: str) -> None:
        """What a `lobby serve` child process printed."""
        with self._lock:
            self.lines.extend(text.splitlines())

    def leaks(self, lines: list[str] | None = None) -> list[str]:
        """One entry per (secret, line) found: the secret and the whole offending line."""
        with self._lock:
            secrets = sorted(self.secrets)
            checked = list(self.lines if lines is None else lines)
        return [
            f"{secret!r} in log line: {line}"
            for line in checked
            for secret in secrets
            if secret in line
        ]

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        """Record every log record handled while inside."""
        handle = logging.Logger.handle

        def handle_and_record(logger: logging.Logger, record: logging.LogRecord) -> None:
            handle(logger, record)
            self.record(record)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(logging.Logger, "handle", handle_and_record)
            yield

    @contextlib.contextmanager
    def quarantine(self) -> Iterator[list[str]]:
        """Lines recorded inside go to the list yielded, not to the session's."""
        with self._lock:
            kept, self.lines = self.lines, []
        try:
            yield self.lines
        finally:
            with self._lock:
                self.lines = kept


SECRETS = LogSecrets()
