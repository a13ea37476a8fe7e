"""When a ``map()`` of issue 12's host programs gets its workers going: the probe's calls in the
caller, the pool's start, the first chunks, the first results, against the stdlib's pool.

    python -m benchmarks.probe_timeline               # ~20 s on 2 cores
    python -m benchmarks.probe_timeline --runs 15

Each run is a fresh interpreter mapping ``spin`` (``tests/hosts/programs/_host.py`` at issue
12's sizes: 30 items of about 10 ms, ``max_workers=2``) over ``range(30)``, either in a fresh
pool or in one whose workers a ``submit()`` left warm (as the background-thread and numpy
host programs do), with ``AdaptiveProcessPoolExecutor`` (``ours``) or the stdlib's
``ProcessPoolExecutor``. Ours is traced by wrapping the backend's steps (``prepare``,
``submit_chunk``, the start-timing no-op's answer, each chunk's completion); both report when
results 0, 1, 2 and the last one reached the program. Printed per scenario and pool: the
median over the runs of each event's first time, in ms after ``map()`` was called, and in
how many runs it happened:

- ``r0``, ``r1``, ``r2``, ``r29``: the program holds result 0, 1, 2, the last;
- ``prep``/``prep_out``: ours starts (returns from) its first ``prepare`` call;
- ``sent``: its first chunk is submitted; ``ready``: a fresh pool's start-timing no-op
  answered (a worker is up); ``done``: its first chunk completed; ``end``: ``map()`` drained.

The wrappers cost a few microseconds per step: a map of where the milliseconds go, not the
figures ``benchmarks/hosts.py`` reports. Made for issue 12's remaining gap in the host
programs (ours 1.08-1.11x the stdlib's time): with a fresh pool, the probe's two calls run
in the caller before the workers are forked; with warm workers, those sit idle during them.
What this module must not do: run in the test suite (it times things).
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
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = ROOT / "tests" / "hosts" / "programs"
SCENARIOS = ("fresh", "warm")
POOLS = ("stdlib", "ours")
EVENTS = ("r0", "r1", "prep", "prep_out", "sent", "ready", "done", "r2", "r29", "end")
N_ITEMS = 30


def _child(scenario: str, pool_name: str) -> None:
    """One traced ``map()`` in this process; prints the events' first times as JSON."""
    os.environ["HOST_BENCH"] = "1"
    sys.path.insert(0, str(PROGRAMS))
    from _host import MAX_WORKERS, spin  # type: ignore[import-not-found]

    events: dict[str, float] = {}
    origin = [0.0]

    def note(name: str) -> None:
        events.setdefault(name, (time.perf_counter() - origin[0]) * 1e3)

    if pool_name == "ours":
        from amorsize_executor import AdaptiveProcessPoolExecutor as Pool
        from amorsize_executor import _pool_backend

        _trace_backend(_pool_backend, note)
    else:
        from concurrent.futures import ProcessPoolExecutor as Pool  # type: ignore[assignment]

    with Pool(max_workers=MAX_WORKERS) as pool:
        if scenario == "warm":
            pool.submit(spin, 1).result()
            events.clear()
        origin[0] = time.perf_counter()
        for index, _ in enumerate(pool.map(spin, range(N_ITEMS))):
            if index in (0, 1, 2, N_ITEMS - 1):
                note(f"r{index}")
        note("end")
    print(json.dumps(events))


def _trace_backend(pool_backend: Any, note: Any) -> None:
    """Wrap the pool backend's steps so that each reports its first time to ``note``."""
    backend_class = pool_backend.PoolBackend
    prepare, submit_chunk = backend_class.prepare, backend_class.submit_chunk
    on_answer = pool_backend._StartRecorder.on_answer

    def traced_prepare(self: Any, n_workers: int) -> None:
        note("prep")
        prepare(self, n_workers)
        note("prep_out")

    def traced_submit_chunk(self: Any, payload: Any) -> Any:
        note("sent")
        future = submit_chunk(self, payload)
        future.add_done_callback(lambda _: note("done"))
        return future

    def traced_on_answer(self: Any, future: Any) -> None:
        note("ready")
        on_answer(self, future)

    backend_class.prepare = traced_prepare
    backend_class.submit_chunk = traced_submit_chunk
    pool_backend._StartRecorder.on_answer = traced_on_answer


def _run_once(scenario: str, pool_name: str) -> dict[str, float]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.probe_timeline", "--child", scenario, pool_name],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{scenario}/{pool_name} failed: {done.stderr.strip()[-600:]}")
    events: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return events


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="runs per scenario and pool")
    parser.add_argument("--child", nargs=2, metavar=("SCENARIO", "POOL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return
    runs: dict[tuple[str, str], list[dict[str, float]]] = {}
    for index in range(args.runs):
        for scenario in SCENARIOS:
            # Alternating order, so that a drift in the machine's load hits both pools alike.
            pools = POOLS if index % 2 == 0 else tuple(reversed(POOLS))
            for pool_name in pools:
                runs.setdefault((scenario, pool_name), []).append(_run_once(scenario, pool_name))
    print(f"ms after map() was called, medians of {args.runs} runs (in how many runs, if fewer)")
    print(f"{'scenario':9} {'pool':7}" + "".join(f"{name:>11}" for name in EVENTS))
    for (scenario, pool_name), results in runs.items():
        cells = []
        for name in EVENTS:
            times = [events[name] for events in results if name in events]
            cell = "" if not times else f"{statistics.median(times):.1f}"
            if times and len(times) < len(results):
                cell += f" ({len(times)})"
            cells.append(f"{cell:>11}")
        print(f"{scenario:9} {pool_name:7}" + "".join(cells))
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")


if __name__ == "__main__":
    main()
