"""Real host programs, each run the way its users run it, give the stdlib pool's results.

Every program of ``programs/`` runs twice in a fresh interpreter: with the stdlib's
``ProcessPoolExecutor``, then with ``AdaptiveProcessPoolExecutor`` in its place. Each prints
one ``RESULT {json}`` line; everything but its timings must be equal. The programs are the
places where the executor once failed or differed (issue 12): in-memory standard streams
(click's ``CliRunner``, ``redirect_stdout``/``redirect_stderr``, pytest's ``capsys`` and
``capfd``), ``multiprocessing`` objects handed to workers (tqdm's ``process_map``, a
``Manager()`` lock, locks, queues and shared values through ``initargs``), other event loops
and pools (asyncio, a thread pool's futures), threads in the caller (a logging thread,
numpy's BLAS, a finished thread pool), nested pools, and a task-graph library (dask)
submitting its tasks to the pool. ``benchmarks/hosts.py`` times the
same programs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

PROGRAMS = Path(__file__).resolve().parent / "programs"
SRC = Path(__file__).resolve().parents[2] / "src"
RUN_TIMEOUT_S = 120


def run(program: str, pool: str) -> tuple[dict[str, Any], str]:
    """Run ``programs/<program>.py`` with ``pool`` in a fresh interpreter: its ``RESULT``
    without timings, and its standard error."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), *filter(None, [env.get("PYTHONPATH")])])
    env.pop("HOST_BENCH", None)
    env.pop("PYTHONFAULTHANDLER", None)  # the crash test reads loky's default crash report
    done = subprocess.run(
        [sys.executable, str(PROGRAMS / f"{program}.py"), pool],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        cwd=PROGRAMS,
        env=env,
    )
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[len("RESULT ") :])
            result.pop("elapsed_s", None)
            result.pop("first_s", None)
            return result, done.stderr
    raise AssertionError(
        f"{program} with the {pool} pool printed no RESULT (exit status {done.returncode}):\n"
        f"{done.stderr[-3000:]}"
    )


@pytest.mark.parametrize(
    "program",
    [
        "cli_runner",  # click's CliRunner: in-memory sys.stdout/sys.stderr
        "redirected_streams",  # redirect_stdout/redirect_stderr(io.StringIO()), fn prints
        "process_map",  # tqdm: a multiprocessing RLock through initargs
        "asyncio_loop",  # loop.run_in_executor
        "mixed_futures",  # as_completed/wait over ours and a ThreadPoolExecutor's futures
        "background_thread",  # a logging QueueListener thread runs
        "numpy_host",  # numpy imported, its BLAS threads running
        "after_thread_pool",  # a ThreadPoolExecutor ran before
        "manager_lock",  # a Manager() lock and dict through submit()
        "mp_objects",  # Lock, RLock, Semaphore, Event, Queue, Value, Array through initargs
        "nested",  # map() inside a worker of another pool
        "task_graph",  # dask's multiprocessing scheduler submitting 100 tasks to the pool
    ],
)
def test_host_program_gives_the_stdlib_results(program: str) -> None:
    stdlib, _ = run(program, "stdlib")
    ours, stderr = run(program, "ours")
    assert ours == stdlib, stderr[-3000:]


def test_tests_using_the_pool_pass_under_pytest_capsys_and_capfd() -> None:
    stdlib, _ = run("pytest_capture", "stdlib")
    ours, stderr = run("pytest_capture", "ours")
    assert stdlib == {"exit_code": 0}
    assert ours == stdlib, stderr[-3000:]


def test_worker_crash_under_redirected_stderr_is_reported_with_its_cause() -> None:
    stdlib, _ = run("crash_redirected", "stdlib")
    ours, stderr = run("crash_redirected", "ours")
    assert stdlib["error"] == ours["error"] == "BrokenProcessPool"
    # The signal that killed the worker, and its Python stack on the process's stderr.
    assert "SIGSEGV" in ours["message"]
    assert "Segmentation fault" in stderr and "crash_in_worker" in stderr
