"""What other processes took from this ``map()``'s workers, told apart from what its own work
costs: a chunk stopped by a preemption rather than by slow items, and how much slower than
its CPU time a call in the caller would run now.

Policy layer: pure functions of the numbers a chunk reports (wall and CPU seconds, voluntary
context switches) and the plan's figures; no clock, no I/O. ``_steering`` asks them when it
splits a stopped chunk's rest and when it judges a running pool against serial.
"""

from __future__ import annotations

from ._cost_model import VOLUNTARY_SWITCHES_TO_WAIT


def unrun_s_per_item(
    *,
    budget_factor: float,
    recent_s_per_item: float,
    n_ran: int,
    cpu_s: float,
    voluntary_switches: int | None,
    expected_s_per_item: float,
    expected_cpu_s_per_item: float,
) -> float:
    """What each unstarted item of a chunk stopped at its budget probably costs, to split
    them by (``split_unrun``): the rate of the stretch just before the stop, unless the stop
    came from time other processes took from the worker.

    A chunk that computes without waiting and is not preempted has used at least its budget
    in CPU time when it stops, and its budget is ``budget_factor`` times its expected time
    (``_steering.CHUNK_BUDGET_FACTOR``): so its items' CPU time is at least that factor times
    the expected CPU per item.
    When it is less (and the calls did not wait voluntarily), the items were not slow: the
    worker lost the CPU for a while, and the stretch's rate measures that loss (one
    preemption of 10-20 ms during one 43 µs call made it look 300x slower; its chunk's rest
    went out as pieces of one item each, and the parent's cost per result then made the run
    fall back to serial: 375 ms against 190 ms for a 7,500-item job). The rest is then split
    at the expected rate, ``expected_s_per_item``. Calls that wait (a voluntary switch per
    two calls or more) or an unknown switch count keep the stretch's rate.
    """
    if voluntary_switches is None or n_ran <= 0 or expected_cpu_s_per_item <= 0:
        return recent_s_per_item
    if voluntary_switches / n_ran >= VOLUNTARY_SWITCHES_TO_WAIT:
        return recent_s_per_item
    if cpu_s >= budget_factor * n_ran * expected_cpu_s_per_item:
        return recent_s_per_item
    return min(recent_s_per_item, expected_s_per_item) if recent_s_per_item > 0 else 0.0


def outside_slowdown(
    *, worker_wall_s: float, worker_cpu_s: float, n_workers: int, n_usable_cores: int
) -> float:
    """How much longer than its CPU time a computing call would take in the caller now,
    because of processes outside this ``map()``: the workers' wall time over their CPU time,
    less what this ``map()``'s own processes can explain (``n_workers`` workers and the
    parent on ``n_usable_cores`` cores: at most ``(n_workers + 1) / n_usable_cores``).

    1.0 on a quiet machine, and whenever the slowdown is no more than the pool's own
    crowding (a parent busy receiving large results takes its core from the workers, which a
    serial run would not pay). Above that, other processes took the workers' cores, and they
    would take the caller's too: on the 2-core reference machine under a neighbour's test
    run (load 5), judging 5 ms calls by their CPU time made the pool look slower than serial
    (6.1 ms per result against 5.0) in 3 of 5 runs of cpu_5ms_x300; the rest then ran in the
    caller at the same contention: 1.9 s against 1.3 s for serial and the best pool.
    """
    if worker_cpu_s <= 0 or worker_wall_s <= worker_cpu_s:
        return 1.0
    own_crowding = max(1.0, (n_workers + 1) / max(1, n_usable_cores))
    return max(1.0, worker_wall_s / worker_cpu_s / own_crowding)
