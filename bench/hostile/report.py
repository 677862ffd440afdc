"""The report: one `Row` a case, rendered as the Markdown of docs/bench/hostile.md."""

from __future__ import annotations

import datetime
import os
import platform
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path


@dataclass
class Row:
    """What one case found: the table's four cells, and what goes under the table."""

    case: str
    setup: str
    did: str
    cost: str
    notes: list[str] = field(default_factory=list)  # details under the table
    findings: list[str] = field(default_factory=list)  # where the server misbehaves
    failed: bool = False


def machine() -> list[str]:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")),
        platform.processor() or "unknown",
    )
    stack = ", ".join(f"{p} {version(p)}" for p in ("uvicorn", "uvloop", "httptools", "websockets"))
    return [
        f"CPU: {model}, {os.cpu_count()} cores",
        f"Kernel: Linux {platform.release()}",
        f"Python: {platform.python_version()}; server stack: {stack}",
    ]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(rows: list[Row], log_findings: list[str], elapsed: float, load: float) -> str:
    today = datetime.date.today().isoformat()
    lines = [
        "# Hostile clients",
        "",
        "What the lobby server does when clients misbehave, and what it costs. Produced by "
        f"`.venv/bin/python -m bench.hostile` ({elapsed:.0f} s, {today}); rerun it after "
        "changing `lobby/web/uvicorn_adapter.py`, `lobby/web/socket.py`, `lobby/hub.py`, "
        "`lobby/media/breaker.py`, `lobby/rules/limits.py` or the uvicorn settings.",
        "",
        *[f"- {line}" for line in machine()],
        f"- Load average when the run started: {load:.2f}. The machine is shared (other "
        "benchmarks and browser tests may run alongside), and the clients, the stand-in and "
        "the server share its cores: read times as indicative.",
        "",
        "Each case starts `python -m lobby serve` as a process of its own (README defaults "
        "unless the setup says otherwise) with a fresh SQLite file of provisioned users and "
        "login sessions. The OpenVidu stand-in and the hand-made clients run in the bench "
        "process; everything is on loopback. RSS is the server's `VmRSS`, CPU its user + "
        "system time over all threads, both read from `/proc/<pid>`.",
        "",
        "| Case | Setup | What the server did | What it cost |",
        "| --- | --- | --- | --- |",
    ]
    for row in rows:
        cells = [row.case, row.setup, row.did, row.cost]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    findings = [f for row in rows for f in row.findings] + log_findings
    lines += ["", "## Findings", ""]
    lines += [f"- {f}" for f in findings] or ["- None: every case behaved as documented."]
    lines += ["", "## Details", ""]
    for row in rows:
        if row.notes:
            lines.append(f"- **{row.case}**: " + " ".join(row.notes))
    return "\n".join(lines) + "\n"
