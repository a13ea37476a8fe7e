"""End to end with real worker processes: order, exactly-once, exceptions at position,
laziness, reuse and growth of the pool, and no process left behind. No timing."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from concurrent.futures import TimeoutError as FuturesTimeoutError
from concurrent.futures import as_completed, wait
from pathlib import Path
from typing import Any

import psutil
import pytest

from amorsize_executor import AdaptiveProcessPoolExecutor, RemoteTraceback

from .conftest import make_facts

pytestmark = pytest.mark.timeout(120)

PARALLEL = make_facts(n_logical_cores=2, n_physical_cores=2, n_affinity_cores=2)


def busy(x: int) -> int:
    """About a millisecond of CPU."""
    total = 0
    for i in range(20_000):
        total += i % 7
    return x * x + total - total


def touch_once(args: tuple[str, int]) -> int:
    """Creates one file per item and fails if it already exists: proves exactly-once."""
    folder, i = args
    fd = os.open(os.path.join(folder, f"item-{i}"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    os.close(fd)
    return busy(i)


def fail_at(x: int) -> int:
    if x == 77:
        raise KeyError(f"bad item {x}")
    return busy(x)


def slow(x: int) -> int:
    """Ten milliseconds of waiting: far above any pickling noise, so plans are parallel."""
    import time

    time.sleep(0.01)
    return x * x


def pid_of(_: int) -> int:
    busy(0)
    return os.getpid()


def test_parallel_results_are_in_order_and_match_serial() -> None:
    with AdaptiveProcessPoolExecutor(system_facts=PARALLEL) as ex:
        assert list(ex.map(busy, range(500))) == [busy(x) for x in range(500)]
        plan = ex.last_plan
    assert plan is not None and plan.mode == "parallel"


def test_every_item_runs_exactly_once(tmp_path: Path) -> None:
    items = [(str(tmp_path), i) for i in range(400)]
    with AdaptiveProcessPoolExecutor(system_facts=PARALLEL) as ex:
        assert list(ex.map(touch_once, items)) == [busy(i) for i in range(400)]
    assert sorted(os.listdir(tmp_path)) == sorted(f"item-{i}" for i in range(400))


def test_multiple_iterables_follow_zip() -> None:
    with AdaptiveProcessPoolExecutor(system_facts=PARALLEL) as ex:
        assert list(ex.map(pow, range(300), itertools.repeat(2))) == [x**2 for x in range(300)]
        assert list(ex.map(pow, [1, 2, 3], [2, 2])) == [1, 4]


def test_exception_at_its_position_with_remote_traceback() -> None:
    got: list[int] = []
    with AdaptiveProcessPoolExecutor(system_facts=PARALLEL) as ex:
        with pytest.raises(KeyError, match="bad item 77") as info:
            for r in ex.map(fail_at, range(300), chunksize=5):
                got.append(r)
        # The executor stays usable.
        assert list(ex.map(busy, range(50))) == [busy(x) for x in range(50)]
    assert got == [busy(x) for x in range(77)]
    assert isinstance(info.value.__cause__, RemoteTraceback)
    assert "fail_at" in str(info.value.__cause__)


def test_lambdas_and_closures_run_in_workers() -> None:
    offset = 1000
    with AdaptiveProcessPoolExecutor(system_facts=PARALLEL, isolate=True) as ex:
        assert list(ex.map(lambda x: busy(x) + offset, range(100))) == [
            busy(x) + offset for x in range(100)
        ]
        assert ex.submit(lambda: offset * 2).result() == 2000


def test_islice_over_an_infinite_generator_is_lazy() -> None:
    pulled = 0

    def numbers() -> Iterator[int]:
        nonlocal pulled
        for i in itertools.count():
            pulled += 1
            yield i

    with AdaptiveProcessPoolExecutor(system_facts=PARALLEL) as ex:
        head = list(itertools.islice(ex.map(slow, numbers()), 10))
        plan = ex.last_plan
    assert head == [x * x for x in range(10)]
    assert plan is not None and plan.outcome is not None
    # Every pulled item was probed or dispatched (nothing pulled and dropped) ...
    assert pulled == plan.measurements.n_probed + sum(plan.outcome.chunksizes)
    # ... and what was dispatched is what the consumer took plus the outstanding cap (a few
    # windows of the largest chunks; the window grows with the chunk size): never the whole
    # (infinite) input.
    from amorsize_executor._cost_model import WINDOW_MIN_ROUNDS
    from amorsize_executor._steering import MAX_OUTSTANDING_WINDOWS

    largest = max(plan.outcome.chunksizes)
    window = WINDOW_MIN_ROUNDS * plan.n_workers * largest
    assert sum(plan.outcome.chunksizes) <= 10 + MAX_OUTSTANDING_WINDOWS * window + largest


def test_results_stay_readable_after_the_with_block() -> None:
    with AdaptiveProcessPoolExecutor(system_facts=PARALLEL) as ex:
        results = ex.map(busy, list(range(300)), chunksize=4)
    assert list(results) == [busy(x) for x in range(300)]


def test_generator_results_after_shutdown_raise_clearly() -> None:
    with AdaptiveProcessPoolExecutor(system_facts=PARALLEL, isolate=True) as ex:
        results = ex.map(busy, iter(range(100_000)), chunksize=2, buffersize=8)
        first = next(results)
    assert first == busy(0)
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        list(results)


def test_submit_futures_work_with_wait_and_as_completed() -> None:
    with AdaptiveProcessPoolExecutor(max_workers=2) as ex:
        futures = [ex.submit(busy, i) for i in range(20)]
        _done, not_done = wait(futures)
        assert not not_done
        assert sorted(f.result() for f in as_completed(futures)) == sorted(
            busy(i) for i in range(20)
        )


def test_pool_is_reused_then_grown_and_never_exceeds_max_workers() -> None:
    one_core = make_facts(n_logical_cores=1, n_physical_cores=1, n_affinity_cores=1)
    with AdaptiveProcessPoolExecutor(max_workers=2, system_facts=one_core, isolate=True) as ex:
        pids_small = set(ex.map(pid_of, range(40)))
        assert ex.last_plan is not None and ex.last_plan.n_workers == 1
        assert ex._backend.pool_size == 1  # type: ignore[attr-defined]
        ex._system_facts = PARALLEL  # the machine "grew": the next plan wants 2 workers
        pids_big = set(ex.map(pid_of, range(400), chunksize=1))
        assert ex.last_plan.n_workers == 2
        assert ex._backend.pool_size == 2  # type: ignore[attr-defined]
        assert not pids_big & pids_small  # the 1-worker pool was replaced, not stretched
        children = [
            p for p in psutil.Process().children(recursive=True) if p.pid in pids_small | pids_big
        ]
    # The small pool was replaced; after shutdown none of the workers is alive.
    assert all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in children)


def test_serial_plan_runs_in_the_caller_and_starts_no_process() -> None:
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with AdaptiveProcessPoolExecutor() as ex:
        pids = list(ex.map(lambda x: os.getpid(), range(20)))
        assert ex.last_plan is not None and ex.last_plan.mode == "serial"
        after = {p.pid for p in psutil.Process().children(recursive=True)}
    assert set(pids) == {os.getpid()}
    assert after == before


def test_shutdown_leaves_no_worker_behind() -> None:
    ex = AdaptiveProcessPoolExecutor(system_facts=PARALLEL)
    list(ex.map(busy, range(200)))
    pids = ex._backend.worker_pids()
    assert pids
    ex.shutdown()
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_explain_is_readable(capsys: Any) -> None:
    with AdaptiveProcessPoolExecutor(system_facts=PARALLEL) as ex:
        list(ex.map(busy, range(200)))
        text = ex.last_plan.explain()  # type: ignore[union-attr]
    assert text.startswith("plan: parallel: ")
    assert "usable core(s), limited by" in text
    assert "actual:" in text


def thread_vars(_: int) -> tuple[str | None, str | None]:
    busy(0)
    return os.environ.get("OPENBLAS_NUM_THREADS"), os.environ.get("OMP_NUM_THREADS")


def test_workers_get_their_share_of_native_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    from amorsize_executor._chunk_worker import THREAD_ENV_VARS

    for name in THREAD_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    four = make_facts(n_logical_cores=4, n_physical_cores=4, n_affinity_cores=4)
    with AdaptiveProcessPoolExecutor(max_workers=2, system_facts=four, isolate=True) as ex:
        # 4 cores over 2 workers: 2 threads each.
        assert set(ex.map(thread_vars, range(20))) == {("2", "2")}


@pytest.mark.parametrize("method", ["fork", "forkserver", "spawn"])
def test_a_thread_variable_set_by_the_user_is_left_alone(
    monkeypatch: pytest.MonkeyPatch, method: str
) -> None:
    import multiprocessing

    context = multiprocessing.get_context(method)
    # A forkserver started earlier holds the environment of its start: set it going first.
    with AdaptiveProcessPoolExecutor(max_workers=1, mp_context=context, isolate=True) as ex:
        list(ex.map(thread_vars, range(2)))
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    with AdaptiveProcessPoolExecutor(
        max_workers=2, mp_context=context, system_facts=PARALLEL, isolate=True
    ) as ex:
        assert set(ex.map(thread_vars, range(20))) == {(None, "3")}


def sleep_long(_: int) -> int:
    import time

    time.sleep(60)
    return 0


def crash(_: int) -> int:
    os._exit(3)


def test_terminate_workers_stops_a_running_chunk_promptly() -> None:
    import threading

    with AdaptiveProcessPoolExecutor(max_workers=1, isolate=True) as ex:
        results = ex.map(sleep_long, range(3), timeout=0.5)
        with pytest.raises(FuturesTimeoutError):
            list(results)
        done = threading.Event()

        def terminate() -> None:
            ex.terminate_workers()
            done.set()

        threading.Thread(target=terminate, daemon=True).start()
        assert done.wait(30), "terminate_workers() hung while a chunk was running"
        assert list(ex.map(busy, range(5))) == [busy(x) for x in range(5)]


def test_a_crash_in_submit_does_not_break_later_calls() -> None:
    from concurrent.futures.process import BrokenProcessPool

    with AdaptiveProcessPoolExecutor(max_workers=1) as ex:
        with pytest.raises(BrokenProcessPool):
            ex.submit(crash, 0).result(timeout=60)
        assert ex.submit(busy, 3).result(timeout=60) == busy(3)
        assert list(ex.map(busy, range(5), timeout=60)) == [busy(x) for x in range(5)]


def test_forked_workers_do_not_collect_what_they_inherited() -> None:
    # The caller's objects are frozen while the workers fork (their collections skip them)
    # and unfrozen at once in the caller, whose own collections stay as they were.
    import gc
    import multiprocessing

    assert gc.get_freeze_count() == 0
    with AdaptiveProcessPoolExecutor(
        max_workers=1, mp_context=multiprocessing.get_context("fork")
    ) as ex:
        inherited_frozen = ex.submit(gc.get_freeze_count).result(timeout=60)
    assert inherited_frozen > 1000
    assert gc.get_freeze_count() == 0


def test_a_freeze_of_the_callers_own_is_left_alone() -> None:
    import gc
    import multiprocessing

    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        with AdaptiveProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("fork")
        ) as ex:
            assert ex.submit(int).result(timeout=60) == 0
        # Not unfrozen behind the caller's back (that would leave none); a few frozen
        # objects may have been freed meanwhile (Python 3.13 frees them by refcount).
        assert gc.get_freeze_count() > frozen // 2
    finally:
        gc.unfreeze()
