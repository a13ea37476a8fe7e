"""The switches of a running ``map()`` (serial to a pool, a pool back to serial) driven by a
scripted clock: ``MapRun`` reads every clock it steers by through ``RunClocks``, so these
tests decide what each call and each result costs, and nothing sleeps."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytest

from amorsize_executor._map_run import RunClocks
from amorsize_executor._records import Plan, SystemFacts

from . import fakes
from .conftest import make_facts
from .fakes import FakeBackend, ScriptedClock


def run_map(
    fn: Callable[[int], int],
    items: Iterable[int],
    backend: FakeBackend,
    clock: ScriptedClock,
    *,
    facts: SystemFacts,
    chunksize: int | None = None,
    serial_allowed: bool = True,
) -> tuple[list[Any], Plan]:
    """One ``map()`` as the executor wires it, on given facts, with the scripted clock."""
    plans: list[Plan] = []
    run = fakes.started_map_run(
        fn,
        items,
        backend,
        RunClocks(wall=clock, cpu=clock.cpu, monotonic=clock),
        read_facts=lambda _: facts,
        chunksize=chunksize,
        serial_allowed=serial_allowed,
        publish_plan=plans.append,
    )
    results = list(run.results())
    return results, plans[-1]


WHERE: list[bool] = []
CLOCK = ScriptedClock()
SECONDS: list[Callable[[int], float]] = [lambda _: 0.0]


def triple(x: int) -> int:
    """``3 * x``, CPU-bound, taking ``SECONDS[0](x)`` on ``CLOCK`` when it runs in the
    caller (in the fake's worker, the caller's clock does not move). Module-level, so the
    fake's workers share these globals (cloudpickle sends it by reference)."""
    WHERE.append(fakes.IN_FAKE_WORKER)
    if not fakes.IN_FAKE_WORKER:
        CLOCK.advance(SECONDS[0](x), SECONDS[0](x))
    return 3 * x


def triple_taking(clock: ScriptedClock, seconds: Callable[[int], float]) -> Callable[[int], int]:
    global CLOCK
    CLOCK = clock
    SECONDS[0] = seconds
    return triple


def test_a_pool_slower_than_serial_hands_the_rest_to_the_caller() -> None:
    WHERE.clear()
    clock = ScriptedClock()
    # Each item costs the parent 5 ms to ship against 0.2 ms to compute here.
    backend = FakeBackend(receive_delay_per_item_s=0.005, receive_clock=clock)
    fn = triple_taking(clock, lambda _: 2e-4)
    # Small chunks, so the steady state is seen early (the rule is the same for any size).
    results, plan = run_map(fn, list(range(400)), backend, clock, facts=make_facts(), chunksize=5)
    assert results == [3 * x for x in range(400)]
    assert plan.mode == "parallel" and plan.outcome is not None
    assert plan.outcome.switched_to_serial
    assert "switched to serial part-way" in plan.explain()
    assert sum("switched to serial part-way" in reason for reason in plan.reasons) == 1
    assert len(WHERE) == 400  # every item exactly once, in a worker or here
    n_in_workers = sum(WHERE)
    assert 0 < n_in_workers < 400 - plan.measurements.n_probed
    assert WHERE[-1] is False  # the end ran in the caller


def test_the_switch_to_serial_waits_for_the_steady_state() -> None:
    # The same job without the slow transport: the pool keeps every chunk.
    WHERE.clear()
    clock = ScriptedClock()
    backend = FakeBackend(receive_clock=clock)
    fn = triple_taking(clock, lambda _: 2e-4)
    results, plan = run_map(fn, list(range(400)), backend, clock, facts=make_facts(), chunksize=5)
    assert results == [3 * x for x in range(400)]
    assert plan.outcome is not None and not plan.outcome.switched_to_serial
    assert WHERE[plan.measurements.n_probed :] == [True] * (400 - plan.measurements.n_probed)


def test_a_pool_slower_than_serial_keeps_going_when_fn_may_not_run_here() -> None:
    WHERE.clear()
    clock = ScriptedClock()
    backend = FakeBackend(receive_delay_per_item_s=0.002, receive_clock=clock)
    fn = triple_taking(clock, lambda _: 2e-4)
    results, plan = run_map(
        fn, list(range(100)), backend, clock, facts=make_facts(), serial_allowed=False
    )
    assert results == [3 * x for x in range(100)]
    assert plan.outcome is not None
    assert not plan.outcome.switched_to_serial
    assert all(WHERE)


def test_known_length_replans_when_calls_get_slower() -> None:
    # The probe sees 0.1 ms calls: 900 items (90 ms) are not worth a 0.2 s start. From item
    # 300 on calls take 3 ms; at the next re-plan the rest (about 1.7 s serial) is.
    WHERE.clear()
    clock = ScriptedClock()
    backend = FakeBackend()
    fn = triple_taking(clock, lambda x: 1e-4 if x < 300 else 3e-3)
    results, plan = run_map(
        fn, list(range(900)), backend, clock, facts=make_facts(worker_start_s=0.2)
    )
    assert results == [3 * x for x in range(900)]
    assert plan.outcome is not None and plan.outcome.switched_to_parallel
    assert "switched from serial" in plan.explain()
    dispatched = [args[0] for args in backend.items_dispatched]
    assert dispatched == list(range(900 - len(dispatched), 900))
    # Exactly at the first re-plan after the slowdown: the batches end where the count
    # doubles (..., 160, 320, 640), and the 8 calls timed at the start of the batch from
    # item 320 are the first to show 3 ms; the pool takes everything after them.
    assert dispatched[0] == 328
    assert plan.measurements.wall_s_per_item == pytest.approx(3e-3)


def test_a_serial_run_whose_calls_stay_as_fast_never_switches() -> None:
    WHERE.clear()
    clock = ScriptedClock()
    backend = FakeBackend()
    fn = triple_taking(clock, lambda _: 1e-4)
    results, plan = run_map(
        fn, list(range(900)), backend, clock, facts=make_facts(worker_start_s=0.2)
    )
    assert results == [3 * x for x in range(900)]
    assert plan.mode == "serial" and plan.outcome is not None
    assert not plan.outcome.switched_to_parallel
    assert backend.chunks == []


def test_unknown_length_switches_from_serial_to_parallel() -> None:
    # A pool costs 50 ms to start: not worth it for the few items the probe has seen, worth it
    # once the generator has shown it keeps coming.
    WHERE.clear()
    clock = ScriptedClock()
    backend = FakeBackend()
    fn = triple_taking(clock, lambda _: 2e-3)
    results, plan = run_map(
        fn, (x for x in range(600)), backend, clock, facts=make_facts(worker_start_s=0.05)
    )
    assert results == [3 * x for x in range(600)]
    assert plan.outcome is not None and plan.outcome.switched_to_parallel
    assert any("switched from serial" in r for r in plan.reasons)
    dispatched = [args[0] for args in backend.items_dispatched]
    # The serial part and the dispatched part tile the input: nothing lost, nothing twice.
    assert dispatched == list(range(600 - len(dispatched), 600))
    # The probe times 5 calls; the batches then end where the count doubles (16, 32, 64,
    # 128, 256), each re-planned after its first 8 calls. At 136 items pulled the lower
    # bound on what is left is long enough for a pool to pay its 50 ms: it takes over there.
    assert plan.measurements.n_probed == 5
    assert dispatched[0] == 136
