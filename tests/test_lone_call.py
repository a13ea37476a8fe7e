"""Planning on the probe's first call alone when it is long against a worker's start: the
rule and the memory check (pure, injected figures), the probe's hook (scripted clock), and
the wiring in ``map()`` (a fake backend). No timing is asserted."""

from __future__ import annotations

import time
from typing import Any

import pytest

from amorsize_executor import AdaptiveProcessPoolExecutor, _early_start, _meters

from .conftest import make_facts, make_measurements
from .fakes import FakeBackend
from .test_probe import ScriptedClock, items, run, timed_fn


def enough(**overrides: Any) -> bool:
    # The nested host program: 0.2 s calls, an 8 ms fork start, 2 items left, 2 workers.
    values: dict[str, Any] = {
        "call_s": 0.2,
        "worker_start_s": 0.008,
        "workers_inherit_state": True,
        "n_items_left": 2,
        "n_usable_cores": 2,
        "max_workers": None,
    }
    values.update(overrides)
    return _early_start.lone_call_is_enough(**values)


def test_a_long_call_with_one_round_left_on_a_forked_pool_is_enough() -> None:
    assert enough()
    assert enough(n_items_left=1)
    assert enough(call_s=0.08)  # exactly ten starts


@pytest.mark.parametrize(
    "overrides",
    [
        {"workers_inherit_state": False},  # spawn: each worker would pay a cold call again
        {"call_s": 0.05},  # under ten starts: a cold call could cost more than a tenth
        {"n_items_left": 3},  # more than one round: a second call costs a smaller share
        {"max_workers": 1},  # one worker: the two items left are two rounds
        {"n_items_left": None},  # unknown length
        {"n_items_left": 0},
    ],
)
def test_no_plan_on_a_lone_call_otherwise(overrides: dict[str, Any]) -> None:
    assert not enough(**overrides)


def test_memory_cannot_matter_when_the_bound_leaves_the_plan_as_it_is() -> None:
    facts = make_facts(available_memory_bytes=16 * 2**30)
    slow = make_measurements(n_probed=1, wall_s_per_item=0.2, cpu_s_per_item=0.2)
    assert _early_start.memory_cannot_matter(
        facts, slow, memory_bound_bytes=200 * 2**20, n_items_left=2, max_workers=None
    )
    # A process whose peak is 10 GiB: two workers might not fit, so the memory is measured.
    assert not _early_start.memory_cannot_matter(
        facts, slow, memory_bound_bytes=10 * 2**30, n_items_left=2, max_workers=None
    )


def test_the_probe_stops_on_a_first_call_its_hook_accepts() -> None:
    clock, cpu = ScriptedClock(), ScriptedClock()
    asked: list[tuple[float, float]] = []
    source = items(3)

    def plan_on_lone_call(wall_s: float, cpu_s: float) -> int | None:
        asked.append((wall_s, cpu_s))
        return 123_456

    outcome = run(
        timed_fn(clock, lambda x: 0.2, cpu_share=0.25, cpu=cpu),
        source,
        clock,
        cpu,
        plan_on_lone_call=plan_on_lone_call,
    )
    assert asked == [(pytest.approx(0.2), pytest.approx(0.05))]
    assert outcome.results == [0]
    m = outcome.measurements
    assert (m.n_probed, m.memory_bytes_per_call) == (1, 123_456)
    assert m.wall_s_per_item == pytest.approx(0.2)
    assert next(source) == (1,)  # the items left were not pulled


def test_the_probe_goes_on_when_its_hook_declines() -> None:
    clock, cpu = ScriptedClock(), ScriptedClock()
    asked: list[float] = []
    outcome = run(
        timed_fn(clock, lambda x: 0.2, cpu=cpu),
        items(3),
        clock,
        cpu,
        plan_on_lone_call=lambda wall_s, cpu_s: asked.append(wall_s),  # type: ignore[func-returns-value]
    )
    assert len(asked) == 1  # asked once, after the first call only
    assert outcome.measurements.n_probed == 2
    assert outcome.measurements.memory_bytes_per_call == 4096  # the metered second call


def test_the_probe_does_not_ask_after_a_first_call_that_raised() -> None:
    clock = ScriptedClock()
    asked: list[float] = []

    def fails(x: int) -> int:
        clock.now_s += 0.2
        raise ValueError(x)

    outcome = run(
        fails,
        items(3),
        clock,
        plan_on_lone_call=lambda wall_s, cpu_s: asked.append(wall_s) or 1,  # type: ignore[func-returns-value]
    )
    assert asked == []
    assert isinstance(outcome.error, ValueError)


def test_the_peak_memory_bound_is_at_least_the_resident_memory() -> None:
    big = bytearray(64 * 2**20)  # touched: resident
    try:
        assert _meters.peak_memory_bound() >= len(big)
    finally:
        del big


def slow_square(x: int) -> int:
    """Long enough (60 ms) against a 1 ms start and every start-cost prior."""
    time.sleep(0.06)
    return x * x


@pytest.mark.parametrize(
    ("start_method", "n_warm_workers", "n_probed"),
    [
        ("fork", 0, 1),
        ("spawn", 0, 2),  # each worker would pay a cold first call again
        ("fork", 2, 2),  # warm workers were forked before the call: the same
    ],
)
def test_map_plans_a_long_first_call_alone_on_a_pool_yet_to_fork(
    start_method: str, n_warm_workers: int, n_probed: int
) -> None:
    facts = make_facts(
        n_logical_cores=2,
        start_method=start_method,
        worker_start_s=0.001,
        n_warm_workers=n_warm_workers,
    )
    with AdaptiveProcessPoolExecutor(
        max_workers=2, backend=FakeBackend(), system_facts=facts
    ) as ex:
        assert list(ex.map(slow_square, range(3))) == [0, 1, 4]
        plan = ex.last_plan
    assert plan is not None
    assert plan.measurements.n_probed == n_probed
