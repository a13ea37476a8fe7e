"""The cost model: from machine facts and probe measurements to a plan.

Policy layer. Every number arrives as an argument; nothing here reads a clock, a file or the
environment, or starts a process. That is what lets the tests assert exact plans from
hand-built inputs, with no timing in them.

The prediction for ``w`` workers and chunks of ``k`` items, for ``n`` remaining items::

    parallel_s = start_s(w) + roundtrip_s + max(parent_s, worker_s)
    parent_s   = n * (pickle_s + transfer_s) + ceil(n / k) * task_roundtrip_s + fn_s(n/k, 1)
    worker_s   = max(ceil(ceil(n / k) / w) * k * (compute_s + pickle_s)      # chunk rounds
                     + fn_s(ceil(ceil(n / k) / w), 1),
                     (n * (compute_s * cpu_share + pickle_s) + parent_s)      # CPU ceiling
                     / usable_cores)
    serial_s   = n * compute_s

``fn_s(chunks, workers)`` is what moving ``fn`` itself costs (``fn_shipping_s``): a small
``fn`` travels in every chunk; a large one is written once to shared memory and loaded once
by each worker (``fn_travels_once_per_worker``), its arrays memory-mapped.

``parent_s`` is what the one parent process must do for every item and chunk (pickle, move
bytes, dispatch); ``worker_s`` counts whole rounds of chunks, which is where the imbalance of
the last chunks shows, and never lets the work go faster than the usable cores allow, the
parent's share included: on two cores, a parent busy receiving large results takes its
time from the workers. The two overlap, so the slower one sets the pace.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import replace

from ._records import Plan, SystemFacts, WorkMeasurements

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

GUIDED_MIN_CHUNK_S = 0.002
"""Near the end of the input, chunks shrink no further than this much work: ten dispatch
round trips (about 0.2 ms each here), so each still spends most of its time computing,
while a last chunk this short leaves the other workers idle for at most as long."""

CHUNK_BUDGET_FACTOR = 2.0
"""A chunk that has run this many times its expected duration stops starting items and
sends the rest back to be split among the workers. A false stop is cheap (one round trip,
and the rest goes out again); a late one leaves the other workers idle at the end of the
job. On the skewed benchmark (items 100x slower at the end), 3x left a worker idle for
about 50 ms per run that 2x did not; noise on this shared machine rarely reaches 2x."""

MIN_CHUNK_BUDGET_S = 0.005
"""A chunk is never stopped before this long: under it, the round trip of sending the rest
again costs more than a straggler could."""

MIN_BUDGET_ROUNDTRIPS = 20
"""Nor before this many dispatch round trips: the same bound on a slow transport."""

CLOCK_CHECK_S = 1e-5
"""With a budget, the worker reads the clock about this often in work done (a read costs
about 50 ns, under 1% of it)."""


def effective_cpu_share(measurements: WorkMeasurements) -> float:
    """The CPU share to plan with: the measured one, unless the calls never waited
    voluntarily, in which case the missing CPU time was stolen by other processes."""
    switches = measurements.voluntary_switches_per_item
    if switches is not None and switches < VOLUNTARY_SWITCHES_TO_WAIT:
        return 1.0
    return measurements.cpu_share


def choose_usable_cores(facts: SystemFacts, *, cpu_bound: bool) -> tuple[int, str]:
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


FN_ONCE_PER_WORKER_MIN_BYTES = 1 << 20
"""A pickled ``fn`` at least this large (1 MiB, joblib's default threshold for memory-mapping
an array) is shipped once per worker through shared memory instead of inside every chunk:
below it, the file and its mapping cost more than sending the bytes a few times."""

MAPPED_BYTES_PER_S = 1.4e9
"""Rate at which the parent writes a large ``fn``'s buffers to shared memory, and at which a
worker faults the mapped pages in, both counted at the slower of the two: writing a
200 MB array to ``/dev/shm`` took 0.14 s here, touching every mapped page about 0.05 s."""


def fn_travels_once_per_worker(fn_nbytes: int, *, workers_share_files: bool) -> bool:
    """Whether ``fn`` (``fn_nbytes`` pickled) should be shipped once per worker through a
    shared-memory file rather than in every chunk: when it is large, and the workers are on
    this machine (a cluster's are not)."""
    return workers_share_files and fn_nbytes >= FN_ONCE_PER_WORKER_MIN_BYTES


def fn_shipping_s(
    facts: SystemFacts, measurements: WorkMeasurements, n_chunks: float, n_workers: float
) -> float:
    """Seconds spent moving ``fn`` itself, for ``n_chunks`` chunks over ``n_workers``
    workers: its bytes in every chunk, plus a large ``fn``'s load by each worker (its
    in-band pickle at the transfer rate, its mapped buffers at ``MAPPED_BYTES_PER_S``)."""
    m = measurements
    per_chunk_s = m.fn_bytes_per_chunk / facts.ipc_bytes_per_s
    per_worker_s = m.fn_bytes_per_worker / facts.ipc_bytes_per_s + (
        m.fn_mapped_bytes / MAPPED_BYTES_PER_S
    )
    return n_chunks * per_chunk_s + n_workers * per_worker_s


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
    # The parent pickles a large fn and writes it once; a small one goes out with each chunk.
    parent_s = (
        n_items * (m.pickle_s_per_item + transfer_s)
        + n_chunks * facts.task_roundtrip_s
        + fn_shipping_s(facts, m, n_chunks, 1)
    )
    rounds = math.ceil(n_chunks / n_workers)
    per_item_worker_s = m.wall_s_per_item + m.pickle_s_per_item
    # Each worker loads a large fn before its first chunk, a small one with every chunk.
    rounds_s = rounds * min(chunksize, n_items) * per_item_worker_s + fn_shipping_s(
        facts, m, rounds, 1
    )
    cpu_ceiling_s = (
        n_items * (m.wall_s_per_item * effective_cpu_share(m) + m.pickle_s_per_item)
        + parent_s
        + fn_shipping_s(facts, m, n_chunks, n_workers)
    )
    worker_s = max(rounds_s, cpu_ceiling_s / n_usable_cores)
    return predict_start_s(facts, n_workers) + facts.task_roundtrip_s + max(parent_s, worker_s)


def parallel_floor_s(facts: SystemFacts, measurements: WorkMeasurements, n_items: int) -> float:
    """A lower bound of ``predict_parallel_s`` over every worker count and chunk size: the
    cheapest start (none with warm workers), one round trip, and the parent's pickling and
    transfer of every item, which no number of workers shares."""
    m = measurements
    start_s = 0.0 if facts.n_warm_workers >= 1 else predict_start_s(facts, 1)
    transfer_s = (m.item_bytes + m.result_bytes) / facts.ipc_bytes_per_s
    return (
        start_s
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
    worker_cap, reasons = choose_worker_cap(facts, measurements, n_cores, max_workers)
    serial_s = predict_serial_s(measurements, n_assumed) if serial_allowed else None

    def make(
        mode: str, n_workers: int, size: int, parallel_s: float | None, why: Iterable[str]
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
        )

    picklable = math.isfinite(measurements.item_bytes + measurements.result_bytes)
    if not picklable and serial_allowed:
        return make(
            "serial",
            1,
            1,
            None,
            ["items or results cannot be pickled, so they cannot be sent to a worker"],
        )
    if worker_cap < 1:
        if serial_allowed:
            return make("serial", 1, 1, None, ["no worker fits in the available memory"])
        worker_cap = 1
        reasons.append("memory is short, but fn may not run in the caller: 1 worker")
    if serial_allowed and n_assumed == 0:
        return make("serial", 1, 1, None, ["no items are left after the probe"])
    if serial_s is not None:
        floor_s = parallel_floor_s(facts, measurements, n_assumed)
        if floor_s >= serial_s * (1 - PARALLEL_MARGIN):
            # No pool can win: skip the search (the plan of a tiny job must cost ~nothing).
            floor_why = [
                "serial is predicted fastest: any pool would take at least "
                f"{_ratio_text(floor_s, serial_s)} of the serial time (a worker's start, "
                "and the parent's pickling and sending of every item and result)"
            ]
            if n_items is None:
                floor_why.append(
                    "the input's length is unknown: this is revisited as more items arrive"
                )
            return make("serial", 1, 1, floor_s, floor_why)

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
    best = _pick_near_best(predictions, measurements)
    parallel_s, n_workers, size = best
    why: list[str] = []
    if chunksize is not None:
        why.append(f"chunksize={chunksize} as given")
    if serial_s is None:
        why.append(
            "fn may not run in the caller (isolation, initializer or timeout), "
            "so the best pool was chosen"
        )
        return make("parallel", n_workers, size, parallel_s, why)
    if parallel_s < serial_s * (1 - PARALLEL_MARGIN):
        why.append(
            f"{n_workers} worker(s) are predicted {serial_s / parallel_s:.1f}x faster "
            f"than serial, start-up included"
        )
        return make("parallel", n_workers, size, parallel_s, why)
    why.append(
        "serial is predicted fastest: the best pool "
        f"({n_workers} worker(s), chunks of {size}) would take "
        f"{_ratio_text(parallel_s, serial_s)} of the serial time"
    )
    if n_items is None:
        why.append("the input's length is unknown: this is revisited as more items arrive")
    return make("serial", 1, 1, parallel_s, why)


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


def revise_chunksize(
    *,
    chunksize: int,
    observed_s_per_item: float,
    task_roundtrip_s: float,
) -> int:
    """The next chunk's size from what completed chunks measured (runtime feedback).

    Aims each chunk at ``TARGET_CHUNK_S`` (and at least a hundred dispatch round trips),
    moving at most a factor of two per step so one odd chunk cannot swing the size. The end
    of the input is ``guided_chunksize``'s business, applied as each chunk is sent.
    """
    if observed_s_per_item <= 0:
        target = chunksize * 2
    else:
        target_s = max(TARGET_CHUNK_S, 100 * task_roundtrip_s)
        target = max(1, round(target_s / observed_s_per_item))
    target = min(
        target,
        max(1, int(MAX_CHUNK_S / observed_s_per_item)) if observed_s_per_item > 0 else target,
    )
    size = min(MAX_CHUNK_ITEMS, max(chunksize // 2, min(chunksize * 2, target)))
    return max(1, size)


def guided_chunksize(
    *, chunksize: int, n_items_unsent: int | None, n_workers: int, s_per_item: float = 0.0
) -> int:
    """The size of the chunk about to be sent, shrunk near the end of a known-length input
    (guided self-scheduling): at most half of each worker's share of the items not yet
    sent, so the last chunks are short and finish together, and a slow stretch at the end
    lands in several small chunks that every worker takes a part of, not in one long one.
    Items already in flight do not count: they are some worker's already.

    Never below ``GUIDED_MIN_CHUNK_S`` of work at ``s_per_item`` (nor below one item): the
    chunks of a fast end would otherwise cost more in dispatch than they balance.
    """
    if n_items_unsent is None:
        return max(1, chunksize)
    guided = math.ceil(n_items_unsent / (2 * max(1, n_workers)))
    floor = int(GUIDED_MIN_CHUNK_S / s_per_item) if s_per_item > 0 else 1
    return max(1, min(chunksize, max(guided, floor)))


def chunk_budget_s(*, n_items: int, s_per_item: float, task_roundtrip_s: float) -> float:
    """How long a chunk of ``n_items`` may run before it hands its unstarted items back."""
    expected_s = n_items * max(0.0, s_per_item)
    return max(
        CHUNK_BUDGET_FACTOR * expected_s,
        MIN_CHUNK_BUDGET_S,
        MIN_BUDGET_ROUNDTRIPS * task_roundtrip_s,
    )


def budget_check_every(s_per_item: float) -> int:
    """Items between two clock reads in a budgeted chunk (see ``CLOCK_CHECK_S``)."""
    if s_per_item <= 0:
        return 1
    return max(1, min(MAX_CHUNK_ITEMS, round(CLOCK_CHECK_S / s_per_item)))


def split_unrun(
    *, n_unrun: int, recent_s_per_item: float, n_workers: int, task_roundtrip_s: float
) -> list[int]:
    """Sizes of the chunks that carry a stopped chunk's unstarted items, in order.

    The items next to the ones that overran probably cost what those did, so each piece
    aims at ``TARGET_CHUNK_S`` at that rate, and there are at least as many pieces as
    workers (when there are enough items), so the slow stretch spreads over all of them.
    """
    if n_unrun <= 0:
        return []
    target_s = max(TARGET_CHUNK_S, 100 * task_roundtrip_s)
    items_per_target = target_s / recent_s_per_item if recent_s_per_item > 0 else math.inf
    size = n_unrun if items_per_target >= n_unrun else max(1, int(items_per_target))
    size = min(size, max(1, math.ceil(n_unrun / max(1, n_workers))))
    sizes = [size] * (n_unrun // size)
    if n_unrun % size:
        sizes.append(n_unrun % size)
    return sizes


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

    Only when those items take at least one worker's start (``worker_start_s``) serially:
    then the workers are ready by the next re-plan, so the switch it makes does not wait for
    them; earlier, a stream that ends soon would have the caller wait for a start it did not
    need.
    """
    if predict_serial_s(measurements, n_items_assumed) < facts.worker_start_s:
        return 0
    n_warm = max(facts.n_logical_cores, max_workers or 0)
    warm = plan_map(
        replace(facts, n_warm_workers=n_warm),
        measurements,
        n_items=None,
        n_items_lower_bound=n_items_assumed,
        max_workers=max_workers,
    )
    return warm.n_workers if warm.mode == "parallel" else 0


FALLBACK_MIN_CHUNKS = 4
"""Chunks the parent must have received in the steady state (after the first
``WINDOW_MIN_ROUNDS`` rounds, which carry the start-up and the filling of the pipeline)
before it may judge that the pool is losing to serial."""

FALLBACK_MIN_S = 0.05
"""Nor before it has spent this long on them: a few short chunks on a shared machine say
more about a neighbour's burst than about the pool (a 2-core CI run once saw the first
20 ms of 1 ms calls look slower than serial)."""


def serial_s_per_item_now(*, probed_s: float, worker_wall_s: float, worker_cpu_s: float) -> float:
    """What a call would cost in the caller now, to judge a running pool against.

    The probe's figure, unless the workers show calls have become slower since: for calls
    that compute, by their CPU time (their wall time also counts the cores the workers and
    the parent take from each other, which serial would not pay); for calls that wait, by
    their wall time (waiting is not shared). Never below the probe's figure.
    """
    if worker_wall_s > 0 and worker_cpu_s / worker_wall_s < CPU_BOUND_SHARE:
        now_s = worker_wall_s
    else:
        now_s = worker_cpu_s
    return max(probed_s, now_s)


def pool_is_losing(
    *,
    parent_s_per_item: float,
    serial_s_per_item: float,
    n_chunks_measured: int,
    measured_s: float,
) -> bool:
    """Whether a running pool is slower than finishing in the caller would be.

    ``parent_s_per_item`` is what each result has cost the calling thread in the steady
    state: waiting for it, receiving and unpickling it, but not the consumer's own time
    between results (serial would pay that too). When that exceeds a call in the caller by
    more than ``PARALLEL_MARGIN``, the pool is a loss: results too large to ship, or too
    few cores left once the parent takes its share. ``measured_s`` is the steady state's
    length in that time.
    """
    if n_chunks_measured < FALLBACK_MIN_CHUNKS or measured_s < FALLBACK_MIN_S:
        return False
    if serial_s_per_item <= 0:
        return False
    return parent_s_per_item > serial_s_per_item * (1 + PARALLEL_MARGIN)


def _ratio_text(numerator: float, denominator: float) -> str:
    if denominator <= 0:
        return "n/a"
    return f"{numerator / denominator:.0%}"


def choose_start_method(
    *, platform: str, n_os_threads: int, available_methods: tuple[str, ...]
) -> tuple[str, str]:
    """How to start workers when the user gave no ``mp_context``, and why.

    ``fork`` starts a worker in a few milliseconds against about 70 ms for a fresh
    interpreter, but it is only safe in a process with a single thread: a thread holding a
    lock at fork time (a native BLAS or OpenMP pool counts) leaves the child deadlocked.
    So: ``fork`` on Linux when this process has exactly one OS thread; else ``forkserver``
    (workers forked from a clean single-threaded server, safe with threads, about 45 ms for
    the first pool); else loky's own method (a fresh interpreter per worker), the only
    choice on Windows and the safe one on macOS, where fork is unsafe in general.
    """
    if platform.startswith("linux"):
        if n_os_threads == 1 and "fork" in available_methods:
            return "fork", "fork: single-threaded on Linux, the fastest safe start"
        if "forkserver" in available_methods:
            return "forkserver", (
                f"forkserver: {n_os_threads} threads are running, so fork would be unsafe"
            )
    return "loky", "loky: a fresh interpreter per worker, safe on every platform"


def choose_threads_per_worker(n_usable_cores: int, n_workers: int) -> int:
    """Native threads (BLAS, OpenMP) each worker may run so that workers x threads stays
    within the usable cores: oversubscribed cores thrash caches and lose time switching."""
    return max(1, n_usable_cores // max(1, n_workers))
