"""A worker that dies mid-task (``os._exit``, SIGKILL, a segfault): ``map`` raises a
``BrokenProcessPool`` subclass naming the items and the exit code or signal, never hangs,
delivers the results before the lost items, and the next call gets a fresh pool; no process is
left behind."""

from __future__ import annotations

import itertools
import os
import re
from concurrent.futures.process import BrokenProcessPool

import pytest

from amorsize_executor import AdaptiveProcessPoolExecutor, WorkerCrashedError

from ..contract._helpers import drain, wait_gone
from ..contract._paths import CHUNKSIZE, PARALLEL, ExecPath
from . import _work

pytestmark = pytest.mark.timeout(90)

WORKER_PATHS = [pytest.param(PARALLEL, id="parallel"), pytest.param(CHUNKSIZE, id="chunksize")]

CRASHES = [
    pytest.param(_work.exit_at, r"EXIT\(3\)", id="os._exit(3)"),
    pytest.param(_work.sigkill_at, r"SIGKILL", id="SIGKILL"),
    pytest.param(_work.segfault_at, r"SIGSEGV", id="segfault"),
]

CRASH_AT = 17


@pytest.mark.parametrize("path", WORKER_PATHS)
@pytest.mark.parametrize(("crash", "names_the_cause"), CRASHES)
def test_a_dying_worker_breaks_only_this_map(
    path: ExecPath, crash: object, names_the_cause: str
) -> None:
    with path.executor() as ex:
        assert list(path.map(ex, _work.square, range(8))) == [x * x for x in range(8)]
        old_workers = ex._backend.worker_pids()
        assert old_workers

        delivered, error = drain(
            path.map(
                ex, crash, range(60), itertools.repeat(CRASH_AT), itertools.repeat(os.getpid())
            )
        )

        assert isinstance(error, BrokenProcessPool)
        assert isinstance(error, WorkerCrashedError)
        assert re.search(names_the_cause, str(error)), str(error)
        # The stream stops exactly where the lost items begin: at the crashing item's chunk,
        # or earlier if another chunk was still in flight when the pool broke.
        assert error.first_index <= CRASH_AT, (error.first_index, error.last_index)
        assert error.first_index <= error.last_index
        assert f"items {error.first_index}..{error.last_index}" in str(error)
        assert delivered == [2 * x for x in range(error.first_index)]

        # The same executor rebuilds its pool for the next call.
        assert list(path.map(ex, _work.square, range(30))) == [x * x for x in range(30)]
        assert ex.submit(_work.square, 12).result(timeout=30) == 144
        wait_gone(old_workers)


def test_repeated_crashes_never_wear_the_executor_out() -> None:
    with PARALLEL.executor() as ex:
        for _ in range(3):
            parent = itertools.repeat(os.getpid())
            _, error = drain(ex.map(_work.exit_at, range(10), itertools.repeat(4), parent))
            assert isinstance(error, WorkerCrashedError)
            assert list(ex.map(_work.square, range(10))) == [x * x for x in range(10)]


def test_a_crash_in_a_submitted_task_is_reported_on_its_future() -> None:
    with PARALLEL.executor() as ex:
        future = ex.submit(_work.exit_now, os.getpid())
        with pytest.raises(BrokenProcessPool):
            future.result(timeout=60)


def test_after_a_crash_in_a_submitted_task_the_next_calls_get_a_new_pool() -> None:
    """Unlike the stdlib, whose pool stays broken for good (see docs/differences.md)."""
    with AdaptiveProcessPoolExecutor(max_workers=2, isolate=True) as ex:
        with pytest.raises(BrokenProcessPool):
            ex.submit(_work.exit_now, os.getpid()).result(timeout=60)
        assert list(ex.map(_work.square, range(10))) == [x * x for x in range(10)]
        with pytest.raises(BrokenProcessPool):
            ex.submit(_work.exit_now, os.getpid()).result(timeout=60)
        assert ex.submit(_work.square, 6).result(timeout=60) == 36
