"""What moving ``fn`` itself costs, and which way a ``fn`` of a given size travels.

Policy layer: pure, numbers in, numbers out. ``_cost_model.predict_parallel_s`` adds
``fn_shipping_s`` to the parent's, the workers' and the CPU ceiling's share; ``_fn_for_workers``
asks ``fn_travels_once_per_worker`` how to ship the ``fn`` it pickled.

A small ``fn`` travels in every chunk. A large one (a ``partial`` or closure over a model, a
lookup table, a big array) is pickled once with its buffers out of band, written once to
shared memory, and loaded once by each worker, which memory-maps the buffers
(``_fn_transport``); see ``docs/cost-model.md`` for the measurements behind the choice.
"""

from __future__ import annotations

from ._records import SystemFacts, WorkMeasurements

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
