"""What a worker process runs for one chunk of ``map()`` items.

Mechanism layer, imported inside workers, so it stays small and imports nothing heavy.
The parent pickles ``fn`` and the chunk itself (cloudpickle, so lambdas and closures work and
an unpicklable item is found with its index); the worker reports its results pickled, the
index where ``fn`` first raised (with the exception made safe to send back), and the seconds
it spent computing: the runtime feedback the parent sizes later chunks from.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import sys
import traceback
import types
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cloudpickle

from ._errors import UnpicklableExceptionError
from ._fn_transport import FnRef, forget_ended, importable, load_shipped, loads_back_as_itself
from ._openblas_maps import find_forked_openblas
from ._worker_memory import use_statm_for_loky_memory_check
from ._worker_streams import enable_crash_reports

THREAD_ENV_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)
"""The variables through which OpenMP and the BLAS libraries read their thread counts (the
same set joblib and dask set in their workers)."""

_NATIVE_POOL_MODULES = ("numpy", "scipy", "torch", "sklearn", "numexpr")

_native_pools: tuple[frozenset[str], int, Any] | None = None
"""The native thread pools loaded here (a tuple of ``_openblas_maps`` libraries, else
threadpoolctl's controller), with the modules of ``_NATIVE_POOL_MODULES`` that were loaded
and how many modules in all when it was taken,
taken by the parent just before it forks workers (see ``scan_native_pools_before_fork``); a
forked worker inherits it."""


def scan_native_pools_before_fork() -> None:
    """Find the native thread pools (BLAS, OpenMP) once in the parent, before it forks
    workers, so that each forked worker only sets their size instead of importing
    threadpoolctl and scanning its libraries itself. Measured on the 2-core VM with numpy
    loaded (2026-12-02): importing threadpoolctl in each freshly forked worker took 16-25 ms
    and the scan 1-9 ms, while the parent's scan takes about 1 ms, once per process and
    again only after any module was imported (``import scipy.linalg`` loads another BLAS
    without changing which of ``_NATIVE_POOL_MODULES`` are loaded). Does nothing when none
    of them is loaded."""
    global _native_pools
    loaded = frozenset(m for m in _NATIVE_POOL_MODULES if m in sys.modules)
    n_modules = len(sys.modules)
    if not loaded or (_native_pools is not None and _native_pools[:2] == (loaded, n_modules)):
        return
    # The common case (pthreads OpenBLAS only) without threadpoolctl: 0.1-0.2 ms against
    # 2.5 ms for its import and scan, on a fresh pool's first result (see _openblas_maps).
    pools: Any = find_forked_openblas()
    if pools is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            return
        pools = ThreadpoolController()
    _native_pools = (loaded, n_modules, pools)


_last_by_reference: tuple[weakref.ref[Any], str, str, bytes] | None = None
"""The last plain function ``dumps_callable`` pickled by reference: a weak reference to it, its
module and qualified name when pickled, and the bytes. ``submit()`` pickles its function at
every call, most often the same one: 2-3 us alone, 8-11 us while a fresh pool's threads run
(2-core VM, 2026-12-02), each on the caller's path to its pool's first results."""


def dumps_callable(fn: Callable[..., Any]) -> bytes:
    """Pickle a function for a worker: by reference when the worker can import it by name
    (so ``fn`` and an initializer share one module and its globals there, as with the
    stdlib), else by value through cloudpickle (lambdas, closures, interactive sessions)."""
    global _last_by_reference
    if importable(fn):
        last = _last_by_reference
        if last is not None and last[0]() is fn and _still_named(fn, last[1], last[2]):
            return last[3]
        try:
            data = pickle.dumps(fn, protocol=pickle.HIGHEST_PROTOCOL)
            if loads_back_as_itself(data, fn):
                if isinstance(fn, types.FunctionType):
                    _last_by_reference = (weakref.ref(fn), fn.__module__, fn.__qualname__, data)
                return data
        except Exception:
            pass
    return bytes(cloudpickle.dumps(fn))


def _still_named(fn: types.FunctionType, module_name: str, qualname: str) -> bool:
    """Whether bytes of ``fn`` pickled by reference as ``module_name.qualname`` still load
    as ``fn``: the lookup ``pickle.loads`` makes (the module, then each attribute), without
    building and unpickling the bytes again."""
    if fn.__module__ != module_name or fn.__qualname__ != qualname:
        return False
    found: Any = sys.modules.get(module_name)
    for name in qualname.split("."):
        found = getattr(found, name, None)
    return found is fn


def init_worker(
    thread_env: dict[str, str],
    initializer_bytes: bytes | None,
    initargs: tuple[Any, ...],
) -> None:
    """Prepare a new worker: keep its crash reports working under an in-memory
    ``sys.stderr``, make loky's memory check cheap (``_worker_memory``), set its native
    thread pools, then run the user's initializer.

    ``thread_env`` holds the thread variables the worker must see, exactly: either the
    parent's own (the user set them) or each worker's share of the cores (with
    ``n_workers`` workers each running BLAS with every core's threads, the machine runs
    ``n_workers x cores`` threads and slows down). They are set explicitly because a worker
    forked from a forkserver inherits the environment of when the server started, not the
    parent's current one. The variables act on libraries loaded later; one already loaded
    (by a fork, or a forkserver that preloaded ``__main__``) is capped through threadpoolctl.
    """
    enable_crash_reports()
    use_statm_for_loky_memory_check()
    for name in THREAD_ENV_VARS:
        if name in thread_env:
            os.environ[name] = thread_env[name]
        else:
            os.environ.pop(name, None)
    limit = thread_env.get("OMP_NUM_THREADS") or thread_env.get("OPENBLAS_NUM_THREADS")
    if limit and limit.isdigit():
        loaded = frozenset(m for m in _NATIVE_POOL_MODULES if m in sys.modules)
        if loaded:
            _limit_native_pools(int(limit), loaded)
    # What reached this worker's buffers so far (an at-fork hook's print) is written now: a
    # worker that never gets a task may be killed at shutdown (_pool_backend).
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            if stream is not None:
                stream.flush()
    if initializer_bytes is not None:
        initializer: Callable[..., object] = cloudpickle.loads(initializer_bytes)
        initializer(*initargs)


def _limit_native_pools(n_threads: int, loaded: frozenset[str]) -> None:
    if _native_pools is not None and _native_pools[0] == loaded:
        # Scanned by the parent just before the fork: the libraries this worker has.
        pools = _native_pools[2]
        if isinstance(pools, tuple):  # found by _openblas_maps
            if all(library.lower_threads(n_threads) for library in pools):
                return
        else:
            for library in pools.lib_controllers:
                if not _lower_forked_openblas_threads(library, n_threads):
                    library.set_num_threads(n_threads)
            return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(limits=n_threads)


def _lower_forked_openblas_threads(library: Any, n_threads: int) -> bool:
    """Lower the thread count of a pthreads OpenBLAS inherited through a fork without
    restarting its thread pool; ``False`` when this does not apply (the caller then sets the
    count the ordinary way).

    OpenBLAS stops its threads before a fork and restarts them lazily in the child: at the
    first call that needs them, or at once inside ``openblas_set_num_threads``, which then
    starts a thread for every core of the parent's count. Those threads spin while they
    wait for work. Measured on the 2-core VM (OpenBLAS 0.3.31, 2026-12-02): setting 1 thread
    in a freshly forked worker left one such thread that burned 34-40 ms of CPU in the next
    50 ms, with two workers competing for the same two cores; a pool's first result came
    2-9 ms later than with no limit at all. The count that OpenBLAS reads for every call is
    its exported ``blas_cpu_number`` (what ``openblas_get_num_threads`` returns): writing
    it lowers the count without starting anything, and the pool starts later only if a call
    uses more than one thread. Only lowering is done this way (a count above the pool's
    size would need the threads the setter creates). Builds that do not export the count
    (scipy-openblas 0.3.34, numpy 2.5's wheels; 0.3.29 and 0.3.31 export it) get ``False``.
    """
    if (
        getattr(library, "internal_api", None) != "openblas"
        or getattr(library, "threading_layer", None) != "pthreads"
    ):
        return False
    try:
        import ctypes

        count = ctypes.c_int.in_dll(library.dynlib, "blas_cpu_number")
    except (ImportError, ValueError, AttributeError):
        return False
    if not 1 <= n_threads <= count.value:
        return False
    count.value = n_threads
    return int(library.get_num_threads()) == n_threads


@dataclass(frozen=True)
class ChunkPayload:
    """One chunk as sent to a worker: both parts already pickled by the parent."""

    fn_bytes: bytes
    items_bytes: bytes
    budget_s: float | None = None
    """Seconds after which the worker stops starting items and sends back what it has, so
    a chunk that turned out far slower than planned (a slow stretch of the input) can be
    split among the workers instead of holding one of them. ``None``: run every item."""
    check_every: int = 1
    """Items between two looks at the clock when there is a budget (1 unless calls are so
    fast that reading the clock would cost a noticeable share of them)."""
    fn: Callable[..., Any] | None = None
    """For a backend that runs chunks in this process (threads): ``fn`` itself, and then
    ``items`` too, neither pickled, so closures share this process's state and items need
    not be picklable. ``None`` for worker processes."""
    items: list[tuple[Any, ...]] | None = None
    fn_ref: FnRef | None = None
    """For a large ``fn``: where the worker loads it from, once, instead of ``fn_bytes``
    (empty then; see ``_fn_transport``)."""


@dataclass(frozen=True)
class ChunkFailure:
    """Why the chunk stopped early: the exception of the item at ``offset`` in the chunk."""

    offset: int
    error: BaseException
    tb_text: str
    kind: str
    """``"raised"`` (fn raised), ``"result"`` (result not picklable), or
    ``"exception"`` (fn raised something that cannot be pickled back)."""
    type_name: str


@dataclass(frozen=True)
class ChunkResult:
    """A worker's answer for one chunk."""

    results_bytes: bytes
    n_results: int
    compute_s: float
    """Wall seconds spent in ``fn`` for this chunk."""
    cpu_s: float
    """CPU seconds the worker process used meanwhile (threads of ``fn`` included)."""
    items_bytes: int
    """Pickled size of the chunk's items, as received."""
    failure: ChunkFailure | None
    voluntary_switches: int | None = None
    """Times the worker's thread gave up the CPU by itself meanwhile (Linux): tells calls that
    wait from calls preempted on a busy machine."""
    n_unrun: int = 0
    """Items at the end of the chunk never started because the budget ran out: the parent
    sends them again. Every item is either in ``results_bytes`` or counted here, once."""
    recent_s_per_item: float = 0.0
    """Seconds per item over the last stretch before the budget ran out: what the unrun
    items next to them probably cost."""
    results: list[Any] | None = None
    """The results themselves, unpickled, when the chunk ran in this process."""


def run_chunk(payload: ChunkPayload, clock: Callable[[], float] | None = None) -> ChunkResult:
    """Run ``fn(*args)`` for each item of the chunk, stopping at the first exception or,
    between two items, once the chunk's time budget is spent (``clock`` is for tests)."""
    import time

    now = time.perf_counter if clock is None else clock
    in_process = payload.fn is not None
    fn = payload.fn if payload.fn is not None else _load_fn(payload)
    items: list[tuple[Any, ...]] = (
        payload.items if payload.items is not None else cloudpickle.loads(payload.items_bytes)
    )
    results: list[Any] = []
    failure: ChunkFailure | None = None
    n_unrun = 0
    recent_s_per_item = 0.0
    switches0 = _voluntary_switches()
    start_s, start_cpu_s = now(), time.process_time()
    if payload.budget_s is None:
        for args in items:
            try:
                results.append(fn(*args))
            except Exception as exc:
                failure = _failure_from(len(results), exc, "raised")
                break
    else:
        deadline_s = start_s + payload.budget_s
        every = max(1, payload.check_every)
        next_check, mark_s, mark_n = every, start_s, 0
        for args in items:
            try:
                results.append(fn(*args))
            except Exception as exc:
                failure = _failure_from(len(results), exc, "raised")
                break
            n_done = len(results)
            if n_done >= next_check:
                now_s = now()
                if now_s >= deadline_s and n_done < len(items):
                    n_unrun = len(items) - n_done
                    recent_s_per_item = (now_s - mark_s) / (n_done - mark_n)
                    break
                next_check, mark_s, mark_n = n_done + every, now_s, n_done
    compute_s = now() - start_s
    cpu_s = time.process_time() - start_cpu_s
    switches1 = _voluntary_switches()
    switches = None if switches0 is None or switches1 is None else switches1 - switches0
    if in_process:
        return ChunkResult(
            b"",
            len(results),
            compute_s,
            cpu_s,
            0,
            failure,
            switches,
            n_unrun=0 if failure is not None else n_unrun,
            recent_s_per_item=recent_s_per_item,
            results=results,
        )
    results, results_bytes, failure = _results_to_send(results, failure)
    return ChunkResult(
        results_bytes,
        len(results),
        compute_s,
        cpu_s,
        len(payload.items_bytes),
        failure,
        switches,
        n_unrun=0 if failure is not None else n_unrun,
        recent_s_per_item=recent_s_per_item,
    )


def _results_to_send(
    results: list[Any], failure: ChunkFailure | None
) -> tuple[list[Any], bytes, ChunkFailure | None]:
    """A chunk's results pickled for the parent, and its failure: cut at the first result
    that cannot travel (it fails to pickle here, or is an exception object that would
    fail to load there), which becomes the failure; else ``failure`` as it was."""
    try:
        results_bytes = cloudpickle.dumps(results)
    except Exception:
        # Find the first result that cannot travel; send the ones before it.
        offset = next(i for i, r in enumerate(results) if not _picklable(r))
        bad = results[offset]
        try:
            cloudpickle.dumps(bad)
        except Exception as exc:
            failure = ChunkFailure(
                offset,
                _safe_exception(exc),
                traceback.format_exc(),
                "result",
                type(bad).__qualname__,
            )
        results = results[:offset]
        return results, cloudpickle.dumps(results), failure
    unloadable = _first_unloadable_exception(results)
    if unloadable is None:
        return results, results_bytes, failure
    offset, load_error = unloadable
    failure = ChunkFailure(
        offset,
        _safe_exception(load_error),
        "".join(traceback.format_exception(load_error)),
        "result",
        type(results[offset]).__qualname__,
    )
    results = results[:offset]
    return results, cloudpickle.dumps(results), failure


def _load_fn(payload: ChunkPayload) -> Callable[..., Any]:
    """The chunk's ``fn``: loaded once per worker and ``map()`` when it is large, else
    unpickled from the chunk; drops cached large ones whose ``map()`` has ended."""
    if payload.fn_ref is not None:
        return load_shipped(payload.fn_ref)
    forget_ended()
    fn: Callable[..., Any] = cloudpickle.loads(payload.fn_bytes)
    return fn


class OriginalTraceback(Exception):
    """The formatted traceback of an exception that cannot be pickled, as plain text: what a
    stand-in for it is chained to, so that the worker's traceback still shows ``fn``'s frames."""


def call_pickled(fn_bytes: bytes, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Run one ``submit()``ted call whose function travelled as ``dumps_callable`` bytes."""
    forget_ended()  # a large fn of a map() that has ended is not kept for submit()s
    fn = cloudpickle.loads(fn_bytes)
    try:
        return fn(*args, **kwargs)
    except Exception as exc:
        if _round_trips(exc):
            raise
        # Would reach the parent as the pool's generic "failed to un-serialize" error: a
        # stand-in keeps the type's name and the message. It is raised outside this block and
        # chained to a text copy of the original traceback, never to the object itself: where
        # tblib's pickling is installed (distributed does so on import), an exception's cause
        # and context are pickled with it, and the original is what cannot be pickled.
        stand_in = UnpicklableExceptionError(None, type(exc).__qualname__, str(exc))
        original = OriginalTraceback("".join(traceback.format_exception(exc)))
    raise stand_in from original


def _voluntary_switches() -> int | None:
    try:
        import resource

        return int(resource.getrusage(resource.RUSAGE_THREAD).ru_nvcsw)
    except (ImportError, AttributeError, OSError):
        return None


def _picklable(obj: object) -> bool:
    try:
        cloudpickle.dumps(obj)
    except Exception:
        return False
    return True


def _first_unloadable_exception(results: list[Any]) -> tuple[int, Exception] | None:
    """The first result that is an exception object failing to unpickle, with the error.

    Such a result (an exception class whose ``__init__`` needs more arguments than it passes
    to ``Exception``) pickles here but would fail to load in the parent, losing the whole
    chunk there; found here, it is reported at its own index with its type, after the
    results before it. Only exception objects are checked: the type scan runs at C speed,
    and other results are not unpickled twice."""
    if not any(issubclass(t, BaseException) for t in set(map(type, results))):
        return None
    for offset, result in enumerate(results):
        if isinstance(result, BaseException):
            try:
                cloudpickle.loads(cloudpickle.dumps(result))
            except Exception as exc:
                return offset, exc
    return None


def _round_trips(exc: BaseException) -> bool:
    """Whether the exception survives pickling *and* unpickling: an exception class whose
    ``__init__`` needs more arguments than it passes to ``Exception`` pickles fine but fails
    to load in the parent."""
    try:
        cloudpickle.loads(cloudpickle.dumps(exc))
    except Exception:
        return False
    return True


def _failure_from(offset: int, exc: BaseException, kind: str) -> ChunkFailure:
    tb_text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if _round_trips(exc):
        # The traceback is carried as text; the frames would hold references to locals.
        exc.__traceback__ = None
        return ChunkFailure(offset, exc, tb_text, kind, type(exc).__qualname__)
    # The type's name travels beside the message, which is the exception's own (as in
    # submit()'s stand-in), not prefixed with the name a second time.
    return ChunkFailure(
        offset, RuntimeError(str(exc)), tb_text, "exception", type(exc).__qualname__
    )


def _safe_exception(exc: BaseException) -> BaseException:
    """A picklable stand-in keeping the type's name and the message."""
    return RuntimeError(f"{type(exc).__qualname__}: {exc}")
