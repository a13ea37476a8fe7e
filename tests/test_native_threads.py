"""Forked workers get their share of native (BLAS) threads from a scan the parent made once,
instead of importing threadpoolctl and scanning in every new worker."""

from __future__ import annotations

import multiprocessing

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


def test_forked_workers_limit_blas_threads_from_the_parents_scan(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
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
        # 2 cores over 2 workers: 1 BLAS thread each.
        assert set(map(tuple, ex.map(blas_threads, range(8)))) == {(1,)}
    scanned = _chunk_worker._native_pools
    assert scanned is not None and "numpy" in scanned[0]
