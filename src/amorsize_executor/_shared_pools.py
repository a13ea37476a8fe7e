"""Warm pools shared by the executors of one process (the ``keep_warm`` option).

Mechanism layer. A process-wide registry holds one ``SharedPoolBackend`` (a ``PoolBackend``
whose loky workers exit by themselves after an idle timeout) per kind of pool: executors
that would start interchangeable workers share one. Each executor holds a ``SharedPoolHandle``:
its own view of the shared pool, which tracks the executor's own futures so that its
``shutdown()`` waits for or cancels only those, and detaches without stopping the workers.

The registry is stopped at interpreter exit, is never reused in a forked child (the pools
belong to the parent), and forgets pools whose workers have all exited and that no executor
has open. What it must not do: decide anything about plans (it reports how many workers are
alive, the cost model decides), or stop workers because one executor shut down.
"""

from __future__ import annotations

import atexit
import multiprocessing.connection
import os
import threading
import weakref
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from multiprocessing.context import BaseContext
from typing import Any

from ._chunk_worker import ChunkPayload, ChunkResult
from ._close_gate import CloseGate
from ._pool_backend import PoolBackend
from ._records import SystemFacts


class _Same:
    """A key part that matches only the very same object (an initializer, an unhashable
    initarg), holding it so that its id cannot be reused while the key exists."""

    __slots__ = ("obj",)

    def __init__(self, obj: object) -> None:
        self.obj = obj

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Same) and other.obj is self.obj

    def __hash__(self) -> int:
        return id(self.obj)


def _initargs_key(initargs: tuple[Any, ...]) -> tuple[Hashable, ...]:
    """Initargs compared by value where they can be hashed, else by identity (an array
    passed again as the same object matches; an equal copy does not)."""
    parts: list[Hashable] = []
    for arg in initargs:
        try:
            hash(arg)
        except TypeError:
            parts.append(_Same(arg))
        else:
            parts.append((type(arg), arg))
    return tuple(parts)


@dataclass(frozen=True, eq=False)
class PoolRecipe:
    """What an executor asks of a shared pool. Executors whose ``key`` is equal get the same
    pool. The callables are that executor's; the pool calls those of any executor still
    holding it, which answer alike since their keys are equal."""

    idle_timeout_s: float
    max_workers: int | None
    mp_context: BaseContext | None
    initializer: Callable[..., object] | None
    initargs: tuple[Any, ...]
    thread_env_key: Hashable
    """Whatever decides the workers' thread variables (the facade's business)."""
    default_workers: Callable[[], int]
    worker_thread_env: Callable[[int], dict[str, str]]
    choose_context: Callable[[], BaseContext | None] | None
    record_start_s: Callable[[str, float], None]

    @property
    def key(self) -> Hashable:
        context = self.mp_context
        return (
            self.idle_timeout_s,
            self.max_workers,
            None if context is None else (type(context), context.get_start_method()),
            _Same(self.initializer),
            _initargs_key(self.initargs),
            self.thread_env_key,
        )


class SharedPoolBackend(PoolBackend):
    """A ``PoolBackend`` shared by executors: its loky workers exit after ``idle_timeout_s``
    without work, it counts only live workers as warm, and a pool whose workers have all
    exited is replaced on next use (a fresh start method choice and start measurement)."""

    def __init__(self, recipe: PoolRecipe) -> None:
        super().__init__(
            max_workers=recipe.max_workers,
            mp_context=recipe.mp_context,
            initializer=recipe.initializer,
            initargs=recipe.initargs,
            max_tasks_per_child=None,
            default_workers=self._attached_default_workers,
            choose_context=recipe.choose_context,
            record_start_s=recipe.record_start_s,
            worker_thread_env=self._attached_thread_env,
            idle_timeout_s=recipe.idle_timeout_s,
        )
        # Held weakly: the shared pool must keep no executor alive. Every call into this
        # backend comes through a live handle, so one is always there to answer.
        self._handles: weakref.WeakSet[SharedPoolHandle] = weakref.WeakSet()

    def _a_handle(self) -> SharedPoolHandle:
        return next(iter(self._handles))

    def _attached_default_workers(self) -> int:
        return self._a_handle().recipe.default_workers()

    def _attached_thread_env(self, n_workers: int) -> dict[str, str]:
        return self._a_handle().recipe.worker_thread_env(n_workers)

    @property
    def n_warm_workers(self) -> int:
        pool = self._pool
        if pool is None or self._broken:
            return 0
        return _n_alive(pool)

    @property
    def stopped(self) -> bool:
        return self._closed

    def add_handle(self, handle: SharedPoolHandle) -> None:
        self._handles.add(handle)

    def prepare(self, n_workers: int) -> None:
        with self._lock:
            self._retire_if_all_exited()
            super().prepare(n_workers)

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        with self._lock:
            self._retire_if_all_exited()
        return super().submit(fn, *args, **kwargs)

    def _retire_if_all_exited(self) -> None:
        """When every worker has exited after the idle timeout, stop the empty pool (its
        threads): the next one gets a fresh start method choice and start measurement,
        where loky would restart workers with the old pool's method. Its size is kept, so
        ``submit()`` starts as many workers as there were."""
        pool = self._pool
        if pool is None or self._broken or not self._is_idle() or _n_alive(pool):
            return
        self._pool = None
        pool.shutdown(wait=True)

    def _is_idle(self) -> bool:
        return self._in_flight.idle()

    def is_cold(self) -> bool:
        """No executor holds it open, nothing runs on it and no worker is alive: it may go."""
        with self._lock:
            if any(not handle.closed for handle in self._handles):
                return False
            return self._pool is None or (self._is_idle() and self.n_warm_workers == 0)

    def stop(self) -> None:
        """Stop the workers: work not yet started is cancelled, running work finishes."""
        self._close(wait=True, cancel_futures=True)


def _n_alive(pool: object) -> int:
    """Workers of a loky pool whose process has not exited, read without reaping them
    (loky's own thread joins them)."""
    processes: dict[int, Any] = dict(getattr(pool, "_processes", None) or {})
    sentinels = []
    for process in processes.values():
        try:
            sentinels.append(process.sentinel)
        except (ValueError, AttributeError):  # closed: it has exited
            continue
    if not sentinels:
        return 0
    try:
        n_exited = len(multiprocessing.connection.wait(sentinels, timeout=0))
    except OSError:  # a sentinel closed meanwhile: count processes loky still lists
        return len(processes)
    return len(sentinels) - n_exited


class SharedPoolHandle:
    """One executor's attachment to a shared pool: the executor's backend.

    It forwards work to the shared pool and remembers the futures it sent, so that
    ``shutdown`` waits for (or, with ``cancel_futures``, cancels) this executor's work only,
    and then detaches: the workers stay for the next executor until their idle timeout.
    ``keep_open``/``allow_close`` defer a ``shutdown(wait=False)`` as ``PoolBackend`` does.
    """

    def __init__(self, recipe: PoolRecipe, backend: SharedPoolBackend) -> None:
        self.recipe = recipe
        self._backend = backend
        # ``_submit_lock`` orders submissions against detaching, so that ``shutdown`` sees
        # every future sent before it; ``_lock`` guards the state below and is all that
        # future callbacks take (the pool's threads run them: they must never wait on a
        # submission, which may be waiting for an old pool's thread to stop).
        self._submit_lock = threading.RLock()
        self._lock = threading.Lock()
        self._futures: set[Future[Any]] = set()
        self._close_gate = CloseGate(
            lambda wait, cancel: self._detach(wait=wait, cancel_futures=cancel)
        )
        self.closed = False
        backend.add_handle(self)

    def _shared(self) -> SharedPoolBackend:
        if self.closed:
            raise RuntimeError("cannot schedule new futures after shutdown")
        backend = self._backend
        if backend.stopped:  # shutdown_shared_pools() ran: attach to a fresh shared pool
            backend = self._backend = _backend_for(self.recipe)
            backend.add_handle(self)
        return backend

    # -- what the backend contract declares (see ``_backend.Backend``) ----------------------

    runs_in_process = False
    can_keep_open = True
    on_this_machine = True
    workers_share_files = True
    """The shared workers are this machine's processes, as a ``PoolBackend``'s."""

    def read_facts(self) -> SystemFacts | None:
        """``None``: the shared workers run on this machine, whose facts ``_machine`` reads."""
        return None

    @property
    def fastest_start_s(self) -> float:
        return self._backend.fastest_start_s

    @property
    def n_warm_workers(self) -> int:
        return self._backend.n_warm_workers

    @property
    def start_method(self) -> str:
        return self._backend.start_method

    @property
    def pool_size(self) -> int:
        return self._backend.pool_size

    def prepare(self, n_workers: int) -> None:
        self._shared().prepare(n_workers)

    def _own(self, future: Future[Any]) -> Future[Any]:
        with self._lock:
            self._futures.add(future)
        future.add_done_callback(self._forget)
        return future

    def _forget(self, future: Future[Any]) -> None:
        with self._lock:
            self._futures.discard(future)

    def submit_chunk(self, payload: ChunkPayload) -> Future[ChunkResult]:
        with self._submit_lock:
            return self._own(self._shared().submit_chunk(payload))

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        with self._submit_lock:
            return self._own(self._shared().submit(fn, *args, **kwargs))

    def mark_broken(self) -> None:
        self._backend.mark_broken()

    def terminate_workers(self) -> None:
        """Kill the shared workers: other executors' work on them fails too."""
        self._backend.terminate_workers()

    def worker_pids(self) -> list[int]:
        return self._backend.worker_pids()

    def keep_open(self) -> None:
        self._close_gate.keep_open()

    def allow_close(self) -> None:
        self._close_gate.allow_close()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Detach from the shared pool; its workers stay alive until their idle timeout."""
        self._close_gate.shutdown(wait, cancel_futures)

    def _detach(self, *, wait: bool, cancel_futures: bool) -> None:
        with self._submit_lock, self._lock:
            self.closed = True
            futures = list(self._futures)
        if cancel_futures:
            for future in futures:
                future.cancel()  # refused by work already running, as in the stdlib
        if wait:
            wait_futures(futures)


_registry: dict[Hashable, SharedPoolBackend] = {}
_registry_lock = threading.Lock()
_registry_pid = os.getpid()


def _backend_for(recipe: PoolRecipe) -> SharedPoolBackend:
    """The shared pool for ``recipe``, created if there is none yet (no process starts)."""
    global _registry_pid
    key = recipe.key
    with _registry_lock:
        if os.getpid() != _registry_pid:
            # A forked child: the pools (and their threads) belong to the parent.
            _registry.clear()
            _registry_pid = os.getpid()
        cold = [k for k, backend in _registry.items() if k != key and backend.is_cold()]
        backends_to_stop = [_registry.pop(k) for k in cold]
        backend = _registry.get(key)
        if backend is None or backend.stopped:
            backend = _registry[key] = SharedPoolBackend(recipe)
    for old in backends_to_stop:
        old.stop()
    return backend


def attach(recipe: PoolRecipe) -> SharedPoolHandle:
    """A new executor's handle on the shared pool its recipe asks for."""
    return SharedPoolHandle(recipe, _backend_for(recipe))


def shutdown_shared_pools() -> None:
    """Stop every shared pool of this process now: work not yet started is cancelled,
    running work finishes, the workers exit. Executors still attached start a new shared
    pool on their next call. Runs at interpreter exit; does nothing in a forked child."""
    with _registry_lock:
        if os.getpid() != _registry_pid:
            return
        backends = list(_registry.values())
        _registry.clear()
    for backend in backends:
        backend.stop()


atexit.register(shutdown_shared_pools)
