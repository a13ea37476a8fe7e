"""The cheap reads behind every plan's facts: the start cost read from disk only once the
cache file changed, and the thread count for the start method's reason."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from amorsize_executor import _machine, _start_cost_cache, _start_method


def test_the_start_cost_is_read_again_only_when_the_cache_file_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(_start_cost_cache.ENV_CACHE_DIR, str(tmp_path))
    reads: list[str] = []
    load = _start_cost_cache.load_worker_start_s

    def counting_load(method: str, path: Path | None = None) -> float | None:
        reads.append(method)
        return load(method, path)

    monkeypatch.setattr(_start_cost_cache, "load_worker_start_s", counting_load)
    assert _machine._cached_start_s("fork") is None  # no file yet
    assert _machine._cached_start_s("fork") is None
    assert reads == ["fork"]
    _start_cost_cache.store_worker_start_s("fork", 0.02)
    assert _machine._cached_start_s("fork") == pytest.approx(0.02)
    assert _machine._cached_start_s("fork") == pytest.approx(0.02)
    assert reads == ["fork", "fork"]
    _start_cost_cache.store_worker_start_s("fork", 0.04)
    assert _machine._cached_start_s("fork") == pytest.approx(0.03)  # the median of two
    assert len(reads) == 3


def test_the_thread_count_sees_a_thread_started() -> None:
    before = _start_method.count_os_threads()
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert _start_method.count_os_threads() == before + 1
    finally:
        stop.set()
        thread.join()
