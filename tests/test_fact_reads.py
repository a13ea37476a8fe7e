"""The cheap reads behind every plan's facts: the start cost read from disk only once the
cache file changed, the thread count for the start method's reason, and the cores alone for a
pool sized without a plan."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from pathlib import Path

import pytest

from amorsize_executor import (
    AdaptiveProcessPoolExecutor,
    _machine,
    _start_cost_cache,
    _start_method,
    _system_facts,
)
from amorsize_executor._records import CoreFacts


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


def _count_memory_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Start with no facts kept in this process; count the reads of the memory files."""
    monkeypatch.setattr(_machine, "_machine_facts_cache", None)
    monkeypatch.setattr(_machine, "_core_facts_cache", None)
    reads: list[int] = []
    read = _system_facts.read_available_memory_bytes

    def counting_read(root: Path = Path("/")) -> int:
        reads.append(1)
        return read(root)

    monkeypatch.setattr(_system_facts, "read_available_memory_bytes", counting_read)
    return reads


def test_a_fresh_executors_submit_sizes_its_pool_without_reading_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Memory takes no part in a pool sized without a plan; its files cost a fresh process's
    first submit() about half of its facts' time before the pool could fork."""
    reads = _count_memory_reads(monkeypatch)
    with AdaptiveProcessPoolExecutor(max_workers=2) as executor:
        assert executor.submit(abs, -4).result(timeout=60) == 4
    assert reads == []


def test_the_cores_come_from_fresh_machine_facts_else_are_read_once_per_age(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reads = _count_memory_reads(monkeypatch)
    core_reads: list[int] = []
    read_cores = _system_facts.read_core_facts

    def counting_read_cores(
        root: Path = Path("/"), environ: Mapping[str, str] | None = None
    ) -> CoreFacts:
        core_reads.append(1)
        return read_cores(root, environ)

    monkeypatch.setattr(_system_facts, "read_core_facts", counting_read_cores)
    first = _machine.core_facts()
    assert _machine.core_facts() == first  # kept: read once
    assert core_reads == [1] and reads == []
    facts = _machine.machine_facts()  # every fact, cores included
    assert len(core_reads) == 2 and reads == [1]
    assert _machine.core_facts() == CoreFacts(
        n_logical_cores=facts.n_logical_cores,
        n_physical_cores=facts.n_physical_cores,
        n_affinity_cores=facts.n_affinity_cores,
        cpu_quota_cores=facts.cpu_quota_cores,
        env_core_limit=facts.env_core_limit,
    )
    assert len(core_reads) == 2  # the fresh machine facts' own
