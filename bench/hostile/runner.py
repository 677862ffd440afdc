"""The command, `python -m bench.hostile [case …]`: which cases run, in what order, against
one OpenVidu stand-in, and where the report goes.

With no case named, every case runs and the report is written to docs/bench/hostile.md;
with some named (by number, `3`, or by name, `silent`), only those run, in the order
given, and the report is printed only (unless `--out`). A case that raises is reported
as FAILED and the others still run; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvloop

from bench import hostile
from bench.hostile.brute_force import case_brute_force
from bench.hostile.caps import case_caps
from bench.hostile.figures import now
from bench.hostile.flood import case_flood
from bench.hostile.idle import case_idle
from bench.hostile.openvidu_down import case_openvidu_down
from bench.hostile.report import Row, render
from bench.hostile.server import Bench
from bench.hostile.silent import case_silent
from bench.hostile.slow_requests import case_slow_body, case_slowloris
from bench.hostile.stuck_reader import case_stuck_reader
from bench.procs import ROOT
from tests.openvidu_standin import running_standin

CASES: dict[str, Callable[[Bench], Awaitable[Row]]] = {
    "1": case_slowloris,
    "1b": case_slow_body,
    "2": case_idle,
    "3": case_silent,
    "4": case_stuck_reader,
    "5": case_flood,
    "6": case_brute_force,
    "7": case_openvidu_down,
    "8": case_caps,
}
# A case by name: its function's, without `case_` (`slowloris` is case 1).
NAMES = {case.__name__.removeprefix("case_"): key for key, case in CASES.items()}


async def run(selected: list[str]) -> tuple[str, bool]:
    """Run the `selected` cases; the report and whether any case failed."""
    load = os.getloadavg()[0]
    started = now()
    rows: list[Row] = []
    findings: list[str] = []
    with tempfile.TemporaryDirectory(prefix="lobby-hostile-") as tmp:
        async with running_standin(secret="MY_SECRET") as standin:
            bench = Bench(Path(tmp), standin)
            for key in selected:
                began = now()
                print(f"case {key} …", file=sys.stderr, flush=True)
                try:
                    row = await CASES[key](bench)
                except Exception as exc:
                    traceback.print_exc()
                    row = Row(key, "", f"FAILED: {type(exc).__name__}: {exc}", "", failed=True)
                print(f"case {key}: {now() - began:.1f} s", file=sys.stderr, flush=True)
                rows.append(row)
            findings = bench.log_findings()
    return render(rows, findings, now() - started, load), any(row.failed for row in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.hostile",
        description=hostile.__doc__.splitlines()[0] if hostile.__doc__ else None,
    )
    cases = ", ".join(f"{key} {name}" for name, key in NAMES.items())
    parser.add_argument(
        "cases",
        nargs="*",
        metavar="case",
        help=f"a case to run, by number or name ({cases}); none: every case, and the report "
        "goes to docs/bench/hostile.md",
    )
    parser.add_argument("--only", help="cases as one comma-separated list (`--only 3,5`)")
    parser.add_argument("--out", type=Path, help="Markdown file to write")
    args = parser.parse_args(argv)
    named = [*args.cases, *(args.only.split(",") if args.only is not None else [])]
    selected = [NAMES.get(case, case) for case in named] or list(CASES)
    unknown = [key for key in selected if key not in CASES]
    if unknown:
        parser.error(f"unknown cases: {', '.join(unknown)}")
    out: Path | None = args.out
    if out is None and not named:
        out = ROOT / "docs" / "bench" / "hostile.md"
    report, failed = uvloop.run(run(selected))
    print(report)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(report)
        print(f"wrote {out}", file=sys.stderr)
    return 1 if failed else 0
