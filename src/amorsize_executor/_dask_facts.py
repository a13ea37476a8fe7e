"""What a dask.distributed cluster offers, as ``SystemFacts``: worker threads, the smallest
memory headroom, and a task round trip and transfer rate measured once per client.

Mechanism layer: reads and measures, decides nothing. ``distributed`` is never imported at
module level (the package must import without the ``dask`` extra); a client is passed in.
"""

from __future__ import annotations

import asyncio
import logging
import os
import statistics
import threading
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._records import SystemFacts

if TYPE_CHECKING:
    import distributed

logger = logging.getLogger("amorsize_executor")

START_METHOD = "dask"
"""``start_method`` of the dask backend and of the facts it reports."""

WAIT_FOR_WORKERS_S = 30.0
"""How long ``prepare`` and ``read_cluster_facts`` wait for a first worker to join an empty
cluster before saying so: a worker started together with the scheduler joins within a few
seconds, so half a minute means none is coming, and a typo in an address fails fast enough."""

ROUNDTRIP_SAMPLES = 5
"""No-op tasks timed for ``task_roundtrip_s`` (after one untimed warm-up, which opens the
connections). The median is kept: one GC pause or a busy scheduler must not set the figure."""

TRANSFER_PAYLOAD_BYTES = 1 << 20
"""Bytes sent to a worker and back to measure ``ipc_bytes_per_s``: large enough that the
transfer outweighs the fixed round trip on a LAN, small enough (under dask's large-graph
warning) to cost a few milliseconds. Random bytes, so compression cannot flatter the rate."""

TRANSFER_SAMPLES = 3
"""Transfers timed for ``ipc_bytes_per_s``; the median is kept."""


def wait_for_a_worker(client: Any, timeout_s: float) -> None:
    """Return once the cluster has a worker thread; raise a clear error if none joins."""
    nthreads: dict[str, int] = client.nthreads()
    if sum(nthreads.values()) > 0:
        return
    try:
        client.wait_for_workers(1, timeout=timeout_s)
    except (TimeoutError, asyncio.TimeoutError) as exc:  # distinct types before Python 3.11
        address = getattr(client.scheduler, "address", None) or "the scheduler"
        raise RuntimeError(
            f"the dask cluster at {address} has no worker: none joined within {timeout_s:g} s. "
            f"Start one with 'dask worker {address}' (or scale the cluster up) and retry."
        ) from exc


@dataclass(frozen=True)
class _Transport:
    """What one client's tasks cost to send, measured once."""

    task_roundtrip_s: float
    ipc_bytes_per_s: float


_MEASURED: weakref.WeakKeyDictionary[Any, _Transport] = weakref.WeakKeyDictionary()
_MEASURED_LOCK = threading.Lock()


def read_cluster_facts(
    client: distributed.Client, *, wait_for_workers_s: float = WAIT_FOR_WORKERS_S
) -> SystemFacts:
    """What a dask cluster offers the executor, as ``SystemFacts``.

    Threads and memory are read from the scheduler on every call (workers come and go);
    the task round trip and the transfer rate are measured on the first call for this
    client and cached for the client's lifetime.

    - ``n_logical_cores`` and ``n_warm_workers``: worker threads, summed over workers.
      Physical cores, affinity and CPU quota are unknown (``None``): each worker's thread
      count already says what its operator allows.
    - ``available_memory_bytes``: the smallest headroom of any worker, its memory limit
      minus its current use (the free memory of its host when it has no limit).
    - ``worker_start_s``: 0, the workers are running (``worker_start_source`` "cluster").
    - ``task_roundtrip_s``: median seconds to submit a no-op task and get its result.
    - ``ipc_bytes_per_s``: bytes moved per second sending ~1 MB to a worker and back,
      fixed round trip removed (median of ``TRANSFER_SAMPLES``).

    Raises:
        RuntimeError: the cluster has no worker and none joined within
            ``wait_for_workers_s``.
    """
    wait_for_a_worker(client, wait_for_workers_s)
    workers = _scheduler_workers(client)
    n_threads = sum(int(w.get("nthreads", 0)) for w in workers.values())
    transport = _measured_transport(client)
    return SystemFacts(
        n_logical_cores=n_threads,
        n_physical_cores=None,
        n_affinity_cores=None,
        cpu_quota_cores=None,
        available_memory_bytes=_smallest_headroom_bytes(client, workers),
        start_method=START_METHOD,
        worker_start_s=0.0,
        worker_start_source="cluster",
        task_roundtrip_s=transport.task_roundtrip_s,
        ipc_bytes_per_s=transport.ipc_bytes_per_s,
        n_warm_workers=n_threads,
    )


def _scheduler_workers(client: Any) -> dict[str, dict[str, Any]]:
    try:
        info = client.scheduler_info(n_workers=-1)
    except TypeError:  # distributed before 2025: no n_workers, and every worker is listed
        info = client.scheduler_info()
    workers: dict[str, dict[str, Any]] = dict(info.get("workers", {}))
    return workers


def _smallest_headroom_bytes(client: Any, workers: dict[str, dict[str, Any]]) -> int:
    """The least memory any worker may still fill: its limit minus its resident memory.

    A worker without a limit (``memory_limit`` 0) may fill its host: its host's free memory
    is asked for, from that worker.
    """
    headrooms: list[int] = []
    unlimited: list[str] = []
    for address, worker in workers.items():
        limit = int(worker.get("memory_limit") or 0)
        used = int((worker.get("metrics") or {}).get("memory") or 0)
        if limit > 0:
            headrooms.append(max(0, limit - used))
        else:
            unlimited.append(address)
    if unlimited:
        free: dict[str, int] = client.run(_host_available_memory_bytes, workers=unlimited)
        headrooms.extend(int(v) for v in free.values())
    return min(headrooms, default=0)


def _host_available_memory_bytes() -> int:
    """Runs on a worker: its host's available memory."""
    import psutil

    return int(psutil.virtual_memory().available)


def _measured_transport(client: Any) -> _Transport:
    with _MEASURED_LOCK:
        cached = _MEASURED.get(client)
        if cached is None:
            cached = _MEASURED[client] = measure_transport(client)
    return cached


def measure_transport(client: Any) -> _Transport:
    """Time no-op tasks and ~1 MB transfers through ``client``.

    The rate counts both directions (the payload goes out as an argument and comes back as
    the result), as the cost model counts item and result bytes together.
    """
    perf = time.perf_counter
    client.submit(int, pure=False).result()  # warm-up: connections, function caches

    roundtrips: list[float] = []
    for _ in range(ROUNDTRIP_SAMPLES):
        start_s = perf()
        client.submit(int, pure=False).result()
        roundtrips.append(perf() - start_s)
    roundtrip_s = statistics.median(roundtrips)

    payload = os.urandom(TRANSFER_PAYLOAD_BYTES)
    rates: list[float] = []
    for _ in range(TRANSFER_SAMPLES):
        start_s = perf()
        echoed = client.submit(bytes, payload, pure=False).result()
        elapsed_s = perf() - start_s
        if len(echoed) != len(payload):
            raise RuntimeError(
                f"the dask cluster returned {len(echoed)} bytes for a {len(payload)}-byte echo"
            )
        # The fixed round trip is not transfer; but noise must not make the rest vanish.
        transfer_s = max(elapsed_s - roundtrip_s, elapsed_s / 10)
        rates.append(2 * len(payload) / transfer_s)
    transport = _Transport(roundtrip_s, statistics.median(rates))
    logger.debug(
        "dask cluster measured: %.2f ms per task round trip, %.0f MB/s transfer",
        transport.task_roundtrip_s * 1e3,
        transport.ipc_bytes_per_s / 1e6,
    )
    return transport
