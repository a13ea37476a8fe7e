"""Process pools behind the executor: a loky pool by default, the stdlib pool when the user
asks for ``max_tasks_per_child`` (loky has no such option) or when a ``fork`` pool is nested in
a loky worker (loky refuses to fork there).

Mechanism layer. A backend starts, grows, replaces and stops one pool and submits work to
it; it sees chunks, never the cost model. It reports what the model needs to know about it:
how many workers are warm, how they are started, and (once per new pool) how long the first
worker took to answer, which the facade caches on disk as the machine's measured start cost.
Which start method to use is the facade's decision, passed in as ``choose_context``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import gc
import logging
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from concurrent.futures.process import ProcessPoolExecutor as StdlibProcessPool
from multiprocessing.context import BaseContext
from typing import Any

import loky
import psutil

from ._backend import InFlight
from ._chunk_io import to_stdlib_error
from ._chunk_worker import (
    ChunkPayload,
    ChunkResult,
    call_pickled,
    dumps_callable,
    init_worker,
    run_chunk,
    scan_native_pools_before_fork,
)
from ._close_gate import CloseGate
from ._pool_futures import RelayFuture, cancel_unheld, stop_unused_workers
from ._records import SystemFacts
from ._recycling_pool import RecyclingProcessPool
from ._start_recorder import StartRecorder, write_start_records_at_exit
from ._system_facts import fastest_start_prior_s

logger = logging.getLogger("amorsize_executor")


def _start_method_of(mp_context: BaseContext | None) -> str:
    if mp_context is None:
        return "loky"
    return str(mp_context.get_start_method())


@contextlib.contextmanager
def _heap_frozen_while_forking(start_method: str) -> Iterator[None]:
    """Keep the caller's objects out of the forked workers' garbage collections.

    loky runs a full collection in each worker after its first task (and when its memory
    grows). In a forked worker that collection would walk every object inherited from the
    caller, writing to each one's header, so the copy-on-write pages get copied: measured
    here, it held the first chunk of one worker back by 5-10 ms. Objects frozen at the
    fork (``gc.freeze``, as the gc module's documentation advises for fork without exec)
    are skipped by the workers' collections; the caller unfreezes them at once, which puts
    them in its oldest generation (objects young at that moment wait for a full
    collection, as if they had survived two younger ones). A caller that froze objects
    itself is left alone, since ``gc.unfreeze`` would undo its freeze. Workers loky forks
    again later (after an idle timeout) fork without this.
    """
    if start_method != "fork" or gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


_LIVE_BACKENDS: weakref.WeakSet[PoolBackend] = weakref.WeakSet()
"""Every pool backend of this process that has started a pool (see ``_kill_workers_on_ctrl_c``)."""

_exit_hook_lock = threading.Lock()
_exit_hook_registered = False


def _kill_workers_on_ctrl_c() -> None:
    """At interpreter exit after an uncaught ``KeyboardInterrupt``, kill every pool's workers.

    A Ctrl-C that lands in the caller's own code (the body of a ``for`` loop over ``map()``'s
    results, say) never reaches the result iterator, so the workers are not killed there.
    The interpreter then exits, and the pools' exit hooks wait for their workers to finish
    the calls they are running: with a stuck or long call, the program hangs after Ctrl-C.
    This hook runs before those (``threading._register_atexit`` hooks run last registered
    first, and it is registered after loky's) and, only when the program is ending on a
    ``KeyboardInterrupt``, kills the workers so the pools' hooks find them gone. A normal
    exit waits for running calls, as the stdlib does.
    """
    last = getattr(sys, "last_exc", None) or getattr(sys, "last_value", None)
    if not isinstance(last, KeyboardInterrupt):
        return
    for backend in list(_LIVE_BACKENDS):
        pool = backend._pool
        if pool is not None:
            backend._kill(pool)


def _exit_hooks() -> None:
    _kill_workers_on_ctrl_c()
    write_start_records_at_exit()


def _register_exit_hook_once() -> None:
    """Register ``_kill_workers_on_ctrl_c`` and ``write_start_records_at_exit``, after the
    first pool started (which registers loky's own exit hook, the one they must run before)."""
    global _exit_hook_registered
    with _exit_hook_lock:
        if _exit_hook_registered:
            return
        register = getattr(threading, "_register_atexit", None)
        if register is None:  # not CPython: nothing to run before
            return
        try:
            register(_exit_hooks)
        except RuntimeError:  # the interpreter is already shutting down
            return
        _exit_hook_registered = True


def _in_loky_worker() -> bool:
    """Whether this process is a worker of a loky pool (loky counts the nesting depth)."""
    return int(getattr(loky.process_executor, "_CURRENT_DEPTH", 0)) > 0


def _no_record(start_method: str, seconds: float) -> None:
    """Default for ``record_start_s``: measurements are not kept."""


class PoolBackend:
    """One pool, created on first use, grown by replacement when idle, rebuilt when broken.

    A pool that must grow while work is still in flight is kept as it is (a replacement
    would have to wait for that work); the plan then runs on the workers there are.
    """

    def __init__(
        self,
        *,
        max_workers: int | None,
        mp_context: BaseContext | None,
        initializer: Callable[..., object] | None,
        initargs: tuple[Any, ...],
        max_tasks_per_child: int | None,
        default_workers: Callable[[], int],
        choose_context: Callable[[], BaseContext | None] | None = None,
        record_start_s: Callable[[str, float], None] = _no_record,
        worker_thread_env: Callable[[int], dict[str, str]] | None = None,
        idle_timeout_s: float | None = None,
    ) -> None:
        self._worker_thread_env = worker_thread_env
        # loky pools only: a worker left without work this long exits (None: never).
        self._idle_timeout_s = idle_timeout_s
        self._max_workers = max_workers
        self._mp_context = mp_context
        self._choose_context = choose_context
        self._record_start_s = record_start_s
        self._pool_context: BaseContext | None = None
        self._initializer = initializer
        self._initargs = initargs
        self._max_tasks_per_child = max_tasks_per_child
        self._default_workers = default_workers
        self._pool: concurrent.futures.Executor | None = None
        self._pool_size = 0
        self._broken = False
        # Two locks: ``_lock`` guards the pool's life (create, replace, stop) and may be held
        # while waiting for a pool to stop; the in-flight count has its own, all that future
        # callbacks take, so the pool's own threads, which run those callbacks, can never
        # wait on a thread that waits on them.
        self._lock = threading.RLock()
        self._in_flight = InFlight(BrokenProcessPool)
        self._close_gate = CloseGate(
            lambda wait, cancel: self._close(wait=wait, cancel_futures=cancel)
        )
        self._closed = False
        self._first_answer: Future[Any] | None = None
        """The pool's own no-op that times the first worker's start (not the user's work)."""
        self._pool_used = False  # whether any of the caller's work went to the live pool
        # One per pool started: each writes its pool's start-cost sample.
        self._recorders: list[StartRecorder] = []

    # -- what the backend contract declares (see ``_backend.Backend``) ----------------------

    runs_in_process = False
    can_keep_open = True
    on_this_machine = True
    workers_share_files = True
    """The workers run on this machine: a large ``fn`` can reach them through a shared-memory
    file, once each (see ``_fn_transport``)."""

    def read_facts(self) -> SystemFacts | None:
        """``None``: the workers run on this machine, whose facts ``_machine`` reads."""
        return None

    @property
    def fastest_start_s(self) -> float:
        """0 with warm workers, else the smallest start-cost prior of any start method."""
        return 0.0 if self.n_warm_workers else fastest_start_prior_s()

    @property
    def n_warm_workers(self) -> int:
        return 0 if self._pool is None or self._broken else self._pool_size

    @property
    def start_method(self) -> str:
        """The start method of the live pool, or of the next one if none is alive."""
        if self._pool is not None and not self._broken:
            context = self._pool_context
        else:
            context = self._next_context()
        if self._max_tasks_per_child is not None and context is None:
            return "spawn"
        return _start_method_of(context)

    def _next_context(self) -> BaseContext | None:
        if self._mp_context is not None or self._choose_context is None:
            return self._mp_context
        return self._choose_context()

    @property
    def pool_size(self) -> int:
        return self._pool_size

    def prepare(self, n_workers: int) -> None:
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
                        "pool of %d kept although %d workers were planned: work is in flight",
                        self._pool_size,
                        n_workers,
                    )
                    return
            self._replace_pool(n_workers)

    def _replace_pool(self, n_workers: int) -> None:
        old = self._pool
        if old is not None:
            if self._broken:
                self._kill(old)
            self._stop(old, wait=True)
        started_s = time.perf_counter()
        context = self._next_context()
        if _start_method_of(context) == "fork":
            scan_native_pools_before_fork()
        with _heap_frozen_while_forking(_start_method_of(context)):
            self._pool = self._make_pool(n_workers, context)
            self._pool_context = context
            self._pool_size = n_workers
            self._broken = False
            self._pool_used = False
            method = self.start_method
            logger.debug("started a %s pool of %d worker(s)", method, n_workers)
            # The first no-op answered tells how long a worker takes to start on this
            # machine; submitting it forks the workers.
            first_answer = self._pool.submit(int)
            self._first_answer = first_answer
        _LIVE_BACKENDS.add(self)
        _register_exit_hook_once()
        recorder = StartRecorder(self._record_start_s, method, started_s)
        self._recorders.append(recorder)
        first_answer.add_done_callback(recorder.on_answer)

    def _make_pool(
        self, n_workers: int, context: BaseContext | None
    ) -> concurrent.futures.Executor:
        thread_env = {} if self._worker_thread_env is None else self._worker_thread_env(n_workers)
        initializer_bytes = (
            None if self._initializer is None else dumps_callable(self._initializer)
        )
        initargs = (thread_env, initializer_bytes, self._initargs)
        if self._max_tasks_per_child is not None:
            if sys.version_info < (3, 11):
                raise TypeError(
                    "max_tasks_per_child needs Python 3.11 or newer (the stdlib pool that "
                    "implements it gained the option in 3.11)"
                )
            return RecyclingProcessPool(
                n_workers,
                mp_context=context,
                initializer=init_worker,
                initargs=initargs,
                max_tasks_per_child=self._max_tasks_per_child,
            )
        if _start_method_of(context) == "fork" and _in_loky_worker():
            # A pool nested in a worker of a loky pool: loky refuses to fork there
            # (LokyRecursionError), the stdlib pool forks as it does in its own workers.
            # The stdlib's class as imported here: a program that put an executor (ours)
            # in ``concurrent.futures.ProcessPoolExecutor``'s place (tqdm's process_map is
            # run that way) would otherwise make this call itself.
            return StdlibProcessPool(
                n_workers, mp_context=context, initializer=init_worker, initargs=initargs
            )
        with warnings.catch_warnings():
            # loky warns that "fork" breaks POSIX rules; the user chose it explicitly.
            warnings.simplefilter("ignore", UserWarning)
            pool: concurrent.futures.Executor = loky.ProcessPoolExecutor(
                n_workers,
                context=context,
                initializer=init_worker,
                initargs=initargs,
                timeout=self._idle_timeout_s,
            )
        return pool

    def _submit_to_pool(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future[Any]:
        with self._lock:
            try:
                future = self._in_flight.submit(
                    self._current_pool,
                    self._live_pool,
                    self._mark_pool_broken,
                    fn,
                    *args,
                    **kwargs,
                )
            except Exception as exc:
                mapped = to_stdlib_error(exc)
                if mapped is exc:
                    raise
                raise mapped from None
            self._pool_used = True  # after the submit, which may have started a new pool
            return future

    def _stop(self, pool: concurrent.futures.Executor, *, wait: bool) -> None:
        """``pool.shutdown(wait=wait)``, but a loky pool none of the caller's work went to, with
        no initializer of the user's (it may be running) and no idle timeout (the shared
        pools: their workers exit on their own), has its workers killed, not joined
        (``stop_unused_workers``)."""
        unused = wait and not (self._pool_used or self._broken) and self._initializer is None
        unused = unused and self._idle_timeout_s is None
        loky_pool = isinstance(pool, loky.ProcessPoolExecutor)
        if not (unused and loky_pool and stop_unused_workers(pool)):
            pool.shutdown(wait=wait)

    def _live_pool(self) -> concurrent.futures.Executor | None:
        return self._pool

    def _mark_pool_broken(self) -> None:
        self._broken = True

    def _current_pool(self) -> concurrent.futures.Executor:
        if self._closed:
            raise RuntimeError("cannot schedule new futures after shutdown")
        if self._pool is None or self._broken:
            self.prepare(self._pool_size or self._default_workers())
        assert self._pool is not None
        return self._pool

    def submit_chunk(self, payload: ChunkPayload) -> Future[ChunkResult]:
        return self._submit_to_pool(run_chunk, payload)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        # The function travels as dumps_callable bytes, like map()'s: by reference where it
        # can, so it shares globals with the initializer in the worker.
        inner = self._submit_to_pool(call_pickled, dumps_callable(fn), args, kwargs)
        return RelayFuture(inner)

    def mark_broken(self) -> None:
        self._broken = True

    def worker_pids(self) -> list[int]:
        pool = self._pool
        processes: dict[int, Any] = dict(getattr(pool, "_processes", None) or {})
        return [p.pid for p in processes.values() if p.pid is not None]

    def _kill(self, pool: concurrent.futures.Executor) -> None:
        processes: dict[int, Any] = dict(getattr(pool, "_processes", None) or {})
        for process in processes.values():
            try:
                # Kill the worker's own children first: a worker's subprocesses must not
                # outlive it.
                for child in psutil.Process(process.pid).children(recursive=True):
                    child.kill()
                process.kill()
            except (psutil.Error, OSError, AttributeError):
                pass

    def terminate_workers(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
            self._pool_size = 0
        if pool is None:
            return
        self._kill(pool)
        # The pool notices its dead workers and fails their futures with BrokenProcessPool.
        if isinstance(pool, loky.ProcessPoolExecutor):
            pool.shutdown(wait=True, kill_workers=True)
        else:
            pool.shutdown(wait=True, cancel_futures=True)

    def keep_open(self) -> None:
        """A ``map()`` run may yet resend items its chunks handed back: until the matching
        ``allow_close()``, ``shutdown(wait=False)`` lets the pool run on instead of closing
        it, and closes it at that call."""
        self._close_gate.keep_open()

    def allow_close(self) -> None:
        self._close_gate.allow_close()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._close_gate.shutdown(wait, cancel_futures)

    def _close(self, *, wait: bool, cancel_futures: bool) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
            self._pool_size = 0
            self._closed = True
        if pool is None:
            return
        if isinstance(pool, loky.ProcessPoolExecutor):
            if cancel_futures:
                cancel_unheld(pool, not_counted=self._first_answer)
            self._stop(pool, wait=wait)
        else:
            pool.shutdown(wait=wait, cancel_futures=cancel_futures)
        # Written now, without holding up this call; see _start_recorder.RECORD_DELAY_S.
        for recorder in self._recorders:
            recorder.write_now()
