"""The ``backend=``/``client=`` options: clear errors for every wrong combination."""

from __future__ import annotations

import sys

import pytest

from amorsize_executor import AdaptiveProcessPoolExecutor


def test_dask_backend_without_distributed_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ImportError, match=r"pip install 'amorsize-executor\[dask\]'"):
        AdaptiveProcessPoolExecutor(backend="dask", client="tcp://127.0.0.1:1")


def test_dask_backend_needs_a_client() -> None:
    with pytest.raises(ValueError, match="backend='dask' needs client="):
        AdaptiveProcessPoolExecutor(backend="dask")


def test_client_without_the_dask_backend_is_refused() -> None:
    with pytest.raises(ValueError, match="client= is only used with backend='dask'"):
        AdaptiveProcessPoolExecutor(client="tcp://127.0.0.1:1")


def test_unknown_backend_name_is_refused() -> None:
    with pytest.raises(
        ValueError, match="backend must be 'loky', 'dask', 'threads' or a backend object"
    ):
        AdaptiveProcessPoolExecutor(backend="ray")


def test_pool_options_are_refused_with_a_cluster_backend() -> None:
    import multiprocessing

    options: list[dict[str, object]] = [
        {"initializer": print},
        {"mp_context": multiprocessing.get_context("spawn")},
    ]
    if sys.version_info >= (3, 11):  # on 3.10 max_tasks_per_child itself is refused first
        options.append({"max_tasks_per_child": 3})
    for kwargs in options:
        with pytest.raises(ValueError, match="applies to the local process pool only"):
            AdaptiveProcessPoolExecutor(backend="dask", client="tcp://127.0.0.1:1", **kwargs)  # type: ignore[arg-type]
