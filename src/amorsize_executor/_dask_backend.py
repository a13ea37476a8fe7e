"""Run ``map()`` chunks and submitted calls on a dask.distributed cluster, and measure what
that cluster offers.

Mechanism layer. ``DaskBackend`` satisfies the ``Backend`` protocol of ``_backend`` by
submitting each chunk as one dask task (``run_chunk``, the same function a local worker runs)
and handing back a ``concurrent.futures.Future`` bridged from the dask future, so the map
pipeline cannot tell a cluster from a local pool. ``read_cluster_facts`` reports the cluster as
``SystemFacts``: worker threads, the smallest memory headroom, and a measured task round trip
and transfer rate.

What it must not do: decide anything (the cost model does), start or kill cluster workers (the
cluster belongs to its operator, and other clients may share it), or import ``distributed`` at
module level: the package must import without the ``dask`` extra.

Worker loss: dask reschedules a task whose worker died; a task that keeps killing workers
makes the scheduler give up with ``KilledWorker``. The bridged future raises that as
``BrokenProcessPool`` (the original as ``__cause__``), which the map layer already turns into
``WorkerCrashedError`` naming the items.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import os
import statistics
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._chunk_worker import ChunkPayload, ChunkResult, run_chunk
from ._records import SystemFacts

if TYPE_CHECKING:
    import distributed

logger = logging.getLogger("amorsize_executor")

START_METHOD = "dask"
"""``start_method`` of this backend and of the facts it reports."""

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

FACTS_MAX_AGE_S = 1.0
"""``DaskBackend.read_facts`` re-reads threads and memory from the scheduler when its last
reading is older than this. Each reading costs two or three scheduler round trips
(milliseconds), and the executor asks for facts at every plan: a burst of small ``map()``
calls must not pay that each time, while a worker joining or leaving shows within a second."""


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise ImportError(
            "the dask backend needs the 'distributed' package: "
            "pip install 'amorsize-executor[dask]'"
        ) from exc
    return distributed


class _Bridge:
    """One submitted call: the ``concurrent.futures`` future we hand out and the dask future
    behind it. ``settled`` becomes True once the future left PENDING by our hand (claimed to
    set its outcome, or its cancellation acknowledged); only code holding the backend's lock
    changes it, so ``set_running_or_notify_cancel`` is called exactly once."""

    __slots__ = ("dask_future", "future", "settled")

    def __init__(self, future: Future[Any]) -> None:
        self.future = future
        self.dask_future: Any = None
        self.settled = False


class DaskBackend:
    """Runs work on a dask.distributed cluster (a ``Backend`` for the executor).

    The cluster is sized by its operator: ``prepare`` starts nothing, and every worker
    thread the scheduler reports counts as a warm worker. A task whose worker dies is
    retried by dask on another worker (so items of that chunk may run twice); one that
    keeps killing workers raises ``BrokenProcessPool`` from its future.

    Args:
        client: a ``distributed.Client`` (used, never closed by this backend) or a
            scheduler address such as ``"tcp://10.0.0.5:8786"`` (a client is created,
            owned, and closed on ``shutdown``).
        wait_for_workers_s: how long ``prepare`` waits for a first worker to join an empty
            cluster before raising.

    Raises:
        ImportError: ``distributed`` is not installed.
        TypeError: ``client`` is neither a ``Client`` nor a string.
        ValueError: ``client`` is an asynchronous client.
        OSError: the scheduler at the address cannot be reached (from ``distributed``).
    """

    def __init__(
        self,
        client: distributed.Client | str,
        *,
        wait_for_workers_s: float = WAIT_FOR_WORKERS_S,
    ) -> None:
        dd = _import_distributed()
        if isinstance(client, str):
            # Not the default client: dask.compute() in the user's code keeps the client the
            # user chose, if any.
            self._client: Any = dd.Client(client, set_as_default=False)
            self._owns_client = True
        elif isinstance(client, dd.Client):
            if client.asynchronous:
                raise ValueError(
                    "DaskBackend needs a synchronous distributed.Client; create it without "
                    "asynchronous=True"
                )
            self._client = client
            self._owns_client = False
        else:
            raise TypeError(
                "client must be a distributed.Client or a scheduler address such as "
                f"'tcp://10.0.0.5:8786', got {type(client).__qualname__}"
            )
        self._killed_worker: type[BaseException] = dd.KilledWorker
        self._wait_for_workers_s = wait_for_workers_s
        self._lock = threading.Lock()
        self._outstanding: set[_Bridge] = set()
        self._shutdown = False
        self._client_closed = False
        self._facts: tuple[float, SystemFacts] | None = None

    @property
    def client(self) -> distributed.Client:
        """The client this backend submits through."""
        client: distributed.Client = self._client
        return client

    # -- what the cost model needs to know -------------------------------------------------

    @property
    def n_warm_workers(self) -> int:
        """Worker threads the scheduler reports: they are running, so using them costs
        nothing to start."""
        nthreads: dict[str, int] = self._client.nthreads()
        return sum(nthreads.values())

    @property
    def start_method(self) -> str:
        return START_METHOD

    runs_in_process = False
    can_keep_open = False
    """A cluster's workers outlive this client: there is no close to hold back, so chunks get
    no time budget (``keep_open``/``allow_close`` do nothing)."""
    on_this_machine = False

    def keep_open(self) -> None:
        """Nothing to hold open (see ``can_keep_open``)."""

    def allow_close(self) -> None:
        """Nothing to release (see ``can_keep_open``)."""

    def read_facts(self) -> SystemFacts:
        """The cluster's facts (see ``read_cluster_facts``), re-read at most every
        ``FACTS_MAX_AGE_S``; the round trip and transfer rate are measured once for this
        backend's client."""
        now_s = time.monotonic()
        cached = self._facts
        if cached is not None and now_s - cached[0] < FACTS_MAX_AGE_S:
            return cached[1]
        facts = read_cluster_facts(self._client, wait_for_workers_s=self._wait_for_workers_s)
        self._facts = (now_s, facts)
        return facts

    def prepare(self, n_workers: int) -> None:
        """Start nothing (the operator sizes the cluster); wait for a first worker if the
        cluster has none yet.

        Raises:
            RuntimeError: the backend was shut down, or no worker joined within
                ``wait_for_workers_s``.
        """
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        _wait_for_a_worker(self._client, self._wait_for_workers_s)

    # -- submitting --------------------------------------------------------------------------

    def submit_chunk(self, payload: ChunkPayload) -> Future[ChunkResult]:
        return self._submit(run_chunk, (payload,))

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """As ``Executor.submit``. Arguments that are dask futures or collections are
        resolved by dask before the call, as with ``Client.submit``."""
        if kwargs:
            # Client.submit has keywords of its own (key, workers, retries, ...): bind fn's
            # keywords first so none of them can be taken for dask's.
            fn = functools.partial(fn, **kwargs)
        return self._submit(fn, args)

    def _submit(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> Future[Any]:
        future: Future[Any] = Future()
        bridge = _Bridge(future)
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot schedule new futures after shutdown")
            # pure=False: equal chunks must still run each time, never share a cached key.
            dask_future = self._client.submit(fn, *args, pure=False)
            bridge.dask_future = dask_future
            self._outstanding.add(bridge)
        future.add_done_callback(functools.partial(self._on_future_done, bridge))
        dask_future.add_done_callback(functools.partial(self._on_dask_done, bridge))
        return future

    def _settle(self, bridge: _Bridge) -> bool:
        """Move the bridged future out of PENDING; True if we may now set its outcome,
        False if it was cancelled (the cancellation is then acknowledged, as executors do,
        so ``concurrent.futures.wait`` sees it). Call with ``self._lock`` held."""
        if bridge.settled:
            return False
        bridge.settled = True
        return bridge.future.set_running_or_notify_cancel()

    def _on_future_done(self, bridge: _Bridge, future: Future[Any]) -> None:
        """The bridged future finished: if by cancellation, cancel the dask task too."""
        if not future.cancelled():
            return
        with self._lock:
            self._settle(bridge)
            dask_future, bridge.dask_future = bridge.dask_future, None
            self._outstanding.discard(bridge)
        if dask_future is not None:
            self._cancel_quietly([dask_future])

    def _on_dask_done(self, bridge: _Bridge, dask_future: Any) -> None:
        """Runs in dask's callback thread when the task finished, failed or was cancelled:
        fetch the outcome into the bridged future. Must not raise (dask would only log it)."""
        with self._lock:
            claimed = self._settle(bridge)
            bridge.dask_future = None
            self._outstanding.discard(bridge)
        if not claimed:
            return  # cancelled by the caller, or failed by terminate_workers()
        try:
            value = dask_future.result()
        except BaseException as exc:
            bridge.future.set_exception(self._translate(exc))
        else:
            bridge.future.set_result(value)

    def _translate(self, exc: BaseException) -> BaseException:
        """Dask's ways of losing a task, as the exception a process pool would raise."""
        if isinstance(exc, self._killed_worker):
            error = BrokenProcessPool(
                "a dask worker died while running this task, and the scheduler stopped "
                "retrying it on others (distributed.scheduler.allowed-failures): "
                f"{exc}"
            )
        elif isinstance(exc, CancelledError):
            error = BrokenProcessPool(
                f"the dask cluster cancelled this task ({exc}): the client may have lost "
                "its scheduler, or the cluster was restarted"
            )
        else:
            return exc
        error.__cause__ = exc
        return error

    def _cancel_quietly(self, dask_futures: list[Any]) -> None:
        try:
            self._client.cancel(dask_futures)
        except Exception as exc:  # a closed client: the tasks are gone with it
            logger.debug("could not cancel %d dask task(s): %s", len(dask_futures), exc)

    # -- failures and shutdown ---------------------------------------------------------------

    def mark_broken(self) -> None:
        """Nothing to replace: dask restarts or reschedules around a dead worker itself."""

    def worker_pids(self) -> list[int]:
        """Empty: cluster workers are not this process's children (and may be on other
        machines)."""
        return []

    def terminate_workers(self) -> None:
        """Cancel this backend's outstanding tasks; their futures raise ``BrokenProcessPool``.

        Cluster workers are not killed: they may serve other clients. A call already
        running in a worker thread runs to its end there (dask cannot interrupt a thread);
        only its result is discarded.
        """
        with self._lock:
            bridges = list(self._outstanding)
            self._outstanding.clear()
            claimed = [b for b in bridges if self._settle(b)]
            dask_futures = [b.dask_future for b in bridges if b.dask_future is not None]
            for bridge in bridges:
                bridge.dask_future = None
        for bridge in claimed:
            bridge.future.set_exception(
                BrokenProcessPool(
                    "terminate_workers() cancelled this task on the dask cluster; a call "
                    "already running there finishes on its worker, its result discarded"
                )
            )
        if dask_futures:
            self._cancel_quietly(dask_futures)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """As ``Executor.shutdown``. ``cancel_futures`` cancels every task whose result has
        not arrived yet, including one running on a worker (its result is discarded).
        A client this backend created is closed once outstanding work is done; a client
        that was passed in is left open."""
        with self._lock:
            self._shutdown = True
            futures = [b.future for b in self._outstanding]
        if cancel_futures:
            for future in futures:
                future.cancel()
        if not self._owns_client:
            if wait:
                concurrent.futures.wait(futures)
            return
        pending = [f for f in futures if not f.done()]
        if wait or not pending:
            concurrent.futures.wait(pending)
            self._close_client()
            return

        # Not waiting, but the results still need the client: close it when they are in.
        def close_when_done() -> None:
            concurrent.futures.wait(pending)
            self._close_client()

        threading.Thread(
            target=close_when_done, name="amorsize-dask-shutdown", daemon=False
        ).start()

    def _close_client(self) -> None:
        with self._lock:
            if self._client_closed:
                return
            self._client_closed = True
        self._client.close()


def _wait_for_a_worker(client: Any, timeout_s: float) -> None:
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


# -- cluster facts ---------------------------------------------------------------------------


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
    _wait_for_a_worker(client, wait_for_workers_s)
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
