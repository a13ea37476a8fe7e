"""Time-boxed chunks: a worker stops starting items once its chunk's budget is spent and
hands the rest back; the parent resends them, split, in place. The worker side runs with a
scripted clock, the parent side with a fake backend, and one end-to-end run uses real
processes and sleeps far longer than any budget, so nothing here depends on timing."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import cloudpickle
import pytest
from hypothesis import given
from hypothesis import strategies as st

from amorsize_executor import AdaptiveProcessPoolExecutor, _contention, _cost_model, _steering
from amorsize_executor._chunk_worker import ChunkPayload, run_chunk
from amorsize_executor._pool_backend import PoolBackend

from .conftest import make_facts
from .fakes import FakeBackend, OverrunningClock

pytestmark = pytest.mark.timeout(60)


class ScriptedClock:
    """Returns the given readings in turn."""

    def __init__(self, *readings: float) -> None:
        self.readings = list(readings)

    def __call__(self) -> float:
        return self.readings.pop(0)


def double(x: int) -> int:
    return 2 * x


def payload(items: list[int], budget_s: float | None, check_every: int = 1) -> ChunkPayload:
    return ChunkPayload(
        cloudpickle.dumps(double),
        cloudpickle.dumps([(x,) for x in items]),
        budget_s,
        check_every,
    )


# -- the worker ------------------------------------------------------------------------------


def test_a_chunk_stops_between_items_once_its_budget_is_spent() -> None:
    # start 0; after item 1: 1.0; after item 2: 2.5 (over the 2 s budget); end reading 2.5
    result = run_chunk(payload([1, 2, 3, 4], 2.0), ScriptedClock(0.0, 1.0, 2.5, 2.5))
    assert cloudpickle.loads(result.results_bytes) == [2, 4]
    assert (result.n_results, result.n_unrun) == (2, 2)
    assert result.recent_s_per_item == pytest.approx(1.5)
    assert result.failure is None


def test_a_chunk_without_budget_runs_every_item() -> None:
    result = run_chunk(payload([1, 2, 3], None), ScriptedClock(0.0, 100.0))
    assert cloudpickle.loads(result.results_bytes) == [2, 4, 6]
    assert result.n_unrun == 0


def test_the_last_item_over_budget_leaves_nothing_unrun() -> None:
    result = run_chunk(payload([1, 2], 1.0), ScriptedClock(0.0, 0.5, 9.0, 9.0))
    assert (result.n_results, result.n_unrun) == (2, 0)


def test_the_clock_is_read_every_check_every_items() -> None:
    # checks after items 3 and 6 only: the 2nd check is over budget
    result = run_chunk(
        payload(list(range(10)), 1.0, check_every=3), ScriptedClock(0.0, 0.5, 3.5, 3.5)
    )
    assert (result.n_results, result.n_unrun) == (6, 4)
    assert result.recent_s_per_item == pytest.approx(1.0)


def test_an_exception_ends_the_chunk_and_nothing_is_handed_back() -> None:
    def fail_on_two(x: int) -> int:
        if x == 2:
            raise ValueError("two")
        return x

    chunk = ChunkPayload(
        cloudpickle.dumps(fail_on_two), cloudpickle.dumps([(1,), (2,), (3,)]), 10.0, 1
    )
    result = run_chunk(chunk, ScriptedClock(0.0, 0.0, 0.0))
    assert result.failure is not None and result.failure.offset == 1
    assert result.n_unrun == 0


# -- the policy ------------------------------------------------------------------------------


def test_budget_is_a_multiple_of_the_expected_chunk_time_with_floors() -> None:
    assert _steering.chunk_budget_s(
        n_items=100, s_per_item=1e-3, task_roundtrip_s=1e-4
    ) == pytest.approx(_steering.CHUNK_BUDGET_FACTOR * 0.1)
    assert (
        _steering.chunk_budget_s(n_items=1, s_per_item=1e-6, task_roundtrip_s=0.0)
        == _steering.MIN_CHUNK_BUDGET_S
    )
    assert _steering.chunk_budget_s(
        n_items=1, s_per_item=1e-6, task_roundtrip_s=0.01
    ) == pytest.approx(_steering.MIN_BUDGET_ROUNDTRIPS * 0.01)


def test_clock_checks_are_spaced_for_fast_calls_only() -> None:
    assert _steering.budget_check_every(1e-3) == 1
    assert _steering.budget_check_every(1e-7) == 100
    assert _steering.budget_check_every(0.0) == 1


def test_a_slow_stretch_is_split_into_single_items_over_the_workers() -> None:
    assert _steering.split_unrun(
        n_unrun=5, recent_s_per_item=0.02, n_workers=2, task_roundtrip_s=1e-4
    ) == [1, 1, 1, 1, 1]


def test_a_mildly_slow_stretch_is_spread_over_every_worker() -> None:
    # 1 ms items would make 20-item pieces; 30 items over 4 workers make pieces of 8.
    assert _steering.split_unrun(
        n_unrun=30, recent_s_per_item=1e-3, n_workers=4, task_roundtrip_s=0.0
    ) == [8, 8, 8, 6]


def test_a_stop_from_stolen_time_splits_at_the_expected_rate() -> None:
    # 463 calls of 43 µs: a 40 ms budget. The worker lost the CPU for 20 ms during one call
    # (the stretch before the stop: 20 ms per call), but ran only 20 ms of CPU, half of what
    # its own calls would need to use up the budget: the calls were not slow.
    rate = _contention.unrun_s_per_item(
        budget_factor=_steering.CHUNK_BUDGET_FACTOR,
        recent_s_per_item=0.02,
        n_ran=463,
        cpu_s=0.02,
        voluntary_switches=3,
        expected_s_per_item=43e-6,
        expected_cpu_s_per_item=43e-6,
    )
    assert rate == 43e-6
    # Hence the rest goes out as a piece per worker, not as 300 pieces of one call.
    assert _steering.split_unrun(
        n_unrun=300, recent_s_per_item=rate, n_workers=2, task_roundtrip_s=2e-4
    ) == [150, 150]


def test_a_stop_from_slow_calls_keeps_the_stretch_rate() -> None:
    common = {"recent_s_per_item": 0.02, "expected_s_per_item": 2e-4}
    # 100 calls of 0.2 ms, then slow ones: 60 ms of CPU, past twice the expected 20 ms.
    slow = _contention.unrun_s_per_item(
        budget_factor=_steering.CHUNK_BUDGET_FACTOR,
        n_ran=102,
        cpu_s=0.06,
        voluntary_switches=0,
        expected_cpu_s_per_item=2e-4,
        **common,
    )
    assert slow == 0.02
    # Calls that wait (a voluntary switch per call): their wall time is their cost.
    waiting = _contention.unrun_s_per_item(
        budget_factor=_steering.CHUNK_BUDGET_FACTOR,
        n_ran=10,
        cpu_s=1e-4,
        voluntary_switches=10,
        expected_cpu_s_per_item=1e-5,
        **common,
    )
    assert waiting == 0.02
    # Unknown switches (not Linux) or nothing run: the stretch's rate, as before.
    for n_ran, switches in ((10, None), (0, 0)):
        unknown = _contention.unrun_s_per_item(
            budget_factor=_steering.CHUNK_BUDGET_FACTOR,
            n_ran=n_ran,
            cpu_s=1e-4,
            voluntary_switches=switches,
            expected_cpu_s_per_item=2e-4,
            **common,
        )
        assert unknown == 0.02


def test_steering_splits_a_preempted_chunk_at_its_running_rate() -> None:
    from .conftest import make_measurements

    plan = _cost_model.plan_map(
        make_facts(n_logical_cores=2, n_physical_cores=2, n_affinity_cores=2),
        make_measurements(wall_s_per_item=43e-6, cpu_s_per_item=43e-6),
        n_items=7500,
        n_items_lower_bound=1,
    )
    assert plan.mode == "parallel" and plan.n_workers == 2
    steering = _steering.Steering(plan, chunksize=None, buffersize=None)
    preempted = {"n_ran": 463, "cpu_s": 0.02, "voluntary_switches": 2}
    assert steering.split_sizes(300, 0.02, **preempted) == [150, 150]
    # The same stop without the worker's figures: single calls, as for a slow stretch.
    assert steering.split_sizes(300, 0.02) == [1] * 300


@given(
    n_unrun=st.integers(0, 5000),
    recent=st.floats(0.0, 10.0),
    n_workers=st.integers(1, 64),
    roundtrip=st.floats(0.0, 0.01),
)
def test_split_pieces_cover_the_unrun_items_exactly(
    n_unrun: int, recent: float, n_workers: int, roundtrip: float
) -> None:
    sizes = _steering.split_unrun(
        n_unrun=n_unrun, recent_s_per_item=recent, n_workers=n_workers, task_roundtrip_s=roundtrip
    )
    assert sum(sizes) == n_unrun
    assert all(size >= 1 for size in sizes)
    # No piece is more than a worker's share of the stretch.
    assert all(size <= -(-n_unrun // n_workers) for size in sizes)


# -- the parent: resending in place ------------------------------------------------------------

CALLS: list[int] = []


def record_call(x: int) -> int:
    CALLS.append(x)
    time.sleep(0.0005)
    return x * 3


def test_handed_back_items_are_resent_in_place_and_run_once() -> None:
    CALLS.clear()
    backend = FakeBackend(clock=OverrunningClock())
    with AdaptiveProcessPoolExecutor(backend=backend, system_facts=make_facts()) as ex:
        results = list(ex.map(record_call, range(300)))
        plan = ex.last_plan
    assert results == [3 * x for x in range(300)]
    assert sorted(CALLS) == list(range(300))  # every item ran exactly once
    assert plan is not None and plan.mode == "parallel" and plan.outcome is not None
    n_sent_to_workers = 300 - plan.measurements.n_probed
    # Every chunk stopped after its first clock check, so items went out more than once.
    assert sum(plan.outcome.chunksizes) > n_sent_to_workers
    assert backend.n_keeping_open == 0


def test_no_budget_when_the_user_fixes_the_chunksize() -> None:
    backend = FakeBackend(clock=OverrunningClock())
    with AdaptiveProcessPoolExecutor(backend=backend, system_facts=make_facts()) as ex:
        assert list(ex.map(record_call, range(100), chunksize=7)) == [3 * x for x in range(100)]
    assert backend.budgets and all(b is None for b in backend.budgets)
    assert backend.n_keeping_open == 0


def test_an_error_after_a_handed_back_stretch_still_arrives_at_its_position() -> None:
    def fail_at_250(x: int) -> int:
        if x == 250:
            raise KeyError(x)
        return record_call(x)

    CALLS.clear()
    backend = FakeBackend(clock=OverrunningClock())
    with AdaptiveProcessPoolExecutor(backend=backend, system_facts=make_facts()) as ex:
        got: list[int] = []
        with pytest.raises(KeyError):
            for value in ex.map(fail_at_250, range(300)):
                got.append(value)
    assert got == [3 * x for x in range(250)]
    assert len(CALLS) == len(set(CALLS))
    assert backend.n_keeping_open == 0


def test_shutdown_waits_for_handed_back_items_before_closing() -> None:
    backend = FakeBackend(clock=OverrunningClock(), hold=True)
    ex = AdaptiveProcessPoolExecutor(backend=backend, system_facts=make_facts())
    results = ex.map(record_call, range(200))
    backend.hold = False
    backend.release()  # the held chunks now finish, each handing back all but its first item
    ex.shutdown(wait=True)
    assert backend.n_keeping_open == 0  # released before the backend was shut down
    assert list(results) == [3 * x for x in range(200)]


def read_until_chunks_are_sent(results: Iterator[int], backend: FakeBackend) -> list[int]:
    """Read results until the run has sent chunks (the probe runs in the caller from the
    first ``next()``, and its plan sends the first chunks after its last result)."""
    got = []
    while not backend.chunks:
        got.append(next(results))
    return got


def test_shutdown_without_wait_keeps_the_backend_open_until_the_results_are_read() -> None:
    backend = FakeBackend(clock=OverrunningClock())
    ex = AdaptiveProcessPoolExecutor(backend=backend, system_facts=make_facts())
    results = ex.map(record_call, range(200))
    got = read_until_chunks_are_sent(results, backend)
    ex.shutdown(wait=False)
    assert backend.n_keeping_open == 1
    assert got + list(results) == [3 * x for x in range(200)]
    assert backend.n_keeping_open == 0


# -- real processes -----------------------------------------------------------------------------


def sleep_for(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def test_a_real_worker_hands_back_what_it_did_not_start() -> None:
    backend = PoolBackend(
        max_workers=1,
        mp_context=None,
        initializer=None,
        initargs=(),
        max_tasks_per_child=None,
        default_workers=lambda: 1,
    )
    try:
        chunk = ChunkPayload(
            cloudpickle.dumps(sleep_for), cloudpickle.dumps([(0.05,), (0.05,), (0.05,)]), 0.01, 1
        )
        result = backend.submit_chunk(chunk).result(timeout=30)
    finally:
        backend.shutdown()
    assert (result.n_results, result.n_unrun) == (1, 2)
    assert result.recent_s_per_item >= 0.05


def touch_then_sleep(args: tuple[str, int]) -> int:
    """One file per item (fails if it exists: exactly once); items 100-129 sleep 50 ms."""
    folder, i = args
    fd = os.open(os.path.join(folder, f"item-{i}"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    os.close(fd)
    time.sleep(0.05 if 100 <= i < 130 else 0.002)
    return i


def test_a_slow_stretch_is_split_across_real_workers_each_item_once(tmp_path: Path) -> None:
    items = [(str(tmp_path), i) for i in range(200)]
    facts = make_facts(n_logical_cores=2, n_physical_cores=2, n_affinity_cores=2)
    with AdaptiveProcessPoolExecutor(system_facts=facts) as ex:
        assert list(ex.map(touch_then_sleep, items)) == list(range(200))
        plan = ex.last_plan
    assert sorted(os.listdir(tmp_path)) == sorted(f"item-{i}" for i in range(200))
    assert plan is not None and plan.mode == "parallel" and plan.outcome is not None
    # Chunks sized for 2 ms items overran at the 50 ms stretch and handed items back.
    assert sum(plan.outcome.chunksizes) > 200 - plan.measurements.n_probed


# -- a pool that loses to serial ------------------------------------------------------------------


def test_pool_is_losing_only_past_the_margin_and_with_enough_evidence() -> None:
    margin = 1 + _cost_model.PARALLEL_MARGIN
    enough = {
        "n_chunks_measured": _steering.FALLBACK_MIN_CHUNKS,
        "measured_s": _steering.FALLBACK_MIN_S,
    }
    assert _steering.pool_is_losing(
        parent_s_per_item=1e-3 * margin * 1.01, serial_s_per_item=1e-3, **enough
    )
    assert not _steering.pool_is_losing(
        parent_s_per_item=1e-3 * margin * 0.99, serial_s_per_item=1e-3, **enough
    )
    assert not _steering.pool_is_losing(
        parent_s_per_item=1.0,
        serial_s_per_item=1e-3,
        n_chunks_measured=_steering.FALLBACK_MIN_CHUNKS - 1,
        measured_s=1.0,
    )
    assert not _steering.pool_is_losing(
        parent_s_per_item=1.0,
        serial_s_per_item=1e-3,
        n_chunks_measured=100,
        measured_s=_steering.FALLBACK_MIN_S / 2,
    )
    assert not _steering.pool_is_losing(parent_s_per_item=1.0, serial_s_per_item=0.0, **enough)


# The switch to serial itself, on a scripted clock: tests/test_run_clocks.py.


def test_the_serial_figure_follows_calls_that_got_slower() -> None:
    now = _steering.serial_s_per_item_now
    # Computing calls: CPU time counts (wall time is inflated by the cores' sharing).
    assert now(probed_s=1e-3, worker_wall_s=5e-3, worker_cpu_s=4e-3) == 4e-3
    # Waiting calls: wall time counts.
    assert now(probed_s=1e-3, worker_wall_s=10e-3, worker_cpu_s=1e-4) == 10e-3
    # Never below the probe's figure.
    assert now(probed_s=2e-3, worker_wall_s=1e-3, worker_cpu_s=1e-3) == 2e-3
    assert now(probed_s=2e-3, worker_wall_s=0.0, worker_cpu_s=0.0) == 2e-3


def test_the_serial_figure_counts_cores_taken_by_other_processes() -> None:
    now = _steering.serial_s_per_item_now
    # 5 ms calls on 2 workers and 2 cores; the workers' calls took 9 ms of wall time. The
    # pool's own crowding (2 workers and the parent on 2 cores) explains 1.5x of that 1.8x;
    # the rest was taken by other processes, which would take it from the caller too.
    loaded = now(
        probed_s=5e-3, worker_wall_s=9e-3, worker_cpu_s=5e-3, n_workers=2, n_usable_cores=2
    )
    assert loaded == pytest.approx(5e-3 * 1.8 / 1.5)
    # So 6.1 ms per result from the pool is not a loss (it was by CPU time alone: 5.5 ms).
    enough = {"n_chunks_measured": 100, "measured_s": 1.0}
    assert not _steering.pool_is_losing(
        parent_s_per_item=6.1e-3, serial_s_per_item=loaded, **enough
    )
    assert _steering.pool_is_losing(parent_s_per_item=6.1e-3, serial_s_per_item=5e-3, **enough)
    # A slowdown the pool's own processes explain (a parent busy receiving large results):
    # the CPU time, as before, so such a pool can still lose to serial.
    crowded = now(
        probed_s=3e-3, worker_wall_s=4.5e-3, worker_cpu_s=3e-3, n_workers=2, n_usable_cores=2
    )
    assert crowded == 3e-3
    # One worker on 4 cores: the pool cannot crowd itself; all of it came from outside.
    alone = _contention.outside_slowdown(
        worker_wall_s=3e-3, worker_cpu_s=2e-3, n_workers=1, n_usable_cores=4
    )
    assert alone == pytest.approx(1.5)


def test_closing_an_unstarted_result_iterator_cancels_what_map_sent() -> None:
    # In workers, map() sends the probe's first chunks (the stdlib starts work at map()).
    backend = FakeBackend(hold=True)
    ex = AdaptiveProcessPoolExecutor(backend=backend, system_facts=make_facts(), isolate=True)
    results = ex.map(record_call, range(200))
    assert backend.held
    results.close()  # type: ignore[attr-defined]
    assert all(future.cancelled() for future, _ in backend.held)
    assert backend.n_keeping_open == 0
    ex.shutdown()


def test_closing_an_unstarted_result_iterator_in_the_caller_runs_nothing() -> None:
    CALLS.clear()
    backend = FakeBackend(hold=True)
    ex = AdaptiveProcessPoolExecutor(backend=backend, system_facts=make_facts())
    results = ex.map(record_call, range(200))
    results.close()  # type: ignore[attr-defined]
    assert CALLS == [] and backend.chunks == [] and backend.prepared == []
    assert list(results) == []
    ex.shutdown()


def test_dropping_a_partly_read_result_iterator_releases_the_backend() -> None:
    import gc

    backend = FakeBackend(clock=OverrunningClock())
    ex = AdaptiveProcessPoolExecutor(backend=backend, system_facts=make_facts())
    results = ex.map(record_call, range(200))
    read_until_chunks_are_sent(results, backend)
    ex.shutdown(wait=False)
    assert backend.n_keeping_open == 1
    del results
    gc.collect()
    assert backend.n_keeping_open == 0


def test_a_real_pool_is_gone_after_an_unread_map_and_shutdown_without_wait() -> None:
    import gc

    from .contract._helpers import alive, wait_gone

    # In workers, map() starts the pool and sends the probe's first chunks.
    ex = AdaptiveProcessPoolExecutor(system_facts=make_facts(n_logical_cores=2), isolate=True)
    results = ex.map(sleep_for, [0.05] * 100)
    pids = ex._backend.worker_pids()  # type: ignore[attr-defined]
    assert pids
    ex.shutdown(wait=False)
    del results
    gc.collect()
    wait_gone(pids, deadline_s=30)
    assert not alive(pids)


def test_a_result_iterator_closed_while_probing_in_the_caller_runs_fn_no_more() -> None:
    CALLS.clear()
    backend = FakeBackend()
    ex = AdaptiveProcessPoolExecutor(backend=backend, system_facts=make_facts())
    results = ex.map(record_call, range(200))
    assert next(results) == 0
    results.close()  # type: ignore[attr-defined]
    assert list(results) == []
    assert CALLS == [0]
    assert backend.chunks == [] and ex.last_plan is None
    ex.shutdown()
