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


def probe_in_worker(
    run_chunk: Callable[[int], ChunkOutcome | None],
    *,
    may_go_on: Callable[[], bool],
    deliver: Callable[[list[object]], None],
    wall_clock: Callable[[], float] = time.perf_counter,
) -> WorkMeasurements:
    """Measure ``fn`` by running chunks through ``run_chunk(size)`` while ``may_go_on()``
    (no error, input left); each chunk's results go to ``deliver`` in order. A ``None``
    from ``run_chunk`` (nothing sent, a failure, the deadline) ends the probe."""
    n_items = compute_s = cpu_s = 0.0
    item_bytes = result_bytes = 0.0
    switches: float | None = 0.0
    size = WORKER_PROBE_FIRST_ITEMS
    probe_started_s = wall_clock()
    while may_go_on():
        result = run_chunk(size)
        if result is None:
            break
        deliver(result.results)
        n_items += result.n_results
        compute_s += result.compute_s
        cpu_s += result.cpu_s
        item_bytes += result.items_bytes
        result_bytes += len(result.results_bytes)
        if switches is not None and result.voluntary_switches is not None:
            switches += result.voluntary_switches
        else:
            switches = None
        if _probe.probe_is_done(
            n_items=int(n_items),
            elapsed_s=wall_clock() - probe_started_s,
            trusted=compute_s >= _probe.PROBE_MIN_S,
        ):
            break
        size *= 4
    per = max(1.0, n_items)
    return WorkMeasurements(
        n_probed=int(n_items),
        wall_s_per_item=compute_s / per,
        cpu_s_per_item=cpu_s / per,
        item_bytes=item_bytes / per,
        result_bytes=result_bytes / per,
        pickle_s_per_item=0.0,
        memory_bytes_per_call=0,
        measured_in_worker=True,
        voluntary_switches_per_item=None if switches is None else switches / per,
    )
