"""The probe with a scripted clock: exact figures, no timing."""

from __future__ import annotations

import functools
import gc
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest

from amorsize_executor import _probe, _probe_calls


class ScriptedClock:
    """Each call of ``fn`` advances the clock by its scripted duration; reads cost nothing."""

    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        return self.now_s


def timed_fn(
    clock: ScriptedClock,
    durations: Callable[[int], float],
    cpu_share: float = 1.0,
    cpu: ScriptedClock | None = None,
) -> Callable[[int], int]:
    def fn(x: int) -> int:
        clock.now_s += durations(x)
        if cpu is not None:
            cpu.now_s += durations(x) * cpu_share
        return x * 2

    return fn


def items(n: int | None) -> Iterator[tuple[Any, ...]]:
    i = 0
    while n is None or i < n:
        yield (i,)
        i += 1


def no_memory(call: Callable[[], Any]) -> tuple[Any, int]:
    return call(), 4096


def run(
    fn: Callable[..., Any],
    source: Iterator[tuple[Any, ...]],
    clock: ScriptedClock,
    cpu: ScriptedClock | None = None,
    **kwargs: Any,
) -> _probe.ProbeOutcome:
    def dumps(obj: object) -> bytes:
        # 10 bytes and 20 µs of pickling per element of the batch.
        n = len(obj)  # type: ignore[arg-type]
        clock.now_s += 20e-6 * n
        return b"x" * (10 * n)

    def result_size(result: object) -> float:
        # The same for each result, which the probe sizes on its own before handing it on;
        # sizing nothing (the probe's measure of a sizing call's fixed cost) costs nothing.
        if result is None:
            return 0.0
        clock.now_s += 20e-6
        return 10.0

    return _probe.probe(
        fn,
        source,
        wall_clock=clock,
        cpu_clock=cpu or ScriptedClock(),
        dumps=dumps,
        result_size=result_size,
        measure_memory=no_memory,
        **kwargs,
    )


def test_exact_figures_from_a_scripted_clock() -> None:
    clock, cpu = ScriptedClock(), ScriptedClock()
    fn = timed_fn(clock, lambda x: 0.004, cpu_share=0.25, cpu=cpu)
    outcome = run(fn, items(100), clock, cpu)
    m = outcome.measurements
    # The first call is timed, the second traced (left out of the means); identical
    # samples are stable once PROBE_MIN_ITEMS (4) are in: 5 calls, 20 ms of the 30 ms budget.
    assert outcome.results == [x * 2 for x in range(5)]
    assert m.n_probed == 5
    assert m.wall_s_per_item == pytest.approx(0.004)
    assert m.cpu_s_per_item == pytest.approx(0.001)
    assert m.cpu_share == pytest.approx(0.25)
    # Items are pickled as one batch, like a chunk, and each result before it is handed
    # on: 10 B and 20 µs apiece, none of it in fn's time.
    assert m.item_bytes == m.result_bytes == 10
    assert m.pickle_s_per_item == pytest.approx(2 * 20e-6)
    assert m.pickle_s_per_item == pytest.approx(2 * 20e-6)
    assert m.memory_bytes_per_call == 4096
    assert not outcome.exhausted


def test_slow_items_stop_the_probe_early() -> None:
    clock = ScriptedClock()
    outcome = run(timed_fn(clock, lambda x: 1.0), items(100), clock)
    # A 1 s first call spends the budget; the second (memory-metered) call is made all the
    # same, so that no plan rests on one call that may have been cold; it was not, so the
    # probe stops there.
    assert outcome.measurements.n_probed == 2
    assert outcome.measurements.wall_s_per_item == pytest.approx(1.0)
    assert outcome.measurements.first_call_extra_s == 0.0


def test_a_cold_first_call_is_left_out_and_the_plan_rests_on_the_rest() -> None:
    clock, cpu = ScriptedClock(), ScriptedClock()
    # The first call is 10x slower than every later one (imports, caches).
    fn = timed_fn(clock, lambda x: 0.02 if x == 0 else 0.002, cpu=cpu)
    outcome = run(fn, items(100), clock, cpu)
    m = outcome.measurements
    assert m.wall_s_per_item == pytest.approx(0.002)
    assert m.cpu_s_per_item == pytest.approx(0.002)
    # What a fresh worker pays again on its own first call.
    assert m.first_call_extra_s == pytest.approx(0.018)
    # The first call, the traced one, then warm timed calls until stable (4 samples, 2 ms).
    assert m.n_probed == 6


def test_a_cold_first_call_beyond_the_budget_waits_for_a_warm_timed_call() -> None:
    clock = ScriptedClock()
    # A 100 ms first call spends the budget three times over, then calls take 10 ms.
    outcome = run(timed_fn(clock, lambda x: 0.1 if x == 0 else 0.01), items(100), clock)
    m = outcome.measurements
    assert m.n_probed == 3  # first, traced, and one warm timed call
    assert m.wall_s_per_item == pytest.approx(0.01)
    assert m.first_call_extra_s == pytest.approx(0.09)


def test_a_cold_first_call_on_a_two_item_input_is_planned_from_the_traced_call() -> None:
    clock = ScriptedClock()
    outcome = run(timed_fn(clock, lambda x: 0.1 if x == 0 else 0.01), items(2), clock)
    assert outcome.exhausted
    assert outcome.measurements.wall_s_per_item == pytest.approx(0.01)


def test_first_call_is_cold_only_when_much_slower_than_the_next() -> None:
    assert _probe.first_call_is_cold(0.02, 0.002)
    assert not _probe.first_call_is_cold(0.005, 0.002)  # 2.5x: ordinary variation
    assert not _probe.first_call_is_cold(1.0, 1.0)


def test_fast_uniform_items_stop_once_stable() -> None:
    clock = ScriptedClock()
    outcome = run(timed_fn(clock, lambda x: 1e-4), items(10_000), clock)
    # Stable (zero variance) once PROBE_MIN_S has passed: 2 ms / 0.1 ms = 20 calls, the
    # traced one included (it advances the clock too).
    assert outcome.measurements.n_probed == 20


def test_fast_noisy_items_run_to_the_count_cap() -> None:
    clock = ScriptedClock()
    outcome = run(timed_fn(clock, lambda x: 1e-6 if x % 2 else 1e-5), items(10_000), clock)
    assert outcome.measurements.n_probed == _probe.PROBE_MAX_ITEMS


def test_short_input_is_exhausted() -> None:
    clock = ScriptedClock()
    outcome = run(timed_fn(clock, lambda x: 1e-6), items(3), clock)
    assert outcome.exhausted
    assert outcome.results == [0, 2, 4]


def test_exception_stops_the_probe_at_its_position() -> None:
    def fn(x: int) -> int:
        if x == 3:
            raise KeyError(x)
        return x

    # A clock that stands still: on a loaded machine a real one could end the probe on its
    # time budget before the item that raises.
    outcome = _probe.probe(fn, items(100), wall_clock=ScriptedClock(), cpu_clock=ScriptedClock())
    assert outcome.results == [0, 1, 2]
    assert isinstance(outcome.error, KeyError)
    assert outcome.n_pulled == 4


def test_input_error_is_returned_at_its_position() -> None:
    def source() -> Iterator[tuple[Any, ...]]:
        yield (1,)
        yield (2,)
        raise OSError("disk gone")

    outcome = _probe.probe(
        lambda x: x, source(), wall_clock=ScriptedClock(), cpu_clock=ScriptedClock()
    )
    assert outcome.results == [1, 2]
    assert isinstance(outcome.error, OSError)


def test_unpicklable_results_measure_as_infinite() -> None:
    import threading

    outcome = _probe.probe(lambda x: threading.Lock(), items(3))
    assert outcome.measurements.result_bytes == float("inf")


def test_memory_of_a_call_is_its_peak_resident_growth() -> None:
    # 64 MiB allocated and freed inside the call: the peak counts, not what is left after.
    # A generous budget: on a loaded machine the first call alone may outlast the default
    # one, and the probe would then stop before the memory-metered second call.
    outcome = _probe.probe(lambda x: len(bytearray(64 * 2**20)), items(2), budget_s=60.0)
    assert outcome.measurements.n_probed == 2
    assert 56 * 2**20 <= outcome.measurements.memory_bytes_per_call <= 128 * 2**20


def test_a_call_that_needs_no_memory_measures_little() -> None:
    outcome = _probe.probe(lambda x: x + 1, items(2))
    assert outcome.measurements.memory_bytes_per_call < 8 * 2**20


def test_voluntary_switches_are_averaged_over_timed_calls() -> None:
    clock = ScriptedClock()
    counter = iter(range(0, 1000, 3))  # every read 3 higher: 3 switches per timed call
    outcome = _probe.probe(
        timed_fn(clock, lambda x: 0.004),
        items(100),
        wall_clock=clock,
        cpu_clock=ScriptedClock(),
        dumps=lambda obj: b"",
        measure_memory=no_memory,
        voluntary_switches=lambda: next(counter),
    )
    assert outcome.measurements.voluntary_switches_per_item == pytest.approx(3.0)


def test_switches_unknown_where_the_os_does_not_report_them() -> None:
    clock = ScriptedClock()
    outcome = _probe.probe(
        timed_fn(clock, lambda x: 0.004),
        items(100),
        wall_clock=clock,
        cpu_clock=ScriptedClock(),
        dumps=lambda obj: b"",
        measure_memory=no_memory,
        voluntary_switches=lambda: None,
    )
    assert outcome.measurements.voluntary_switches_per_item is None


def test_fast_calls_are_timed_in_groups_so_clock_reads_do_not_dominate() -> None:
    class CostlyClock(ScriptedClock):
        def __call__(self) -> float:
            self.now_s += 1e-6  # each read costs a microsecond, as a real one nearly does
            return self.now_s

    clock = CostlyClock()
    outcome = _probe.probe(
        timed_fn(clock, lambda x: 1e-7),
        items(10_000),
        wall_clock=clock,
        cpu_clock=ScriptedClock(),
        dumps=lambda obj: b"",
        measure_memory=no_memory,
        voluntary_switches=lambda: 0,
    )
    m = outcome.measurements
    # One call at a time would measure 1.1 µs (ten times too much); groups of up to 64
    # bring the clock's share down to a few percent once they dominate the sample.
    assert m.wall_s_per_item < 0.3e-6
    assert outcome.results == [2 * x for x in range(m.n_probed)]
    assert m.n_probed == outcome.n_pulled


def test_an_input_error_inside_a_group_comes_after_the_items_before_it() -> None:
    def source() -> Iterator[tuple[Any, ...]]:
        # Inside the group of 16 (items 16-31), which a trivial probe ends with.
        yield from ((i,) for i in range(20))
        raise OSError("disk gone")

    outcome = _probe.probe(lambda x: x, source())
    assert outcome.results == list(range(20))
    assert isinstance(outcome.error, OSError)


def test_a_job_whose_first_call_is_10x_slower_is_planned_from_the_rest() -> None:
    from amorsize_executor import _cost_model

    from .conftest import make_facts

    clock, cpu = ScriptedClock(), ScriptedClock()
    # 20 ms cold first call, then 2 ms calls, 100 items; a forkserver pool of 2 cores.
    fn = timed_fn(clock, lambda x: 0.02 if x == 0 else 0.002, cpu=cpu)
    outcome = run(fn, items(100), clock, cpu)
    n_left = 100 - len(outcome.results)
    facts = make_facts(
        n_logical_cores=2, n_physical_cores=2, n_affinity_cores=2, start_method="forkserver"
    )
    plan = _cost_model.plan_map(facts, outcome.measurements, n_items=n_left, n_items_lower_bound=0)
    # Serial at the warm speed (on the cold call it would be 10x that) ...
    assert plan.predicted_serial_s == pytest.approx(n_left * 0.002)
    # ... and the pool pays each fresh worker's cold first call once, on top of its start.
    warm_only = _cost_model.plan_map(
        facts,
        replace(outcome.measurements, first_call_extra_s=0.0),
        n_items=n_left,
        n_items_lower_bound=0,
    )
    assert plan.predicted_parallel_s == pytest.approx(warm_only.predicted_parallel_s + 0.018)  # type: ignore[operator]


def test_one_stopping_rule_stops_on_trust_count_or_budget() -> None:
    rule = functools.partial(_probe.probe_is_done, budget_s=0.03, max_items=256)
    assert not rule(n_items=3, n_warm_samples=2, elapsed_s=0.01, trusted=False)
    assert rule(n_items=3, n_warm_samples=2, elapsed_s=0.01, trusted=True)
    assert rule(n_items=256, n_warm_samples=2, elapsed_s=0.01, trusted=False)
    assert rule(n_items=3, n_warm_samples=2, elapsed_s=0.03, trusted=False)
    # Never on one call alone, however long it took (it may have been cold) ...
    assert not rule(n_items=1, n_warm_samples=1, elapsed_s=0.04, trusted=False)
    assert not rule(n_items=1, n_warm_samples=1, elapsed_s=10.0, trusted=True)
    # ... except in a worker, where the pool is already chosen.
    assert rule(n_items=1, n_warm_samples=1, elapsed_s=0.04, trusted=False, lone_call_ok=True)
    assert rule(n_items=1, n_warm_samples=1, elapsed_s=0.01, trusted=True, lone_call_ok=True)
    # ... and after a first call shown to be cold, not before a warm call was timed.
    assert not rule(n_items=2, n_warm_samples=0, elapsed_s=0.06, trusted=False)
    assert rule(n_items=3, n_warm_samples=1, elapsed_s=0.06, trusted=False)
    # ... however long it took, even with few items left: the second call is the one that
    # measures the memory a call needs.
    assert not rule(n_items=1, n_warm_samples=1, elapsed_s=0.5, trusted=False)
    # With warm workers there, two calls and WAITING_WORKERS_MIN_S are enough ...
    waiting = _probe.WAITING_WORKERS_MIN_S
    assert rule(
        n_items=2, n_warm_samples=1, elapsed_s=waiting, trusted=False, workers_waiting=True
    )
    assert not rule(n_items=2, n_warm_samples=1, elapsed_s=waiting, trusted=False)
    assert not rule(
        n_items=2, n_warm_samples=1, elapsed_s=waiting / 2, trusted=False, workers_waiting=True
    )
    # ... but not one call, nor a cold first call and nothing warm after it.
    assert not rule(
        n_items=1, n_warm_samples=1, elapsed_s=0.02, trusted=False, workers_waiting=True
    )
    assert not rule(
        n_items=2, n_warm_samples=0, elapsed_s=0.02, trusted=False, workers_waiting=True
    )
    # A full group of trivial calls is as good a figure as more of them would give.
    assert rule(n_items=128, n_warm_samples=6, elapsed_s=1e-4, trusted=False, trivial_calls=True)
    assert not rule(n_items=128, n_warm_samples=6, elapsed_s=1e-4, trusted=False)


@pytest.mark.parametrize(
    ("call_s", "n_probed"),
    [(2.0**-23, 32), (2.0**-20, _probe.PROBE_MAX_ITEMS)],
    ids=["trivial: 0.12 µs", "fast: 0.95 µs"],
)
def test_trivial_calls_end_the_probe_after_a_group_of_16(call_s: float, n_probed: int) -> None:
    clock = ScriptedClock()
    outcome = run(timed_fn(clock, lambda x: call_s), items(10_000), clock)
    # Groups of 1 (timed), 1 (traced), 2, 4, 8, then the first of TRIVIAL_GROUP_ITEMS: 32.
    assert outcome.measurements.n_probed == n_probed
    assert outcome.measurements.wall_s_per_item == call_s


def test_a_probe_ending_on_trivial_calls_plans_on_its_last_group() -> None:
    clock, cpu = ScriptedClock(), ScriptedClock()
    # A cold first call (20 µs), then calls of the small groups carrying 0.3 µs each that
    # the group of 16 does not (as clock reads and hand-on steps do): over the timed calls
    # after the cold one the figure would be 0.24 µs; the last group's is the calls' own.
    fn = timed_fn(clock, lambda x: 20e-6 if x == 0 else 0.4e-6 if x < 16 else 0.1e-6, cpu=cpu)
    outcome = run(fn, items(1000), clock, cpu)
    m = outcome.measurements
    assert m.n_probed == 32
    assert m.wall_s_per_item == pytest.approx(0.1e-6)
    assert m.first_call_extra_s == pytest.approx(20e-6 - 0.1e-6)


@pytest.mark.parametrize(
    ("call_s", "n_metered"),
    [(_probe.METERED_CALL_MIN_S / 2, 0), (_probe.METERED_CALL_MIN_S, 1)],
    ids=["fast first call: not metered", "slow enough: metered"],
)
def test_the_second_call_is_metered_only_after_a_first_call_that_could_need_memory(
    call_s: float, n_metered: int
) -> None:
    clock = ScriptedClock()
    metered: list[int] = []

    def meter(call: Callable[[], Any]) -> tuple[Any, int]:
        metered.append(1)
        return call(), 4096

    fn = timed_fn(clock, lambda x: call_s)
    outcome = _probe.probe(
        fn, items(10), wall_clock=clock, cpu_clock=ScriptedClock(), measure_memory=meter
    )
    assert len(metered) == n_metered
    assert outcome.measurements.memory_bytes_per_call == 4096 * n_metered
    # Metered or not, the second call runs alone: the figures are the same.
    assert outcome.measurements.wall_s_per_item == pytest.approx(call_s)


def test_warm_workers_end_the_probe_after_two_calls() -> None:
    clock = ScriptedClock()
    outcome = _probe.probe(
        timed_fn(clock, lambda x: 0.005),
        iter([(x,) for x in range(100)]),
        wall_clock=clock,
        cpu_clock=ScriptedClock(),
        workers_waiting=lambda: True,
        measure_memory=no_memory,
    )
    assert outcome.results == [0, 2]


# -- results handed on as they come ---------------------------------------------------------


def stream(
    fn: Callable[..., Any], n: int, clock: ScriptedClock, cpu: ScriptedClock, **kwargs: Any
) -> tuple[list[Any], _probe.ProbeOutcome]:
    """``probe_stream`` read to its end: the results yielded and the outcome returned."""
    results: list[Any] = []
    gen = _probe.probe_stream(
        fn,
        items(n),
        wall_clock=clock,
        cpu_clock=cpu,
        measure_memory=no_memory,
        voluntary_switches=lambda: 0,
        **kwargs,
    )
    while True:
        try:
            results.append(next(gen))
        except StopIteration as stop:
            return results, stop.value


def test_each_result_is_handed_on_before_the_next_call_even_inside_a_group() -> None:
    clock, cpu = ScriptedClock(), ScriptedClock()
    calls: list[int] = []

    def fn(x: int) -> int:
        calls.append(x)
        clock.now_s += 1e-6  # fast: timed in growing groups of up to 64 calls
        return x

    gen = _probe.probe_stream(fn, items(1000), wall_clock=clock, cpu_clock=cpu)
    n_seen = 0
    for result in gen:
        # An item may wait for the consumer to have received the one before it.
        assert calls == list(range(result + 1)), f"{len(calls)} calls made for result {result}"
        n_seen += 1
    assert n_seen > 64  # groups of several calls were among them


def test_the_consumers_time_counts_neither_as_fn_s_nor_against_the_budget() -> None:
    def run_with(consumer_s: float) -> tuple[list[Any], _probe.ProbeOutcome]:
        clock, cpu = ScriptedClock(), ScriptedClock()
        # Durations that are powers of two: the clock's sums are exact, whatever the gaps.
        fn = timed_fn(clock, lambda x: 2.0**-13, cpu_share=0.5, cpu=cpu)
        results: list[Any] = []
        gen = _probe.probe_stream(
            fn, items(10_000), wall_clock=clock, cpu_clock=cpu, measure_memory=no_memory
        )
        while True:
            try:
                results.append(next(gen))
            except StopIteration as stop:
                return results, stop.value
            clock.now_s += consumer_s  # the consumer works on each result ...
            cpu.now_s += consumer_s  # ... with the CPU

    quick, quick_outcome = run_with(0.0)
    slow, slow_outcome = run_with(2.0**-4)  # each result takes the consumer 512 calls' time
    assert slow == quick
    assert slow_outcome.measurements == quick_outcome.measurements
    assert slow_outcome.measurements.wall_s_per_item == 2.0**-13
    assert slow_outcome.measurements.cpu_s_per_item == 2.0**-14


def test_the_collector_is_on_whenever_the_consumer_has_control() -> None:
    clock, cpu = ScriptedClock(), ScriptedClock()
    during_fn: list[bool] = []

    def fn(x: int) -> int:
        during_fn.append(gc.isenabled())
        clock.now_s += 1e-6
        return x

    gc.enable()
    gen = _probe.probe_stream(fn, items(500), wall_clock=clock, cpu_clock=cpu)
    for result in gen:
        assert gc.isenabled(), f"the collector was off when result {result} was handed on"
        if result == 100:
            gen.close()  # the consumer stops inside a group: the collector stays on
    assert not all(during_fn)  # groups ran with it paused
    assert gc.isenabled()


def test_a_result_the_consumer_dropped_is_freed_while_the_probe_goes_on() -> None:
    import weakref

    class Token:
        pass

    clock, cpu = ScriptedClock(), ScriptedClock()

    def fn(x: int) -> Token:
        clock.now_s += 1e-6
        return Token()

    n_seen = 0
    for token in _probe.probe_stream(fn, items(300), wall_clock=clock, cpu_clock=cpu):
        ref = weakref.ref(token)
        del token
        assert ref() is None, f"result {n_seen} is still held by the probe"
        n_seen += 1
    assert n_seen == _probe.PROBE_MAX_ITEMS


def test_results_sizes_are_measured_before_they_are_handed_on() -> None:
    clock, cpu = ScriptedClock(), ScriptedClock()
    results, outcome = stream(lambda x: b"x" * 1000, 3, clock, cpu)
    assert len(results) == 3
    # Each bytes object of 1000 bytes pickles to about 1000 bytes more in a chunk's list.
    assert 1000 <= outcome.measurements.result_bytes <= 1010


def test_many_fast_results_are_sized_on_a_sample() -> None:
    clock, cpu = ScriptedClock(), ScriptedClock()
    sized: list[int] = []

    def size(result: object) -> float:
        if result is not None:  # None: the probe's measure of a sizing call's fixed cost
            sized.append(result)  # type: ignore[arg-type]
        return 10.0

    _, outcome = stream(timed_fn(clock, lambda x: 1e-6), 10_000, clock, cpu, result_size=size)
    assert outcome.measurements.n_probed == _probe.PROBE_MAX_ITEMS
    # Every one of the first 16, then one in 8: 46 of 256.
    assert sized == [2 * i for i in range(256) if i < 16 or i % 8 == 0]
    assert outcome.measurements.result_bytes == 10.0


class _CountsItsPickling:
    """A result whose pickling is counted: it pickles as ``bytes`` of ``n_bytes``."""

    n_reduced = 0

    def __init__(self, n_bytes: int) -> None:
        self.n_bytes = n_bytes

    def __reduce__(self) -> tuple[object, tuple[bytes]]:
        type(self).n_reduced += 1
        return bytes, (b"x" * self.n_bytes,)


@pytest.mark.parametrize(
    ("n_bytes", "n_pickled"),
    [(100, 1), (_probe_calls.BUFFERED_RESULT_BYTES + 1, 2)],
    ids=["small: counted only", "large: also pickled for real"],
)
def test_a_large_result_is_pickled_for_real_when_sized(n_bytes: int, n_pickled: int) -> None:
    # Counting does not copy a large bytes object into a buffer, as a chunk's pickle does:
    # the sizer pickles such a result once more, for real, so its time counts that copy.
    _CountsItsPickling.n_reduced = 0
    size = _probe_calls.PickledSize()(_CountsItsPickling(n_bytes))
    assert _CountsItsPickling.n_reduced == n_pickled
    assert size >= n_bytes


# -- quick hand-ons: a quick consumer's results handed on for two wall-clock reads ----------


class CountedClock(ScriptedClock):
    """A scripted clock that counts its reads."""

    def __init__(self) -> None:
        super().__init__()
        self.n_reads = 0

    def __call__(self) -> float:
        self.n_reads += 1
        return self.now_s


def consume(
    gen: Any, on_result: Callable[[int, Any], None] = lambda i, r: None
) -> tuple[list[Any], _probe.ProbeOutcome]:
    """Read ``gen`` (a probe stream) to its end, telling ``on_result`` of each result."""
    results: list[Any] = []
    while True:
        try:
            result = next(gen)
        except StopIteration as stop:
            return results, stop.value
        on_result(len(results), result)
        results.append(result)


def test_a_quick_consumer_lets_groups_of_fast_calls_leave_the_cpu_clock_alone() -> None:
    clock, cpu = ScriptedClock(), CountedClock()
    # Durations that are powers of two: the clock's sums are exact, whatever the gaps.
    fn = timed_fn(clock, lambda x: 2.0**-20, cpu_share=0.5, cpu=cpu)
    gen = _probe.probe_stream(
        fn, items(10_000), wall_clock=clock, cpu_clock=cpu, measure_memory=no_memory
    )
    results, outcome = consume(gen)
    m = outcome.measurements
    assert results == [2 * x for x in range(_probe.PROBE_MAX_ITEMS)]
    assert m.wall_s_per_item == 2.0**-20
    assert m.cpu_s_per_item == 2.0**-21
    # Both clocks around every hand-on would be 2 CPU reads a result (512 here); a quick
    # group reads the CPU clock twice in all. The first call and the traced one are each
    # a group of their own, read around their hand-on, and the calibration reads it too.
    assert cpu.n_reads <= 2 * 10 + 2 * 2 + _probe_calls.N_CALIBRATION_READS


def test_a_hand_on_that_turns_out_slow_makes_its_quick_group_no_sample() -> None:
    clock, cpu = ScriptedClock(), CountedClock()
    fn = timed_fn(clock, lambda x: 2.0**-20, cpu_share=0.5, cpu=cpu)
    gen = _probe.probe_stream(
        fn, items(10_000), wall_clock=clock, cpu_clock=cpu, measure_memory=no_memory
    )
    n_reads: list[int] = []

    def sleeps_once(index: int, result: Any) -> None:
        n_reads.append(cpu.n_reads)
        if index == 40:  # inside the group of 32 calls (items 32-63), a quick one so far
            clock.now_s += 0.001  # the consumer waits, off the CPU: no CPU time passes

    results, outcome = consume(gen, sleeps_once)
    m = outcome.measurements
    assert len(results) == _probe.PROBE_MAX_ITEMS
    # Counted as CPU time, the millisecond away would have cut the calls' CPU time to
    # nothing; the group is left out instead, and every other one measures exactly.
    assert m.wall_s_per_item == 2.0**-20
    assert m.cpu_s_per_item == 2.0**-21
    # The group after it, of 32 calls again (items 64-95: a group that is no sample does
    # not double the next), read the CPU clock around each hand-on; the one after that
    # (96-159) was quick again.
    assert n_reads[95] - n_reads[64] == 2 * (95 - 64)
    assert n_reads[159] - n_reads[96] == 0


def test_the_probe_sizes_results_and_pickles_items_on_one_sample() -> None:
    assert [_probe_calls.next_in_sample(n) for n in (0, 15, 16, 17, 24, 25)] == [
        0,
        15,
        16,
        24,
        24,
        32,
    ]
    clock, cpu = ScriptedClock(), ScriptedClock()
    pickled: list[list[tuple[Any, ...]]] = []

    def dumps(obj: Any) -> bytes:
        pickled.append(obj)
        clock.now_s += 20e-6 * (1 + len(obj))  # a call's fixed 20 µs, then 20 µs an item
        return b"x" * (10 * (1 + len(obj)))

    _, outcome = stream(timed_fn(clock, lambda x: 1e-6), 10_000, clock, cpu, dumps=dumps)
    sample = [(i,) for i in range(256) if i < 16 or i % 8 == 0]
    assert pickled == [sample, []]  # the sample, then nothing: a call's fixed cost
    m = outcome.measurements
    assert m.item_bytes == 10
    # 20 µs an item: the call's fixed cost left out, the time divided among the sample.
    assert m.pickle_s_per_item == pytest.approx(20e-6)
