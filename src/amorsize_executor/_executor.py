"""The public facade: ``AdaptiveProcessPoolExecutor``, a drop-in ``ProcessPoolExecutor``.

Facade layer. It validates arguments with the stdlib's exception types and messages, owns
the backend (the pool) and the live ``map()`` runs, and hands each ``map()`` call to
``_map_run.MapRun``, the one place where input, probe, cost model and backend meet.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future
from multiprocessing.context import BaseContext
from typing import Any, TypeVar

from . import _cost_model, _machine, _shared_pools, _start_cost_cache, _worker_policy
from ._backend import Backend
from ._chunk_worker import THREAD_ENV_VARS
from ._executor_options import check_constructor_arguments
from ._input import Source
from ._interpreter_exit import check_interpreter_running
from ._map_run import MapOptions, MapRun
from ._pool_backend import PoolBackend
from ._progress import ProgressOption, check_progress, make_progress
from ._records import Plan, SystemFacts
from ._start_choice import choose_context, start_method_reason
from ._thread_backend import ThreadBackend

logger = logging.getLogger("amorsize_executor")

T = TypeVar("T")


class AdaptiveProcessPoolExecutor(Executor):
    """A ``concurrent.futures.ProcessPoolExecutor`` that decides, by measuring, whether and
    how to parallelize each ``map()`` call.

    ``map()`` runs ``fn`` on the first items in the calling process, measures them, and
    either finishes serially in the caller or dispatches to a right-sized loky pool with a
    computed chunk size, resizing chunks from the times later chunks report. ``submit()``
    goes straight to the pool. The latest decision is ``last_plan``.

    Args:
        max_workers: the most worker processes to use; the executor may use fewer.
            ``None`` (the default) means as many as the machine's usable cores.
        mp_context: a ``multiprocessing`` context for the workers. Default: the one the
            stdlib pool would use, ``multiprocessing``'s default context (``fork`` on Linux
            through Python 3.13, ``forkserver`` from 3.14, or what the program set with
            ``multiprocessing.set_start_method``); a ``spawn`` default gets loky's own start
            (a fresh interpreter per worker). A ``fork`` pool nested in a worker of a loky
            pool is the stdlib's (loky refuses to fork there).
        initializer: called in each worker as it starts. When given, ``fn`` never runs
            in the calling process (there the initializer has not run).
        initargs: arguments for ``initializer``.
        max_tasks_per_child: replace a worker after this many tasks (chunks). Uses the
            stdlib pool, which implements it (Python 3.11+), with its default ``spawn``
            start unless ``mp_context`` is given.
        isolate: never run ``fn`` in the calling process, not even to probe: a crash or
            hang in ``fn`` can then not take the caller down, at the cost of always
            starting a pool (no serial plan).
        progress: ``True`` for a tqdm progress bar on every ``map()`` (needs the
            ``progress`` extra), or a callable that receives the count of items
            finished each time results are delivered.
        system_facts: use these machine facts instead of reading them (what-if planning,
            tests).
        backend: where workers run: ``"loky"`` (the default: a pool on this machine owned by
            the executor), ``"threads"`` (threads of this process: for calls that mostly
            wait, such as I/O; under the GIL, CPU-bound calls are never planned on them;
            ``fn`` is not pickled for ``submit()``, and threads cannot be killed by
            ``terminate_workers``), ``"dask"`` (a dask.distributed cluster, given by
            ``client``), or an object implementing the backend protocol.
        client: with ``backend="dask"``: a ``distributed.Client`` or a scheduler address
            such as ``"tcp://10.0.0.5:8786"``. Needs the ``dask`` extra.
        keep_warm: seconds. Share one warm pool with the other executors of this process
            that ask for the same kind of pool (same ``max_workers``, ``mp_context``,
            ``initializer`` object, ``initargs``, ``keep_warm`` and thread settings), and
            let its workers exit by themselves after this many seconds without work. Unlike
            the stdlib's, ``shutdown()`` then leaves the workers running until that timeout,
            so the next executor starts nothing; a worker crash or ``terminate_workers()``
            affects the work of every executor on the pool. ``None`` (the default): the
            executor owns its pool and stops it at ``shutdown()``.

    Raises:
        ValueError: ``max_workers`` or ``max_tasks_per_child`` below 1,
            ``max_tasks_per_child`` with a ``fork`` context, or an option the chosen
            backend cannot honour (``mp_context``, ``max_tasks_per_child`` or
            ``isolate=True`` with ``"threads"``; ``mp_context``, ``initializer`` or
            ``max_tasks_per_child`` with ``"dask"``).
            Also ``keep_warm`` that is not a positive finite number, or that is given with
            ``max_tasks_per_child`` or with a backend other than ``"loky"``.
        TypeError: an argument of the wrong type.
    """

    def __init__(
        self,
        max_workers: int | None = None,
        mp_context: BaseContext | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        *,
        max_tasks_per_child: int | None = None,
        isolate: bool = False,
        progress: ProgressOption = False,
        system_facts: SystemFacts | None = None,
        backend: Backend | str | None = None,
        client: Any = None,
        keep_warm: float | None = None,
    ) -> None:
        check_constructor_arguments(
            max_workers=max_workers,
            mp_context=mp_context,
            initializer=initializer,
            initargs=initargs,
            max_tasks_per_child=max_tasks_per_child,
            isolate=isolate,
            progress=progress,
            backend=backend,
            keep_warm=keep_warm,
        )
        self._max_workers = max_workers
        self._initializer = initializer
        self._isolate = isolate
        self._progress = progress
        self._system_facts = system_facts
        shared_pool = None
        if keep_warm is not None:
            shared_pool = _shared_pools.attach(
                _shared_pools.PoolRecipe(
                    idle_timeout_s=float(keep_warm),
                    max_workers=max_workers,
                    mp_context=mp_context,
                    initializer=initializer,
                    initargs=initargs,
                    # What _worker_thread_env reads besides the pool size.
                    thread_env_key=(
                        tuple((name, os.environ.get(name)) for name in THREAD_ENV_VARS),
                        system_facts,
                    ),
                    default_workers=self._default_workers,
                    worker_thread_env=self._worker_thread_env,
                    choose_context=choose_context,
                    record_start_s=_start_cost_cache.record_worker_start_s,
                )
            )
        self._start_options = (mp_context, max_tasks_per_child)  # for explain()'s reason
        self._backend: Backend = (
            _cluster_backend(
                backend,
                client,
                max_workers=max_workers,
                initializer=initializer,
                initargs=initargs,
            )
            or shared_pool
            or PoolBackend(
                max_workers=max_workers,
                mp_context=mp_context,
                initializer=initializer,
                initargs=initargs,
                max_tasks_per_child=max_tasks_per_child,
                default_workers=self._default_workers,
                choose_context=None if max_tasks_per_child is not None else choose_context,
                record_start_s=_start_cost_cache.record_worker_start_s,
                worker_thread_env=self._worker_thread_env,
            )
        )
        self._runs: weakref.WeakSet[MapRun] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._shutdown = False
        self._pid = os.getpid()
        self._last_plan: Plan | None = None

    # -- facts and plans -------------------------------------------------------------------

    def _default_workers(self) -> int:
        """Pool size for ``submit()`` before any plan: the usable cores, capped."""
        facts = self._system_facts or _machine.core_facts()
        n_cores, _ = _cost_model.choose_usable_cores(facts, cpu_bound=False)
        return min(n_cores, self._max_workers or n_cores)

    def _worker_thread_env(self, n_workers: int) -> dict[str, str]:
        """The thread variables workers of a pool of ``n_workers`` must see: the user's own
        if they set any (their choice is left alone), else each worker's share of the cores."""
        user_set = {name: os.environ[name] for name in THREAD_ENV_VARS if name in os.environ}
        if user_set:
            return user_set
        facts = self._system_facts or _machine.core_facts()
        n_cores, _ = _cost_model.choose_usable_cores(facts, cpu_bound=True)
        share = str(_worker_policy.choose_threads_per_worker(n_cores, n_workers))
        return dict.fromkeys(THREAD_ENV_VARS, share)

    def _read_facts(self, backend: Backend) -> SystemFacts:
        """Facts for a plan: the ones given to the executor, else ``_machine.facts_for``."""
        if self._system_facts is not None:
            return self._system_facts
        return _machine.facts_for(
            backend,
            start_method_reason=lambda method: start_method_reason(method, *self._start_options),
        )

    def _publish_plan(self, plan: Plan) -> None:
        with self._lock:
            self._last_plan = plan

    @property
    def last_plan(self) -> Plan | None:
        """The plan of the latest ``map()`` call (with what happened, once it finished)."""
        return self._last_plan

    # -- the Executor API ----------------------------------------------------------------

    def _check_usable(self) -> None:
        if os.getpid() != self._pid:
            raise RuntimeError(
                f"this executor was created in process {self._pid} and cannot be used in "
                f"the forked child {os.getpid()}: create a new executor in the child"
            )
        if self._shutdown:
            raise RuntimeError("cannot schedule new futures after shutdown")
        check_interpreter_running()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """As ``ProcessPoolExecutor.submit``: the call goes straight to the pool."""
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__qualname__!r}")
        with self._lock:
            self._check_usable()
        return self._backend.submit(fn, *args, **kwargs)

    def map(
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int | None = None,
        buffersize: int | None = None,
        progress: ProgressOption | None = None,
    ) -> Iterator[T]:
        """As ``ProcessPoolExecutor.map``, but measured and planned.

        Differences from the stdlib: ``chunksize=None`` (the default) means automatic; the
        input is read lazily with a bounded window of items in flight (``buffersize``
        items, or a window the plan sizes); small jobs may run in the calling process
        (never when ``timeout`` is given, an ``initializer`` is set or ``isolate=True``).

        Args:
            progress: overrides the executor's ``progress`` option for this call.

        Raises:
            ValueError: ``chunksize`` or ``buffersize`` below 1, or a negative ``timeout``.
            TypeError: ``fn`` not callable, or an argument that is not iterable.
            RuntimeError: the executor was shut down.
        """
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__qualname__!r}")
        if chunksize is not None:
            if isinstance(chunksize, bool) or not isinstance(chunksize, int):
                raise TypeError(f"chunksize must be an int or None, got {chunksize!r}")
            if chunksize < 1:
                raise ValueError("chunksize must be >= 1.")
        if buffersize is not None:
            if isinstance(buffersize, bool) or not isinstance(buffersize, int):
                raise TypeError("buffersize must be an integer or None")
            if buffersize < 1:
                raise ValueError("buffersize must be None or > 0")
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
                raise TypeError(f"timeout must be a number or None, got {timeout!r}")
            if timeout < 0 or math.isnan(timeout):
                raise ValueError(f"timeout must be None or >= 0, got {timeout}")
        if progress is not None:
            check_progress(progress)
        with self._lock:
            self._check_usable()
        if not iterables:
            return iter(())  # as the stdlib: zip() of no iterables is empty
        source = Source(iterables)
        deadline_s = None if timeout is None else time.monotonic() + timeout
        on_progress, close_progress = make_progress(
            self._progress if progress is None else progress, source.n_total
        )
        run = MapRun(
            fn,
            source,
            backend=self._backend,
            read_facts=self._read_facts,
            options=MapOptions(
                max_workers=self._max_workers,
                chunksize=chunksize,
                buffersize=buffersize,
                deadline_s=deadline_s,
                serial_allowed=not (
                    self._isolate or self._initializer is not None or timeout is not None
                ),
                drain_on_shutdown=source.has_len and buffersize is None,
                on_progress=on_progress,
                on_finish=close_progress,
                local_machine=self._system_facts is None and self._backend.on_this_machine,
            ),
            publish_plan=self._publish_plan,
        )
        try:
            run.start()
        except BaseException as exc:
            # Cancels what was sent and releases the backend (a pool kept open for this run
            # would otherwise outlive shutdown(wait=False)).
            run.abandon(interrupted=isinstance(exc, KeyboardInterrupt))
            close_progress()
            if isinstance(exc, KeyboardInterrupt):
                # Interrupted while probing in a worker: do not leave it running.
                self._backend.terminate_workers()
            raise
        with self._lock:
            self._runs.add(run)
        return run.results()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """As ``ProcessPoolExecutor.shutdown``; no worker process is left behind, except
        with ``keep_warm``: then this executor's own work is waited for (or cancelled), and
        the shared workers stay alive for other executors until their idle timeout.

        A ``map()`` over a list still being read when the executor shuts down has its
        remaining items submitted first, so its results stay readable after the ``with``
        block, as with the stdlib. A ``map()`` over an input of unknown length (a generator),
        or given ``buffersize=``, raises ``RuntimeError`` where it would need to submit more.
        """
        with self._lock:
            self._shutdown = True
            runs = list(self._runs)
        for run in runs:
            run.on_shutdown(wait=wait, cancel_futures=cancel_futures)
        self._backend.shutdown(wait=wait, cancel_futures=cancel_futures)

    def terminate_workers(self) -> None:
        """Kill every worker now, even one stuck inside ``fn``; their pending results raise
        ``BrokenProcessPool``. The executor stays usable: the next call starts a new pool.
        (The stdlib gained ``terminate_workers``/``kill_workers`` in Python 3.14.)

        With ``backend="threads"`` nothing can be killed: the calls not yet started are
        cancelled, and a call already running finishes in its thread."""
        self._backend.terminate_workers()

    kill_workers = terminate_workers


def _cluster_backend(
    backend: Backend | str | None,
    client: Any,
    *,
    max_workers: int | None,
    initializer: Callable[..., object] | None,
    initargs: tuple[Any, ...],
) -> Backend | None:
    """The backend object for the ``backend``/``client`` options; ``None`` means the local
    process pool. The pool options reach the thread backend only (the dask backend refuses
    them before this is called)."""
    if backend in (None, "loky", "threads") and client is not None:
        raise ValueError("client= is only used with backend='dask'")
    if backend is None or backend == "loky":
        return None
    if backend == "threads":
        return ThreadBackend(
            max_workers=max_workers,
            initializer=initializer,
            initargs=initargs,
            read_machine_facts=_machine.machine_facts,
        )
    if backend == "dask":
        if client is None:
            raise ValueError(
                "backend='dask' needs client=: a distributed.Client or a scheduler address "
                "such as 'tcp://10.0.0.5:8786'"
            )
        from ._dask_backend import DaskBackend

        return DaskBackend(client)
    if isinstance(backend, str):
        raise ValueError(
            f"backend must be 'loky', 'dask', 'threads' or a backend object, got {backend!r}"
        )
    return backend
