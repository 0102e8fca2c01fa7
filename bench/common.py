"""Shared helpers for the side-by-side benchmarks (not tests: they print figures)."""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence

REFERENCE_DIR = "/usr/lib/cni"


def timed(fn: Callable[[], object], n: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def run(
    cmd: Sequence[str], stdin: bytes = b"", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(list(cmd), input=stdin, env=env, capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} failed: {proc.stdout!r} {proc.stderr!r}")
    return proc


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    k = (len(values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def median(values: list[float]) -> float:
    return statistics.median(values)


def table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def ensure_root() -> None:
    if os.geteuid() != 0:
        raise SystemExit("benchmarks create namespaces: run as root")
