"""Shared fixtures: a private start-cost cache, hand-built machine facts, a fake backend,
and a check that no test leaves a child process behind."""

from __future__ import annotations

import os
import tempfile
import time

# Before the package is imported anywhere: never touch the user's real cache.
os.environ.setdefault("AMORSIZE_CACHE_DIR", tempfile.mkdtemp(prefix="amorsize-test-cache-"))

from collections.abc import Callable, Iterator
from typing import Any

import psutil
import pytest

from amorsize_executor import SystemFacts, WorkMeasurements

from .fakes import FakeBackend


def make_facts(**overrides: Any) -> SystemFacts:
    """Facts of an imaginary 4-core machine with free, instant workers unless overridden."""
    values: dict[str, Any] = {
        "n_logical_cores": 4,
        "n_physical_cores": 4,
        "n_affinity_cores": 4,
        "cpu_quota_cores": None,
        "available_memory_bytes": 16 * 2**30,
        "start_method": "fork",
        "worker_start_s": 0.0,
        "task_roundtrip_s": 0.0,
        "ipc_bytes_per_s": 1e12,
    }
    values.update(overrides)
    return SystemFacts(**values)


def make_measurements(**overrides: Any) -> WorkMeasurements:
    """Figures of a 1 ms CPU-bound call with small items unless overridden."""
    values: dict[str, Any] = {
        "n_probed": 8,
        "wall_s_per_item": 1e-3,
        "cpu_s_per_item": 1e-3,
        "item_bytes": 32.0,
        "result_bytes": 32.0,
        "pickle_s_per_item": 1e-6,
        "memory_bytes_per_call": 1024,
    }
    values.update(overrides)
    return WorkMeasurements(**values)


@pytest.fixture
def facts() -> Callable[..., SystemFacts]:
    return make_facts


@pytest.fixture
def measurements() -> Callable[..., WorkMeasurements]:
    return make_measurements


@pytest.fixture
def fake_backend() -> FakeBackend:
    return FakeBackend()


# Process-wide helpers that multiprocessing and loky keep for the life of the interpreter
# (one each, shared by every pool): not leaks of ours.
_SINGLETON_MARKERS = ("forkserver", "resource_tracker", "semaphore_tracker")


def live_children(exclude: set[int] = frozenset()) -> list[psutil.Process]:  # type: ignore[assignment]
    """Child processes of this process that are alive, other than the shared singletons."""
    alive = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.pid in exclude or child.status() == psutil.STATUS_ZOMBIE:
                continue
            if any(marker in " ".join(child.cmdline()) for marker in _SINGLETON_MARKERS):
                continue
        except psutil.NoSuchProcess:
            continue
        alive.append(child)
    return alive


@pytest.fixture(autouse=True)
def no_leaked_processes() -> Iterator[None]:
    """Fail a test that leaves a child process of this test process alive."""
    before = {p.pid for p in live_children()}
    yield
    deadline = time.monotonic() + 10
    leaked = live_children(before)
    while leaked and time.monotonic() < deadline:
        time.sleep(0.05)
        leaked = live_children(before)
    if leaked:
        names = []
        for p in leaked:
            try:
                names.append(f"{p.pid}:{' '.join(p.cmdline()[:4])}")
                p.kill()
            except psutil.NoSuchProcess:
                pass
        pytest.fail(f"child processes left behind: {names}")
