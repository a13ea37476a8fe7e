"""The probe run in a worker, for runs where ``fn`` must not run in the caller (``timeout``,
an ``initializer``, ``isolate=True``): small first chunks, each four times the last, until
``_probe.probe_is_done`` says the figures can be trusted.

It is handed a callable that runs one chunk of a given size and waits for it, and a clock;
it returns the measurements (per item, averaged over the chunks) and never touches the run.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from . import _probe
from ._chunk_io import ChunkOutcome
from ._records import WorkMeasurements

WORKER_PROBE_FIRST_ITEMS = 1
"""Items in the first chunk of a probe run in a worker; each further probe chunk is four
times larger until the measured compute time is long enough to trust."""


def first_probe_round(
    chunksize: int | None, *, n_workers: int, cap: Callable[[int], int] = lambda size: size
) -> tuple[int, int]:
    """The first step of the probe in a worker: ``(items per chunk, chunks)``, one chunk per
    worker (``n_workers``, at least one), each of the user's ``chunksize`` when given (the
    plan keeps it anyway, so the first round is what the stdlib pool would send), else of
    ``WORKER_PROBE_FIRST_ITEMS``; ``cap`` bounds the size (one item under a deadline)."""
    return cap(chunksize or WORKER_PROBE_FIRST_ITEMS), max(1, n_workers)


def probe_in_worker(
    run_chunk: Callable[[int], ChunkOutcome | None],
    *,
    may_go_on: Callable[[], bool],
    deliver: Callable[[list[object]], None],
    cap_chunksize: Callable[[int], int] = lambda size: size,
    wall_clock: Callable[[], float] = time.perf_counter,
    first_round: tuple[int, int] | None = None,
    send_round: Callable[[int, int], int] | None = None,
) -> WorkMeasurements:
    """Measure ``fn`` by running chunks through ``run_chunk(size)`` while chunks sent ahead
    are left or ``may_go_on()`` (no error, input left); each chunk's results go to
    ``deliver`` in order. A ``None`` from ``run_chunk`` (nothing sent, a failure, the
    deadline) ends the probe. Each chunk is four times the last, as ``cap_chunksize``
    allows (one item under a deadline).

    With ``first_round=(size, n_chunks)`` and ``send_round``, the first step sends
    ``n_chunks`` chunks of ``size`` items at once, one per worker (``send_round(size, n)``
    says how many it sent), which ``run_chunk`` then takes in order: one chunk alone would
    leave the other workers idle for as long as it runs (tqdm's ``process_map`` with
    ``chunksize=8``: a whole item's time on a 0.17 s job). The probe may stop on the first
    of them; the others are left to the result stream, so the first result still comes as
    soon as the first chunk is done.

    Unlike the caller's, this probe may stop on its first chunk of one call (see
    ``_probe.probe_is_done``'s ``lone_call_ok``); when a second chunk ran after the first
    in the same worker's turn (a first round of one chunk) and shows that first call to have
    been cold (``_probe.first_call_is_cold``: the worker's imports, caches), the first is
    left out of the figures and reported as ``first_call_extra_s``. The chunks of a first
    round of several are each some worker's first: none can show another to be cold."""
    chunks: list[ChunkOutcome] = []
    size, n_chunks = first_round or (WORKER_PROBE_FIRST_ITEMS, 1)
    n_ahead = send_round(size, n_chunks) if send_round is not None and n_chunks > 1 else 0
    cold_first = False
    probe_started_s = wall_clock()
    while n_ahead or may_go_on():  # chunks sent ahead are taken even once the input ended
        result = run_chunk(size)
        if result is None:
            break
        deliver(result.results)
        chunks.append(result)
        if len(chunks) == 2 and n_chunks == 1:
            cold_first = _is_cold_first_chunk(chunks[0], chunks[1])
        warm = chunks[1:] if cold_first else chunks
        elapsed_s = wall_clock() - probe_started_s
        if _probe.probe_is_done(
            n_items=sum(chunk.n_results for chunk in chunks),
            n_warm_samples=len(warm),
            elapsed_s=elapsed_s,
            trusted=sum(chunk.compute_s for chunk in warm) >= _probe.PROBE_MIN_S,
            lone_call_ok=True,
        ):
            break  # chunks still sent ahead are left to the result stream
        n_ahead = max(0, n_ahead - 1)
        if n_ahead == 0:
            size = cap_chunksize(size * 4)
    return _measurements(chunks, cold_first)


def _is_cold_first_chunk(first: ChunkOutcome, second: ChunkOutcome) -> bool:
    """Whether ``first``, a chunk of one call, was a cold call by the per-call time of
    ``second``."""
    if first.n_results != 1 or second.n_results < 1:
        return False
    return _probe.first_call_is_cold(first.compute_s, second.compute_s / second.n_results)


def _measurements(chunks: list[ChunkOutcome], cold_first: bool) -> WorkMeasurements:
    """Per-item figures over ``chunks``: times from the warm ones (all but a cold first),
    sizes from all of them."""
    warm = chunks[1:] if cold_first else chunks
    n_items = sum(chunk.n_results for chunk in chunks)
    per = max(1, n_items)
    per_warm = max(1, sum(chunk.n_results for chunk in warm))
    wall_s_per_item = sum(chunk.compute_s for chunk in warm) / per_warm
    counts = [chunk.voluntary_switches for chunk in warm]
    switches = None if None in counts else sum(c for c in counts if c is not None) / per_warm
    return WorkMeasurements(
        n_probed=n_items,
        wall_s_per_item=wall_s_per_item,
        cpu_s_per_item=sum(chunk.cpu_s for chunk in warm) / per_warm,
        item_bytes=sum(chunk.items_bytes for chunk in chunks) / per,
        result_bytes=sum(len(chunk.results_bytes) for chunk in chunks) / per,
        pickle_s_per_item=0.0,
        memory_bytes_per_call=0,
        measured_in_worker=True,
        first_call_extra_s=max(0.0, chunks[0].compute_s - wall_s_per_item) if cold_first else 0.0,
        voluntary_switches_per_item=switches,
    )
