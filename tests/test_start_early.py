"""Starting workers while the probe runs: the rule (pure, injected figures), the probe's hook
(scripted clock), and the wiring in ``map()`` (a fake backend). No timing is asserted."""

from __future__ import annotations

import functools
import gc
import time
from typing import Any

import pytest

from amorsize_executor import AdaptiveProcessPoolExecutor, _early_start, _fn_cost, _probe

from .conftest import make_facts
from .fakes import FakeBackend
from .test_probe import ScriptedClock, items, no_memory, run, timed_fn


def early(**overrides: Any) -> int:
    values: dict[str, Any] = {
        "fastest_call_s": 5e-3,
        "its_cpu_s": 5e-3,
        "n_calls_timed": 1,
        "n_items_left": 300,
        "n_usable_cores": 4,
        "max_workers": None,
    }
    values.update(overrides)
    return _early_start.workers_to_start_early(**values)


def test_a_long_cpu_bound_job_starts_one_worker_per_core() -> None:
    assert early() == 4


def test_the_users_cap_and_the_item_count_bound_the_early_workers() -> None:
    assert early(max_workers=2) == 2
    assert early(n_items_left=3, fastest_call_s=0.1, its_cpu_s=0.1) == 3


@pytest.mark.parametrize(
    "overrides",
    [
        {"n_items_left": None},  # unknown length: the job may be short
        {"n_items_left": 10},  # 50 ms of work: under PRESTART_MIN_SERIAL_S
        {"its_cpu_s": 1e-3},  # waiting-bound: the worker count is not known yet
        {"n_usable_cores": 1},  # one core: a pool cannot win on CPU-bound work
        {"fastest_call_s": 0.0},
        # a fast first call says little (200k trivial items once looked like 0.4 s of work)
        {"fastest_call_s": 2e-6, "its_cpu_s": 2e-6, "n_items_left": 200_000},
        # a lone first call of 0.5 ms may be a one-off (a lazy import, a cold cache) ...
        {"fastest_call_s": 5e-4, "its_cpu_s": 5e-4, "n_items_left": 100_000},
        # ... and two calls need a tenth of a millisecond each
        {"fastest_call_s": 5e-5, "its_cpu_s": 5e-5, "n_calls_timed": 2, "n_items_left": 10**6},
    ],
)
def test_no_early_start_without_a_clear_case(overrides: dict[str, Any]) -> None:
    assert early(**overrides) == 0


def test_two_sub_millisecond_calls_make_a_case_that_one_does_not() -> None:
    # 0.2 ms calls over 3000 items: 0.6 s of work, clear once a second call confirms it.
    assert early(fastest_call_s=2e-4, its_cpu_s=2e-4, n_items_left=3000, n_calls_timed=1) == 0
    assert early(fastest_call_s=2e-4, its_cpu_s=2e-4, n_items_left=3000, n_calls_timed=2) == 4


def test_the_probe_reports_from_its_second_call_on_with_the_fastest_so_far() -> None:
    clock, cpu = ScriptedClock(), ScriptedClock()
    durations = {0: 3e-3, 1: 2e-3, 2: 1e-3}
    seen: list[tuple[float, float, int]] = []
    run(
        timed_fn(clock, lambda x: durations.get(x, 1e-3), cpu_share=1.0, cpu=cpu),
        items(10),
        clock,
        cpu,
        after_timed_call=lambda wall, cpu_s, n: seen.append((wall, cpu_s, n)),
    )
    # Never on the first call alone (3 ms, maybe cold): after the memory-metered second call
    # (2 ms) the faster of the two, after the next timed call (1 ms) the fastest, no more.
    assert seen == [
        (pytest.approx(2e-3), pytest.approx(2e-3), 2),
        (pytest.approx(1e-3), pytest.approx(1e-3), 3),
    ]


def test_a_cold_first_call_does_not_start_workers_early() -> None:
    # 20 ms, then 2 ms calls over 100 items: the first call alone would say 2 s of work
    # (a pool started early), the rest say 0.2 s (too short to start one during the probe).
    clock, cpu = ScriptedClock(), ScriptedClock()
    seen: list[int] = []
    run(
        timed_fn(clock, lambda x: 0.02 if x == 0 else 0.002, cpu_share=1.0, cpu=cpu),
        items(100),
        clock,
        cpu,
        after_timed_call=lambda wall, cpu_s, n: seen.append(
            early(fastest_call_s=wall, its_cpu_s=cpu_s, n_calls_timed=n, n_items_left=98)
        ),
    )
    assert seen == [0, 0]


def test_the_probe_reports_its_first_call_once_with_the_collector_running() -> None:
    clock, cpu = ScriptedClock(), ScriptedClock()
    seen: list[tuple[float, float, bool]] = []
    gc.enable()
    outcome = run(
        timed_fn(clock, lambda x: 1e-3, cpu_share=0.5, cpu=cpu),
        items(50),
        clock,
        cpu,
        after_timed_call=lambda wall, cpu_s, n: (
            seen.append((wall, cpu_s, gc.isenabled())) if n == 2 else None
        ),
    )
    assert seen == [(pytest.approx(1e-3), pytest.approx(5e-4), True)]
    assert outcome.measurements.n_probed > 1
    assert gc.isenabled()


def test_the_collector_is_paused_only_for_groups_of_fast_calls() -> None:
    clock = ScriptedClock()
    states: list[tuple[int, bool]] = []

    def fn(x: int) -> int:
        states.append((x, gc.isenabled()))
        clock.now_s += 1e-6  # fast: timed in growing groups
        return x

    gc.enable()
    _probe.probe(fn, items(40), wall_clock=clock, measure_memory=no_memory)
    by_item = dict(states)
    assert by_item[0] and by_item[1]  # the first call and the memory-metered one
    assert not all(by_item.values())  # a group ran with the collector paused
    assert gc.isenabled()
    gc.disable()
    try:
        _probe.probe(fn, items(10), wall_clock=clock, measure_memory=no_memory)
        assert not gc.isenabled()  # a caller's choice is left as it was
    finally:
        gc.enable()


def test_slow_calls_run_with_the_collector_on() -> None:
    clock = ScriptedClock()
    states: list[bool] = []

    def fn(x: int) -> int:
        states.append(gc.isenabled())
        clock.now_s += 1e-3
        return x

    gc.enable()
    _probe.probe(fn, items(10), wall_clock=clock, measure_memory=no_memory)
    assert states and all(states)


CALLS: list[int] = []


def count_call(x: int) -> int:
    CALLS.append(x)
    return x


def count_call_slowly(x: int) -> int:
    """Slow enough (1 ms) for a plan on free, instant workers to go parallel."""
    time.sleep(0.001)
    return count_call(x)


class RecordingBackend(FakeBackend):
    """Records how many calls the probe had made whenever workers are asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.calls_at_prepare: list[int] = []

    def prepare(self, n_workers: int) -> None:
        self.calls_at_prepare.append(len(CALLS))
        super().prepare(n_workers)


def map_with_early_start_rule(
    monkeypatch: pytest.MonkeyPatch, n_early_workers: int, fn: Any
) -> tuple[RecordingBackend, int]:
    """Map ``fn`` over 100 items with the early-start rule answering ``n_early_workers``
    whenever it is asked; the backend and how many items the probe ran."""
    monkeypatch.setattr(_early_start, "PRESTART_MIN_SERIAL_S", 0.0)
    monkeypatch.setattr(_early_start, "PRESTART_MIN_CALL_S", 0.0)
    monkeypatch.setattr(_early_start, "workers_to_start_early", lambda **_: n_early_workers)
    CALLS.clear()
    backend = RecordingBackend()
    with AdaptiveProcessPoolExecutor(backend=backend, system_facts=make_facts()) as ex:
        assert list(ex.map(fn, range(100))) == list(range(100))
        n_probed = ex.last_plan.measurements.n_probed  # type: ignore[union-attr]
    return backend, n_probed


def test_map_starts_workers_after_the_second_probed_call(monkeypatch: pytest.MonkeyPatch) -> None:
    backend, n_probed = map_with_early_start_rule(monkeypatch, 3, count_call)
    # During the probe, right after its second call (the first alone may be cold).
    assert backend.calls_at_prepare[0] == 2
    assert backend.prepared[0] == 3
    # The probe reports two timed calls, and the rule says yes to both: workers start once.
    assert sum(1 for n in backend.calls_at_prepare if n < n_probed) == 1


def test_map_does_not_start_workers_early_when_the_rule_says_no(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    backend, n_probed = map_with_early_start_rule(monkeypatch, 0, count_call_slowly)
    assert backend.calls_at_prepare  # the plan started workers ...
    assert all(n >= n_probed for n in backend.calls_at_prepare)  # ... once the probe ended


def test_the_favourable_bound_costs_no_start_when_workers_are_warm() -> None:
    # 12 calls of about 1 ms: serial against any pool start (the bound's fastest start is
    # 4 ms), but two warm workers cost nothing to start, so the bound must not rule them out.
    backend = FakeBackend()
    backend.warm = 4

    def one_ms(x: int) -> int:
        total = 0
        for i in range(20_000):
            total += i & 1
        return x + total - total

    with AdaptiveProcessPoolExecutor(backend=backend) as ex:
        assert list(ex.map(one_ms, range(12))) == list(range(12))
        plan = ex.last_plan
    assert plan is not None
    assert plan.facts.worker_start_source != "bound"  # the machine was read


# -- a heavy fn: its load by each worker raises the bar ----------------------------------------


def test_a_heavy_fn_needs_a_longer_job_to_start_workers_early() -> None:
    # 8 ms calls with a 200 MB array bound into fn (about 0.14 s per worker to load): 49
    # items (0.4 s) started two workers the plan then left idle; 199 items (1.6 s) still do.
    heavy = {"fastest_call_s": 8e-3, "its_cpu_s": 8e-3, "n_usable_cores": 2}
    assert early(**heavy, n_items_left=49) == 2  # with a free fn
    assert early(**heavy, n_items_left=49, fn_load_s_per_worker=0.14) == 0
    assert early(**heavy, n_items_left=199, fn_load_s_per_worker=0.14) == 2
    # One worker (the user's cap) saves the caller nothing to pay the load with.
    assert early(**heavy, n_items_left=199, max_workers=1) == 1
    assert early(**heavy, n_items_left=199, max_workers=1, fn_load_s_per_worker=0.14) == 0


def _weighted(weights: Any, x: int) -> int:
    time.sleep(0.001)
    return x + int(weights[0])


@pytest.mark.parametrize("heavy", [False, True], ids=["small-fn", "array-in-fn"])
def test_map_tells_the_early_start_rule_what_loading_fn_costs_a_worker(
    monkeypatch: pytest.MonkeyPatch, heavy: bool
) -> None:
    np = pytest.importorskip("numpy")
    asked: list[float] = []

    def rule(**values: Any) -> int:
        asked.append(values["fn_load_s_per_worker"])
        return 2

    monkeypatch.setattr(_early_start, "workers_to_start_early", rule)
    weights = np.zeros(4_000_000 if heavy else 4)  # 32 MB
    fn = functools.partial(_weighted, weights)
    facts = make_facts(ipc_bytes_per_s=5e8)
    with AdaptiveProcessPoolExecutor(backend=FakeBackend(), system_facts=facts) as ex:
        assert list(ex.map(fn, range(20))) == list(range(20))
    # Asked twice: on the most cores there could be (no fn cost yet), then on the facts.
    assert len(asked) == 2 and asked[0] == 0.0
    if heavy:  # in a chunk or mapped once (whichever way it travels): 32 MB at either rate
        faster = max(facts.ipc_bytes_per_s, _fn_cost.MAPPED_BYTES_PER_S)
        assert asked[1] >= 32e6 / faster
    else:  # a few hundred bytes
        assert 0.0 < asked[1] < 1e-4
