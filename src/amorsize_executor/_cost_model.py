"""The cost model: from machine facts and probe measurements to a plan.

Policy layer. Every number arrives as an argument; nothing here reads a clock, a file or the
environment, or starts a process. That is what lets the tests assert exact plans from
hand-built inputs, with no timing in them.

The prediction for ``w`` workers and chunks of ``k`` items, for ``n`` remaining items::

    parallel_s = start_s(w) + cold_s + roundtrip_s + max(parent_s, worker_s)
    parent_s   = n * (pickle_s + transfer_s) + ceil(n / k) * task_roundtrip_s + fn_s(n/k, 1)
    worker_s   = max(r * k * (compute_s + pickle_s) + fn_s(r, 1),   # r = ceil(ceil(n / k) / w)
                     (n * (compute_s * cpu_share + pickle_s) + parent_s + fn_s(n/k, w))
                     / usable_cores)                                  # chunk rounds, CPU ceiling
    serial_s   = n * compute_s

``cold_s`` is what each fresh worker's own first call takes beyond a warm one (imports,
caches: the probe's cold first call shows it); the workers pay it at once, so it counts once.
``fn_s(chunks, workers)``: moving ``fn`` itself, in each chunk or once per worker (``_fn_cost``).
``parent_s`` is what the one parent process must do for every item and chunk (pickle, move
bytes, dispatch); ``worker_s`` counts whole rounds of chunks, which is where the imbalance of
the last chunks shows, and never lets the work go faster than the usable cores allow, the
parent's share included: on two cores, a parent busy receiving large results takes its
time from the workers. The two overlap, so the slower one sets the pace.

The rules that steer a running plan from what its chunks report (chunk-size feedback, the
guided end, chunk budgets, the switch back to serial) are in ``_steering``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from ._fn_cost import fn_shipping_s
from ._records import CoreFacts, Plan, SystemFacts, WorkMeasurements
from ._serial_reasons import best_pool_reason, floor_reason, with_unknown_length

PARALLEL_MARGIN = 0.10
"""A pool must be predicted at least this much faster than serial to be chosen: the probe's
per-item figures carry noise of this order on a shared machine, and a wrong parallel choice
costs more (start-up, memory) than a wrong serial one."""

VOLUNTARY_SWITCHES_TO_WAIT = 0.5
"""A call that gives up the CPU voluntarily (sleep, I/O, a lock) at least this often on
average is waiting; one whose wall time exceeds its CPU time without such switches was
only preempted by other processes on a busy machine, and is CPU-bound all the same."""

CPU_BOUND_SHARE = 0.5
"""Work whose CPU time is at least this share of its wall time counts as CPU-bound: it gets
physical cores only, and no more workers than usable cores."""

MAX_OVERSUBSCRIPTION = 8
"""Waiting-bound work may use up to this many workers per usable core. Each extra worker
costs a start and memory, so the optimiser only goes this far when the waits pay for it."""

WORKER_BASE_BYTES = 64 * 1024 * 1024
"""Resident memory of an idle worker (interpreter, loky, the user's imports) before it runs
``fn``: a fresh loky worker measures 20-30 MiB here; the rest is room for user imports."""

MEMORY_SAFETY = 0.8
"""Share of the available memory the workers may be planned to fill."""

MAX_CHUNK_S = 0.5
"""Upper bound on a chunk's predicted duration, so that runtime feedback, progress and
timeouts stay responsive and a straggling last chunk stays short."""

MAX_CHUNK_ITEMS = 10_000
"""Upper bound on items per chunk: bounds how far ahead of the consumer the input is read
and how much one chunk holds in memory for the tiniest functions; at 1 µs a call, 10,000
items still last 10 ms, fifty times a dispatch round trip."""

TARGET_CHUNK_S = 0.02
"""Feedback aims chunks at this duration: long enough to amortise a dispatch round trip
(about 0.2 ms here) a hundred times over, short enough to balance the end of the job."""

NEAR_TIE = 0.02
"""Predictions this close to the fastest count as ties (the model is not more precise than
this); ties go to fewer workers and to chunks near ``TARGET_CHUNK_S``."""

WINDOW_MIN_ROUNDS = 2
"""Chunks in flight per worker by default: one running, one queued, so a worker never waits
for the parent between chunks."""

WINDOW_MAX_BYTES = 256 * 1024 * 1024
"""Default cap on the pickled bytes (items and results) held in flight by one ``map()``."""


def effective_cpu_share(measurements: WorkMeasurements) -> float:
    """The CPU share to plan with: the measured one, unless the calls never waited
    voluntarily, in which case the missing CPU time was stolen by other processes."""
    switches = measurements.voluntary_switches_per_item
    if switches is not None and switches < VOLUNTARY_SWITCHES_TO_WAIT:
        return 1.0
    return measurements.cpu_share


def choose_usable_cores(facts: SystemFacts | CoreFacts, *, cpu_bound: bool) -> tuple[int, str]:
    """How many cores the work can use, and which constraint set that number.

    The smallest of the OS count, the affinity mask, the cgroup CPU quota (rounded up: a
    quota of 1.5 cores still lets two workers share it), an operator's environment cap and,
    for CPU-bound work, the physical cores (hyperthreads share one core's arithmetic).
    The first constraint listed wins a tie.
    """
    limits: list[tuple[str, int]] = [("logical", facts.n_logical_cores)]
    if cpu_bound and facts.n_physical_cores:
        limits.append(("physical", facts.n_physical_cores))
    if facts.n_affinity_cores:
        limits.append(("affinity", facts.n_affinity_cores))
    if facts.cpu_quota_cores:
        limits.append(("cgroup quota", math.ceil(facts.cpu_quota_cores)))
    if facts.env_core_limit:
        limits.append(("environment", facts.env_core_limit))
    name, value = min(limits, key=lambda limit: limit[1])
    return max(1, value), name


def predict_serial_s(measurements: WorkMeasurements, n_items: int) -> float:
    """Seconds to run ``n_items`` more items in the calling process."""
    return n_items * measurements.wall_s_per_item


def predict_start_s(facts: SystemFacts, n_workers: int) -> float:
    """Seconds until ``n_workers`` workers are ready: nothing if that many are warm.

    A pool that must grow is replaced whole, so a shortfall costs a full start. Workers
    start concurrently, but the parent launches them one by one and, on few cores, they
    compete for CPU while importing, so each one after the first adds half a start.
    """
    if n_workers <= facts.n_warm_workers:
        return 0.0
    return facts.worker_start_s * (1 + 0.5 * (n_workers - 1))


INHERITS_WARM_STATE = ("fork", "threads")
"""Start methods whose workers begin with the caller's imports and caches: a forked child
or a thread of this process. Their first call is not cold again."""


def predict_cold_first_call_s(facts: SystemFacts, measurements: WorkMeasurements) -> float:
    """Seconds the workers' own cold first calls add: each worker started afresh (spawn,
    forkserver, loky, a cluster) pays what the probe's first call took beyond a warm one.
    The workers pay it at the same time, so it counts once. Nothing where workers inherit
    the caller's warm state, or where the start method is not known yet (a bound)."""
    if not facts.was_read or facts.start_method in INHERITS_WARM_STATE:
        return 0.0
    return measurements.first_call_extra_s


def predict_parallel_s(
    facts: SystemFacts,
    measurements: WorkMeasurements,
    n_items: int,
    n_workers: int,
    chunksize: int,
    n_usable_cores: int,
) -> float:
    """Seconds to run ``n_items`` on ``n_workers`` workers in chunks of ``chunksize``,
    including starting any workers that are not warm yet (see the module docstring)."""
    if n_items <= 0:
        return 0.0
    m = measurements
    n_chunks = math.ceil(n_items / chunksize)
    transfer_s = (m.item_bytes + m.result_bytes) / facts.ipc_bytes_per_s
    parent_s = n_items * (m.pickle_s_per_item + transfer_s) + n_chunks * facts.task_roundtrip_s
    parent_s += fn_shipping_s(facts, m, n_chunks, 1)
    rounds = math.ceil(n_chunks / n_workers)
    rounds_s = rounds * min(chunksize, n_items) * (m.wall_s_per_item + m.pickle_s_per_item)
    rounds_s += fn_shipping_s(facts, m, rounds, 1)
    cpu_ceiling_s = parent_s + fn_shipping_s(facts, m, n_chunks, n_workers)
    cpu_ceiling_s += n_items * (m.wall_s_per_item * effective_cpu_share(m) + m.pickle_s_per_item)
    worker_s = max(rounds_s, cpu_ceiling_s / n_usable_cores)
    return (
        predict_start_s(facts, n_workers)
        + predict_cold_first_call_s(facts, m)
        + facts.task_roundtrip_s
        + max(parent_s, worker_s)
    )


def parallel_floor_s(facts: SystemFacts, measurements: WorkMeasurements, n_items: int) -> float:
    """A lower bound of ``predict_parallel_s`` over every worker count and chunk size: the
    cheapest start (none with warm workers), one round trip, and the parent's pickling and
    transfer of every item, which no number of workers shares."""
    m = measurements
    start_s = 0.0 if facts.n_warm_workers >= 1 else predict_start_s(facts, 1)
    transfer_s = (m.item_bytes + m.result_bytes) / facts.ipc_bytes_per_s
    return (
        start_s
        + predict_cold_first_call_s(facts, m)
        + facts.task_roundtrip_s
        + n_items * (m.pickle_s_per_item + transfer_s)
        + fn_shipping_s(facts, m, 1, 1)
    )


def candidate_chunksizes(n_items: int, n_workers: int) -> list[int]:
    """Chunk sizes worth evaluating: powers of two, and the sizes that give each worker
    exactly one, two or four chunks (the balanced splits a static rule would pick)."""
    top = max(1, math.ceil(n_items / n_workers))
    sizes = {
        top,
        max(1, math.ceil(n_items / (2 * n_workers))),
        max(1, math.ceil(n_items / (4 * n_workers))),
    }
    size = 1
    while size < top:
        sizes.add(size)
        size *= 2
    return sorted(sizes)


def cap_chunksize_by_duration(measurements: WorkMeasurements, chunksize: int) -> int:
    """The largest chunk not longer than ``MAX_CHUNK_S`` nor above ``MAX_CHUNK_ITEMS``, but
    never below one item."""
    chunksize = min(chunksize, MAX_CHUNK_ITEMS)
    per_item_s = measurements.wall_s_per_item + measurements.pickle_s_per_item
    if per_item_s <= 0:
        return chunksize
    return max(1, min(chunksize, int(MAX_CHUNK_S / per_item_s)))


def choose_window_items(
    measurements: WorkMeasurements, n_workers: int, chunksize: int, buffersize: int | None
) -> int:
    """Items in flight at once: the user's ``buffersize`` if given, else enough for every
    worker to have a chunk running and one queued, capped by ``WINDOW_MAX_BYTES``."""
    if buffersize is not None:
        return buffersize
    window = WINDOW_MIN_ROUNDS * n_workers * chunksize
    bytes_per_item = measurements.item_bytes + measurements.result_bytes
    if bytes_per_item >= 1:
        window = min(window, max(n_workers * chunksize, int(WINDOW_MAX_BYTES / bytes_per_item)))
    return max(1, window)


def choose_worker_cap(
    facts: SystemFacts,
    measurements: WorkMeasurements,
    n_usable_cores: int,
    max_workers: int | None,
) -> tuple[int, list[str]]:
    """The most workers worth considering, with the reasons any limit bit."""
    reasons: list[str] = []
    cpu_share = effective_cpu_share(measurements)
    if cpu_share >= CPU_BOUND_SHARE or facts.start_method == "dask":
        # A cluster's worker threads are all there is: its operator sized them.
        cap = n_usable_cores
    else:
        # Waiting-bound: k workers keep k calls waiting at once; a core is full once the
        # CPU parts of 1/cpu_share calls overlap.
        share = max(cpu_share, 1 / MAX_OVERSUBSCRIPTION)
        cap = max(n_usable_cores, math.ceil(n_usable_cores / share))
        reasons.append(
            f"calls spend {1 - cpu_share:.0%} of their time waiting, so up to "
            f"{cap} workers on {n_usable_cores} core(s) were considered"
        )
    per_worker_bytes = WORKER_BASE_BYTES + measurements.memory_bytes_per_call
    memory_cap = int(facts.available_memory_bytes * MEMORY_SAFETY // per_worker_bytes)
    if memory_cap < cap:
        reasons.append(
            f"memory allows {memory_cap} worker(s): {per_worker_bytes / 2**20:.0f} MiB each "
            f"against {facts.available_memory_bytes / 2**20:.0f} MiB available"
        )
        cap = memory_cap
    if facts.env_core_limit is not None and facts.env_core_limit < cap:
        reasons.append(f"AMORSIZE_MAX_WORKERS={facts.env_core_limit} caps the pool")
        cap = facts.env_core_limit
    if max_workers is not None and max_workers < cap:
        reasons.append(f"max_workers={max_workers} caps the pool")
        cap = max_workers
    return cap, reasons


def plan_map(
    facts: SystemFacts,
    measurements: WorkMeasurements,
    *,
    n_items: int | None,
    n_items_lower_bound: int,
    max_workers: int | None = None,
    chunksize: int | None = None,
    buffersize: int | None = None,
    serial_allowed: bool = True,
) -> Plan:
    """Decide how to run the rest of a ``map()``: serially or on how many workers, in
    chunks of what size, by minimising predicted time.

    Args:
        facts: what the machine offers (cores, memory, start cost, warm workers).
        measurements: the probe's per-item figures.
        n_items: items left to run, or ``None`` when the input's length is unknown.
        n_items_lower_bound: items known to remain at least; with an unknown length the
            plan is made for this many and revisited as more input arrives.
        max_workers: the user's cap on workers; never exceeded.
        chunksize: the user's explicit chunk size, respected as given.
        buffersize: the user's in-flight window in items, respected as given.
        serial_allowed: ``False`` when ``fn`` must not run in the caller (isolation,
            an initializer, a timeout): the best pool is chosen even if serial would win.
    """
    n_assumed = n_items if n_items is not None else max(0, n_items_lower_bound)
    cpu_bound = effective_cpu_share(measurements) >= CPU_BOUND_SHARE
    n_cores, core_limit = choose_usable_cores(facts, cpu_bound=cpu_bound)
    if max_workers is not None and max_workers < n_cores:
        n_cores, core_limit = max_workers, "max_workers"
    reasons: list[str] = []  # the limits on the pool, once they are looked at
    serial_s = predict_serial_s(measurements, n_assumed) if serial_allowed else None

    def make(
        mode: str,
        n_workers: int,
        size: int,
        parallel_s: float | None,
        why: Iterable[str],
        floor_s: float | None = None,
    ) -> Plan:
        return Plan(
            mode="serial" if mode == "serial" else "parallel",
            n_workers=n_workers,
            chunksize=size,
            predicted_serial_s=serial_s,
            predicted_parallel_s=parallel_s,
            n_items=n_items,
            n_items_assumed=n_assumed,
            window_items=choose_window_items(measurements, n_workers, size, buffersize)
            if mode == "parallel"
            else 0,
            n_usable_cores=n_cores,
            core_limit=core_limit,
            reasons=(*reasons, *why),
            facts=facts,
            measurements=measurements,
            parallel_floor_s=floor_s,
        )

    if serial_allowed and n_assumed == 0:
        # Nothing to plan for: no other rule applies (the machine was not even read).
        return make("serial", 1, 1, None, ["no items are left after the probe"])
    worker_cap, cap_reasons = choose_worker_cap(facts, measurements, n_cores, max_workers)
    reasons.extend(cap_reasons)
    picklable = math.isfinite(measurements.item_bytes + measurements.result_bytes)
    if not picklable and serial_allowed:
        unpicklable = "items or results cannot be pickled, so they cannot be sent to a worker"
        return make("serial", 1, 1, None, [unpicklable])
    if worker_cap < 1:
        if serial_allowed:
            return make("serial", 1, 1, None, ["no worker fits in the available memory"])
        worker_cap = 1
        reasons.append("memory is short, but fn may not run in the caller: 1 worker")
    if serial_s is not None:
        floored = _no_pool_can_win(facts, measurements, n_assumed, n_items, serial_s)
        if floored is not None:
            # Skip the search: the plan of a tiny job must cost next to nothing. The floor
            # is a bound, not a prediction of any real pool's time.
            floor_s, floor_why = floored
            return make("serial", 1, 1, None, floor_why, floor_s)

    predictions = _predict_candidates(
        facts, measurements, n_assumed, worker_cap, chunksize, n_cores
    )
    best = _pick_near_best(predictions, measurements)
    parallel_s, n_workers, size = best
    pool_wins, why = _best_pool_or_serial(facts, best, serial_s, chunksize, n_items)
    if pool_wins:
        return make("parallel", n_workers, size, parallel_s, why)
    if not facts.was_read:
        # Planned on the most favourable figures: the best pool's time is a bound.
        return make("serial", 1, 1, None, why, parallel_s)
    return make("serial", 1, 1, parallel_s, why)


def _best_pool_or_serial(
    facts: SystemFacts,
    best: tuple[float, int, int],
    serial_s: float | None,
    chunksize: int | None,
    n_items: int | None,
) -> tuple[bool, list[str]]:
    """Whether the best pool the search found, ``best`` (seconds, workers, chunk size), is
    chosen over serial, and why; always when ``fn`` may not run in the caller (no
    ``serial_s``), else when it wins by ``PARALLEL_MARGIN``."""
    parallel_s, n_workers, size = best
    why = [] if chunksize is None else [f"chunksize={chunksize} as given"]
    if serial_s is None:
        caller = "fn may not run in the caller (isolation, initializer or timeout)"
        return True, [*why, f"{caller}, so the best pool was chosen"]
    if parallel_s < serial_s * (1 - PARALLEL_MARGIN):
        speedup = f"{serial_s / parallel_s:.1f}x"
        return True, [
            *why,
            f"{n_workers} worker(s) are predicted {speedup} faster than serial, start-up included",
        ]
    bound = not facts.was_read
    why.append(best_pool_reason(n_workers, size, parallel_s, serial_s, bound, PARALLEL_MARGIN))
    return False, with_unknown_length(why, n_items)


def _no_pool_can_win(
    facts: SystemFacts,
    measurements: WorkMeasurements,
    n_assumed: int,
    n_items: int | None,
    serial_s: float,
) -> tuple[float, list[str]] | None:
    """``(the fastest any pool could be, why)`` when even that loses to serial by
    ``PARALLEL_MARGIN``; ``None`` when a pool may win and the search must run."""
    floor_s = parallel_floor_s(facts, measurements, n_assumed)
    if floor_s < serial_s * (1 - PARALLEL_MARGIN):
        return None
    why = floor_reason(
        floor_s,
        serial_s,
        pays_start=facts.n_warm_workers < 1 and predict_start_s(facts, 1) > 0,
        pays_cold_first_call=predict_cold_first_call_s(facts, measurements) > 0,
    )
    return floor_s, with_unknown_length([why], n_items)


def _predict_candidates(
    facts: SystemFacts,
    measurements: WorkMeasurements,
    n_assumed: int,
    worker_cap: int,
    chunksize: int | None,
    n_cores: int,
) -> list[tuple[float, int, int]]:
    """``(predicted seconds, workers, chunk size)`` for every worker count up to
    ``worker_cap`` and every candidate chunk size (the user's ``chunksize`` alone if given)."""
    predictions: list[tuple[float, int, int]] = []
    for n_workers in range(1, worker_cap + 1):
        sizes = (
            [chunksize]
            if chunksize is not None
            else sorted(
                {
                    cap_chunksize_by_duration(measurements, size)
                    for size in candidate_chunksizes(max(1, n_assumed), n_workers)
                }
            )
        )
        predictions.extend(
            (
                predict_parallel_s(facts, measurements, n_assumed, n_workers, size, n_cores),
                n_workers,
                size,
            )
            for size in sizes
        )
    return predictions


def _pick_near_best(
    predictions: list[tuple[float, int, int]], measurements: WorkMeasurements
) -> tuple[float, int, int]:
    """The fastest ``(seconds, workers, chunksize)``; among those within ``NEAR_TIE`` of it,
    the fewest workers, then the chunk whose duration is nearest ``TARGET_CHUNK_S``.

    Uniform per-item costs make many chunk sizes tie in the model, yet they differ in
    reality: tiny chunks load the parent, huge ones balance badly when items vary. The
    target duration is where runtime feedback would steer anyway.
    """
    fastest_s = min(p[0] for p in predictions)
    per_item_s = measurements.wall_s_per_item + measurements.pickle_s_per_item

    def distance_from_target(size: int) -> float:
        if per_item_s <= 0:
            return -size
        return abs(math.log(size * per_item_s / TARGET_CHUNK_S))

    near = [p for p in predictions if p[0] <= fastest_s * (1 + NEAR_TIE) + 1e-12]
    return min(near, key=lambda p: (p[1], distance_from_target(p[2]), p[2]))
