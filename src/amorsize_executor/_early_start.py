"""When workers start before a pool is planned: during the probe, or in the background of a
serial stream, so that a pool that is all but certain does not make the caller wait for its
start; and when the probe may stop after one long call (``lone_call_is_enough``), so the
workers take the few items left at once instead of after a second call in the caller.

Policy layer: pure functions of the probe's first figures, the facts and the item counts; no
clock, no I/O, no process (``_planning`` asks them and starts the workers).
"""

from __future__ import annotations

from dataclasses import replace

from . import _cost_model
from ._cost_model import CPU_BOUND_SHARE
from ._records import SystemFacts, WorkMeasurements

PRESTART_MIN_SERIAL_S = 0.25
"""Workers are started while the probe is still running only when its first calls say the
rest of the input would take at least this long serially: then a pool is all but certain,
and its start (10-25 ms with fork here, 70-350 ms with loky's default) overlaps the probe
instead of following it. Below this, a wrong guess would cost a short job its start."""


PRESTART_MIN_CALL_S = 1e-3
"""Nor unless the first call took this long, when it is the only one timed so far. A first
call is the slowest (cold caches, lazy imports), and a fast one says little: 2 µs for a
call that then runs at 0.1 µs made 200,000 trivial items look like 0.4 s of work and
started a pool for a 20 ms job."""

PRESTART_MIN_WARM_CALL_S = 1e-4
"""Or the faster of the first two timed calls took this long: a second call is past the
one-off costs of the first, so a tenth of a millisecond (500 times a trivial call here) is
a safe sign of real work. It lets jobs of sub-millisecond calls start their workers during
the probe too (a 0.2 ms call: the pool forks about 3 ms earlier)."""


PRESTART_STREAM_START_SHARE = 0.5
"""A serial stream starts workers in the background once the items it assumes are left (as
many again as it has read) take this share of a worker's start serially. At the re-plan
after which the caller computes as long again, the workers are then ready or nearly so by
the next re-plan, and a stream that ends right there has run at least half a start's worth
of items. Measured with 1 ms items (generator_1ms at a quarter of its size, 250 items,
fork start about 20 ms): at a full start's worth, whether the re-plan at 24 items qualified
(21 ms against 20-22 ms) was a coin toss, and a miss moved the switch from 40 items to 72
(151-162 ms against 175 ms, the oracle 120 ms); at half, the workers start at 13 items and
the stream switches at 24."""


def workers_to_start_early(
    *,
    fastest_call_s: float,
    its_cpu_s: float,
    n_calls_timed: int,
    n_items_left: int | None,
    n_usable_cores: int,
    max_workers: int | None,
    fn_load_s_per_worker: float = 0.0,
) -> int:
    """How many workers to start during the probe (0: wait for the plan), from the fastest
    of the first ``n_calls_timed`` calls (one or two) and its CPU seconds.

    Only for CPU-bound calls over an input of known length that is long by
    ``PRESTART_MIN_SERIAL_S``, and calls that are not trivial (``PRESTART_MIN_CALL_S`` for
    a lone first call, ``PRESTART_MIN_WARM_CALL_S`` for the faster of two): such work gets
    one worker per usable core, so the guess matches the plan; waiting-bound work's worker
    count depends on figures the probe has not measured yet.

    ``fn_load_s_per_worker`` is what each worker's copy of ``fn`` costs before it runs any
    item (``_fn_cost.fn_shipping_s`` for one worker: a ``partial`` over a 200 MB array is
    about 0.14 s). The pool's gain over serial must then cover it as well: the serial rest
    must be ``PRESTART_MIN_SERIAL_S`` plus the whole pool's load of ``fn`` scaled by what
    the workers save (``n/(n-1)``), so a job that is all but certain to win with a free
    ``fn`` is as certain with a heavy one. Without that, 50 calls of 8 ms with such an array
    forked two workers the plan then left idle (serial was predicted faster), and the job
    took 4% longer than plain serial code.
    """
    min_call_s = PRESTART_MIN_CALL_S if n_calls_timed < 2 else PRESTART_MIN_WARM_CALL_S
    if n_items_left is None or fastest_call_s < min_call_s or n_usable_cores < 2:
        return 0
    if its_cpu_s / fastest_call_s < CPU_BOUND_SHARE:
        return 0
    n_workers = min(n_usable_cores, n_items_left)
    if max_workers is not None:
        n_workers = min(n_workers, max_workers)
    needed_s = PRESTART_MIN_SERIAL_S
    if fn_load_s_per_worker > 0:
        if n_workers < 2:
            return 0  # one worker saves the caller nothing to pay fn's load with
        needed_s += n_workers * fn_load_s_per_worker * n_workers / (n_workers - 1)
    if n_items_left * fastest_call_s < needed_s:
        return 0
    return n_workers


def workers_to_prestart_for_stream(
    facts: SystemFacts,
    measurements: WorkMeasurements,
    *,
    n_items_assumed: int,
    max_workers: int | None,
) -> int:
    """How many workers to start in the background while a serial run over an input of
    unknown length goes on (0: none), when only the pool's start keeps the plan serial.

    Such a run re-plans each time the items read double, for as many items again. If a pool
    that were already warm would win over those ``n_items_assumed`` items, the next re-plan
    (at twice the count) will very likely find it winning too: starting its workers now,
    while the caller keeps computing, means that re-plan finds them warm, and the stream
    switches one doubling earlier without the caller ever waiting for a start. If the input
    ends first, the workers were started for nothing (they stay for the next ``map()``).

    Only when those items take at least ``PRESTART_STREAM_START_SHARE`` of a worker's start
    (``worker_start_s``) serially: then the workers are ready, or nearly, by the next re-plan
    (the caller computes those items and the next timed ones meanwhile); earlier, a stream
    that ends soon would have the caller wait for most of a start it did not need.
    """
    serial_s = _cost_model.predict_serial_s(measurements, n_items_assumed)
    if serial_s < PRESTART_STREAM_START_SHARE * facts.worker_start_s:
        return 0
    n_warm = max(facts.n_logical_cores, max_workers or 0)
    warm = _cost_model.plan_map(
        replace(facts, n_warm_workers=n_warm),
        measurements,
        n_items=None,
        n_items_lower_bound=n_items_assumed,
        max_workers=max_workers,
    )
    return warm.n_workers if warm.mode == "parallel" else 0


LONE_CALL_START_MULTIPLE = 10.0
"""A first call this many times longer than a worker's start may be planned on alone (see
``lone_call_is_enough``). The bound of what a wrong guess costs: had the call been cold (a
one-off import) and every later one trivial, the pool's start adds at most a tenth of the
first call to the job. Measured on the 2-core VM (2026-12-02): the nested host program's
first call takes about 0.2 s against a fork start of 8 ms, 25 times over."""


def lone_call_is_enough(
    *,
    call_s: float,
    worker_start_s: float,
    workers_inherit_state: bool,
    n_items_left: int | None,
    n_usable_cores: int,
    max_workers: int | None,
) -> bool:
    """Whether the probe may plan on its first call alone, instead of timing a second one
    in the caller while no worker runs.

    A second call costs the job one whole call in the caller; when all the items left fit
    in one round of workers (at most ``n_usable_cores``, or ``max_workers`` when lower),
    that is as long as the pool's whole share of the work (the nested host program, 3 items
    of 0.2 s on 2 workers, took 1.5 times the stdlib pool's time). The rule is safe only
    when (1) the call is ``LONE_CALL_START_MULTIPLE`` times a worker's start, so that a
    cold first call followed by trivial ones costs the job at most a tenth more; (2) the
    workers inherit the caller's state (a pool forked after this call, not warm workers
    forked before it): then what made the first call cold (imports, caches) is not paid
    again by each worker; (3) few items are left (one round),
    so a first call that overstated the work sends no long queue of tiny chunks. Whether
    the call's memory can matter is asked apart (``memory_cannot_matter``).
    """
    if n_items_left is None or n_items_left < 1 or not workers_inherit_state:
        return False
    if call_s < LONE_CALL_START_MULTIPLE * worker_start_s:
        return False
    one_round = n_usable_cores if max_workers is None else min(n_usable_cores, max_workers)
    return n_items_left <= one_round


def memory_cannot_matter(
    facts: SystemFacts,
    measurements: WorkMeasurements,
    *,
    memory_bound_bytes: int,
    n_items_left: int,
    max_workers: int | None,
) -> bool:
    """Whether the plan is the same with a call's memory at 0 and at ``memory_bound_bytes``
    (an upper bound of what the call can need, such as the process's peak resident memory):
    then planning without the memory-metered call is safe. With a bound that would cap the
    workers, the probe measures the call's memory as usual."""

    def plan_with(memory_bytes: int) -> tuple[str, int]:
        plan = _cost_model.plan_map(
            facts,
            replace(measurements, memory_bytes_per_call=memory_bytes),
            n_items=n_items_left,
            n_items_lower_bound=n_items_left,
            max_workers=max_workers,
        )
        return plan.mode, plan.n_workers

    return plan_with(0) == plan_with(memory_bound_bytes)
