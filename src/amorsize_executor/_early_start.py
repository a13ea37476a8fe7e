"""When workers start before a pool is planned: during the probe, or in the background of a
serial stream, so that a pool that is all but certain does not make the caller wait for its
start.

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
) -> int:
    """How many workers to start during the probe (0: wait for the plan), from the fastest
    of the first ``n_calls_timed`` calls (one or two) and its CPU seconds.

    Only for CPU-bound calls over an input of known length that is long by
    ``PRESTART_MIN_SERIAL_S``, and calls that are not trivial (``PRESTART_MIN_CALL_S`` for
    a lone first call, ``PRESTART_MIN_WARM_CALL_S`` for the faster of two): such work gets
    one worker per usable core, so the guess matches the plan; waiting-bound work's worker
    count depends on figures the probe has not measured yet.
    """
    min_call_s = PRESTART_MIN_CALL_S if n_calls_timed < 2 else PRESTART_MIN_WARM_CALL_S
    if n_items_left is None or fastest_call_s < min_call_s or n_usable_cores < 2:
        return 0
    if n_items_left * fastest_call_s < PRESTART_MIN_SERIAL_S:
        return 0
    if its_cpu_s / fastest_call_s < CPU_BOUND_SHARE:
        return 0
    n_workers = min(n_usable_cores, n_items_left)
    return n_workers if max_workers is None else min(n_workers, max_workers)


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
