"""The bench's clock, percentiles, and how times and sizes are written in the report."""

from __future__ import annotations

import math
import time

now = time.perf_counter


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def ms(seconds: float) -> str:
    if math.isnan(seconds):
        return "n/a"
    return f"{seconds * 1000:.0f} ms" if seconds >= 0.1 else f"{seconds * 1000:.1f} ms"


def secs(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds:.2f} s"


def mib(kib: float) -> str:
    return f"{kib / 1024:.1f} MiB"


def spread(values: list[float]) -> str:
    """p50 / p99 / max of latencies."""
    return f"{ms(pct(values, 50))} / {ms(pct(values, 99))} / {ms(max(values, default=math.nan))}"
