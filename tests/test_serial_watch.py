"""Serial plans are checked against the clock: the pure detector with injected numbers, and
a serial run over a scripted clock (``RunClocks``, the serial runner's wall clock) whose slow
stretch comes after the probe and the last re-plan by item count."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable
from typing import Any

import pytest

from amorsize_executor import _early_start
from amorsize_executor import _serial_watch as sw
from amorsize_executor._map_run import RunClocks
from amorsize_executor._records import Plan, SystemFacts

from . import fakes
from .conftest import make_facts
from .fakes import FakeBackend, started_map_run

pytestmark = pytest.mark.timeout(30)


def test_batches_on_time_never_trigger_and_build_no_credit() -> None:
    watch = sw.SerialWatch(s_per_item=1e-3, margin_s=0.05)
    for _ in range(1000):
        assert watch.observe(4e-3, 5) is None  # faster than predicted: no credit kept
    assert watch.excess_s == 0.0
    # A stretch of 50 ms calls, one in five: seen within the first two slow calls.
    assert watch.observe(0.054, 5) is None
    rate = watch.observe(0.054, 5)
    assert rate == pytest.approx(0.108 / 10)


def test_the_stretch_rate_is_not_diluted_by_the_fast_start() -> None:
    watch = sw.SerialWatch(s_per_item=2e-4, margin_s=0.03)
    for _ in range(54):
        assert watch.observe(1e-3, 5) is None  # 270 calls on time
    rate = watch.observe(0.0508, 5)
    assert rate == pytest.approx(0.0508 / 5)


def test_a_rebased_watch_predicts_the_new_rate() -> None:
    watch = sw.SerialWatch(s_per_item=1e-3, margin_s=0.01)
    rate = watch.observe(0.02, 2)
    assert rate == pytest.approx(0.01)
    watch.rebase(0.01)
    assert watch.observe(0.02, 2) is None
    assert watch.check_items() == 1


def test_check_items_bound_the_predicted_time_between_two_looks() -> None:
    assert sw.serial_check_items(2e-4) == int(sw.SERIAL_CHECK_S / 2e-4)
    assert sw.serial_check_items(1.0) == 1
    assert sw.serial_check_items(0.0) > 10**6
    assert sw.overshoot_margin_s(make_facts(worker_start_s=0.2)) == 0.2
    assert sw.overshoot_margin_s(make_facts(worker_start_s=0.0)) == sw.SERIAL_OVERSHOOT_MIN_S
    # Warm workers: a switch starts nothing, so only the noise floor is waited for.
    warm = make_facts(worker_start_s=0.2, n_warm_workers=2)
    assert sw.overshoot_margin_s(warm) == sw.SERIAL_OVERSHOOT_MIN_S


class ScriptedClock:
    """Time that moves only when ``late_slow`` says a call took time (wall and CPU alike:
    the calls compute)."""

    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def run_map(
    fn: Callable[[int], int],
    items: Iterable[int],
    backend: FakeBackend,
    clock: ScriptedClock,
    *,
    read_facts: Callable[[FakeBackend], SystemFacts],
    local_machine: bool,
) -> tuple[list[Any], Plan]:
    """One ``map()`` as the executor wires it, every clock of the run the scripted one."""
    plans: list[Plan] = []
    run = started_map_run(
        fn,
        items,
        backend,
        RunClocks(wall=clock, cpu=clock, monotonic=clock),
        read_facts=read_facts,
        local_machine=local_machine,
        publish_plan=plans.append,
    )
    results = list(run.results())
    return results, plans[-1]


def late_slow(clock: ScriptedClock, x: int) -> int:
    """0.2 ms calls, except one in five of the last 30 of 300, which take 50 ms."""
    clock.now_s += 0.05 if x >= 270 and x % 5 == 0 else 2e-4
    return 2 * x


def test_a_slow_stretch_after_the_last_count_replan_is_caught_within_a_few_items(
    fake_backend: FakeBackend,
) -> None:
    clock = ScriptedClock()
    # 300 calls of 0.2 ms (60 ms) are not worth a 30 ms start on 4 cores: the plan is serial.
    facts = make_facts(worker_start_s=0.03, task_roundtrip_s=2e-4, ipc_bytes_per_s=5e8)
    fn = functools.partial(late_slow, clock)
    results, plan = run_map(
        fn, range(300), fake_backend, clock, read_facts=lambda _: facts, local_machine=False
    )
    assert results == [2 * x for x in range(300)]
    assert plan is not None and plan.outcome is not None
    assert plan.outcome.switched_to_parallel
    dispatched = sorted(args[0] for args in fake_backend.items_dispatched)
    # The first slow call is item 270. The part holding it (5 calls of 0.2 ms) puts the run
    # behind; the re-check times the next calls alone, the first slow one (275 at the
    # latest) confirms it, and the re-plan sends the rest to the pool.
    assert 270 < dispatched[0] <= 276
    assert dispatched == list(range(dispatched[0], 300))


def test_without_the_watch_the_late_stretch_runs_serially(fake_backend: FakeBackend) -> None:
    """The same job with the serial runner's clock check off (as after a pool lost): no
    re-plan by item count falls in the last 30 items, so the slow ones all run here."""
    clock = ScriptedClock()
    facts = make_facts(worker_start_s=0.03, task_roundtrip_s=2e-4, ipc_bytes_per_s=5e8)
    fn = functools.partial(late_slow, clock)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sw, "SerialWatch", lambda *a, **k: NeverBehind())
        results, plan = run_map(
            fn, range(300), fake_backend, clock, read_facts=lambda _: facts, local_machine=False
        )
    assert results == [2 * x for x in range(300)]
    assert plan.outcome is not None and not plan.outcome.switched_to_parallel
    assert fake_backend.items_dispatched == []


class NeverBehind(sw.SerialWatch):
    """A watch whose run is never behind: one part per batch, as before the watch."""

    def __init__(self) -> None:
        super().__init__(s_per_item=0.0, margin_s=float("inf"))

    def observe(self, elapsed_s: float, n_items: int) -> float | None:
        return None


# -- streams: workers started in the background -------------------------------------------


def test_a_stream_kept_serial_only_by_the_start_cost_starts_workers() -> None:
    from amorsize_executor import _cost_model as cm

    from .conftest import make_measurements

    prestart = _early_start.workers_to_prestart_for_stream

    facts = make_facts(worker_start_s=0.05, task_roundtrip_s=2e-4, ipc_bytes_per_s=5e8)
    work = make_measurements(wall_s_per_item=1e-3, cpu_s_per_item=1e-3)
    # 64 more items of 1 ms: serial, since four workers take 0.125 s to start; warm, a pool
    # wins, and 64 ms of serial work leaves time for a 50 ms start.
    assert cm.plan_map(facts, work, n_items=None, n_items_lower_bound=64).mode == "serial"
    assert prestart(facts, work, n_items_assumed=64, max_workers=None) == 4
    assert prestart(facts, work, n_items_assumed=64, max_workers=2) == 2
    # 32 items (32 ms) take more than half a 50 ms start: the workers are nearly ready by
    # the next re-plan. 24 items (24 ms) take less: a stream ending there would wait.
    assert prestart(facts, work, n_items_assumed=32, max_workers=None) == 4
    assert prestart(facts, work, n_items_assumed=24, max_workers=None) == 0
    trivial = make_measurements(wall_s_per_item=1e-6, cpu_s_per_item=1e-6)
    assert prestart(facts, trivial, n_items_assumed=10**6, max_workers=None) == 0


def one_ms(clock: ScriptedClock, x: int) -> int:
    clock.now_s += 1e-3
    return x + 1


def run_stream(backend: FakeBackend, n_items: int) -> tuple[list[int], Any]:
    clock = ScriptedClock()
    # The machine's facts, as read (so the backend's warm workers count): 4 cores, 50 ms
    # to start a worker.
    machine = make_facts(task_roundtrip_s=2e-4, ipc_bytes_per_s=5e8, worker_start_s=0.05)

    def read_facts(backend: FakeBackend) -> SystemFacts:
        return dataclasses.replace(machine, n_warm_workers=backend.n_warm_workers)

    fn = functools.partial(one_ms, clock)
    results, plan = run_map(
        fn, (x for x in range(n_items)), backend, clock, read_facts=read_facts, local_machine=True
    )
    assert results == [x + 1 for x in range(n_items)]
    return [args[0] for args in backend.items_dispatched], plan


def test_a_stream_switches_a_doubling_earlier_once_its_workers_are_warm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prestarted = FakeBackend()
    dispatched, plan = run_stream(prestarted, 3000)
    assert plan.outcome.switched_to_parallel
    # Without the background start, the switch waits for a cold pool to win.
    monkeypatch.setattr(_early_start, "workers_to_prestart_for_stream", lambda *a, **k: 0)
    cold = FakeBackend()
    dispatched_cold, _ = run_stream(cold, 3000)
    assert len(prestarted.prepared) == 2 and len(cold.prepared) == 1
    assert dispatched[0] < dispatched_cold[0]


# -- the re-check after the run fell behind -------------------------------------------------


def test_a_recheck_lasts_as_long_as_the_stretch_or_until_the_calls_overshoot() -> None:
    watch = sw.SerialWatch(s_per_item=2e-4, margin_s=0.0128)
    assert watch.observe(1e-3, 5) is None
    rate = watch.observe(0.0408, 5)  # one call of 40 ms among five
    assert rate == pytest.approx(0.0408 / 5)
    watch.start_recheck()
    assert watch.recheck_s == pytest.approx(0.0408)
    assert watch.excess_s == 0.0 and watch.stretch_items == 0
    # Calls on time: not over until they have run as long as the stretch.
    assert not watch.recheck_over(0.0402, 0.0402, 201)
    assert watch.recheck_over(0.0408, 0.0408, 204)
    # One slow call overshoots by more than the margin: over at once.
    assert watch.recheck_over(0.0402, 0.0402, 2)
    assert not watch.recheck_over(0.0102, 0.0102, 2)
    watch.rebase(2e-4)
    assert watch.recheck_s == 0.0


def test_a_preemption_does_not_confirm_a_recheck_of_computing_calls() -> None:
    computing = sw.SerialWatch(s_per_item=2e-4, margin_s=0.01, cpu_share=1.0, recheck_s=0.04)
    # Two calls took 20 ms on the wall but 0.4 ms of CPU: another process had the core.
    assert computing.calls_own_s(0.02, 4e-4) == pytest.approx(4e-4)
    assert not computing.recheck_over(0.02, 4e-4, 2)
    assert computing.recheck_over(0.02, 0.02, 2)  # they computed for 20 ms: slow calls
    # Calls that wait are judged by the wall clock.
    waiting = sw.SerialWatch(s_per_item=2e-4, margin_s=0.01, recheck_s=0.04)
    assert waiting.calls_own_s(0.02, 4e-4) == 0.02
    assert waiting.recheck_over(0.02, 4e-4, 2)


def test_a_recheck_on_time_hands_on_no_more_than_the_prediction() -> None:
    watch = sw.SerialWatch(s_per_item=1e-7, margin_s=0.01, recheck_s=0.02)
    # 4096 trivial calls and a pause of 9 ms (under the margin): on time, as predicted.
    assert watch.recheck_figure_s(0.0094, 0.0094, 4096) == pytest.approx(4096 * 1e-7)
    # Faster than predicted: what they took.
    assert watch.recheck_figure_s(2e-4, 2e-4, 4096) == pytest.approx(2e-4)
    # Overshot by more than the margin: what they took.
    assert watch.recheck_figure_s(0.0204, 0.0204, 2) == pytest.approx(0.0204)


def test_a_recheck_reads_the_clock_after_each_call_unless_calls_are_trivial() -> None:
    assert sw.SerialWatch(s_per_item=2e-4, margin_s=0.01).recheck_step_items() == 1
    assert sw.SerialWatch(s_per_item=1e-7, margin_s=0.01).recheck_step_items() == int(
        sw.RECHECK_STEP_S / 1e-7
    )
    assert sw.SerialWatch(s_per_item=0.0, margin_s=0.01).recheck_step_items() == 1


def test_a_recheck_after_one_long_pause_lasts_a_few_margins() -> None:
    watch = sw.SerialWatch(s_per_item=2e-4, margin_s=0.01)
    assert watch.observe(10.0, 5) is not None  # one 10 s call (or a pause)
    watch.start_recheck()
    assert watch.recheck_s == pytest.approx(sw.RECHECK_MAX_MARGINS * 0.01)


def slow_stretch(clock: ScriptedClock, slow_from: int, every: int, x: int) -> int:
    """0.2 ms calls; from ``slow_from`` on, one in ``every`` takes 50 ms."""
    slow = x >= slow_from and (x - slow_from) % every == 0
    clock.now_s += 0.05 if slow else 2e-4
    return 2 * x


def first_dispatched(
    slow_from: int, every: int, backend: FakeBackend, n_items: int = 300
) -> int | None:
    """The first item a pool ran in a known-length job of ``slow_stretch`` calls on a
    4-core machine with a 30 ms start (``None``: it all ran serially)."""
    clock = ScriptedClock()
    machine = make_facts(worker_start_s=0.03, task_roundtrip_s=2e-4, ipc_bytes_per_s=5e8)

    def read_facts(backend: FakeBackend) -> SystemFacts:
        return dataclasses.replace(machine, n_warm_workers=backend.n_warm_workers)

    fn = functools.partial(slow_stretch, clock, slow_from, every)
    results, _ = run_map(
        fn, range(n_items), backend, clock, read_facts=read_facts, local_machine=False
    )
    assert results == [2 * x for x in range(n_items)]
    dispatched = sorted(args[0] for args in backend.items_dispatched)
    if not dispatched:
        return None
    first: int = dispatched[0]
    assert dispatched == list(range(first, n_items))
    return first


def test_a_contiguous_slow_stretch_is_caught_within_one_part_and_one_call(
    fake_backend: FakeBackend,
) -> None:
    # Parts hold 1 ms of predicted work (5 calls of 0.2 ms): the part that starts at or
    # before item 150 puts the run behind, and the re-check's first call (slow) confirms.
    first = first_dispatched(150, 1, fake_backend)
    assert first is not None and 150 < first <= 150 + 5 + 1


def test_rare_slow_calls_are_confirmed_by_a_recheck_as_long_as_their_stretch(
    fake_backend: FakeBackend,
) -> None:
    # One call in 20 takes 50 ms: a re-check of a fixed handful of calls would see only
    # fast ones after each slow call, and the run would stay serial to the end. Lasting as
    # long as the stretch, it reaches the next slow call.
    first = first_dispatched(100, 20, fake_backend)
    assert first is not None and first <= 100 + 20 + 5 + 1


def test_a_slow_consumer_does_not_pass_for_slow_calls(fake_backend: FakeBackend) -> None:
    """The consumer spends 1 ms on each result of 0.2 ms calls (300 of them: a serial plan):
    every part is behind, but the re-checks time the calls alone, find them on time, and
    the run stays serial."""
    clock = ScriptedClock()
    machine = make_facts(worker_start_s=0.03, task_roundtrip_s=2e-4, ipc_bytes_per_s=5e8)
    fn = functools.partial(slow_stretch, clock, 10**9, 1)
    run = started_map_run(
        fn,
        range(300),
        fake_backend,
        RunClocks(wall=clock, cpu=clock, monotonic=clock),
        read_facts=lambda backend: dataclasses.replace(
            machine, n_warm_workers=backend.n_warm_workers
        ),
    )
    results = []
    for result in run.results():
        clock.now_s += 1e-3
        results.append(result)
    assert results == [2 * x for x in range(300)]
    assert fake_backend.items_dispatched == []
    assert fake_backend.prepared == []


def computes_then_preempted(clocks: fakes.ScriptedClock, preempted: frozenset[int], x: int) -> int:
    """0.2 ms of computing (the wall and the CPU clock move); after the items in
    ``preempted``, another process takes the core for 50 ms (the wall clock alone moves)."""
    clocks.advance(2e-4, 2e-4)
    if x in preempted:
        clocks.advance(0.05)
    return 2 * x


def test_preemptions_of_computing_calls_do_not_switch_a_serial_run(
    fake_backend: FakeBackend,
) -> None:
    """Two preemptions of 50 ms, one that puts the run behind and one inside the re-check
    that follows: the calls' CPU time shows they were on time, and the run stays serial (a
    re-check on the wall clock alone confirmed it and sent the rest to a pool)."""
    clocks = fakes.ScriptedClock()
    machine = make_facts(worker_start_s=0.03, task_roundtrip_s=2e-4, ipc_bytes_per_s=5e8)
    fn = functools.partial(computes_then_preempted, clocks, frozenset({100, 103, 106}))
    run = started_map_run(
        fn,
        range(300),
        fake_backend,
        RunClocks(wall=clocks, cpu=clocks.cpu, monotonic=clocks),
        read_facts=lambda backend: machine,
    )
    assert list(run.results()) == [2 * x for x in range(300)]
    assert fake_backend.items_dispatched == []
