"""What every host program shares: which pool it runs (``sys.argv[1]``: ``stdlib`` or
``ours``), the work its items do, and how it reports (one ``RESULT {json}`` line on the real
standard output, whatever the program did to ``sys.stdout``).

The programs run in fresh interpreters, from ``tests/hosts`` (results compared with the
stdlib's) and from ``benchmarks/hosts.py`` (their ``elapsed_s`` timed). ``HOST_BENCH=1``
gives the benchmark's sizes (items of about 10 ms, as in issue 12's table); the tests use
4 ms items (enough for a parallel plan: 30 of them take 120 ms serially).
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

BENCH = os.environ.get("HOST_BENCH") == "1"
WORK_S = 0.010 if BENCH else 0.004
N_ITEMS = 30
MAX_WORKERS = 2

_REAL_STDOUT_FD = os.dup(1)


def pool_name() -> str:
    return sys.argv[1] if len(sys.argv) > 1 else "stdlib"


def pool_class() -> Any:
    """The executor class the program runs: the stdlib's, or ours in its place."""
    if pool_name() == "ours":
        from amorsize_executor import AdaptiveProcessPoolExecutor

        return AdaptiveProcessPoolExecutor
    from concurrent.futures import ProcessPoolExecutor

    return ProcessPoolExecutor


def spin(x: int, seconds: float = WORK_S) -> int:
    """CPU-bound work of about ``seconds``: what a real item costs."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass
    return x * x


def report(**fields: Any) -> None:
    """Write the program's result where the test reads it: the process's own descriptor 1,
    even when ``sys.stdout`` was replaced."""
    os.write(_REAL_STDOUT_FD, ("RESULT " + json.dumps(fields) + "\n").encode())


class Clock:
    """Seconds since the program started its pool work."""

    def __init__(self) -> None:
        self.started_s = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.started_s


# A real program imports its pool class at the top, before any work: so do these, so that
# the timed region holds the pool's work and not the import.
pool_class()
