"""``backend="threads"``: the plans threads get (from injected figures, and on real work),
the executor's contract on real threads (order, exactly-once, exceptions at their position,
submit, shutdown, no thread left behind), and the backend's own rules.

Nothing here asserts a duration: waits are on events, and their timeouts only turn a hang
into a failure.
"""

from __future__ import annotations

import collections
import multiprocessing
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import CancelledError, as_completed
from concurrent.futures.thread import BrokenThreadPool
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from amorsize_executor import AdaptiveProcessPoolExecutor, RemoteTraceback
from amorsize_executor._cost_model import CPU_BOUND_SHARE, MAX_OVERSUBSCRIPTION, plan_map
from amorsize_executor._thread_backend import (
    IN_PROCESS_BYTES_PER_S,
    START_METHOD,
    THREAD_ROUNDTRIP_S,
    THREAD_START_S,
    ThreadBackend,
    gil_enabled,
    thread_facts,
)

from .conftest import make_facts, make_measurements

pytestmark = pytest.mark.timeout(120)

WAIT_S = 30.0
"""Generous: only turns a deadlock into a failure."""

MACHINE = make_facts(
    n_logical_cores=4,
    n_physical_cores=2,
    n_affinity_cores=4,
    cpu_quota_cores=3.5,
    available_memory_bytes=8 * 2**30,
    start_method="loky",
    worker_start_s=0.1,
    env_core_limit=16,
)

GIL = pytest.mark.skipif(not gil_enabled(), reason="this interpreter runs without the GIL")

SLEEPY = make_measurements(
    wall_s_per_item=5e-3,
    cpu_s_per_item=2e-5,
    voluntary_switches_per_item=1.0,
)
"""A 5 ms call that sleeps: almost no CPU, one voluntary switch per call."""

CPU_BOUND = make_measurements(
    wall_s_per_item=1e-3, cpu_s_per_item=1e-3, voluntary_switches_per_item=0.0
)


def machine_facts() -> Any:
    return MACHINE


def pause(x: int) -> int:
    """Five milliseconds of waiting: a call threads run well."""
    time.sleep(0.005)
    return x * x


def busy(x: int) -> int:
    """About a millisecond of CPU, and no waiting."""
    total = 0
    for i in range(20_000):
        total += i % 7
    return x * x + total - total


def fail_at(x: int, bad: int) -> int:
    time.sleep(0.002)
    if x == bad:
        raise KeyError(f"bad item {x}")
    return x * x


def new_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t not in before and t.is_alive()]


# -- the facts threads report, and the plans they lead to ----------------------------------


def test_thread_facts_report_one_core_under_the_gil_and_the_machine_otherwise() -> None:
    with_gil = thread_facts(MACHINE, gil=True, n_warm_workers=3)
    assert (with_gil.n_logical_cores, with_gil.n_physical_cores, with_gil.n_affinity_cores) == (
        1,
        1,
        1,
    )
    without = thread_facts(MACHINE, gil=False, n_warm_workers=3)
    assert (without.n_logical_cores, without.n_physical_cores, without.n_affinity_cores) == (
        4,
        2,
        4,
    )
    for facts in (with_gil, without):
        # The machine's limits that still apply to threads are kept ...
        assert facts.available_memory_bytes == MACHINE.available_memory_bytes
        assert facts.cpu_quota_cores == 3.5
        assert facts.env_core_limit == 16
        # ... and what it costs to use a thread replaces the process figures.
        assert facts.start_method == START_METHOD == "threads"
        assert facts.worker_start_s == THREAD_START_S
        assert facts.task_roundtrip_s == THREAD_ROUNDTRIP_S
        assert facts.ipc_bytes_per_s == IN_PROCESS_BYTES_PER_S
        assert facts.n_warm_workers == 3
        assert facts.was_read


def test_gil_state_is_read_from_the_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: False, raising=False)
    assert gil_enabled() is False
    backend = ThreadBackend(read_machine_facts=machine_facts)
    assert backend.read_facts().n_logical_cores == 4
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: True, raising=False)
    assert gil_enabled() is True
    assert backend.read_facts().n_logical_cores == 1


def test_a_waiting_call_is_planned_on_the_most_threads_one_core_allows() -> None:
    plan = plan_map(
        thread_facts(MACHINE, gil=True, n_warm_workers=0),
        SLEEPY,
        n_items=1000,
        n_items_lower_bound=1000,
    )
    assert plan.mode == "parallel"
    assert plan.n_usable_cores == 1
    assert plan.n_workers == MAX_OVERSUBSCRIPTION


def test_without_the_gil_a_waiting_call_may_use_more_threads() -> None:
    plan = plan_map(
        thread_facts(MACHINE, gil=False, n_warm_workers=0),
        SLEEPY,
        n_items=1000,
        n_items_lower_bound=1000,
    )
    assert plan.mode == "parallel"
    assert plan.n_workers > MAX_OVERSUBSCRIPTION


def test_a_cpu_bound_call_stays_serial_on_threads_under_the_gil() -> None:
    plan = plan_map(
        thread_facts(MACHINE, gil=True, n_warm_workers=8),
        CPU_BOUND,
        n_items=1_000_000,
        n_items_lower_bound=1_000_000,
    )
    assert plan.mode == "serial"
    # The same figures on threads without the GIL run in parallel: the GIL decided it.
    free = plan_map(
        thread_facts(MACHINE, gil=False, n_warm_workers=8),
        CPU_BOUND,
        n_items=1_000_000,
        n_items_lower_bound=1_000_000,
    )
    assert free.mode == "parallel" and free.n_workers > 1


def test_a_cpu_bound_call_kept_out_of_the_caller_gets_one_thread() -> None:
    plan = plan_map(
        thread_facts(MACHINE, gil=True, n_warm_workers=0),
        CPU_BOUND,
        n_items=1000,
        n_items_lower_bound=1000,
        serial_allowed=False,
    )
    assert (plan.mode, plan.n_workers) == ("parallel", 1)


@given(
    wall_s=st.floats(1e-7, 10.0),
    cpu_share=st.floats(CPU_BOUND_SHARE, 1.0),
    switches=st.none() | st.floats(0.0, 100.0),
    n_items=st.integers(1, 10**7),
    item_bytes=st.floats(0.0, 1e9),
    pickle_s=st.floats(0.0, 1e-2),
)
def test_cpu_bound_work_is_never_planned_on_threads_under_the_gil(
    wall_s: float,
    cpu_share: float,
    switches: float | None,
    n_items: int,
    item_bytes: float,
    pickle_s: float,
) -> None:
    measurements = make_measurements(
        wall_s_per_item=wall_s,
        cpu_s_per_item=wall_s * cpu_share,
        voluntary_switches_per_item=switches,
        item_bytes=item_bytes,
        result_bytes=item_bytes,
        pickle_s_per_item=pickle_s,
    )
    plan = plan_map(
        thread_facts(MACHINE, gil=True, n_warm_workers=8),
        measurements,
        n_items=n_items,
        n_items_lower_bound=n_items,
    )
    assert plan.mode == "serial"


@given(
    wall_s=st.floats(1e-6, 1.0),
    cpu_share=st.floats(0.0, 1.0),
    n_items=st.integers(1, 10**6),
)
def test_threads_under_the_gil_never_exceed_the_oversubscription_cap(
    wall_s: float, cpu_share: float, n_items: int
) -> None:
    measurements = make_measurements(
        wall_s_per_item=wall_s,
        cpu_s_per_item=wall_s * cpu_share,
        voluntary_switches_per_item=1.0,
    )
    plan = plan_map(
        thread_facts(MACHINE, gil=True, n_warm_workers=0),
        measurements,
        n_items=n_items,
        n_items_lower_bound=n_items,
    )
    assert plan.n_workers <= MAX_OVERSUBSCRIPTION


@GIL
def test_real_waiting_work_gets_a_parallel_plan_on_threads() -> None:
    with AdaptiveProcessPoolExecutor(backend="threads") as ex:
        assert list(ex.map(pause, range(100))) == [x * x for x in range(100)]
        plan = ex.last_plan
    assert plan is not None
    assert plan.mode == "parallel" and plan.n_workers > 1
    assert plan.facts.start_method == "threads"
    assert plan.n_usable_cores == 1


@GIL
def test_real_cpu_bound_work_gets_a_serial_plan_on_threads() -> None:
    with AdaptiveProcessPoolExecutor(backend="threads") as ex:
        assert list(ex.map(busy, range(300))) == [x * x for x in range(300)]
        plan = ex.last_plan
    assert plan is not None and plan.mode == "serial"


# -- the executor's contract on real threads ---------------------------------------------


# Calls per item and the names of the threads that made them. ``map()`` pickles ``fn`` even
# for threads (a lock in a closure would make it serial), so ``record`` is a module-level
# function, sent by reference: every thread updates these very objects.
RECORD_LOCK = threading.Lock()
CALLS: collections.Counter[int] = collections.Counter()
THREAD_NAMES: set[str] = set()


def record(x: int) -> int:
    time.sleep(0.003)
    with RECORD_LOCK:
        CALLS[x] += 1
        THREAD_NAMES.add(threading.current_thread().name)
    return 2 * x + 1


def reset_record() -> None:
    CALLS.clear()
    THREAD_NAMES.clear()


def test_map_over_a_list_gives_results_in_order_each_item_once() -> None:
    reset_record()
    with AdaptiveProcessPoolExecutor(backend="threads") as ex:
        assert list(ex.map(record, list(range(200)))) == [2 * x + 1 for x in range(200)]
        plan = ex.last_plan
    assert plan is not None and plan.mode == "parallel"
    assert dict(CALLS) == dict.fromkeys(range(200), 1)
    # Threads of this process made the calls, and updated this process's record.
    assert any(name.startswith("amorsize-thread") for name in THREAD_NAMES)


def test_map_over_a_generator_gives_results_in_order_each_item_once() -> None:
    reset_record()
    pulled = 0

    def numbers() -> Iterator[int]:
        nonlocal pulled
        for i in range(150):
            pulled += 1
            yield i

    with AdaptiveProcessPoolExecutor(backend="threads") as ex:
        assert list(ex.map(record, numbers())) == [2 * x + 1 for x in range(150)]
    assert pulled == 150
    assert dict(CALLS) == dict.fromkeys(range(150), 1)
    assert any(name.startswith("amorsize-thread") for name in THREAD_NAMES)


@pytest.mark.parametrize("bad", [2, 70])
def test_an_exception_arrives_at_its_position_and_ends_the_stream(bad: int) -> None:
    got: list[int] = []
    with AdaptiveProcessPoolExecutor(backend="threads") as ex:
        results = ex.map(fail_at, range(120), [bad] * 120)
        with pytest.raises(KeyError, match=f"bad item {bad}") as info:
            for r in results:
                got.append(r)
        assert next(results, "ended") == "ended"
        # The executor stays usable.
        assert list(ex.map(pause, range(20))) == [x * x for x in range(20)]
    assert got == [x * x for x in range(bad)]
    if bad == 70:  # past the probe: raised in a thread, as a worker's would be
        assert isinstance(info.value.__cause__, RemoteTraceback)


def test_submit_and_as_completed() -> None:
    with AdaptiveProcessPoolExecutor(backend="threads") as ex:
        futures = {ex.submit(pause, i): i for i in range(30)}
        done = {futures[f]: f.result() for f in as_completed(futures, timeout=WAIT_S)}
    assert done == {i: i * i for i in range(30)}


def test_submit_passes_objects_as_they_are() -> None:
    raised = ValueError("this very object")

    def fails() -> None:
        raise raised

    lock = threading.Lock()  # cannot be pickled: only a thread can receive it
    with AdaptiveProcessPoolExecutor(backend="threads") as ex:
        assert ex.submit(lambda held: held is lock, lock).result(timeout=WAIT_S) is True
        assert ex.submit(fails).exception(timeout=WAIT_S) is raised


def test_submit_before_any_plan_respects_max_workers() -> None:
    running = 0
    most = 0
    lock = threading.Lock()

    def track(_: int) -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.01)
        with lock:
            running -= 1

    with AdaptiveProcessPoolExecutor(backend="threads", max_workers=2) as ex:
        for future in [ex.submit(track, i) for i in range(12)]:
            future.result(timeout=WAIT_S)
    assert 1 <= most <= 2


THREAD_STATE = threading.local()


def init_thread(value: str) -> None:
    THREAD_STATE.value = value
    THREAD_STATE.n_inits = getattr(THREAD_STATE, "n_inits", 0) + 1


def read_thread_state(x: int) -> tuple[str, int]:
    time.sleep(0.002)
    # AttributeError if the initializer did not run in this thread.
    return THREAD_STATE.value, THREAD_STATE.n_inits


def test_an_initializer_runs_once_in_each_thread_before_fn() -> None:
    with AdaptiveProcessPoolExecutor(
        backend="threads", initializer=init_thread, initargs=("ready",)
    ) as ex:
        results = list(ex.map(read_thread_state, range(60)))
        submitted = ex.submit(read_thread_state, 0).result(timeout=WAIT_S)
    assert results == [("ready", 1)] * 60
    assert submitted == ("ready", 1)
    assert not hasattr(THREAD_STATE, "value")  # fn never ran in the caller's thread


def test_a_failing_initializer_breaks_that_pool_only() -> None:
    attempts: list[int] = []

    def init() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError("no connection yet")

    with AdaptiveProcessPoolExecutor(backend="threads", initializer=init, max_workers=1) as ex:
        first = ex.submit(pow, 2, 3)
        assert isinstance(first.exception(timeout=WAIT_S), BrokenThreadPool)
        assert ex.submit(pow, 2, 4).result(timeout=WAIT_S) == 16


def test_a_failing_initializer_ends_a_map_at_its_first_item() -> None:
    attempts: list[int] = []

    def init() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise OSError("no connection yet")

    with AdaptiveProcessPoolExecutor(backend="threads", initializer=init) as ex:
        with pytest.raises(BrokenThreadPool):
            next(ex.map(pause, range(20)))
        assert list(ex.map(pause, range(20))) == [x * x for x in range(20)]


def test_shutdown_wait_leaves_no_thread_behind() -> None:
    before = set(threading.enumerate())
    ex = AdaptiveProcessPoolExecutor(backend="threads")
    assert list(ex.map(pause, range(100))) == [x * x for x in range(100)]
    assert ex.submit(pause, 3).result(timeout=WAIT_S) == 9
    assert new_threads(before), "the map should have run on threads of the pool"
    ex.shutdown(wait=True)
    assert new_threads(before) == []


def slow_stretch(x: int) -> int:
    """Fast items with a slow stretch in the middle: chunks there overrun their time budget
    and hand their unstarted items back, to be resent."""
    time.sleep(0.03 if 40 <= x < 60 else 0.002)
    return x * x


def test_shutdown_without_wait_still_delivers_every_result_of_a_list_map() -> None:
    before = set(threading.enumerate())
    ex = AdaptiveProcessPoolExecutor(backend="threads")
    results = ex.map(slow_stretch, list(range(150)))
    ex.shutdown(wait=False)
    assert list(results) == [x * x for x in range(150)]
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        ex.submit(pow, 2, 2)
    ex.shutdown(wait=True)
    assert new_threads(before) == []


def test_terminate_cancels_what_has_not_started_and_waits_for_no_one() -> None:
    before = set(threading.enumerate())
    release = threading.Event()
    started = threading.Event()

    def blocked() -> str:
        started.set()
        release.wait(WAIT_S)
        return "finished"

    ex = AdaptiveProcessPoolExecutor(backend="threads", max_workers=1)
    running = ex.submit(blocked)
    assert started.wait(WAIT_S)
    queued = ex.submit(pow, 2, 5)
    ex.terminate_workers()
    assert queued.cancelled()
    with pytest.raises(CancelledError):
        queued.result(timeout=WAIT_S)
    # The running call cannot be stopped; the executor goes on with a new pool meanwhile.
    assert not running.done()
    assert ex.submit(pow, 2, 6).result(timeout=WAIT_S) == 64
    release.set()
    assert running.result(timeout=WAIT_S) == "finished"
    ex.shutdown(wait=True)
    assert new_threads(before) == []


# -- the backend itself ------------------------------------------------------------------


def test_the_pool_never_exceeds_max_workers_and_grows_when_idle() -> None:
    backend = ThreadBackend(read_machine_facts=machine_facts, max_workers=3)
    try:
        assert backend.n_warm_workers == 0 and backend.start_method == "threads"
        backend.prepare(2)
        assert backend.pool_size == 2 and backend.n_warm_workers == 2
        backend.prepare(10)
        assert backend.pool_size == 3
        backend.prepare(1)
        assert backend.pool_size == 3  # never shrinks
        assert backend.worker_pids() == []
    finally:
        backend.shutdown(wait=True)


def test_the_pool_is_kept_while_work_is_in_flight() -> None:
    backend = ThreadBackend(read_machine_facts=machine_facts)
    release = threading.Event()
    try:
        backend.prepare(1)
        future = backend.submit(release.wait, WAIT_S)
        backend.prepare(4)
        assert backend.pool_size == 1
        release.set()
        assert future.result(timeout=WAIT_S) is True
        backend.prepare(4)
        assert backend.pool_size == 4
    finally:
        release.set()
        backend.shutdown(wait=True)


def test_shutdown_without_wait_is_deferred_while_a_run_keeps_the_backend_open() -> None:
    backend = ThreadBackend(read_machine_facts=machine_facts)
    backend.keep_open()
    backend.shutdown(wait=False)
    assert backend.submit(pow, 3, 2).result(timeout=WAIT_S) == 9
    backend.prepare(2)
    backend.allow_close()
    for call in (
        lambda: backend.submit(pow, 3, 2),
        lambda: backend.prepare(1),
        lambda: backend.submit_chunk(None),  # type: ignore[arg-type]
    ):
        with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
            call()
    backend.shutdown(wait=True)


def test_shutdown_without_wait_closes_at_once_when_nothing_keeps_it_open() -> None:
    backend = ThreadBackend(read_machine_facts=machine_facts)
    backend.prepare(1)
    backend.shutdown(wait=False)
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        backend.submit(pow, 3, 2)
    backend.shutdown(wait=True)


# -- options ---------------------------------------------------------------------------------


def test_process_only_options_are_refused_with_threads() -> None:
    options: list[dict[str, Any]] = [{"mp_context": multiprocessing.get_context("spawn")}]
    if sys.version_info >= (3, 11):  # on 3.10 max_tasks_per_child itself is refused first
        options.append({"max_tasks_per_child": 3})
    for kwargs in options:
        with pytest.raises(ValueError, match="applies to worker processes only"):
            AdaptiveProcessPoolExecutor(backend="threads", **kwargs)
    with pytest.raises(ValueError, match="isolate=True needs worker processes"):
        AdaptiveProcessPoolExecutor(backend="threads", isolate=True)
    with pytest.raises(ValueError, match="client= is only used with backend='dask'"):
        AdaptiveProcessPoolExecutor(backend="threads", client="tcp://127.0.0.1:1")


def test_max_workers_is_still_checked_with_threads() -> None:
    with pytest.raises(ValueError, match="max_workers must be greater than 0"):
        AdaptiveProcessPoolExecutor(backend="threads", max_workers=0)


def test_map_on_threads_shares_state_and_needs_nothing_picklable() -> None:
    # A closure over a list and a lock (neither travels through pickle): on threads, every
    # call's side effect lands in this process's list, and items may hold a lock.
    seen: list[int] = []
    guard = threading.Lock()

    def record(args: tuple[int, threading.Lock]) -> int:
        x, lock = args
        time.sleep(0.002)  # waiting: the plan runs it on several threads
        with lock:
            seen.append(x)
        return 2 * x

    items = [(x, guard) for x in range(200)]
    with AdaptiveProcessPoolExecutor(backend="threads") as ex:
        assert list(ex.map(record, items)) == [2 * x for x in range(200)]
        plan = ex.last_plan
    assert sorted(seen) == list(range(200))
    assert plan is not None and plan.mode == "parallel" and plan.n_workers > 1


class Blob:
    """A result that can be watched with a weak reference."""


def blob_after_a_wait(x: int) -> Blob:
    time.sleep(0.001)
    return Blob()


def test_read_results_are_freed_without_a_garbage_collection() -> None:
    # With threads, a chunk's results travel as the objects themselves. Once read and
    # dropped by the caller, nothing of the run may keep them: a reference cycle (a chunk,
    # its future, the future's callbacks) would hold them until a full collection.
    import gc
    import weakref

    gc.disable()
    try:
        with AdaptiveProcessPoolExecutor(backend="threads") as ex:
            refs = [weakref.ref(blob) for blob in ex.map(blob_after_a_wait, range(300))]
            plan = ex.last_plan
        assert plan is not None and plan.mode == "parallel"
        assert len(refs) == 300
        assert [ref for ref in refs if ref() is not None] == []
    finally:
        gc.enable()
