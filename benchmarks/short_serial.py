"""Short jobs that serial should win, two versions side by side: does a change tax them?

    python -m benchmarks.short_serial HEAD~1 WORKTREE --rounds 7
    python -m benchmarks.short_serial HEAD~1 WORKTREE --items 16,50,100 --ms 0.1,0.5,1

Each job maps ``spin`` (``benchmarks.workloads``: pure-Python CPU work) over ``n`` items of
``ms`` milliseconds, inside ``with AdaptiveProcessPoolExecutor() as ex`` (the start of any
worker and the shutdown count). Every round runs each job once from each version, back to
back in alternating order, each in a fresh process, as ``benchmarks/versions.py`` does; the
table gives each version's median, the median and quartiles of the per-round ratio (second /
first), and how often the second version's run started workers and switched from a serial
plan to them.

Made for issue 14: any change that sends more short jobs to a pool (a background start of
the workers for a near tie, a smaller margin) must not make the jobs of 16-100 items of
0.1-1 ms that serial wins slower (``docs/cost-model.md``, "Short jobs of known length").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.run import REPO_ROOT
from benchmarks.versions import WORKTREE, _quartiles, _source_of
from benchmarks.workloads import SPIN_ITERS_PER_MS, spin


def _child(n_items: int, ms_per_item: float) -> None:
    """One timed job in this process; prints a JSON line."""
    from amorsize_executor import AdaptiveProcessPoolExecutor

    base = round(ms_per_item * SPIN_ITERS_PER_MS)
    items = [base + i % 7 for i in range(n_items)]
    started_s = time.perf_counter()
    with AdaptiveProcessPoolExecutor() as ex:
        results = list(ex.map(spin, items))
        n_workers = ex._backend.pool_size  # type: ignore[attr-defined]
    seconds = time.perf_counter() - started_s
    assert results == [spin(x) for x in items]
    plan = ex.last_plan
    switched = plan is not None and plan.outcome is not None and plan.outcome.switched_to_parallel
    print(json.dumps({"seconds": seconds, "workers": n_workers, "switched": switched}))


def _run_once(source: Path, n_items: int, ms_per_item: float) -> dict[str, float]:
    """One job in a fresh process importing the library from ``source``."""
    env = dict(os.environ, PYTHONPATH=f"{source}{os.pathsep}{REPO_ROOT}")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.short_serial",
            "--child",
            str(n_items),
            str(ms_per_item),
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    record: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", nargs="?", help=f"a git revision, or {WORKTREE}")
    parser.add_argument("second", nargs="?", help=f"a git revision, or {WORKTREE}")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per job (default 5)")
    parser.add_argument("--items", default="16,30,50,100", help="item counts (comma-separated)")
    parser.add_argument("--ms", default="0.1,0.3,0.5,1", help="ms per item (comma-separated)")
    parser.add_argument("--child", nargs=2, metavar=("N", "MS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(int(args.child[0]), float(args.child[1]))
        return 0
    if args.first is None or args.second is None:
        parser.error("two versions are needed (a git revision, or WORKTREE)")
    jobs = [(int(n), float(ms)) for n in args.items.split(",") for ms in args.ms.split(",")]
    lines = [
        f"{'job':>14s} {args.first[:10]:>10s} {args.second[:10]:>10s}   ratio (2nd/1st): "
        "median  quartiles    2nd: started workers, switched from serial"
    ]
    with _source_of(args.first) as first, _source_of(args.second) as second:
        for n_items, ms in jobs:
            times: tuple[list[float], list[float]] = ([], [])
            n_started = n_switched = 0
            for round_no in range(args.rounds):
                order = (0, 1) if round_no % 2 == 0 else (1, 0)
                for side in order:
                    record = _run_once((first, second)[side], n_items, ms)
                    times[side].append(record["seconds"])
                    if side == 1:
                        n_started += bool(record["workers"])
                        n_switched += bool(record["switched"])
            ratios = sorted(b / a for a, b in zip(*times, strict=True))
            low, high = _quartiles(ratios)
            job = f"{n_items} x {ms:g} ms"
            lines.append(
                f"{job:>14s} {1e3 * statistics.median(times[0]):8.1f}ms "
                f"{1e3 * statistics.median(times[1]):8.1f}ms   {statistics.median(ratios):6.3f}"
                f"  {low:.3f}-{high:.3f}   {n_started}/{args.rounds}, {n_switched}/{args.rounds}"
            )
            print(lines[-1], flush=True)
    print()
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
