"""Where the host program ``mp_objects`` spends its milliseconds, phase by phase: the stdlib's
``ProcessPoolExecutor``, a bare loky pool (fork context) and ours, and the caller's CPU time
(all its threads) at each phase.

    python -m benchmarks.mp_objects_phases                        # from the repository root
    python -m benchmarks.mp_objects_phases --reps 15 --sides stdlib,ours --base-src /tmp/b/src

Each run is a fresh interpreter doing what ``tests/hosts/programs/mp_objects.py`` does (a
thread running; a fresh pool of 2 whose initializer receives seven ``multiprocessing``
objects; 30 ``submit()`` calls of a function that takes three of the locks; a ``submit()``
refused because it passes a lock; ``shutdown()``), with a clock read after each step. The
sides run interleaved in alternating order, ``--reps`` times; ``--base-src`` adds ``base``:
ours from another source tree, for A/B. Printed: per phase the median milliseconds after the
program's clock started (just before the pool is created), and the median CPU time of the
caller's process then (``process_time``: every thread of the caller, the pool's own too,
none of the workers'). On 2 cores two starting workers and the caller share the machine, so
the caller's CPU before a phase is time the workers could not have.

What this module must not do: run in the test suite (it times things).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = ROOT / "tests" / "hosts" / "programs"
SIDES = ("stdlib", "loky", "ours")
PHASES = ("pool", "submit1", "submit30", "result1", "result30", "refused", "shutdown")
"""After: the constructor, the first ``submit()``, the 30th, the first result, the 30th, the
refused ``submit()``'s error, ``shutdown()``."""


def _make_pool(side: str, initializer: Any, initargs: tuple[Any, ...]) -> Any:
    import multiprocessing

    if side == "stdlib":
        from concurrent.futures import ProcessPoolExecutor

        return ProcessPoolExecutor(2, initializer=initializer, initargs=initargs)
    if side == "loky":
        import loky

        return loky.ProcessPoolExecutor(
            2,
            context=multiprocessing.get_context("fork"),
            initializer=initializer,
            initargs=initargs,
        )
    from amorsize_executor import AdaptiveProcessPoolExecutor

    return AdaptiveProcessPoolExecutor(2, initializer=initializer, initargs=initargs)


def _child(side: str) -> None:
    """One run, in a fresh interpreter: print the phases as one JSON line."""
    import gc
    import multiprocessing
    import threading
    import time

    sys.path.insert(0, str(PROGRAMS))
    from mp_objects import holds, keep, use  # type: ignore[import-not-found]

    stop = threading.Event()
    threading.Thread(target=stop.wait, daemon=True).start()
    objects = (
        multiprocessing.Lock(),
        multiprocessing.RLock(),
        multiprocessing.Semaphore(2),
        multiprocessing.Event(),
        multiprocessing.Queue(),
        multiprocessing.Value("i", 0),
        multiprocessing.Array("i", 3),
    )
    # The pool's class imported before the clock, as a program imports it at its top.
    if side != "stdlib":
        import loky  # noqa: F401
    if side in ("ours", "base"):
        from amorsize_executor import AdaptiveProcessPoolExecutor  # noqa: F401
    gc.collect()
    wall: dict[str, float] = {}
    cpu: dict[str, float] = {}
    cpu_0, wall_0 = time.process_time(), time.perf_counter()

    def mark(phase: str) -> None:
        wall[phase] = time.perf_counter() - wall_0
        cpu[phase] = time.process_time() - cpu_0

    pool = _make_pool("ours" if side == "base" else side, keep, objects)
    mark("pool")
    futures = [pool.submit(use, 0)]
    mark("submit1")
    futures += [pool.submit(use, x) for x in range(1, 30)]
    mark("submit30")
    futures[0].result(timeout=60)
    mark("result1")
    results = [future.result(timeout=60) for future in futures]
    mark("result30")
    # Refused, as the program expects (the exception's type differs by side).
    with contextlib.suppress(Exception):
        pool.submit(holds, multiprocessing.Lock(), 1).result(timeout=60)
    mark("refused")
    pool.shutdown()
    mark("shutdown")
    stop.set()
    assert results == list(range(30)), results
    print("PHASES " + json.dumps({"wall": wall, "cpu": cpu}))


def run_once(side: str, base_src: str = "") -> dict[str, dict[str, float]]:
    """One run of ``side`` in a fresh interpreter."""
    env = dict(os.environ)
    src = base_src if side == "base" else str(ROOT / "src")
    env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.mp_objects_phases", "--child", side],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
    )
    for line in done.stdout.splitlines():
        if line.startswith("PHASES "):
            result: dict[str, dict[str, float]] = json.loads(line[len("PHASES ") :])
            return result
    raise RuntimeError(f"{side}: no PHASES line (exit {done.returncode}): {done.stderr[-600:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=9, help="runs of each side (default 9)")
    parser.add_argument("--sides", default=",".join(SIDES), help="comma-separated sides")
    parser.add_argument("--base-src", default="", help="another src tree of ours, as 'base'")
    parser.add_argument("--child", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child)
        return 0
    sides = args.sides.split(",") + (["base"] if args.base_src else [])
    runs: dict[str, list[dict[str, dict[str, float]]]] = {side: [] for side in sides}
    for rep in range(args.reps):
        for side in sides if rep % 2 == 0 else sides[::-1]:
            runs[side].append(run_once(side, args.base_src))
    print(f"{'ms after start':<16}" + "".join(f"{side:>10}" for side in sides))
    for kind, label in (("wall", ""), ("cpu", "cpu ")):
        for phase in PHASES:
            cells = "".join(
                f"{statistics.median(run[kind][phase] for run in runs[side]) * 1e3:>10.2f}"
                for side in sides
            )
            print(f"{label + phase:<16}{cells}")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"medians of {args.reps} runs; load average {load}; Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
