"""Many short jobs, each in a fresh executor: a pool per executor against ``keep_warm``.

    python -m benchmarks.warm_pool                  # from the repository root; ~10-20 s
    python -m benchmarks.warm_pool --jobs 20 --items 200 --reps 3 --keep-warm 60

The pattern ``keep_warm`` is for: a function called again and again that opens
``with AdaptiveProcessPoolExecutor() as ex:`` and maps a short job. One repetition of a
contender runs ``--jobs`` such jobs back to back in this process, each of ``--items`` items
of about 1 ms of pure-Python CPU, and times every job end to end (executor creation, the
map, results into a list, shutdown). Contenders:

- ``serial``: ``list(map(fn, items))``, the reference for the result check;
- ``own pool``: the default, each executor starts its own pool and stops it at shutdown;
- ``keep_warm``: ``keep_warm=--keep-warm``, the executors share one pool that stays warm
  between jobs. Its shared pool is stopped after each repetition, outside the timed region,
  so every repetition starts cold (its first job pays the start) and the other contenders
  never run while its threads are alive (which would change the start method they get).

Printed per contender: the median over repetitions of the total for all jobs, of the median
job, and of the first job, with the plan of the last job. Contenders run in a different
order each repetition. Results must equal serial's; a mismatch prints FAIL and makes the
exit status 1. What this module must not do: run in the test suite (it times things).
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make `benchmarks` importable (workers too)
    sys.path.insert(0, str(ROOT))

from benchmarks.workloads import SPIN_ITERS_PER_MS, spin  # noqa: E402


def one_ms_item(x: int) -> int:
    """About 1 ms of CPU; the result depends on the item, so order mistakes show."""
    return spin(SPIN_ITERS_PER_MS + x % 8) ^ x


Fn = Callable[[int], int]
Job = Callable[[Fn, list[int]], tuple[list[int], str]]


@dataclass
class Row:
    contender: str
    totals_s: list[float] = field(default_factory=list)
    median_jobs_s: list[float] = field(default_factory=list)
    first_jobs_s: list[float] = field(default_factory=list)
    plan: str = ""
    ok: bool = True


def describe(plan: Any) -> str:
    if plan is None:
        return ""
    if plan.mode == "serial":
        return "serial"
    return (
        f"{plan.n_workers} workers ({plan.facts.n_warm_workers} warm, "
        f"{plan.facts.start_method}), chunks {plan.chunksize}"
    )


def make_jobs(keep_warm_s: float) -> dict[str, Job]:
    from amorsize_executor import AdaptiveProcessPoolExecutor

    def serial(fn: Fn, items: list[int]) -> tuple[list[int], str]:
        return list(map(fn, items)), "serial"

    def ours_with(**options: Any) -> Job:
        def job(fn: Fn, items: list[int]) -> tuple[list[int], str]:
            with AdaptiveProcessPoolExecutor(**options) as ex:
                results = list(ex.map(fn, items))
                plan = ex.last_plan
            return results, describe(plan)

        return job

    return {
        "serial": serial,
        "own pool": ours_with(),
        "keep_warm": ours_with(keep_warm=keep_warm_s),
    }


def run(n_jobs: int, n_items: int, reps: int, keep_warm_s: float) -> list[Row]:
    from amorsize_executor._shared_pools import shutdown_shared_pools

    # Workers import the function by reference, as they would a user's installed module.
    fn: Fn = importlib.import_module("benchmarks.warm_pool").one_ms_item
    items = list(range(n_items))
    expected = list(map(fn, items))  # warms this process's caches too
    jobs = make_jobs(keep_warm_s)
    rows = {name: Row(name) for name in jobs}
    for rep in range(reps):
        order = list(jobs)
        shift = rep % len(order)
        for name in order[shift:] + order[:shift]:
            row = rows[name]
            times_s = []
            for _ in range(n_jobs):
                start_s = time.perf_counter()
                results, row.plan = jobs[name](fn, items)
                times_s.append(time.perf_counter() - start_s)
                row.ok = row.ok and results == expected
            shutdown_shared_pools()  # outside the timed region: the next one starts cold
            row.totals_s.append(sum(times_s))
            row.median_jobs_s.append(statistics.median(times_s))
            row.first_jobs_s.append(times_s[0])
            print(
                f"  rep {rep + 1} {name}: total {sum(times_s):.3f} s, "
                f"median job {statistics.median(times_s) * 1e3:.1f} ms",
                flush=True,
            )
    return list(rows.values())


def format_table(rows: list[Row], n_jobs: int, n_items: int, reps: int) -> str:
    head = (
        f"{'contender':<10} {'total s':>8} {'median job ms':>14} {'first job ms':>13}  "
        f"{'check':<5} plan of the last job"
    )
    lines = [
        f"{n_jobs} jobs x {n_items} items of ~1 ms CPU, each job in a fresh executor; "
        f"medians of {reps} repetitions",
        head,
        "-" * len(head),
    ]
    for r in rows:
        lines.append(
            f"{r.contender:<10} {statistics.median(r.totals_s):>8.3f} "
            f"{statistics.median(r.median_jobs_s) * 1e3:>14.1f} "
            f"{statistics.median(r.first_jobs_s) * 1e3:>13.1f}  "
            f"{'ok' if r.ok else 'FAIL':<5} {r.plan}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=20, help="jobs per repetition (20)")
    parser.add_argument("--items", type=int, default=200, help="items per job (200)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (3)")
    parser.add_argument("--keep-warm", type=float, default=60.0, help="keep_warm seconds (60)")
    args = parser.parse_args(argv)
    rows = run(args.jobs, args.items, args.reps, args.keep_warm)
    print(format_table(rows, args.jobs, args.items, args.reps))
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
