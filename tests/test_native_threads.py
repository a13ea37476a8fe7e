"""Forked workers get their share of native (BLAS) threads from a scan the parent made once,
instead of importing threadpoolctl and scanning in every new worker."""

from __future__ import annotations

import multiprocessing
import sys
import types

import pytest

from amorsize_executor import AdaptiveProcessPoolExecutor, _chunk_worker

from .conftest import make_facts

np = pytest.importorskip("numpy")
threadpoolctl = pytest.importorskip("threadpoolctl")

TWO_CORES = make_facts(n_logical_cores=2, n_physical_cores=2, n_affinity_cores=2)


def blas_threads(_: int) -> list[int]:
    float(np.ones(4) @ np.ones(4))
    return sorted(
        {
            info["num_threads"]
            for info in threadpoolctl.threadpool_info()
            if info["user_api"] == "blas"
        }
    )


def blas_threads_of_forked_workers(monkeypatch: pytest.MonkeyPatch) -> set[tuple[int, ...]]:
    """The BLAS thread counts two forked workers report on two cores, the user having set no
    thread variable, after the parent's scan was forgotten (so a pool start makes one)."""
    for name in _chunk_worker.THREAD_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    if not threadpoolctl.threadpool_info():
        pytest.skip("numpy's BLAS is not visible to threadpoolctl here")
    monkeypatch.setattr(_chunk_worker, "_native_pools", None)
    with AdaptiveProcessPoolExecutor(
        max_workers=2,
        mp_context=multiprocessing.get_context("fork"),
        system_facts=TWO_CORES,
        isolate=True,
    ) as ex:
        return set(map(tuple, ex.map(blas_threads, range(8))))


def test_forked_workers_limit_blas_threads_from_the_parents_scan(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 2 cores over 2 workers: 1 BLAS thread each.
    assert blas_threads_of_forked_workers(monkeypatch) == {(1,)}
    scanned = _chunk_worker._native_pools
    assert scanned is not None and "numpy" in scanned[0]


def test_forked_workers_use_the_parents_scan_not_their_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:

    def no_scan_in_workers(*args: object, **kwargs: object) -> None:
        raise AssertionError("a forked worker scanned its libraries itself")

    # Inherited by the forked workers: the fallback that scans would fail their start.
    monkeypatch.setattr(threadpoolctl, "threadpool_limits", no_scan_in_workers)
    assert blas_threads_of_forked_workers(monkeypatch) == {(1,)}


def test_the_parent_scans_again_once_any_module_was_imported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_chunk_worker, "_native_pools", None)
    _chunk_worker.scan_native_pools_before_fork()
    first = _chunk_worker._native_pools
    _chunk_worker.scan_native_pools_before_fork()
    assert _chunk_worker._native_pools is first  # nothing new: no second scan
    # A module the native-module names do not show (``import scipy.linalg`` loads another
    # BLAS that way): a new entry in sys.modules is enough to scan again.
    monkeypatch.setitem(sys.modules, "amorsize_test_new_module", types.ModuleType("x"))
    _chunk_worker.scan_native_pools_before_fork()
    assert _chunk_worker._native_pools is not first


def os_threads_here(_: int) -> int:
    """The OS threads of the calling process (no BLAS call: that could start its pool)."""
    import os

    return len(os.listdir("/proc/self/task"))


def test_forked_workers_limit_openblas_without_restarting_its_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``openblas_set_num_threads`` in a forked child starts a spinning thread per core of
    the parent's count; the limit must leave a worker that made no BLAS call with none."""
    import os

    if not os.path.isdir("/proc/self/task"):
        pytest.skip("needs Linux's /proc to count a worker's threads")
    for name in _chunk_worker.THREAD_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    float((np.ones((64, 64)) @ np.ones((64, 64))).sum())  # the parent's BLAS pool runs
    pools = threadpoolctl.threadpool_info()
    if not any(
        info["internal_api"] == "openblas"
        and info.get("threading_layer") == "pthreads"
        and info["num_threads"] > 1
        and _exports_thread_count(info["filepath"])
        for info in pools
    ):
        pytest.skip(
            "needs numpy on a pthreads OpenBLAS with more than one thread that exports "
            "blas_cpu_number (some scipy-openblas builds, such as 0.3.34, hide it)"
        )
    monkeypatch.setattr(_chunk_worker, "_native_pools", None)
    with AdaptiveProcessPoolExecutor(
        max_workers=2,
        mp_context=multiprocessing.get_context("fork"),
        system_facts=TWO_CORES,
        isolate=True,
    ) as ex:
        counts = [ex.submit(os_threads_here, 0).result() for _ in range(4)]
        limits = ex.submit(blas_threads, 0).result()
    assert limits == [1]
    assert counts == [1, 1, 1, 1]


def _exports_thread_count(filepath: str) -> bool:
    import ctypes

    try:
        ctypes.c_int.in_dll(ctypes.CDLL(filepath), "blas_cpu_number")
    except (OSError, ValueError):
        return False
    return True
