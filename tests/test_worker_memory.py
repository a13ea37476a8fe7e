"""loky's memory-leak check in our workers reads ``/proc/self/statm`` (``_worker_memory``):
the parsing on literal text, the figure against psutil's, and a real worker using it."""

from __future__ import annotations

import multiprocessing
import os
import sys

import loky
import psutil
import pytest

from amorsize_executor import AdaptiveProcessPoolExecutor, _worker_memory

from .conftest import make_facts

linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads /proc/self/statm (Linux)"
)


def test_parse_statm_rss_bytes_reads_the_resident_pages() -> None:
    assert _worker_memory.parse_statm_rss_bytes("5120 1200 300 10 0 900 0\n", 4096) == (
        1200 * 4096
    )


@pytest.mark.parametrize("text", ["", "5120", "5120 x 300", "garbage text here"])
def test_parse_statm_rss_bytes_refuses_what_the_kernel_does_not_write(text: str) -> None:
    assert _worker_memory.parse_statm_rss_bytes(text, 4096) is None


@linux_only
def test_read_rss_bytes_is_the_figure_psutil_reports() -> None:
    ours = _worker_memory.read_rss_bytes()
    theirs = psutil.Process().memory_info().rss
    assert ours is not None
    assert abs(ours - theirs) <= 8 * 2**20  # a few pages may change between the two reads


def loky_memory_check(_: int) -> tuple[str, int, bool]:
    """In a worker: which function loky's memory check calls, and what it returns."""
    from loky import process_executor

    check = process_executor._get_memory_usage
    return check.__module__, check(os.getpid(), force_gc=True), process_executor._USE_PSUTIL


@linux_only
def test_our_loky_workers_check_their_memory_through_statm() -> None:
    with AdaptiveProcessPoolExecutor(
        max_workers=1,
        mp_context=multiprocessing.get_context("fork"),
        system_facts=make_facts(n_logical_cores=1, n_physical_cores=1, n_affinity_cores=1),
    ) as ex:
        module, rss_bytes, checks = ex.submit(loky_memory_check, 0).result(timeout=60)
    assert module == _worker_memory.__name__
    assert rss_bytes > 0 and checks


def test_the_parent_keeps_lokys_own_check() -> None:
    from loky import process_executor

    assert loky.__name__ == "loky"
    assert process_executor._get_memory_usage.__module__ == process_executor.__name__


@linux_only
def test_another_pid_goes_to_lokys_own_function() -> None:
    calls: list[tuple[int, bool]] = []

    def original(pid: int, force_gc: bool = False) -> int:
        calls.append((pid, force_gc))
        return 7

    check = _worker_memory._statm_memory_usage(original)
    assert check(os.getpid() + 1, force_gc=True) == 7
    assert calls == [(os.getpid() + 1, True)]
    assert check(os.getpid()) > 0 and len(calls) == 1
