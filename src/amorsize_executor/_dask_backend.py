"""Run ``map()`` chunks and submitted calls on a dask.distributed cluster, and measure what
that cluster offers.

Mechanism layer. ``DaskBackend`` satisfies the ``Backend`` protocol of ``_backend`` by
submitting each chunk as one dask task (``run_chunk``, the same function a local worker runs)
and handing back a ``concurrent.futures.Future`` bridged from the dask future, so the map
pipeline cannot tell a cluster from a local pool. ``read_facts`` reports the cluster as
``SystemFacts`` (``_dask_facts.read_cluster_facts``: worker threads, the smallest memory
headroom, and a measured task round trip and transfer rate).

What it must not do: decide anything (the cost model does), start or kill cluster workers (the
cluster belongs to its operator, and other clients may share it), or import ``distributed`` at
module level: the package must import without the ``dask`` extra.

Worker loss: dask reschedules a task whose worker died; a task that keeps killing workers
makes the scheduler give up with ``KilledWorker``. The bridged future raises that as
``BrokenProcessPool`` (the original as ``__cause__``), which the map layer already turns into
``WorkerCrashedError`` naming the items.
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any

from ._chunk_worker import ChunkPayload, ChunkResult, run_chunk
from ._dask_facts import (
    START_METHOD,
    WAIT_FOR_WORKERS_S,
    read_cluster_facts,
    wait_for_a_worker,
)
from ._records import SystemFacts

if TYPE_CHECKING:
    import distributed

logger = logging.getLogger("amorsize_executor")

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
    workers_share_files = False
    """A cluster's workers may be on other machines: a file here may not reach them, so a
    large ``fn`` travels with every chunk."""
    fastest_start_s = 0.0
    """The cluster's workers run already (its operator starts them): starting costs nothing."""

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
        wait_for_a_worker(self._client, self._wait_for_workers_s)

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
                "a dask worker died while this task was assigned to it (running or queued), "
                "and the scheduler stopped retrying it on others "
                "(distributed.scheduler.allowed-failures): "
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
