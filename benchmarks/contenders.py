"""The ways a user could map a workload today, each end to end: pool start, the map, shutdown.

Each contender's ``prepare()`` does its imports (outside the timed region, like any import a
user pays once) and returns a runner ``run(fn, items, info) -> list``. The child process times
the runner call alone. A runner may put extra facts in ``info`` (ours puts its plan there).

What this module must not do: time anything, or import a contender's library at module level
(``amorsize_executor`` may not import at all while it is being written, and mpire is optional).

Generators: a contender that needs a length gets ``list(items)`` inside the runner, so the
timed region pays for it as a user would.
"""

from __future__ import annotations

import importlib.util
import math
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

Fn = Callable[[Any], Any]
Runner = Callable[[Fn, Iterable[Any], dict[str, Any]], list[Any]]


def default_n_workers() -> int:
    """The worker count the stdlib executors pick by default on Python 3.11."""
    return os.cpu_count() or 1


def pool_rule_chunksize(n_items: int, n_workers: int) -> int:
    """``multiprocessing.Pool.map``'s rule: ``ceil(n / (4 * workers))``, at least 1."""
    return max(1, math.ceil(n_items / (4 * n_workers)))


def as_sequence(items: Iterable[Any]) -> Sequence[Any]:
    """``items`` itself when it has a length, else ``list(items)`` (what a user must write)."""
    return items if isinstance(items, Sequence) else list(items)


def _prepare_serial() -> Runner:
    def run(fn: Fn, items: Iterable[Any], info: dict[str, Any]) -> list[Any]:
        return list(map(fn, items))

    return run


def _prepare_stdlib() -> Runner:
    from concurrent.futures import ProcessPoolExecutor

    def run(fn: Fn, items: Iterable[Any], info: dict[str, Any]) -> list[Any]:
        with ProcessPoolExecutor() as ex:
            return list(ex.map(fn, items))

    return run


def _prepare_stdlib_poolchunk() -> Runner:
    from concurrent.futures import ProcessPoolExecutor

    def run(fn: Fn, items: Iterable[Any], info: dict[str, Any]) -> list[Any]:
        seq = as_sequence(items)
        n_workers = default_n_workers()
        chunksize = pool_rule_chunksize(len(seq), n_workers)
        info["chunksize"] = chunksize
        with ProcessPoolExecutor(max_workers=n_workers) as ex:
            return list(ex.map(fn, seq, chunksize=chunksize))

    return run


def _prepare_mp_pool() -> Runner:
    import multiprocessing

    def run(fn: Fn, items: Iterable[Any], info: dict[str, Any]) -> list[Any]:
        # Pool.map turns a generator into a list itself. close()+join() is the graceful
        # shutdown; `with Pool()` would terminate() the workers instead.
        pool = multiprocessing.Pool()
        try:
            results = pool.map(fn, items)
            pool.close()
            pool.join()
        finally:
            pool.terminate()
        return results

    return run


def _prepare_loky() -> Runner:
    from loky import get_reusable_executor

    def run(fn: Fn, items: Iterable[Any], info: dict[str, Any]) -> list[Any]:
        # The reusable executor is process-global: shut it down (and its workers) inside the
        # timed region so its cost is counted and nothing outlives the repetition.
        ex = get_reusable_executor()
        try:
            return list(ex.map(fn, items))
        finally:
            ex.shutdown(wait=True, kill_workers=True)

    return run


def _prepare_joblib() -> Runner:
    from joblib import Parallel, delayed
    from joblib.externals.loky import reusable_executor

    def run(fn: Fn, items: Iterable[Any], info: dict[str, Any]) -> list[Any]:
        results = Parallel(n_jobs=-1)(delayed(fn)(x) for x in items)
        # joblib keeps its loky workers alive for reuse; a script would pay for their
        # shutdown at exit, so the timed region pays for it here.
        executor = reusable_executor._executor
        if executor is not None:
            executor.shutdown(wait=True, kill_workers=True)
        return list(results)

    return run


def _prepare_mpire() -> Runner:
    from mpire import WorkerPool

    def run(fn: Fn, items: Iterable[Any], info: dict[str, Any]) -> list[Any]:
        # mpire needs a length to choose its chunk size (n / (64 * workers)); items are never
        # tuples here, so mpire's argument unpacking does not change the calls. Its map()
        # ends with stop_and_join(), so the workers are gone when it returns.
        seq = as_sequence(items)
        with WorkerPool() as pool:
            return list(pool.map(fn, seq))

    return run


def _prepare_ours() -> Runner:
    # Imported here, not at module level: the library may not import while it is written.
    from amorsize_executor import AdaptiveProcessPoolExecutor

    def run(fn: Fn, items: Iterable[Any], info: dict[str, Any]) -> list[Any]:
        with AdaptiveProcessPoolExecutor() as ex:
            results = list(ex.map(fn, items))
        # The plan object is kept; the child turns it into a dict after the clock stops.
        info["plan_object"] = ex.last_plan
        return results

    return run


@dataclass(frozen=True)
class Contender:
    """One way of mapping a workload, compared against the oracle."""

    name: str
    prepare: Callable[[], Runner]
    note: str
    requires: tuple[str, ...] = ()
    """Modules that must be installed; a missing one shows the contender as ``skip``."""

    def missing_requirement(self) -> str | None:
        for module in self.requires:
            if importlib.util.find_spec(module) is None:
                return module
        return None


CONTENDERS: tuple[Contender, ...] = (
    Contender("serial", _prepare_serial, "list(map(fn, items)) in the calling process"),
    Contender(
        "stdlib",
        _prepare_stdlib,
        "concurrent.futures.ProcessPoolExecutor(), default workers and chunksize=1",
    ),
    Contender(
        "stdlib_pc",
        _prepare_stdlib_poolchunk,
        "ProcessPoolExecutor with Pool's chunksize rule ceil(n/(4w)); list() for generators",
    ),
    Contender("mp_pool", _prepare_mp_pool, "multiprocessing.Pool().map, then close()+join()"),
    Contender(
        "loky",
        _prepare_loky,
        "loky.get_reusable_executor().map (chunksize=1), then shutdown(kill_workers=True)",
        requires=("loky",),
    ),
    Contender(
        "joblib",
        _prepare_joblib,
        "joblib.Parallel(n_jobs=-1) with auto-batching, then its loky executor shut down",
        requires=("joblib",),
    ),
    Contender(
        "mpire",
        _prepare_mpire,
        "mpire.WorkerPool().map (default chunking); list() for generators",
        requires=("mpire",),
    ),
    Contender(
        "ours",
        _prepare_ours,
        "with AdaptiveProcessPoolExecutor() as ex: list(ex.map(fn, items))",
        requires=("amorsize_executor",),
    ),
)

BY_NAME: dict[str, Contender] = {c.name: c for c in CONTENDERS}
