"""The cost model is pure: hand-built facts and measurements in, an exact plan out."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amorsize_executor import _cost_model as cm
from amorsize_executor import _steering as steering
from amorsize_executor import _worker_policy as wp
from amorsize_executor._records import SystemFacts

from .conftest import make_facts, make_measurements


def test_tiny_job_runs_serially_because_start_up_dominates() -> None:
    facts = make_facts(worker_start_s=0.1, task_roundtrip_s=2e-4)
    work = make_measurements(wall_s_per_item=1e-5, cpu_s_per_item=1e-5)
    plan = cm.plan_map(facts, work, n_items=100, n_items_lower_bound=100)
    assert plan.mode == "serial"
    assert plan.n_workers == 1
    assert plan.predicted_serial_s == pytest.approx(100 * 1e-5)
    # Decided by the lower bound of any pool: a bound, not a prediction, so no speed-up.
    assert plan.predicted_parallel_s is None
    assert plan.predicted_speedup is None
    assert plan.parallel_floor_s is not None
    assert plan.parallel_floor_s > 0.1
    assert "parallel at least" in plan.explain()
    assert any("serial is predicted fastest" in r for r in plan.reasons)


def test_no_items_left_is_the_reason_even_on_facts_that_were_not_read() -> None:
    facts = SystemFacts.not_read("not chosen")
    plan = cm.plan_map(facts, make_measurements(), n_items=0, n_items_lower_bound=0)
    assert plan.mode == "serial"
    assert plan.reasons == ("no items are left after the probe",)
    assert plan.to_dict()["n_usable_cores"] is None


def test_a_fresh_workers_cold_first_call_counts_in_its_start() -> None:
    warm = make_measurements(wall_s_per_item=2e-3, cpu_s_per_item=2e-3)
    cold = replace(warm, first_call_extra_s=0.02)
    for method, extra_s in (("forkserver", 0.02), ("loky", 0.02), ("fork", 0.0)):
        facts = make_facts(start_method=method)
        base = cm.predict_parallel_s(facts, warm, 100, 2, 10, 2)
        assert cm.predict_parallel_s(facts, cold, 100, 2, 10, 2) == pytest.approx(base + extra_s)
        floor = cm.parallel_floor_s(facts, warm, 100)
        assert cm.parallel_floor_s(facts, cold, 100) == pytest.approx(floor + extra_s)


def test_free_workers_and_heavy_items_use_every_core() -> None:
    plan = cm.plan_map(make_facts(), make_measurements(), n_items=1000, n_items_lower_bound=0)
    assert plan.mode == "parallel"
    assert plan.n_workers == 4
    assert plan.predicted_serial_s == pytest.approx(1.0)
    # 1000 items x (1 ms + 1 µs pickling) over 4 cores is 0.25025 s at best (chunks of 1,
    # 2, 4, 8, or 250). Chunks of 63 (4 per worker) leave one round 12 items short:
    # 4 rounds x 63 items = 0.252 s, within the 2% near-tie, and nearest the 20 ms target.
    assert plan.chunksize == 63
    assert plan.predicted_parallel_s == pytest.approx(4 * 63 * 1.001e-3)


def test_start_cost_decides_between_serial_and_parallel() -> None:
    work = make_measurements(wall_s_per_item=1e-3, cpu_s_per_item=1e-3, pickle_s_per_item=0.0)
    # 200 items: 0.2 s serial; with 4 workers, 0.05 s plus the start.
    cheap_start = cm.plan_map(
        make_facts(worker_start_s=0.01), work, n_items=200, n_items_lower_bound=0
    )
    dear_start = cm.plan_map(
        make_facts(worker_start_s=0.5), work, n_items=200, n_items_lower_bound=0
    )
    assert cheap_start.mode == "parallel"
    assert dear_start.mode == "serial"


def test_warm_workers_cost_nothing_to_start() -> None:
    work = make_measurements(wall_s_per_item=1e-3, cpu_s_per_item=1e-3)
    cold = cm.plan_map(make_facts(worker_start_s=0.5), work, n_items=200, n_items_lower_bound=0)
    warm = cm.plan_map(
        make_facts(worker_start_s=0.5, n_warm_workers=4), work, n_items=200, n_items_lower_bound=0
    )
    assert cold.mode == "serial"
    assert warm.mode == "parallel"
    assert warm.n_workers <= 4


def test_start_cost_for_a_pool_that_must_grow_is_a_full_start() -> None:
    facts = make_facts(worker_start_s=0.1, n_warm_workers=2)
    assert cm.predict_start_s(facts, 2) == 0.0
    assert cm.predict_start_s(facts, 3) == pytest.approx(0.1 * (1 + 0.5 * 2))


def test_usable_cores_take_the_tightest_constraint_and_name_it() -> None:
    facts = make_facts(
        n_logical_cores=16, n_physical_cores=8, n_affinity_cores=12, cpu_quota_cores=2.5
    )
    assert cm.choose_usable_cores(facts, cpu_bound=True) == (3, "cgroup quota")
    facts = make_facts(n_logical_cores=16, n_physical_cores=8, n_affinity_cores=12)
    assert cm.choose_usable_cores(facts, cpu_bound=True) == (8, "physical")
    # Waiting-bound work may use hyperthreads.
    assert cm.choose_usable_cores(facts, cpu_bound=False) == (12, "affinity")
    facts = make_facts(
        n_logical_cores=16, n_physical_cores=None, n_affinity_cores=None, env_core_limit=5
    )
    assert cm.choose_usable_cores(facts, cpu_bound=True) == (5, "environment")


def test_plan_names_the_core_limit_and_max_workers_caps_it() -> None:
    facts = make_facts(
        n_logical_cores=8, n_physical_cores=8, n_affinity_cores=8, cpu_quota_cores=2.0
    )
    plan = cm.plan_map(facts, make_measurements(), n_items=10_000, n_items_lower_bound=0)
    assert (plan.n_usable_cores, plan.core_limit) == (2, "cgroup quota")
    assert plan.n_workers == 2
    capped = cm.plan_map(
        make_facts(), make_measurements(), n_items=10_000, n_items_lower_bound=0, max_workers=3
    )
    assert capped.n_workers == 3
    assert capped.core_limit == "max_workers"


def test_memory_caps_the_workers() -> None:
    # 1 GiB per call, 3 GiB available: 0.8 * 3 GiB / (1 GiB + 64 MiB) -> 2 workers.
    facts = make_facts(available_memory_bytes=3 * 2**30)
    work = make_measurements(memory_bytes_per_call=2**30)
    plan = cm.plan_map(facts, work, n_items=10_000, n_items_lower_bound=0)
    assert plan.mode == "parallel"
    assert plan.n_workers == 2
    assert any("memory allows 2 worker(s)" in r for r in plan.reasons)


def test_no_worker_fits_in_memory_means_serial() -> None:
    facts = make_facts(available_memory_bytes=2**30)
    work = make_measurements(memory_bytes_per_call=4 * 2**30)
    plan = cm.plan_map(facts, work, n_items=10_000, n_items_lower_bound=0)
    assert plan.mode == "serial"
    assert any("no worker fits" in r for r in plan.reasons)


def test_unpicklable_items_run_serially() -> None:
    work = make_measurements(item_bytes=math.inf)
    plan = cm.plan_map(make_facts(), work, n_items=10_000, n_items_lower_bound=0)
    assert plan.mode == "serial"
    assert "cannot be pickled" in plan.reasons[-1]


def test_isolation_chooses_the_best_pool_even_when_serial_would_win() -> None:
    facts = make_facts(worker_start_s=1.0)
    work = make_measurements(wall_s_per_item=1e-6, cpu_s_per_item=1e-6)
    plan = cm.plan_map(facts, work, n_items=10, n_items_lower_bound=0, serial_allowed=False)
    assert plan.mode == "parallel"
    assert plan.predicted_serial_s is None
    assert plan.n_workers == 1  # one worker starts fastest


def test_explicit_chunksize_is_respected() -> None:
    plan = cm.plan_map(
        make_facts(), make_measurements(), n_items=1000, n_items_lower_bound=0, chunksize=7
    )
    assert plan.chunksize == 7
    assert "chunksize=7 as given" in plan.reasons


def test_waiting_bound_work_gets_more_workers_than_cores() -> None:
    facts = make_facts(n_logical_cores=2, n_physical_cores=2, n_affinity_cores=2)
    work = make_measurements(wall_s_per_item=5e-3, cpu_s_per_item=5e-5)
    plan = cm.plan_map(facts, work, n_items=200, n_items_lower_bound=0)
    assert plan.mode == "parallel"
    assert plan.n_workers == 2 * cm.MAX_OVERSUBSCRIPTION
    assert any("waiting" in r for r in plan.reasons)


def test_unknown_length_plans_for_the_lower_bound() -> None:
    plan = cm.plan_map(
        make_facts(worker_start_s=0.1), make_measurements(), n_items=None, n_items_lower_bound=10
    )
    assert plan.n_items is None
    assert plan.n_items_assumed == 10
    assert plan.mode == "serial"
    assert any("revisited" in r for r in plan.reasons)


def test_nothing_left_is_serial() -> None:
    plan = cm.plan_map(make_facts(), make_measurements(), n_items=0, n_items_lower_bound=0)
    assert plan.mode == "serial"
    assert plan.reasons == ("no items are left after the probe",)


def test_chunks_never_exceed_the_duration_cap() -> None:
    work = make_measurements(wall_s_per_item=0.1, cpu_s_per_item=0.1)
    plan = cm.plan_map(
        make_facts(task_roundtrip_s=10.0), work, n_items=1000, n_items_lower_bound=0
    )
    assert plan.chunksize * 0.1 <= cm.MAX_CHUNK_S


def test_window_is_two_rounds_of_chunks_or_the_buffersize() -> None:
    work = make_measurements()
    assert cm.choose_window_items(work, 4, 10, None) == 80
    assert cm.choose_window_items(work, 4, 10, 5) == 5
    # Big items: the byte cap wins, but every worker still gets a chunk.
    big = make_measurements(item_bytes=64 * 2**20, result_bytes=64 * 2**20)
    assert cm.choose_window_items(big, 4, 10, None) == 40


def test_revise_chunksize_moves_toward_the_target_at_most_twofold() -> None:
    # 0.1 ms per item: 200 items would hit 20 ms; from 10 it may only double.
    assert (
        steering.revise_chunksize(
            chunksize=10,
            observed_s_per_item=1e-4,
            task_roundtrip_s=1e-4,
        )
        == 20
    )
    # 10 ms per item: 2 items hit 20 ms; from 16 it may only halve.
    assert (
        steering.revise_chunksize(
            chunksize=16,
            observed_s_per_item=1e-2,
            task_roundtrip_s=1e-4,
        )
        == 8
    )


def test_guided_chunksize_shrinks_near_the_end() -> None:
    # 12 items not yet sent over 3 workers: at most ceil(12 / 6) = 2 per chunk.
    assert steering.guided_chunksize(chunksize=64, n_items_unsent=12, n_workers=3) == 2
    # Far from the end, the fed-back size stands; with an unknown length, always.
    assert steering.guided_chunksize(chunksize=64, n_items_unsent=10_000, n_workers=3) == 64
    assert steering.guided_chunksize(chunksize=64, n_items_unsent=None, n_workers=3) == 64
    # The last items go one by one, never zero.
    assert steering.guided_chunksize(chunksize=64, n_items_unsent=1, n_workers=3) == 1
    assert steering.guided_chunksize(chunksize=64, n_items_unsent=0, n_workers=3) == 1


def test_guided_chunks_stop_shrinking_at_a_few_milliseconds_of_work() -> None:
    # 0.2 ms per item: GUIDED_MIN_CHUNK_S (2 ms) is 10 items, however few are left ...
    assert (
        steering.guided_chunksize(chunksize=64, n_items_unsent=12, n_workers=3, s_per_item=2e-4)
        == 10
    )
    # ... but never more than the fed-back size, and slow items still go one by one.
    assert (
        steering.guided_chunksize(chunksize=4, n_items_unsent=12, n_workers=3, s_per_item=2e-4)
        == 4
    )
    assert (
        steering.guided_chunksize(chunksize=64, n_items_unsent=12, n_workers=3, s_per_item=0.02)
        == 2
    )
    assert (
        steering.guided_chunksize(chunksize=64, n_items_unsent=1, n_workers=3, s_per_item=0.02)
        == 1
    )


def test_guided_chunks_put_a_slow_end_into_many_small_chunks() -> None:
    # Sending 42 items (the last 42 of a job) chunk by chunk on 2 workers: the sizes fall
    # geometrically, so the final items travel in chunks of one or two, not in one chunk.
    sizes, unsent = [], 42
    while unsent:
        size = steering.guided_chunksize(chunksize=64, n_items_unsent=unsent, n_workers=2)
        sizes.append(size)
        unsent -= size
    assert sizes == sorted(sizes, reverse=True)
    assert sizes[0] == 11
    assert sizes[-4:] == [1, 1, 1, 1]
    assert len(sizes) >= 10


def test_start_method_follows_multiprocessing_default_as_the_stdlib_pool_does() -> None:
    # Threads do not change it: the stdlib pool forks a multi-threaded process too.
    for n_threads in (1, 5):
        assert wp.choose_start_method(default_method="fork", n_os_threads=n_threads)[0] == "fork"
        assert (
            wp.choose_start_method(default_method="forkserver", n_os_threads=n_threads)[0]
            == "forkserver"
        )
    # A spawn default (macOS, Windows, or set by the program) gets loky's fresh interpreter.
    assert wp.choose_start_method(default_method="spawn", n_os_threads=1)[0] == "loky"


def test_start_method_reason_names_the_default_and_the_override() -> None:
    _, reason = wp.choose_start_method(default_method="fork", n_os_threads=3)
    assert "default" in reason and "3 thread(s)" in reason and "mp_context=" in reason


def test_start_method_follows_the_mp_context_given_then_max_tasks_per_child() -> None:
    given = wp.choose_start_method(
        default_method="fork", n_os_threads=1, given_method="forkserver", max_tasks_per_child=True
    )
    assert given == ("forkserver", "forkserver: the mp_context given")
    # The stdlib pool refuses fork with max_tasks_per_child, and spawns without mp_context.
    method, reason = wp.choose_start_method(
        default_method="fork", n_os_threads=1, max_tasks_per_child=True
    )
    assert method == "spawn" and "max_tasks_per_child" in reason


# -- invariants -------------------------------------------------------------------------

seconds = st.floats(min_value=1e-7, max_value=1.0)
facts_strategy = st.builds(
    make_facts,
    n_logical_cores=st.integers(1, 64),
    worker_start_s=st.floats(0.0, 1.0),
    task_roundtrip_s=st.floats(0.0, 1e-2),
    ipc_bytes_per_s=st.floats(1e6, 1e10),
    n_warm_workers=st.integers(0, 8),
)
work_strategy = st.builds(
    make_measurements,
    wall_s_per_item=seconds,
    cpu_s_per_item=seconds,
    item_bytes=st.floats(0, 1e7),
    result_bytes=st.floats(0, 1e7),
    pickle_s_per_item=st.floats(0, 1e-2),
    memory_bytes_per_call=st.integers(0, 2**32),
)


@settings(max_examples=150, deadline=None)
@given(facts_strategy, work_strategy, st.integers(0, 10**6), st.none() | st.integers(1, 16))
def test_plans_stay_within_bounds(facts, work, n_items, max_workers) -> None:  # type: ignore[no-untyped-def]
    plan = cm.plan_map(
        facts, work, n_items=n_items, n_items_lower_bound=0, max_workers=max_workers
    )
    assert plan.mode in ("serial", "parallel")
    assert plan.chunksize >= 1
    assert plan.n_workers >= 1
    if max_workers is not None:
        assert plan.n_workers <= max_workers
    if plan.mode == "parallel":
        assert plan.chunksize <= max(1, n_items)
        assert plan.window_items >= plan.chunksize or plan.window_items >= 1
        assert plan.predicted_parallel_s is not None and plan.predicted_serial_s is not None
        assert plan.predicted_parallel_s < plan.predicted_serial_s


@settings(max_examples=150, deadline=None)
@given(facts_strategy, work_strategy, st.integers(1, 10**5), st.floats(1.0, 100.0))
def test_more_work_per_item_never_turns_parallel_into_serial(facts, work, n_items, factor) -> None:  # type: ignore[no-untyped-def]
    plan = cm.plan_map(facts, work, n_items=n_items, n_items_lower_bound=0)
    heavier = cm.plan_map(
        facts,
        make_measurements(
            wall_s_per_item=work.wall_s_per_item * factor,
            cpu_s_per_item=work.cpu_s_per_item * factor,
            item_bytes=work.item_bytes,
            result_bytes=work.result_bytes,
            pickle_s_per_item=work.pickle_s_per_item,
            memory_bytes_per_call=work.memory_bytes_per_call,
        ),
        n_items=n_items,
        n_items_lower_bound=0,
    )
    if plan.mode == "parallel":
        assert heavier.mode == "parallel"


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 64), st.integers(100, 10**6))
def test_zero_overheads_and_many_items_give_parallel(n_cores, n_items) -> None:  # type: ignore[no-untyped-def]
    facts = make_facts(n_logical_cores=n_cores, n_physical_cores=n_cores, n_affinity_cores=n_cores)
    plan = cm.plan_map(
        facts, make_measurements(pickle_s_per_item=0.0), n_items=n_items, n_items_lower_bound=0
    )
    if n_cores > 1:
        assert plan.mode == "parallel"
        assert plan.n_workers >= 2
    else:
        assert plan.mode == "serial"


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 10**4), seconds, st.none() | st.integers(0, 10**6), st.integers(1, 64))
def test_revised_chunks_stay_within_bounds(chunksize, per_item_s, n_left, n_workers) -> None:  # type: ignore[no-untyped-def]
    size = steering.revise_chunksize(
        chunksize=chunksize, observed_s_per_item=per_item_s, task_roundtrip_s=1e-4
    )
    # Moves at most twofold per step, toward the duration cap.
    assert 1 <= size <= 2 * chunksize
    assert size >= chunksize // 2
    assert size * per_item_s <= cm.MAX_CHUNK_S or size <= chunksize
    guided = steering.guided_chunksize(chunksize=size, n_items_unsent=n_left, n_workers=n_workers)
    assert 1 <= guided <= size
    if n_left is not None:
        assert guided <= max(1, math.ceil(n_left / (2 * n_workers)))
    else:
        assert guided == size


def test_preempted_but_never_waiting_work_counts_as_cpu_bound() -> None:
    # Wall time twice the CPU time: on a busy machine, not because the call waits.
    facts = make_facts(n_logical_cores=2, n_physical_cores=2, n_affinity_cores=2)
    preempted = make_measurements(cpu_s_per_item=0.5e-3, voluntary_switches_per_item=0.0)
    waiting = make_measurements(cpu_s_per_item=0.5e-3 * 0.1, voluntary_switches_per_item=3.0)
    assert cm.effective_cpu_share(preempted) == 1.0
    assert cm.effective_cpu_share(waiting) == pytest.approx(0.05)
    plan = cm.plan_map(facts, preempted, n_items=10_000, n_items_lower_bound=0)
    assert plan.n_workers == 2
    plan = cm.plan_map(facts, waiting, n_items=10_000, n_items_lower_bound=0)
    assert plan.n_workers > 2


def test_the_environment_cap_also_caps_waiting_bound_work() -> None:
    facts = make_facts(n_logical_cores=4, env_core_limit=1)
    waiting = make_measurements(cpu_s_per_item=1e-5, voluntary_switches_per_item=1.0)
    plan = cm.plan_map(facts, waiting, n_items=10_000, n_items_lower_bound=0)
    assert plan.n_workers == 1
    assert any("AMORSIZE_MAX_WORKERS=1 caps the pool" in r for r in plan.reasons)


def test_a_cluster_is_never_oversubscribed() -> None:
    facts = make_facts(
        start_method="dask", n_logical_cores=6, n_physical_cores=None, n_affinity_cores=None
    )
    waiting = make_measurements(cpu_s_per_item=1e-5, voluntary_switches_per_item=1.0)
    plan = cm.plan_map(facts, waiting, n_items=10_000, n_items_lower_bound=0)
    assert plan.n_workers <= 6


@given(
    wall=st.floats(1e-8, 1e-1),
    pickle_s=st.floats(0.0, 1e-3),
    result_bytes=st.floats(0.0, 1e7),
    n_items=st.integers(1, 100_000),
    start_s=st.floats(0.0, 0.5),
    warm=st.integers(0, 4),
)
def test_the_parallel_floor_is_below_every_candidate(
    wall: float, pickle_s: float, result_bytes: float, n_items: int, start_s: float, warm: int
) -> None:
    facts = make_facts(worker_start_s=start_s, n_warm_workers=warm, task_roundtrip_s=2e-4)
    work = make_measurements(
        wall_s_per_item=wall,
        cpu_s_per_item=wall,
        pickle_s_per_item=pickle_s,
        result_bytes=result_bytes,
    )
    floor_s = cm.parallel_floor_s(facts, work, n_items)
    for n_workers in (1, 2, 4, 8):
        for size in cm.candidate_chunksizes(n_items, n_workers):
            assert (
                floor_s <= cm.predict_parallel_s(facts, work, n_items, n_workers, size, 4) + 1e-12
            )


def test_a_job_under_the_floor_is_serial_without_a_search() -> None:
    # 0.1 µs calls whose items cost 0.2 µs to pickle: no pool can ever win.
    work = make_measurements(wall_s_per_item=1e-7, cpu_s_per_item=1e-7, pickle_s_per_item=2e-7)
    plan = cm.plan_map(make_facts(), work, n_items=200_000, n_items_lower_bound=0)
    assert plan.mode == "serial"
    assert any("any pool would take at least" in r for r in plan.reasons)


def test_a_serial_plan_on_favourable_figures_gives_a_bound_not_a_prediction() -> None:
    # Serial wins by less than the margin even on the most favourable figures: the best
    # pool's time is a lower bound of any real pool's, and no speed-up is claimed.
    work = make_measurements(wall_s_per_item=5e-4, cpu_s_per_item=5e-4, pickle_s_per_item=5e-6)
    plan = cm.plan_map(
        SystemFacts.most_favourable(2, 0.004), work, n_items=28, n_items_lower_bound=0
    )
    assert plan.mode == "serial"
    assert plan.predicted_parallel_s is None
    assert plan.predicted_speedup is None
    assert plan.parallel_floor_s is not None
    assert plan.parallel_floor_s < plan.predicted_serial_s  # type: ignore[operator]
    assert "at least" in plan.reasons[-1]
    assert "must be predicted at least 10% faster" in plan.reasons[-1]


def test_the_lower_bound_reason_names_only_the_parts_that_cost_something() -> None:
    tiny = make_measurements(wall_s_per_item=1e-6, cpu_s_per_item=1e-6)
    cold = make_facts(worker_start_s=0.05, task_roundtrip_s=2e-4)
    plan = cm.plan_map(cold, tiny, n_items=100, n_items_lower_bound=0)
    assert "(a worker's start, a round trip, and the parent's pickling" in plan.reasons[-1]
    warm = make_facts(worker_start_s=0.05, task_roundtrip_s=2e-4, n_warm_workers=2)
    plan = cm.plan_map(warm, tiny, n_items=100, n_items_lower_bound=0)
    assert plan.parallel_floor_s is not None  # decided by the bound all the same
    assert "(a round trip, and the parent's pickling" in plan.reasons[-1]
