"""The backend contract: what a ``map()`` run and the executor need from a pool of workers.

Mechanism layer. Every backend (``PoolBackend``, ``SharedPoolHandle``, ``ThreadBackend``,
``DaskBackend``, the fake in ``tests/fakes.py``, a user's own object passed as ``backend=``)
implements all of ``Backend``. What differs between them is declared, not discovered:

=======================  ===============================================================
``runs_in_process``      chunks run in this process (threads): handed over as objects,
                         never pickled
``can_keep_open``        ``keep_open()``/``allow_close()`` hold a ``shutdown(wait=False)``
                         back until the run has resent the items a budgeted chunk handed
                         back; only then do chunks get a time budget
``on_this_machine``      the workers share this machine's cores, so a favourable bound
                         read from this machine may rule a pool out early
``workers_share_files``  the workers can open a file this process writes (shared
                         memory): a large ``fn`` then travels once per worker
                         (``_fn_transport``), else with every chunk
``fastest_start_s``      the least starting a worker can cost here: that bound's start
``read_facts()``         the facts of where the workers run when the backend knows them
                         itself (a cluster, threads); ``None``: this machine's facts with
                         the backend's start method (``_machine.facts_for``)
=======================  ===============================================================

``InFlight`` is the bookkeeping the executor-backed backends share: the calls in flight and
the resubmit when a pool is found broken.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, Protocol

from ._chunk_worker import ChunkPayload, ChunkResult
from ._records import SystemFacts


class Backend(Protocol):
    """What the executor and its ``map()`` runs need from a pool of workers."""

    @property
    def runs_in_process(self) -> bool:
        """Chunks run in this process: ``ChunkPayload.fn``/``items`` are used, not bytes."""
        ...

    @property
    def can_keep_open(self) -> bool:
        """``keep_open()`` really defers a ``shutdown(wait=False)`` (chunk budgets need it)."""
        ...

    @property
    def on_this_machine(self) -> bool:
        """The workers run on this machine's cores (not on a cluster)."""
        ...

    @property
    def workers_share_files(self) -> bool:
        """The workers can open files this process writes in shared memory (processes on
        this machine): a large ``fn`` can reach each of them once (``_fn_transport``)."""
        ...

    @property
    def fastest_start_s(self) -> float:
        """The least starting one worker can cost on this backend (0 with warm workers):
        the start of the most favourable facts, which rule a pool out without reading the
        real ones, so it must never exceed the real start cost."""
        ...

    @property
    def n_warm_workers(self) -> int:
        """Workers alive now: starting that many costs nothing."""
        ...

    @property
    def start_method(self) -> str: ...

    def read_facts(self) -> SystemFacts | None:
        """The facts of where the workers run, when this backend knows them itself;
        ``None`` when they are this machine's (read once, in ``_machine``)."""
        ...

    def prepare(self, n_workers: int) -> None:
        """Make at least ``n_workers`` workers available (never more than the user's cap)."""
        ...

    def submit_chunk(self, payload: ChunkPayload) -> Future[ChunkResult]: ...

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]: ...

    def mark_broken(self) -> None:
        """A worker died: the next ``prepare`` replaces the pool."""
        ...

    def terminate_workers(self) -> None:
        """Kill every worker now (stuck or interrupted work); the pool is replaced on next use."""
        ...

    def worker_pids(self) -> list[int]: ...

    def keep_open(self) -> None:
        """Until the matching ``allow_close()``, ``shutdown(wait=False)`` lets the pool run
        on (a no-op where ``can_keep_open`` is false)."""
        ...

    def allow_close(self) -> None:
        """Release one ``keep_open()``; the last one runs a deferred shutdown."""
        ...

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None: ...


class InFlight:
    """The calls in flight on an executor-backed backend (the process and thread pools),
    and the resubmit when a pool is found broken: kept once for every such backend.

    A pool grows by replacement only while nothing is in flight (``n_calls``); a call that
    fails with the pool's ``broken`` exception (a worker died, an initializer raised) marks
    the backend broken, so the next call gets a new pool. Future callbacks, which the pool's
    own threads run, take only this object's lock: never one a thread waiting on them holds.

    Args:
        broken: the exception type of a broken pool (``BrokenProcessPool``,
            ``BrokenThreadPool``).
    """

    def __init__(self, broken: type[BaseException]) -> None:
        self._broken = broken
        self._lock = threading.Lock()
        self._n_calls = 0
        self._generation = 0

    @property
    def n_calls(self) -> int:
        """Calls submitted whose futures are not done yet."""
        return self._n_calls

    def idle(self) -> bool:
        with self._lock:
            return self._n_calls == 0

    def forget_all(self) -> None:
        """The pool was given up with calls still running (threads cannot be killed): they
        no longer count, so a stuck one cannot keep the next pool from growing."""
        with self._lock:
            self._generation += 1
            self._n_calls = 0

    def submit(
        self,
        current_pool: Callable[[], Executor],
        live_pool: Callable[[], Executor | None],
        mark_broken: Callable[[], None],
        fn: Callable[..., Any],
        /,
        *args: Any,
        **kwargs: Any,
    ) -> Future[Any]:
        """Submit ``fn(*args, **kwargs)`` to ``current_pool()`` (which replaces a broken
        pool). A pool that raises ``broken`` on submit broke since the last call (a crash
        it noticed first): ``mark_broken()``, and the call goes to its replacement, once.
        ``live_pool()`` is the backend's pool now, without replacing it."""
        try:
            future = current_pool().submit(fn, *args, **kwargs)
        except self._broken:
            mark_broken()
            future = current_pool().submit(fn, *args, **kwargs)
        self._track(future, live_pool, mark_broken)
        return future

    def _track(
        self,
        future: Future[Any],
        live_pool: Callable[[], Executor | None],
        mark_broken: Callable[[], None],
    ) -> None:
        pool = live_pool()
        with self._lock:
            self._n_calls += 1
            generation = self._generation

        def done(finished: Future[Any]) -> None:
            with self._lock:
                if generation == self._generation:
                    self._n_calls -= 1
            if (
                live_pool() is pool
                and not finished.cancelled()
                and isinstance(finished.exception(), self._broken)
            ):
                # A worker of the current pool died (in map() or in a submit()ted call), or
                # its initializer raised: the next call gets a new pool.
                mark_broken()

        future.add_done_callback(done)
