"""Shutting down a pool none of the caller's work went to (workers started in the background
for a job that then ran serially): its workers are killed, not joined, and only then; loky
reports nothing, nothing the workers wrote is lost. Real processes, no timing."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pytest

from amorsize_executor import AdaptiveProcessPoolExecutor
from amorsize_executor._pool_futures import _kill

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent


def _noop() -> None:
    pass


def _started(n_workers: int, **options: Any) -> tuple[AdaptiveProcessPoolExecutor, Any]:
    """An executor whose pool of ``n_workers`` started (its start-timing no-op answered),
    and that pool's worker processes."""
    options.setdefault("max_workers", n_workers)
    executor = AdaptiveProcessPoolExecutor(
        mp_context=multiprocessing.get_context("fork"), **options
    )
    backend: Any = executor._backend
    backend.prepare(n_workers)
    backend._first_answer.result(timeout=60)
    return executor, backend._pool


def test_workers_that_never_got_work_are_killed_and_loky_reports_nothing() -> None:
    executor, pool = _started(2)
    processes = list(dict(pool._processes).values())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        executor.shutdown(wait=True)
    assert [p.exitcode for p in processes] == [-signal.SIGKILL] * 2
    assert pool._flags.broken is None  # the manager thread saw a shutdown, not a breakage
    assert pool._executor_manager_thread is None


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_workers_still_starting_are_killed_too(method: str) -> None:
    # Where a start is slow (forkserver, spawn) the usual shutdown waits for all of it.
    executor = AdaptiveProcessPoolExecutor(
        max_workers=2, mp_context=multiprocessing.get_context(method)
    )
    backend: Any = executor._backend
    backend.prepare(2)
    pool, first_answer = backend._pool, backend._first_answer
    processes = list(dict(pool._processes).values())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        executor.shutdown(wait=True)
    assert first_answer.done()  # answered, or failed by loky's shutdown: never left pending
    assert [p.exitcode for p in processes] == [-signal.SIGKILL] * 2
    assert pool._flags.broken is None


@pytest.mark.timeout(60)
def test_workers_of_lokys_own_start_method_are_killed_too() -> None:
    # loky's own Popen has no kill(): a kill through it was skipped and the join hung.
    import loky

    executor = AdaptiveProcessPoolExecutor(
        max_workers=1, mp_context=loky.backend.get_context("loky")
    )
    backend: Any = executor._backend
    backend.prepare(1)
    processes = list(dict(backend._pool._processes).values())
    executor.shutdown(wait=True)
    assert [p.exitcode for p in processes] == [-signal.SIGKILL]


def test_a_pool_that_ran_the_callers_work_is_joined() -> None:
    executor, pool = _started(2)
    processes = list(dict(pool._processes).values())
    assert executor.submit(abs, -3).result(timeout=60) == 3
    executor.shutdown(wait=True)
    assert [p.exitcode for p in processes] == [0, 0]


def test_a_pool_with_the_users_initializer_is_joined() -> None:
    executor, pool = _started(1, initializer=_noop)
    processes = list(dict(pool._processes).values())
    executor.shutdown(wait=True)
    assert [p.exitcode for p in processes] == [0]


def test_an_unused_pool_replaced_by_a_bigger_one_is_killed() -> None:
    executor, small = _started(1, max_workers=2)
    processes = list(dict(small._processes).values())
    backend: Any = executor._backend
    try:
        backend.prepare(2)
        assert backend._pool is not small
        assert [p.exitcode for p in processes] == [-signal.SIGKILL]
        assert small._flags.broken is None
        assert executor.submit(abs, -2).result(timeout=60) == 2
    finally:
        executor.shutdown(wait=True)


def test_what_a_killed_worker_printed_when_it_started_is_not_lost() -> None:
    # An at-fork hook's print sits in the worker's buffer (its stdout is a pipe): the
    # worker flushes it once started, before it could be killed.
    script = textwrap.dedent(
        """
        import multiprocessing, os, sys
        from amorsize_executor import AdaptiveProcessPoolExecutor

        os.register_at_fork(after_in_child=lambda: print("printed in a worker"))
        executor = AdaptiveProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("fork")
        )
        executor._backend.prepare(1)
        executor._backend._first_answer.result(timeout=60)
        pool = executor._backend._pool
        processes = list(dict(pool._processes).values())
        executor.shutdown(wait=True)
        print("exit codes", [p.exitcode for p in processes], flush=True)
        """
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    env.pop("PYTHONUNBUFFERED", None)  # buffered, as a program's stdout into a pipe is
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert f"exit codes [{-signal.SIGKILL}]" in done.stdout
    assert done.stdout.count("printed in a worker") == 1


def _copy_the_managers_view(pool: Any) -> None:
    # A loky whose manager thread kept its own copy of the workers: taking them out of the
    # pool's dict would not take them out of the manager's hands.
    manager = pool._executor_manager_thread
    manager.processes = dict(manager.processes)


def _forget_the_idle_timeout(pool: Any) -> None:
    del pool._timeout  # a loky that keeps it elsewhere: whether workers exit alone is unknown


def _drop_kill_workers(pool: Any) -> None:
    class _Shutdown(type(pool)):  # type: ignore[misc]
        def shutdown(self, wait: bool = True) -> None:  # a loky without kill_workers
            super().shutdown(wait=wait)

    pool.__class__ = _Shutdown


@pytest.mark.parametrize(
    "unexpected", [_copy_the_managers_view, _forget_the_idle_timeout, _drop_kill_workers]
)
def test_a_loky_laid_out_otherwise_gets_the_usual_shutdown(unexpected: Any) -> None:
    executor, pool = _started(2)
    processes = list(dict(pool._processes).values())
    unexpected(pool)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            executor.shutdown(wait=True)
        assert [p.exitcode for p in processes] == [0, 0]
    finally:
        for process in processes:
            if process.exitcode is None:
                process.kill()
                process.join()


def test_a_shared_warm_pool_is_joined() -> None:
    executor = AdaptiveProcessPoolExecutor(
        max_workers=2, keep_warm=30.0, mp_context=multiprocessing.get_context("fork")
    )
    shared: Any = executor._backend._backend  # type: ignore[attr-defined]
    shared.prepare(2)
    shared._first_answer.result(timeout=60)
    processes = list(dict(shared._pool._processes).values())
    executor.shutdown(wait=True)
    shared.stop()
    assert [p.exitcode for p in processes] == [0, 0]


def test_a_worker_known_to_have_exited_is_not_signalled() -> None:
    # Its pid may have been reaped and given to another process: that one must live.
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:

        class _Exited:
            pid = bystander.pid
            exitcode = 0

        _kill(_Exited())
        with pytest.raises(subprocess.TimeoutExpired):  # a SIGKILL would end it at once
            bystander.wait(timeout=1)
    finally:
        bystander.kill()
        bystander.wait()
