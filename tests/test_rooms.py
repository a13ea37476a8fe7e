"""Each room of a ``map()`` run alone, handed numbers, callables and a scripted clock: the
steering, the serial runner, the chunk window, the backend contract and the facts."""

from __future__ import annotations

import inspect
import threading
import weakref
from collections import deque
from typing import Any

import pytest

from amorsize_executor import (
    AdaptiveProcessPoolExecutor,
    _machine,
    _probe,
    _steering,
    _worker_probe,
)
from amorsize_executor._backend import Backend
from amorsize_executor._chunk_io import ChunkOutcome
from amorsize_executor._chunk_window import ChunkWindow
from amorsize_executor._cost_model import plan_map
from amorsize_executor._errors import UnpicklableItemError
from amorsize_executor._input import Source
from amorsize_executor._pool_backend import PoolBackend
from amorsize_executor._serial_run import SerialRun, batch_min_items, timed_group_items
from amorsize_executor._shared_pools import SharedPoolHandle
from amorsize_executor._thread_backend import ThreadBackend
from amorsize_executor._worker_probe import WorkerProbe

from .conftest import make_facts, make_measurements
from .fakes import FakeBackend, ScriptedClock


def parallel_plan(**measurement_overrides: Any) -> Any:
    plan = plan_map(
        make_facts(),
        make_measurements(**measurement_overrides),
        n_items=10_000,
        n_items_lower_bound=1,
    )
    assert plan.mode == "parallel"
    return plan


# -- steering ---------------------------------------------------------------------------------


def test_steering_follows_the_chunks_it_is_told_about() -> None:
    plan = parallel_plan()
    steering = _steering.Steering(plan, chunksize=None, buffersize=None)
    assert steering.s_per_item == 1e-3  # the probe's figure until a chunk comes back
    steering.learn(n_results=10, compute_s=0.04, cpu_s=0.04, items_bytes=0)
    assert steering.observed_s_per_item == pytest.approx(4e-3)
    steering.learn(n_results=10, compute_s=0.02, cpu_s=0.02, items_bytes=0)
    # An exponential average with FEEDBACK_WEIGHT 0.5: halfway to the new 2 ms.
    assert steering.observed_s_per_item == pytest.approx(3e-3)
    assert steering.chunksize == _steering.revise_chunksize(
        chunksize=_steering.revise_chunksize(
            chunksize=plan.chunksize, observed_s_per_item=4e-3, task_roundtrip_s=0.0
        ),
        observed_s_per_item=3e-3,
        task_roundtrip_s=0.0,
    )
    assert steering.outstanding_cap() == _steering.MAX_OUTSTANDING_WINDOWS * steering.window


def test_steering_keeps_the_users_chunksize_and_buffersize() -> None:
    plan = parallel_plan()
    steering = _steering.Steering(plan, chunksize=7, buffersize=3)
    steering.learn(n_results=10, compute_s=1.0, cpu_s=1.0, items_bytes=0)
    assert steering.next_chunksize(n_items_unsent=5) == steering.chunksize == plan.chunksize
    assert steering.outstanding_cap() == 3


def test_a_deadline_makes_automatic_chunks_of_one_item() -> None:
    cap = _steering.capped_chunksize
    assert cap(500, under_deadline=True, item_bytes=0.0, n_workers=4) == 1
    assert cap(500, under_deadline=False, item_bytes=0.0, n_workers=4) == 500
    steering = _steering.Steering(
        parallel_plan(), chunksize=None, buffersize=None, under_deadline=True
    )
    assert steering.next_chunksize(n_items_unsent=10_000) == 1
    # The user's chunksize is kept under a deadline too.
    plan = parallel_plan()
    user = _steering.Steering(plan, chunksize=plan.chunksize, buffersize=None, under_deadline=True)
    assert plan.chunksize > 1
    assert user.next_chunksize(n_items_unsent=10_000) == plan.chunksize


def test_chunks_of_large_items_fit_the_read_ahead_one_per_worker_plus_one() -> None:
    cap = _steering.capped_chunksize
    limit = _steering.MAX_READ_AHEAD_BYTES
    # 2 KiB items, 3 workers: 4 chunks of 512 items fill 4 MiB.
    assert cap(10_000, under_deadline=False, item_bytes=2048.0, n_workers=3) == 512
    assert cap(100, under_deadline=False, item_bytes=2048.0, n_workers=3) == 100
    # An item larger than the whole read-ahead still travels, alone.
    assert cap(100, under_deadline=False, item_bytes=2.0 * limit, n_workers=3) == 1


def test_the_read_ahead_holds_at_most_its_bytes_but_one_chunk_per_worker_and_one() -> None:
    items = _steering.read_ahead_items
    limit = _steering.MAX_READ_AHEAD_BYTES
    assert items(item_bytes=2048.0, n_workers=3, chunksize=100) == limit // 2048
    # Never fewer than (workers + 1) chunks, however large the items.
    assert items(item_bytes=float(limit), n_workers=3, chunksize=10) == 40
    # Item size unknown (0): no byte cap below the floor's or the limit's count.
    assert items(item_bytes=0.0, n_workers=3, chunksize=10) == limit


def test_steering_caps_the_read_ahead_by_the_item_bytes_it_learns() -> None:
    plan = parallel_plan(item_bytes=10.0)
    steering = _steering.Steering(plan, chunksize=None, buffersize=None)
    assert steering.outstanding_cap() == _steering.MAX_OUTSTANDING_WINDOWS * steering.window
    # Chunks come back with 64 KiB of pickled input per item: the read-ahead shrinks.
    steering.learn(n_results=10, compute_s=0.04, cpu_s=0.04, items_bytes=10 * 65536)
    assert steering.item_bytes == 65536.0
    n_workers = plan.n_workers
    chunksize = steering.next_chunksize(n_items_unsent=None)
    assert chunksize <= _steering.MAX_READ_AHEAD_BYTES // ((n_workers + 1) * 65536)
    assert steering.outstanding_cap() == min(
        _steering.MAX_OUTSTANDING_WINDOWS * steering.window,
        max((n_workers + 1) * chunksize, _steering.MAX_READ_AHEAD_BYTES // 65536),
    )
    # The user's buffersize is kept exactly, as in the stdlib.
    user = _steering.Steering(plan, chunksize=None, buffersize=7)
    user.learn(n_results=10, compute_s=0.04, cpu_s=0.04, items_bytes=10 * 65536)
    assert user.outstanding_cap() == 7


def test_steering_judges_the_pool_only_in_the_steady_state() -> None:
    plan = parallel_plan()
    steering = _steering.Steering(plan, chunksize=None, buffersize=None)
    n_startup = _steering._cost_model.WINDOW_MIN_ROUNDS * plan.n_workers
    # Each result costs the caller 10 ms against 1 ms for a call here.
    verdicts = [
        steering.judge_pool(n_results=10, parent_s=0.1, may_fall_back=True)
        for _ in range(n_startup + _steering.FALLBACK_MIN_CHUNKS)
    ]
    assert verdicts[:-1] == [None] * (len(verdicts) - 1)
    switched = verdicts[-1]
    assert switched is not None and "switched to serial part-way" in switched.reasons[-1]
    assert steering.window == 0


def test_steering_never_falls_back_when_it_may_not() -> None:
    steering = _steering.Steering(parallel_plan(), chunksize=None, buffersize=None)
    assert all(
        steering.judge_pool(n_results=10, parent_s=0.1, may_fall_back=False) is None
        for _ in range(100)
    )


def test_a_serial_run_revisits_only_on_slower_calls_of_a_known_length() -> None:
    revisit = _steering.serial_worth_revisiting
    assert revisit(
        wall_s_per_item=2e-3, planned_s_per_item=1e-3, length_known=True, fell_back=False
    )
    assert not revisit(
        wall_s_per_item=1.2e-3, planned_s_per_item=1e-3, length_known=True, fell_back=False
    )
    assert revisit(
        wall_s_per_item=1e-3, planned_s_per_item=1e-3, length_known=False, fell_back=False
    )
    assert not revisit(
        wall_s_per_item=9.0, planned_s_per_item=1e-3, length_known=False, fell_back=True
    )


# -- the serial runner ------------------------------------------------------------------------


def test_the_serial_runner_times_groups_on_its_clock_and_tells_the_run() -> None:
    clock = ScriptedClock()

    def fn(x: int) -> int:
        clock.advance(1e-3, 5e-4)
        return x + 1

    timed: list[tuple[float, float, int]] = []
    delivered: list[int] = []
    source = Source((list(range(100)),))
    runner = SerialRun(
        fn,
        source,
        planned_s_per_item=1e-3,
        buffersize=None,
        on_progress=None,
        delivered=delivered.append,
        on_timed=lambda wall, cpu, n: timed.append((wall, cpu, n)) is not None,
        wall_clock=clock,
        cpu_clock=clock.cpu,
    )
    results = [r for segment in runner.segments(stopped=lambda: False) for r in segment]
    assert results == [x + 1 for x in range(100)]
    # Batches end where the count doubles (16, 32, 64, 128: the last asks for 64 items,
    # 36 are left); the first timed_group_items calls of each are timed as a group.
    assert [n for _, _, n in timed] == [16, 16, 32, 64]
    assert all(w == pytest.approx(1e-3) and c == pytest.approx(5e-4) for w, c, _ in timed)
    assert sum(delivered) + runner.n_checked == 100
    assert timed_group_items(1e-3) == 8


def test_serial_batches_of_trivial_calls_hold_at_least_a_part_of_work() -> None:
    clock = ScriptedClock()
    call_s = 2.0**-23  # 0.12 µs, exact in binary: the groups' figures are exact too

    def fn(x: int) -> int:
        clock.advance(call_s, call_s)
        return x + 1

    timed: list[int] = []
    runner = SerialRun(
        fn,
        Source((list(range(100_000)),)),
        planned_s_per_item=call_s,
        buffersize=None,
        on_progress=None,
        delivered=lambda n: None,
        on_timed=lambda wall, cpu, n: timed.append(n) is not None,
        wall_clock=clock,
        cpu_clock=clock.cpu,
    )
    results = [r for segment in runner.segments(stopped=lambda: False) for r in segment]
    assert results == [x + 1 for x in range(100_000)]
    # Not 16, 16, 32, ... (13 batches): the first batch holds BATCH_MIN_S (1 ms) of calls,
    # 8388 of them, and the count doubles from there.
    assert batch_min_items(call_s) == 8388
    assert timed == [8388, 8388, 16776, 33552, 67104]


def test_the_serial_runner_stops_when_a_pool_takes_over() -> None:
    source = Source((list(range(100)),))
    runner = SerialRun(
        abs,
        source,
        planned_s_per_item=1e-3,
        buffersize=None,
        on_progress=None,
        delivered=lambda n: None,
        on_timed=lambda wall, cpu, n: True,
    )
    results = [r for segment in runner.segments(stopped=lambda: False) for r in segment]
    assert results == list(range(8))  # the first timed group, then the pool's turn
    assert source.n_pulled == 8


# -- the chunk window -------------------------------------------------------------------------


def worker_probe_with(
    per_call_s: Any, n_items: int = 100, n_slots: int = 1, chunksize: int | None = None
) -> tuple[Any, list[int]]:
    """A ``WorkerProbe`` over fake chunks whose calls take ``per_call_s(index)`` seconds of
    compute each (and as much on its clock), read in order as the run reads them (more sent
    while the probe is not done); returns the figures and the sizes of the chunks sent."""
    clock = ScriptedClock()
    sizes: list[int] = []
    in_flight: deque[tuple[int, int]] = deque()
    state = {"next": 0}

    def send_chunk(size: int) -> bool:
        first = state["next"]
        size = min(size, n_items - first)
        if size < 1:
            return False
        state["next"] = first + size
        sizes.append(size)
        in_flight.append((first, size))
        return True

    probe = WorkerProbe(send_chunk, n_slots=n_slots, chunksize=chunksize, wall_clock=clock)
    probe.send()
    while in_flight and not probe.done:
        first, size = in_flight.popleft()
        compute_s = sum(per_call_s(i) for i in range(first, first + size))
        clock.advance(compute_s)
        outcome = ChunkOutcome(
            list(range(first, first + size)), size, compute_s, compute_s, 10 * size, b"x" * size, 0
        )
        if not probe.took(outcome):
            probe.send()
    return probe.measurements(), sizes


def test_the_worker_probe_leaves_out_a_cold_first_call_a_second_chunk_shows() -> None:
    # A 1 ms first call (under the trusted 2 ms of compute), then 0.1 ms calls: cold.
    m, sizes = worker_probe_with(lambda i: 1e-3 if i == 0 else 1e-4)
    assert sizes[:2] == [1, 1]
    assert m.wall_s_per_item == pytest.approx(1e-4)
    assert m.first_call_extra_s == pytest.approx(9e-4)
    assert m.n_probed == sum(sizes)
    assert m.item_bytes == pytest.approx(10.0)  # sizes count every chunk, the cold one too


def test_the_worker_probe_stops_after_its_single_items_and_keeps_an_even_first_call() -> None:
    m, sizes = worker_probe_with(lambda i: 5e-3)  # 5 ms calls: one is trusted ...
    # ... but a short job's items all go one by one, whatever the figures say.
    assert sizes == [1] * _worker_probe.PROBE_SINGLE_CHUNKS
    assert m.wall_s_per_item == pytest.approx(5e-3) and m.first_call_extra_s == 0.0
    m, sizes = worker_probe_with(lambda i: 1e-4)  # even calls: nothing left out
    assert m.wall_s_per_item == pytest.approx(1e-4) and m.first_call_extra_s == 0.0


def test_the_worker_probe_sends_single_items_first_several_at_once_then_grows() -> None:
    # Fast calls: never trusted before the count cap. A short job goes one item a chunk,
    # with a chunk in flight per slot (workers are not idle between round trips) ...
    _, sizes = worker_probe_with(lambda i: 1e-6, n_items=5, n_slots=2)
    assert sizes == [1] * 5
    # ... a long one grows after the single ones, and the probe reads no more than its cap.
    _, sizes = worker_probe_with(lambda i: 1e-6, n_items=10_000, n_slots=2)
    n_single = _worker_probe.PROBE_SINGLE_CHUNKS
    assert sizes[:n_single] == [1] * n_single
    assert sizes[n_single : n_single + 3] == [4, 16, 64]
    assert sum(sizes) == _probe.PROBE_MAX_ITEMS


def test_the_worker_probe_never_sends_a_chunk_larger_than_the_users_chunksize() -> None:
    _, sizes = worker_probe_with(lambda i: 1e-6, n_items=10_000, n_slots=2, chunksize=1)
    assert set(sizes) == {1}
    _, sizes = worker_probe_with(lambda i: 1e-6, n_items=10_000, n_slots=2, chunksize=10)
    assert max(sizes) == 10


def test_the_worker_probe_keeps_no_result_it_was_told_about() -> None:
    class Token:
        pass

    token = Token()
    ref = weakref.ref(token)
    probe = WorkerProbe(lambda size: True, n_slots=1, wall_clock=ScriptedClock())
    probe.send()
    probe.took(ChunkOutcome([token], 1, 1e-6, 1e-6, 10, b"x", 0))
    del token
    assert ref() is None  # the consumer's once handed on, not the probe's


def test_the_window_records_an_unpicklable_item_at_its_position() -> None:
    import threading

    backend = FakeBackend()
    items: list[Any] = [1, 2, threading.Lock(), 4]
    window = ChunkWindow(abs, Source((items,)), backend, budgets=False, deadline_s=None)
    chunk = window.submit_next(10)
    assert chunk is not None and chunk.n_items == 2  # the items before it still go
    assert backend.chunks == [[(1,), (2,)]]
    assert isinstance(window.error, UnpicklableItemError) and window.error_index == 2
    head, outcome = window.take_head()
    assert head is chunk and outcome is not None and outcome.results == [1, 2]


def test_a_run_that_stays_in_the_caller_makes_no_event(monkeypatch: pytest.MonkeyPatch) -> None:
    # The window's completions make their Event (and its Condition) for the first chunk
    # sent: a trivial serial map() does not pay for one it never waits on.
    made: list[int] = []
    real_event = threading.Event

    def counting_event() -> threading.Event:
        made.append(1)
        return real_event()

    monkeypatch.setattr(threading, "Event", counting_event)
    with AdaptiveProcessPoolExecutor(backend=FakeBackend()) as ex:
        assert list(ex.map(abs, range(-300, 0))) == list(range(300, 0, -1))
        assert ex.last_plan is not None and ex.last_plan.mode == "serial"
    assert made == []
    # A window that sends chunks makes one, and is woken by them.
    with AdaptiveProcessPoolExecutor(backend=FakeBackend(), isolate=True) as ex:
        assert list(ex.map(abs, range(-300, 0), chunksize=50)) == list(range(300, 0, -1))
    assert made


def test_the_window_waits_no_longer_than_its_deadline_on_its_clock() -> None:
    from concurrent.futures import TimeoutError as FuturesTimeoutError

    clock = ScriptedClock()
    backend = FakeBackend(hold=True)
    window = ChunkWindow(
        abs, Source((list(range(4)),)), backend, budgets=False, deadline_s=5.0, monotonic=clock
    )
    window.submit_next(4)
    clock.advance(6.0)  # past the deadline: no real waiting at all
    with pytest.raises(FuturesTimeoutError):
        window.take_head()


# -- the backend contract ---------------------------------------------------------------------


CONTRACT = {
    name
    for name, _ in inspect.getmembers(Backend)
    if not name.startswith("_") and name in Backend.__dict__
}


@pytest.mark.parametrize(
    "backend_class", [PoolBackend, SharedPoolHandle, ThreadBackend, FakeBackend]
)
def test_every_backend_implements_the_whole_contract(backend_class: type) -> None:
    assert {
        "runs_in_process",
        "can_keep_open",
        "on_this_machine",
        "workers_share_files",
        "read_facts",
        "keep_open",
        "allow_close",
    } <= CONTRACT
    missing = {name for name in CONTRACT if not hasattr(backend_class, name)}
    assert not missing, f"{backend_class.__name__} lacks {sorted(missing)}"


def test_the_dask_backend_declares_what_it_cannot_do() -> None:
    pytest.importorskip("distributed")
    from amorsize_executor._dask_backend import DaskBackend

    assert {name for name in CONTRACT if not hasattr(DaskBackend, name)} == set()
    assert DaskBackend.can_keep_open is False and DaskBackend.on_this_machine is False
    assert DaskBackend.workers_share_files is False


def test_facts_come_from_a_backend_that_reads_its_own() -> None:
    own = make_facts(start_method="threads")
    backend = FakeBackend()
    backend.read_facts = lambda: own  # type: ignore[method-assign]
    assert _machine.facts_for(backend) is own


def test_the_thread_backend_counts_as_this_machine() -> None:
    # A job that is serial on any machine is planned on the favourable bound, without
    # reading the facts: threads run on this machine, so the bound holds for them too.
    # The probe's figures are measured: a preemption on a loaded machine can inflate them
    # past the bound (then the facts are read, and the plan is still serial), so a few runs
    # are made; without the thread backend's own start bound none of them is on the bound.
    sources = []
    with AdaptiveProcessPoolExecutor(backend="threads") as ex:
        for _ in range(5):
            assert list(ex.map(abs, range(-2000, 0))) == list(range(2000, 0, -1))
            plan = ex.last_plan
            assert plan is not None and plan.mode == "serial"
            sources.append(plan.facts.worker_start_source)
    assert "bound" in sources, sources
