"""The oracle: the best end-to-end time found by brute force, the yardstick for every contender.

It is the best of serial and a grid of plain stdlib ``ProcessPoolExecutor`` runs with the
``fork`` start method (the fastest to start on Linux) over worker counts ``1..cores`` and
chunksizes ``{1, 4, 16, 64, 256, 1024, ceil(n/(4w)), ceil(n/w)}``. Every grid point is timed
end to end (pool start, map, shutdown) in a fresh process, exactly like the contenders.

This module defines the grid, the runner for one grid point and the search rules; it does not
start the child processes or time anything (``run.py`` and ``_one.py`` do).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from benchmarks.contenders import Fn, Runner

CHUNKSIZES_FULL = (1, 4, 16, 64, 256, 1024)
CHUNKSIZES_QUICK = (1, 16, 256)

# --quick leaves out grid points that would send more than this many tasks: at ~100 µs of
# dispatch per task (measured: chunksize 1 over 200k trivial items took 21.7 s) such a point
# costs seconds of pure overhead and cannot be the best. The full grid keeps them.
MAX_TASKS_QUICK = 20_000

# Every grid point gets PRUNE_AFTER_REP + 1 repetitions; after those, only the points whose
# fastest run is within this factor of the best fastest run (serial included) are repeated;
# the others keep the times they have. Judging by the faster of two runs, not by one: on the
# shared 2-core machine another process can slow a single run 2-3x (seen: a 0.5 s point timed
# at 2.0 s once), and interference only ever slows a run down. Quick uses the tighter bound.
PRUNE_AFTER_REP = 1
PRUNE_FACTOR_FULL = 2.0
PRUNE_FACTOR_QUICK = 1.5

_NAME_RE = re.compile(r"^oracle_w(?P<w>\d+)_c(?P<c>\d+)$")


@dataclass(frozen=True, order=True)
class GridPoint:
    """One parallel configuration of the oracle's grid."""

    n_workers: int
    chunksize: int

    @property
    def name(self) -> str:
        return f"oracle_w{self.n_workers}_c{self.chunksize}"

    @classmethod
    def parse(cls, name: str) -> GridPoint:
        match = _NAME_RE.match(name)
        if match is None:
            raise ValueError(f"not an oracle grid point name: {name!r}")
        return cls(int(match["w"]), int(match["c"]))


def worker_counts(n_cores: int, *, quick: bool) -> list[int]:
    """``1..n_cores`` for the full grid; only ``n_cores`` for --quick, whose workloads are
    pure-Python CPU work or trivial, where fewer workers than cores cannot beat both serial
    and all cores (the full grid keeps them for the BLAS workload)."""
    if quick:
        return [n_cores]
    return list(range(1, n_cores + 1))


def grid(n_items: int, n_cores: int, *, quick: bool) -> list[GridPoint]:
    """Every grid point for a workload of ``n_items`` items, deduplicated and sorted.

    Chunksizes above ``n_items`` are clipped to ``n_items`` (one chunk holds everything).
    """
    fixed = CHUNKSIZES_QUICK if quick else CHUNKSIZES_FULL
    points: set[GridPoint] = set()
    for n_workers in worker_counts(n_cores, quick=quick):
        derived = (math.ceil(n_items / (4 * n_workers)), math.ceil(n_items / n_workers))
        for chunksize in (*fixed, *derived):
            clipped = max(1, min(chunksize, n_items))
            if quick and math.ceil(n_items / clipped) > MAX_TASKS_QUICK:
                continue
            points.add(GridPoint(n_workers, clipped))
    return sorted(points)


def prepare(point: GridPoint) -> Runner:
    """A runner for one grid point: fork-context ``ProcessPoolExecutor`` end to end."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("fork")

    def run(fn: Fn, items: Iterable[Any], info: dict[str, Any]) -> list[Any]:
        with ProcessPoolExecutor(max_workers=point.n_workers, mp_context=context) as ex:
            return list(ex.map(fn, items, chunksize=point.chunksize))

    return run


def points_to_repeat(fastest_s: dict[str, float], *, quick: bool) -> set[str]:
    """Names (grid points, and ``serial``) whose fastest time so far is close enough to the
    best to be worth more repetitions."""
    if not fastest_s:
        return set()
    factor = PRUNE_FACTOR_QUICK if quick else PRUNE_FACTOR_FULL
    best_s = min(fastest_s.values())
    return {name for name, seconds in fastest_s.items() if seconds <= factor * best_s}
