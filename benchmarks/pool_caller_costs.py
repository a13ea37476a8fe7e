"""What a fresh pool costs the caller's own thread: starting it (the first ``submit()``, or our
backend's ``prepare``), a burst of ``submit()`` calls, and ``shutdown()``; the stdlib's
``ProcessPoolExecutor``, a bare loky pool and ours, on the fork context (``--method``: another),
side by side.

    python -m benchmarks.pool_caller_costs                 # from the repository root
    python -m benchmarks.pool_caller_costs --reps 15 --cases first,unused
    python -m benchmarks.pool_caller_costs --sides ours --base-src /tmp/base/src   # A/B
    python -m benchmarks.pool_caller_costs --sides ours --base-src /tmp/base/src --method spawn

Each measurement is a fresh interpreter (a first pool of the process, as in issue 12's host
programs), the sides interleaved in alternating order, ``--reps`` times; printed: the median
milliseconds of the caller's thread (``perf_counter`` around the call), per case:

- ``first``: the first ``submit()`` of a fresh pool of 2 (ours: ``prepare(2)`` then the
  submit, both counted; ``prep`` alone is printed too); then ``shutdown()`` right after its
  result (``shut_fresh``);
- ``idle``: as ``first``, then ``shutdown()`` after 0.1 s without work (``shut_idle``);
- ``burst``: 40 ``submit()`` calls to a fresh pool, as the host program
  ``after_thread_pool`` makes them (``burst40``), and ``warm40``: 40 more once all are done;
- ``unused``: ours (and ``base``) only: ``prepare(2)``, 50 ms for the workers to start,
  then ``shutdown()`` (``shut_unused``): a background start for a job that then ended serially;
- ``unstarted``: the same without the 50 ms: the job ended before the workers answered.

What this module must not do: run in the test suite (it times things).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SIDES = ("stdlib", "loky", "ours")
CASES = ("first", "idle", "burst", "unused", "unstarted")


def _make_pool(side: str, method: str) -> Any:
    import multiprocessing

    context = multiprocessing.get_context(method)
    if side == "stdlib":
        from concurrent.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(2, mp_context=context)
    if side == "loky":
        import warnings

        import loky

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return loky.ProcessPoolExecutor(2, context=loky.backend.get_context(method))
    from amorsize_executor import AdaptiveProcessPoolExecutor

    return AdaptiveProcessPoolExecutor(max_workers=2, mp_context=context)


def _ours(side: str) -> bool:
    return side in ("ours", "base")


def _child(side: str, case: str, method: str) -> dict[str, float]:
    pool = _make_pool(side, method)
    out: dict[str, float] = {}
    gc.collect()
    clock = time.perf_counter
    if case in ("unused", "unstarted"):
        t0 = clock()
        pool._backend.prepare(2)
        out["prep"] = clock() - t0
        if case == "unused":
            time.sleep(0.05)
        t0 = clock()
        pool.shutdown()
        out[f"shut_{case}"] = clock() - t0
        return out
    if case == "burst":
        t0 = clock()
        futures = [pool.submit(abs, -x) for x in range(40)]
        out["burst40"] = clock() - t0
        for future in futures:
            future.result()
        time.sleep(0.02)
        t0 = clock()
        futures = [pool.submit(abs, -x) for x in range(40)]
        out["warm40"] = clock() - t0
        for future in futures:
            future.result()
        pool.shutdown()
        return out
    t0 = clock()
    if _ours(side):
        pool._backend.prepare(2)
        out["prep"] = clock() - t0
    future = pool.submit(abs, -1)
    out["submit1"] = clock() - t0
    future.result()
    if case == "idle":
        time.sleep(0.1)
    t0 = clock()
    pool.shutdown()
    out["shut_fresh" if case == "first" else "shut_idle"] = clock() - t0
    return out


def run_once(side: str, case: str, base_src: str = "", method: str = "fork") -> dict[str, float]:
    env = dict(os.environ)
    src = base_src if side == "base" else str(ROOT / "src")
    env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.pool_caller_costs", "--child", side, case, method],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=9, help="runs of each side (default 9)")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated cases")
    parser.add_argument("--sides", default=",".join(SIDES), help="comma-separated sides")
    parser.add_argument(
        "--base-src",
        default="",
        help="a source tree of the library to compare with (adds the side 'base')",
    )
    parser.add_argument(
        "--method",
        default="fork",
        choices=("fork", "forkserver", "spawn"),
        help="the start method of every side's pool (default fork)",
    )
    parser.add_argument(
        "--child", nargs=3, metavar=("SIDE", "CASE", "METHOD"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(*args.child)))
        return 0
    sides = args.sides.split(",") + (["base"] if args.base_src else [])
    samples: dict[tuple[str, str], list[float]] = {}
    for rep in range(args.reps):
        for case in args.cases.split(","):
            order = sides if rep % 2 == 0 else sides[::-1]
            for side in order:
                if case in ("unused", "unstarted") and not _ours(side):
                    continue
                for key, seconds in run_once(side, case, args.base_src, args.method).items():
                    samples.setdefault((key, side), []).append(seconds * 1e3)
    keys = list(dict.fromkeys(key for key, _ in samples))
    print(f"caller ms, medians of {args.reps} fresh interpreters, {args.method}")
    print(f"{'':<16}" + "".join(f"{side:>9}" for side in sides))
    for key in keys:
        cells = [
            f"{statistics.median(samples[(key, s)]):>9.2f}" if (key, s) in samples else f"{'':>9}"
            for s in sides
        ]
        print(f"{key:<16}" + "".join(cells))
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average {load}; Python {sys.version.split()[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
