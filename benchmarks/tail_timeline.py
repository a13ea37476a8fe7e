"""When does each worker start and finish on a job with a slow end? A timeline, not a race.

    python -m benchmarks.tail_timeline [--runs 3]

Maps a function that spins for a set wall time (0.2 ms for items 0-2969, 20 ms for the 30
items at the end, as ``skewed_tail``) and returns which process ran it and when, with this
executor and with a forked stdlib pool of 2 workers at ``chunksize=16`` (the best static
configuration for ``skewed_tail`` here). For each process it prints when its first item
started, when its last item ended, the time spent in items and the gaps between them. The
spread between the workers' last ends is what a static split loses at the end of a job.

The items spin on the clock rather than on a count of operations, so a worker that loses
its CPU to another process does not take longer: the timeline shows scheduling, not the
machine's speed. Each run is a fresh process, as in ``run.py``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

N_ITEMS = 3_000
N_SLOW = 30
FAST_S = 0.0002
SLOW_S = 0.02
REPO_ROOT = Path(__file__).resolve().parent.parent


def stamped_spin(i: int) -> tuple[int, float, float]:
    """Spin for this item's duration; return (pid, start, end) on the monotonic clock."""
    start = time.perf_counter()
    end = start + (SLOW_S if i >= N_ITEMS - N_SLOW else FAST_S)
    while time.perf_counter() < end:
        pass
    return os.getpid(), start, time.perf_counter()


def _one_run(who: str) -> dict[str, object]:
    """Map the items with ``who`` in this process; the timeline as JSON-ready figures."""
    import multiprocessing
    from concurrent.futures import Executor, ProcessPoolExecutor

    from amorsize_executor import AdaptiveProcessPoolExecutor

    items = list(range(N_ITEMS))
    executor: Executor
    t0 = time.perf_counter()
    if who == "ours":
        executor = AdaptiveProcessPoolExecutor()  # it chooses workers and chunk sizes
    else:
        executor = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork"))
    with executor:
        if who == "ours":
            stamps = list(executor.map(stamped_spin, items))
        else:
            stamps = list(executor.map(stamped_spin, items, chunksize=16))
    total_s = time.perf_counter() - t0
    by_pid: dict[int, list[tuple[float, float]]] = {}
    for pid, start, end in stamps:
        by_pid.setdefault(pid, []).append((start - t0, end - t0))
    processes = []
    for pid, spans in by_pid.items():
        spans.sort()
        gaps = sum(max(0.0, b[0] - a[1]) for a, b in itertools.pairwise(spans))
        processes.append(
            {
                "caller": pid == os.getpid(),
                "items": len(spans),
                "first_start_s": spans[0][0],
                "last_end_s": spans[-1][1],
                "busy_s": sum(end - start for start, end in spans),
                "gaps_s": gaps,
            }
        )
    return {"who": who, "total_s": total_s, "processes": processes}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs of each (default 3)")
    parser.add_argument("--child", choices=("ours", "stdlib_c16"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_one_run(args.child)))
        return 0
    for run in range(1, args.runs + 1):
        for who in ("stdlib_c16", "ours"):
            out = subprocess.run(
                [sys.executable, "-m", "benchmarks.tail_timeline", "--child", who],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            record = json.loads(out.strip().splitlines()[-1])
            workers = [p for p in record["processes"] if not p["caller"]]
            ends = [p["last_end_s"] for p in workers]
            print(
                f"run {run} {who:10s} total {1e3 * record['total_s']:6.1f} ms; workers end "
                f"{', '.join(f'{1e3 * e:.1f}' for e in sorted(ends))} ms "
                f"(spread {1e3 * (max(ends) - min(ends)):.1f} ms)"
            )
            for p in sorted(record["processes"], key=lambda p: p["first_start_s"]):
                role = "caller" if p["caller"] else "worker"
                print(
                    f"    {role} {p['items']:5d} items  first start "
                    f"{1e3 * p['first_start_s']:6.1f} ms  last end {1e3 * p['last_end_s']:6.1f} ms"
                    f"  busy {1e3 * p['busy_s']:6.1f} ms  gaps {1e3 * p['gaps_s']:5.1f} ms"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
