"""Where a fresh pool's first result spends its milliseconds: timestamps in the parent and in
the workers, the stdlib's pool against a bare loky pool and ours, in the same host program.

    python -m benchmarks.first_result_timeline                       # background_thread
    python -m benchmarks.first_result_timeline --program numpy_host --runs 9

Each run is a fresh interpreter running one program of ``tests/hosts/programs`` (issue 12's
sizes, ``HOST_BENCH=1``) with the pool the side names: ``stdlib`` (``ProcessPoolExecutor``),
``loky`` (``loky.ProcessPoolExecutor`` on the fork context, nothing of ours) or ``ours``. A
tracer wraps, before the program runs, the functions every step goes through, and each
process appends ``perf_counter`` readings (the system's monotonic clock, the same in every
process) to one file. Printed per side, medians over the runs, in ms after the program's
clock started (just before its pool is created):

- ``fork1``: the parent starts forking its first worker; ``ready1``/``ready2``: the first and
  second worker wait for their first task; ``call1``: a worker starts its first call (ours:
  the start-timing no-op); ``task``: a worker starts the user's first call; ``end``: it ends;
  ``got``: the parent's result thread has it; ``first``: the program holds it;
- ``cpu``: the parent's CPU time (all threads) until then.

The tracer costs a little in every step, so its timings are a map of where the time goes,
not the figures ``benchmarks/hosts.py`` reports. What this module must not do: run in the
test suite (it times things).
"""

from __future__ import annotations

import argparse
import functools
import os
import resource
import runpy
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = ROOT / "tests" / "hosts" / "programs"
SIDES = ("stdlib", "loky", "ours")
COLUMNS = ("fork1", "ready1", "ready2", "call1", "task", "end", "got", "first", "cpu")


class _Tracer:
    """The child's side: wraps the steps and writes ``seconds pid event`` lines."""

    def __init__(self, out_path: str) -> None:
        self._fd = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def event(self, name: str) -> None:
        os.write(self._fd, f"{time.perf_counter():.6f} {os.getpid()} {name}\n".encode())

    def wrap(self, owner: Any, attribute: str, label: str, after: bool = False) -> None:
        original = getattr(owner, attribute)

        @functools.wraps(original)
        def traced(*args: Any, **kwargs: Any) -> Any:
            self.event(f"{label} begin")
            try:
                return original(*args, **kwargs)
            finally:
                if after:
                    self.event(f"{label} end")

        setattr(owner, attribute, traced)


def _cpu_ms() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return (usage.ru_utime + usage.ru_stime) * 1e3


def _run_child(program: str, side: str, out_path: str) -> None:
    """Run ``program`` with ``side``'s pool under the tracer (in a fresh interpreter)."""
    sys.argv = [program, "ours" if side == "ours" else "stdlib"]
    sys.path.insert(0, str(PROGRAMS))
    tracer = _Tracer(out_path)
    import concurrent.futures.process as stdlib_process
    import multiprocessing
    import multiprocessing.queues

    import _host  # type: ignore[import-not-found]
    import loky
    import loky.process_executor as loky_process

    os.register_at_fork(after_in_child=lambda: tracer.event("child"))
    tracer.wrap(stdlib_process, "_process_worker", "worker")
    tracer.wrap(loky_process, "_process_worker", "worker")
    tracer.wrap(loky_process._CallItem, "__call__", "call")
    original_fork = os.fork

    def fork() -> int:
        tracer.event("fork")
        return original_fork()

    os.fork = fork
    original_get = multiprocessing.queues.Queue.get

    def get(queue: Any, *args: Any, **kwargs: Any) -> Any:
        tracer.event("ready")
        return original_get(queue, *args, **kwargs)

    multiprocessing.queues.Queue.get = get  # type: ignore[method-assign]
    for manager in (stdlib_process._ExecutorManagerThread, loky_process._ExecutorManagerThread):
        original_wait = manager.wait_result_broken_or_wakeup

        def wait(thread: Any, _original: Callable[..., Any] = original_wait) -> Any:
            result = _original(thread)
            tracer.event("got")
            return result

        manager.wait_result_broken_or_wakeup = wait  # type: ignore[method-assign]
    original_spin = _host.spin

    def spin(x: int, seconds: float = _host.WORK_S) -> int:
        tracer.event("task begin")
        result: int = original_spin(x, seconds)
        tracer.event("task end")
        return result

    spin.__module__, spin.__qualname__ = "_host", "spin"
    _host.spin = spin
    original_clock_init = _host.Clock.__init__
    n_reads = [0]

    def clock_init(clock: Any) -> None:
        tracer.event(f"clock cpu={_cpu_ms():.3f}")
        original_clock_init(clock)

    def clock_read(clock: Any) -> float:
        n_reads[0] += 1
        if n_reads[0] == 1:
            tracer.event(f"first cpu={_cpu_ms():.3f}")
        return float(time.perf_counter() - clock.started_s)

    _host.Clock.__init__ = clock_init
    _host.Clock.__call__ = clock_read
    if side == "loky":
        fork_context = multiprocessing.get_context("fork")

        def bare_loky(max_workers: int | None = None, **options: Any) -> Any:
            return loky.ProcessPoolExecutor(max_workers, context=fork_context, **options)

        _host.pool_class = lambda: bare_loky
    runpy.run_path(str(PROGRAMS / f"{program}.py"), run_name="__main__")


def milestones(lines: list[str]) -> dict[str, float]:
    """The milestones of one run (ms after the program's clock started; see the module
    docstring), from the tracer's lines."""
    rows = sorted(
        (float(t), int(pid), event) for t, pid, event in (ln.split(" ", 2) for ln in lines)
    )
    clock_s, parent, clock_cpu = next(
        (t, pid, float(e.split("=")[1])) for t, pid, e in rows if e.startswith("clock")
    )
    rows = [(t, pid, e) for t, pid, e in rows if t >= clock_s]

    def at(pred: Callable[[int, str], bool], after_s: float = 0.0, nth: int = 0) -> float:
        hits = [t for t, pid, e in rows if t >= after_s and pred(pid, e)]
        return (hits[nth] - clock_s) * 1e3 if len(hits) > nth else float("nan")

    workers = sorted({pid for _, pid, e in rows if e == "child"})
    ready = sorted(
        next((t for t, pid, e in rows if pid == w and e == "ready"), float("inf")) for w in workers
    )
    first_row = next((t, e) for t, pid, e in rows if e.startswith("first"))
    task_end_s = clock_s + at(lambda pid, e: e == "task end") / 1e3
    return {
        "fork1": at(lambda pid, e: pid == parent and e == "fork"),
        "ready1": (ready[0] - clock_s) * 1e3 if ready else float("nan"),
        "ready2": (ready[1] - clock_s) * 1e3 if len(ready) > 1 else float("nan"),
        "call1": at(lambda pid, e: pid != parent and e in ("call begin", "task begin")),
        "task": at(lambda pid, e: pid != parent and e == "task begin"),
        "end": at(lambda pid, e: e == "task end"),
        "got": at(lambda pid, e: pid == parent and e == "got", task_end_s),
        "first": (first_row[0] - clock_s) * 1e3,
        "cpu": float(first_row[1].split("=")[1]) - clock_cpu,
    }


def run_side(program: str, side: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        out_path = os.path.join(tmp, "trace.txt")
        env = dict(os.environ, HOST_BENCH="1")
        env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])]
        )
        subprocess.run(
            [
                sys.executable,
                "-m",
                "benchmarks.first_result_timeline",
                "--child",
                program,
                side,
                out_path,
            ],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        with open(out_path) as handle:
            return milestones(handle.read().splitlines())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--program", default="background_thread", help="a host program")
    parser.add_argument("--runs", type=int, default=7, help="runs of each side (default 7)")
    parser.add_argument("--sides", default=",".join(SIDES), help="comma-separated sides")
    parser.add_argument(
        "--child", nargs=3, metavar=("PROGRAM", "SIDE", "OUT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args(argv)
    if args.child:
        _run_child(*args.child)
        return 0
    sides = args.sides.split(",")
    runs: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
    for rep in range(args.runs):
        for side in sides if rep % 2 == 0 else sides[::-1]:
            runs[side].append(run_side(args.program, side))
    print(f"{args.program}: medians of {args.runs} runs, ms after the program's clock started")
    print(f"{'side':<8}" + "".join(f"{c:>8}" for c in COLUMNS))
    for side in sides:
        medians = [statistics.median(r[c] for r in runs[side]) for c in COLUMNS]
        print(f"{side:<8}" + "".join(f"{m:>8.2f}" for m in medians))
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average {load}; Python {sys.version.split()[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
