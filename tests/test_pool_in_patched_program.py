"""A pool the backend makes from the stdlib's class (a ``fork`` pool nested in a loky worker)
in a program that put an executor in ``concurrent.futures.ProcessPoolExecutor``'s place, as
tqdm's ``process_map`` is run with ours: the backend must still get the stdlib's class."""

from __future__ import annotations

import concurrent.futures
import multiprocessing
from typing import Any

import pytest

from amorsize_executor import _pool_backend
from amorsize_executor._pool_backend import PoolBackend


class Replaced:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("the backend made its pool from the replaced class")


def test_a_nested_fork_pool_is_the_stdlibs_even_when_the_name_was_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", Replaced)
    monkeypatch.setattr(_pool_backend, "_in_loky_worker", lambda: True)
    backend = PoolBackend(
        max_workers=1,
        mp_context=multiprocessing.get_context("fork"),
        initializer=None,
        initargs=(),
        max_tasks_per_child=None,
        default_workers=lambda: 1,
    )
    try:
        assert backend.submit(abs, -2).result(timeout=60) == 2
    finally:
        backend.shutdown()
