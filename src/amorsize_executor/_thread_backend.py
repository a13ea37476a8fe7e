"""Run ``map()`` chunks and submitted calls in threads of this process: the opt-in
``backend="threads"``, for calls that mostly wait (I/O, sleeps, locks).

Mechanism layer. ``ThreadBackend`` satisfies the ``Backend`` protocol of ``_backend``
with one ``concurrent.futures.ThreadPoolExecutor``: a chunk runs ``run_chunk``, the function a
worker process runs, so the map pipeline cannot tell threads from processes; a submitted call
runs as it is, nothing pickled. ``thread_facts`` describes what threads offer as
``SystemFacts``; above all, under the GIL, Python code in any number of threads uses one core
at a time, so the cost model, given one usable core, never plans CPU-bound work on more than
one thread (on one only when ``fn`` may not run in the caller) and plans waiting-bound work on
up to ``MAX_OVERSUBSCRIPTION`` of them.

What it must not do: decide anything (the cost model does), or touch the process environment
(the thread variables a process worker sets for BLAS and OpenMP would change the caller's
own). Threads cannot be killed: ``terminate_workers`` cancels what has not started, and a
call already running finishes in its thread.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures.thread import BrokenThreadPool
from dataclasses import replace
from typing import Any

from ._backend import InFlight
from ._chunk_worker import ChunkPayload, ChunkResult, run_chunk
from ._close_gate import CloseGate
from ._records import NO_TRANSFER_BYTES_PER_S, SystemFacts

logger = logging.getLogger("amorsize_executor")

START_METHOD = "threads"
"""``start_method`` of this backend and of the facts it reports."""

THREAD_START_S = 120e-6
"""Seconds from creating a one-thread ``ThreadPoolExecutor`` to the result of a first no-op
task (``submit(int).result()``): the thread's start plus one round trip. Measured 2026-11-28 on
the 2-core shared VM of the process start costs (Linux 6.18 x86_64, CPython 3.11.7) with a
/tmp script timing 200 such starts (each pool shut down before the next) in each of 5 runs:
medians 101-139 µs, p10 94 µs, p90 165 µs. Against 4 ms for the fastest process start, it
never keeps a job serial."""

THREAD_ROUNDTRIP_S = 55e-6
"""Seconds to submit a no-op to a warm one-thread ``ThreadPoolExecutor`` and get its result
(a queue put, a thread woken, a future set). Same machine and script as ``THREAD_START_S``,
2000 round trips in each of 5 runs: medians 51-67 µs, p10 37 µs, p90 85 µs. Mostly the wait
for a thread to wake, not the caller's CPU: as the caller's cost per chunk it errs towards
larger chunks, which cost threads nothing."""

IN_PROCESS_BYTES_PER_S = NO_TRANSFER_BYTES_PER_S
"""Nothing crosses a process boundary: a chunk's items and results are handed over by
reference. ``to_dict`` reports no rate for it."""

STDLIB_MAX_THREADS = 32
"""Cap of the stdlib ``ThreadPoolExecutor``'s default size, ``min(32, cpu_count + 4)``
(Python 3.8+), used for ``submit()`` before any plan sized the pool."""


def gil_enabled() -> bool:
    """Whether this interpreter runs Python code under the GIL (every build before the
    free-threaded 3.13t has it; ``sys._is_gil_enabled`` exists from 3.13)."""
    is_enabled = getattr(sys, "_is_gil_enabled", None)
    return True if is_enabled is None else bool(is_enabled())


def thread_facts(machine: SystemFacts, *, gil: bool, n_warm_workers: int) -> SystemFacts:
    """What threads of this process offer the cost model, from the machine's facts.

    - Cores: under the GIL one thread runs Python code at a time, so 1 logical, physical and
      affinity core (a waiting call releases the GIL, which is why waiting-bound work still
      gains from many threads); without the GIL, the machine's cores.
    - Memory, CPU quota and an operator's ``AMORSIZE_MAX_WORKERS``: the machine's.
    - ``worker_start_s``: ``THREAD_START_S`` (an estimate, measured once, see there);
      ``task_roundtrip_s``: ``THREAD_ROUNDTRIP_S``; ``ipc_bytes_per_s``:
      ``IN_PROCESS_BYTES_PER_S``.

    Args:
        machine: this machine's facts, as ``_system_facts.read_system_facts`` reads them.
        gil: whether Python code in threads runs under the GIL (``gil_enabled()``).
        n_warm_workers: threads the backend's pool holds now.
    """
    return replace(
        machine,
        n_logical_cores=1 if gil else machine.n_logical_cores,
        n_physical_cores=1 if gil else machine.n_physical_cores,
        n_affinity_cores=1 if gil else machine.n_affinity_cores,
        start_method=START_METHOD,
        worker_start_s=THREAD_START_S,
        worker_start_source="estimate",
        task_roundtrip_s=THREAD_ROUNDTRIP_S,
        ipc_bytes_per_s=IN_PROCESS_BYTES_PER_S,
        n_warm_workers=n_warm_workers,
    )


class ThreadBackend:
    """One ``ThreadPoolExecutor``, created on first use, grown by replacement when idle (a
    pool that must grow while work is in flight is kept, and the plan runs on the threads
    there are), never larger than ``max_workers``.

    ``fn`` runs in this process: its side effects land here, and a crash in it (a segfault,
    ``os._exit``) ends the process. Threads cannot be killed: ``terminate_workers`` cancels
    the calls that have not started, and a call already running finishes in its thread.

    Args:
        read_machine_facts: returns this machine's facts, as
            ``_system_facts.read_system_facts`` reads them (the executor passes its
            process-wide cache); ``read_facts`` turns them into facts for threads.
        max_workers: the most threads; ``None`` means no cap but the plans' (and, for
            ``submit()`` before any plan, the stdlib's default ``min(32, cpu_count + 4)``).
        initializer: called once in each thread as it starts, with ``initargs``. If it
            raises, the calls waiting for that pool raise ``BrokenThreadPool`` (the stdlib's),
            and the next call gets a new pool.
        initargs: arguments for ``initializer``.
    """

    def __init__(
        self,
        *,
        read_machine_facts: Callable[[], SystemFacts],
        max_workers: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
    ) -> None:
        self._max_workers = max_workers
        self._initializer = initializer
        self._initargs = initargs
        self._read_machine_facts = read_machine_facts
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._pool_size = 0
        self._broken = False
        self._retired: list[concurrent.futures.ThreadPoolExecutor] = []
        """Pools given up without waiting (by ``terminate_workers`` or ``shutdown(wait=False)``)
        whose calls may still run: a later ``shutdown(wait=True)`` waits for their threads."""
        # As in PoolBackend: ``_lock`` guards the pool's life and may be held while a pool
        # stops; future callbacks (run by the pool's threads) take only ``_in_flight``'s lock.
        self._lock = threading.RLock()
        self._in_flight = InFlight(BrokenThreadPool)
        """A call of a pool given up (``forget_all``) no longer counts as in flight, so a
        stuck thread cannot keep the next pool from growing."""
        self._close_gate = CloseGate(
            lambda wait, cancel: self._close(wait=wait, cancel_futures=cancel)
        )
        self._closed = False

    # -- what the cost model needs to know -------------------------------------------------

    runs_in_process = True
    """``map()`` hands chunks over as objects: nothing is pickled (see ``ChunkPayload.fn``)."""
    can_keep_open = True
    on_this_machine = True
    workers_share_files = False
    """Nothing is shipped to a thread: ``fn`` is handed over as the object itself."""
    fastest_start_s = THREAD_START_S
    """A thread's start (an estimate, as in ``read_facts``): warm or not, the bound starts
    where the real facts do."""

    @property
    def n_warm_workers(self) -> int:
        """The pool's size: its threads start on demand, in about ``THREAD_START_S``."""
        return 0 if self._pool is None or self._broken else self._pool_size

    @property
    def start_method(self) -> str:
        return START_METHOD

    @property
    def pool_size(self) -> int:
        return self._pool_size

    def read_facts(self) -> SystemFacts:
        """This machine's facts as threads see them (see ``thread_facts``)."""
        return thread_facts(
            self._read_machine_facts(), gil=gil_enabled(), n_warm_workers=self.n_warm_workers
        )

    def _default_workers(self) -> int:
        """Pool size for ``submit()`` before any plan: the stdlib's default for threads."""
        n_threads = min(STDLIB_MAX_THREADS, (os.cpu_count() or 1) + 4)
        return min(n_threads, self._max_workers or n_threads)

    # -- the pool ----------------------------------------------------------------------------

    def prepare(self, n_workers: int) -> None:
        """Make ``n_workers`` threads available (never more than ``max_workers``).

        Raises:
            RuntimeError: the backend was shut down.
        """
        if self._max_workers is not None:
            n_workers = min(n_workers, self._max_workers)
        n_workers = max(1, n_workers)
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new futures after shutdown")
            if self._pool is not None and not self._broken:
                if n_workers <= self._pool_size:
                    return
                if self._in_flight.n_calls:
                    logger.debug(
                        "thread pool of %d kept although %d threads were planned: work is "
                        "in flight",
                        self._pool_size,
                        n_workers,
                    )
                    return
            self._replace_pool(n_workers)

    def _replace_pool(self, n_workers: int) -> None:
        old = self._pool
        if old is not None:
            old.shutdown(wait=True)  # idle or broken: its threads end at once
        self._in_flight.forget_all()
        self._pool = concurrent.futures.ThreadPoolExecutor(
            n_workers,
            thread_name_prefix="amorsize-thread",
            initializer=self._initializer,
            initargs=self._initargs,
        )
        self._pool_size = n_workers
        self._broken = False
        logger.debug("started a thread pool of %d thread(s)", n_workers)

    def _current_pool(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._closed:
            raise RuntimeError("cannot schedule new futures after shutdown")
        if self._pool is None or self._broken:
            self.prepare(self._pool_size or self._default_workers())
        assert self._pool is not None
        return self._pool

    def _submit_to_pool(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
        with self._lock:
            return self._in_flight.submit(
                self._current_pool, self._live_pool, self._mark_pool_broken, fn, *args, **kwargs
            )

    def _live_pool(self) -> concurrent.futures.ThreadPoolExecutor | None:
        return self._pool

    def _mark_pool_broken(self) -> None:
        self._broken = True

    # -- submitting --------------------------------------------------------------------------

    def submit_chunk(self, payload: ChunkPayload) -> Future[ChunkResult]:
        return self._submit_to_pool(run_chunk, payload)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        """As ``ThreadPoolExecutor.submit``: ``fn`` and its arguments are not pickled, and
        an exception arrives as raised, with its own traceback."""
        return self._submit_to_pool(fn, *args, **kwargs)

    # -- failures and shutdown ---------------------------------------------------------------

    def mark_broken(self) -> None:
        """Nothing to do: a thread cannot die alone (a crash ends the whole process), and a
        failed initializer is noticed from the futures."""

    def worker_pids(self) -> list[int]:
        """Empty: threads are not processes (they all run in ``os.getpid()``)."""
        return []

    def terminate_workers(self) -> None:
        """Cancel every call that has not started; the next call gets a new pool.

        Threads cannot be killed: a call already running (even one stuck in ``fn``) runs to
        its end in its thread, and its future gets its result. Until then, its thread is
        alive beside the new pool's, and ``shutdown(wait=True)`` waits for it.
        """
        with self._lock:
            pool, self._pool = self._pool, None
            self._pool_size = 0
            self._in_flight.forget_all()
            if pool is not None:
                self._retired.append(pool)
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    def keep_open(self) -> None:
        """As ``PoolBackend.keep_open``: until the matching ``allow_close()``,
        ``shutdown(wait=False)`` lets the pool run on (a ``map()`` run may yet resend items
        its chunks handed back), and closes it at that call."""
        self._close_gate.keep_open()

    def allow_close(self) -> None:
        self._close_gate.allow_close()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """As ``ThreadPoolExecutor.shutdown``; ``wait=True`` also waits for the threads of
        calls ``terminate_workers`` could not stop and of an earlier ``shutdown(wait=False)``."""
        self._close_gate.shutdown(wait, cancel_futures)

    def _close(self, *, wait: bool, cancel_futures: bool) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
            self._pool_size = 0
            self._closed = True
            retired: list[concurrent.futures.ThreadPoolExecutor] = []
            if wait:
                retired, self._retired = self._retired, []
            elif pool is not None:
                self._retired.append(pool)  # a later shutdown(wait=True) waits for it
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=cancel_futures)
        for old in retired:
            old.shutdown(wait=True)
