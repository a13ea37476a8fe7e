"""Real host programs (those of ``tests/hosts``), the stdlib's pool against ours, side by side.

    python -m benchmarks.hosts                    # from the repository root; ~1-2 min on 2 cores
    python -m benchmarks.hosts --reps 9 --only numpy_host,background_thread

Each program of ``tests/hosts/programs`` runs in a fresh interpreter, once with the stdlib's
``ProcessPoolExecutor`` and once with ``AdaptiveProcessPoolExecutor`` in its place, in
alternating order, ``--reps`` times each; ``HOST_BENCH=1`` gives them issue 12's sizes
(items of about 10 ms). A program times itself from just before its fresh pool is created
to after it shut down (``elapsed_s``), so interpreter start and imports are left out; the
programs that start a pool in a multi-threaded process (a background thread, numpy's BLAS
threads, a finished thread pool) also report when the fresh pool's first parallel result
arrived (``first_s``).

Printed: per program the median of each side, and ours / stdlib; issue 12's targets are at
most 1.10 for every program and at most 1.2 for the first result in a multi-threaded
process. A program whose results differ between the two sides prints FAIL and makes the exit
status 1. What this module must not do: run in the test suite (it times things).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = ROOT / "tests" / "hosts" / "programs"

TIMED = (
    "cli_runner",
    "redirected_streams",
    "process_map",
    "asyncio_loop",
    "mixed_futures",
    "background_thread",
    "numpy_host",
    "after_thread_pool",
    "manager_lock",
    "mp_objects",
    "nested",
    "task_graph",
    "pytest_capture",
)
"""Programs timed (``crash_redirected`` is left out: it times a crash)."""

FIRST_RESULT = ("background_thread", "numpy_host", "after_thread_pool")
"""Programs that also report their fresh pool's first parallel result (``first_s``)."""

TARGET_RATIO = 1.10
TARGET_FIRST_RATIO = 1.2


def run_once(program: str, pool: str, timeout_s: float) -> dict[str, Any]:
    """One run of ``program`` with ``pool`` (``stdlib`` or ``ours``) in a fresh interpreter."""
    env = dict(os.environ, HOST_BENCH="1")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])]
    )
    done = subprocess.run(
        [sys.executable, str(PROGRAMS / f"{program}.py"), pool],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=PROGRAMS,
        env=env,
    )
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[len("RESULT ") :])
            return result
    raise RuntimeError(
        f"{program} with {pool} printed no RESULT (exit status {done.returncode}): "
        f"{done.stderr.strip()[-600:]}"
    )


def _outcome(result: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in result.items() if k not in ("elapsed_s", "first_s")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="runs of each side (default 5)")
    parser.add_argument("--only", default="", help="comma-separated program names")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per run")
    args = parser.parse_args(argv)
    programs = [p for p in TIMED if not args.only or p in args.only.split(",")]
    failed = False
    rows: list[tuple[str, float, float]] = []
    print(f"{'program':<30} {'stdlib':>9} {'ours':>9} {'ratio':>6}  target", flush=True)
    for program in programs:
        times: dict[str, dict[str, list[float]]] = {
            side: {"elapsed_s": [], "first_s": []} for side in ("stdlib", "ours")
        }
        outcomes: dict[str, Any] = {}
        for rep in range(args.reps):
            order = ("stdlib", "ours") if rep % 2 == 0 else ("ours", "stdlib")
            for side in order:
                result = run_once(program, side, args.timeout)
                outcomes.setdefault(side, _outcome(result))
                for key in ("elapsed_s", "first_s"):
                    if result.get(key) is not None:
                        times[side][key].append(float(result[key]))
        if outcomes["stdlib"] != outcomes["ours"]:
            failed = True
            print(f"FAIL {program}: results differ: {outcomes}")
        keys = ["elapsed_s"] + (["first_s"] if program in FIRST_RESULT else [])
        for key in keys:
            label = program if key == "elapsed_s" else f"  {program} first result"
            target = TARGET_RATIO if key == "elapsed_s" else TARGET_FIRST_RATIO
            stdlib_s = statistics.median(times["stdlib"][key])
            ours_s = statistics.median(times["ours"][key])
            ratio = ours_s / stdlib_s
            rows.append((label, stdlib_s, ours_s))
            verdict = "ok" if ratio <= target else "OVER"
            print(
                f"{label:<30} {stdlib_s * 1e3:>7.1f}ms {ours_s * 1e3:>7.1f}ms {ratio:>6.2f}"
                f"  <={target:.2f} {verdict}",
                flush=True,
            )
    print(
        f"\nmedians of {args.reps} runs each; Python {sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
