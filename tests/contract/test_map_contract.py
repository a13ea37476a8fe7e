"""``map`` as ``ProcessPoolExecutor.map`` promises it, on the serial, parallel and
explicit-chunksize paths: order, ``zip`` semantics, empty input, ``timeout`` counted from the
call, the first exception ending the stream at its position, results readable after the
``with`` block, and no new work after ``shutdown``."""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import os
import sys
import time

import pytest

import amorsize_executor
from amorsize_executor import AdaptiveProcessPoolExecutor

from ..conftest import make_facts
from . import _work
from ._helpers import drain
from ._paths import ExecPath

pytestmark = pytest.mark.timeout(60)

PARALLEL_FACTS = make_facts()


def test_results_come_in_input_order_even_when_later_items_finish_first(
    path: ExecPath, executor: AdaptiveProcessPoolExecutor
) -> None:
    n = 24
    results = list(path.map(executor, _work.reversed_delay, range(n), itertools.repeat(n)))
    assert results == [x * x for x in range(n)]
    assert executor.last_plan is not None
    assert executor.last_plan.mode == path.mode


def test_many_items_each_delivered_exactly_once(
    path: ExecPath, executor: AdaptiveProcessPoolExecutor
) -> None:
    items = range(5000)
    assert list(path.map(executor, _work.square, items)) == [x * x for x in items]


def test_multiple_iterables_are_zipped_and_stop_at_the_shortest(
    path: ExecPath, executor: AdaptiveProcessPoolExecutor
) -> None:
    assert list(path.map(executor, _work.add, range(10), range(100, 105))) == [
        100,
        102,
        104,
        106,
        108,
    ]
    # A generator and an endless iterator: the finite list ends it.
    got = list(
        path.map(
            executor,
            _work.add3,
            [1, 2, 3],
            (10 * i for i in range(1, 1000)),
            itertools.count(100),
        )
    )
    assert got == [111, 123, 135]


@pytest.mark.parametrize(
    "iterables",
    [([],), ((x for x in ()),), ([1, 2, 3], []), ((), itertools.count())],
    ids=["empty-list", "empty-generator", "one-empty-of-two", "empty-and-endless"],
)
def test_empty_input_gives_no_results(
    path: ExecPath, executor: AdaptiveProcessPoolExecutor, iterables: tuple[object, ...]
) -> None:
    fn = _work.square if len(iterables) == 1 else _work.add
    assert list(path.map(executor, fn, *iterables)) == []


def test_map_accepts_lambdas_and_closures(
    path: ExecPath, executor: AdaptiveProcessPoolExecutor
) -> None:
    offset = 1000
    assert list(path.map(executor, lambda x: x + offset, range(20))) == [
        x + offset for x in range(20)
    ]


def test_timeout_generous_enough_gives_all_results(
    path: ExecPath, executor: AdaptiveProcessPoolExecutor
) -> None:
    assert list(path.map(executor, _work.square, range(30), timeout=30)) == [
        x * x for x in range(30)
    ]


def test_timeout_deadline_counts_from_the_map_call(
    path: ExecPath, executor: AdaptiveProcessPoolExecutor
) -> None:
    """The item takes 2 s, the timeout is 1 s, and the first result is asked for 1.5 s after
    ``map()``: counted from the call, the deadline has passed; counted from ``next()`` it
    would still be 0.5 s away when the result arrives. No duration is asserted: the sleeps
    only order events with half-second margins."""
    called_s = time.monotonic()
    results = path.map(executor, _work.sleep_for, [2.0], ["done"], timeout=1.0)
    time.sleep(max(0.0, called_s + 1.5 - time.monotonic()))
    with pytest.raises(cf.TimeoutError):
        next(results)
    # The executor stays usable afterwards.
    assert list(path.map(executor, _work.square, range(8))) == [x * x for x in range(8)]
    assert executor.submit(_work.square, 9).result(timeout=30) == 81


def test_the_first_exception_ends_the_stream_at_its_position(
    path: ExecPath, executor: AdaptiveProcessPoolExecutor
) -> None:
    results, error = drain(
        path.map(executor, _work.fail_on, range(60), itertools.repeat(frozenset({5, 12, 30})))
    )
    assert results == [x * 10 for x in range(5)]
    assert isinstance(error, ValueError)
    assert str(error) == "bad item 5"


def test_nothing_is_delivered_after_the_first_exception(
    path: ExecPath, executor: AdaptiveProcessPoolExecutor, request: pytest.FixtureRequest
) -> None:
    """After ``fn`` raised, the iterator is finished (the stdlib's is a generator that has
    raised); on the serial path ``fn`` must not be called again for later items. (For calls
    under 2 µs the serial path runs at C speed, where this is not promised: see
    docs/differences.md, "After the first exception".)"""
    _work.CALLS.clear()
    results = path.map(executor, _work.record_call_not_tiny, range(1000), itertools.repeat(700))
    delivered, error = drain(results)
    assert delivered == list(range(700))
    assert isinstance(error, ValueError)
    assert next(results, "finished") == "finished"
    assert not [x for x in _work.CALLS if x > 700], "fn ran on items after the exception"


def test_worker_exceptions_carry_the_remote_traceback(
    path: ExecPath, executor: AdaptiveProcessPoolExecutor
) -> None:
    results, error = drain(path.map(executor, _work.raise_value_error_from_worker, range(3)))
    assert results == []
    assert isinstance(error, ValueError) and str(error) == "raised for 0"
    if path.runs_in_caller:
        # Raised in this process: re-raised as-is, its own traceback is the real one.
        assert not isinstance(error.__cause__, amorsize_executor.RemoteTraceback)
    else:
        assert isinstance(error.__cause__, amorsize_executor.RemoteTraceback)
        assert "raise_value_error_from_worker" in str(error.__cause__)
        assert "Traceback" in str(error.__cause__)


def test_results_of_a_list_are_readable_after_the_with_block(path: ExecPath) -> None:
    with path.executor() as ex:
        results = path.map(ex, _work.square, list(range(200)))
    assert list(results) == [x * x for x in range(200)]


def test_map_after_shutdown_raises_runtime_error(
    path: ExecPath, executor: AdaptiveProcessPoolExecutor
) -> None:
    assert list(path.map(executor, _work.square, [3])) == [9]
    executor.shutdown()
    with pytest.raises(RuntimeError, match=r"^cannot schedule new futures after shutdown$"):
        path.map(executor, _work.square, [1, 2])


def test_initializer_runs_in_every_worker_before_fn(path: ExecPath) -> None:
    token = ("token", 7)
    with path.executor(initializer=_work.store_init_value, initargs=(token,)) as ex:
        mapped = list(path.map(ex, _work.read_init_value, range(20)))
        submitted = ex.submit(_work.read_init_value).result(timeout=30)
    assert {value for value, _ in mapped} == {token}
    assert submitted[0] == token
    # With an initializer, fn never runs in the caller, where the initializer has not run.
    assert os.getpid() not in {pid for _, pid in mapped}


def test_a_failing_initializer_breaks_the_pool(path: ExecPath) -> None:
    with path.executor(initializer=_work.failing_initializer, max_workers=1) as ex:
        results, error = drain(path.map(ex, _work.square, range(5)))
        assert results == []
        assert isinstance(error, cf.process.BrokenProcessPool)
        with pytest.raises(cf.process.BrokenProcessPool):
            ex.submit(_work.square, 2).result(timeout=30)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork/forkserver")
@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_mp_context_start_methods(method: str) -> None:
    import multiprocessing

    import psutil

    context = multiprocessing.get_context(method)
    with AdaptiveProcessPoolExecutor(
        max_workers=1, mp_context=context, isolate=True, system_facts=PARALLEL_FACTS
    ) as ex:
        mapped = list(ex.map(_work.square_and_pid, range(6)))
        assert [value for value, _ in mapped] == [x * x for x in range(6)]
        worker = ex.submit(_work.pid_of).result(timeout=60)
        assert worker != os.getpid()
        assert {pid for _, pid in mapped} <= {worker}
        cmdline = " ".join(psutil.Process(worker).cmdline())
    if method == "spawn":
        assert "spawn_main" in cmdline
    elif method == "forkserver":
        assert "forkserver" in cmdline
    else:
        assert cmdline == " ".join(psutil.Process().cmdline())


@pytest.mark.skipif(sys.version_info < (3, 11), reason="max_tasks_per_child needs 3.11")
def test_max_tasks_per_child_replaces_workers() -> None:
    with AdaptiveProcessPoolExecutor(max_workers=1, max_tasks_per_child=1) as ex:
        pids = [ex.submit(_work.pid_of).result(timeout=60) for _ in range(3)]
    assert len(set(pids)) == 3, f"each task should get a fresh worker, got pids {pids}"
    assert os.getpid() not in pids


@pytest.mark.skipif(sys.version_info >= (3, 11), reason="3.10 only")
def test_max_tasks_per_child_on_3_10_is_a_clear_type_error() -> None:
    with (
        pytest.raises(TypeError, match=r"3\.11"),
        AdaptiveProcessPoolExecutor(max_workers=1, max_tasks_per_child=1) as ex,
    ):
        ex.submit(_work.pid_of).result(timeout=60)
