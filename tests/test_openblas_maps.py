"""The parent's fast look for OpenBLAS before a fork (``_openblas_maps``): the parsing on
literal ``/proc/self/maps`` text, the cases it leaves to threadpoolctl, and the scan that no
longer needs threadpoolctl on a pthreads OpenBLAS."""

from __future__ import annotations

import sys

import pytest

from amorsize_executor import _chunk_worker, _openblas_maps

MAPS = """\
55d0c0a00000-55d0c0a2e000 r--p 00000000 08:01 123 /usr/bin/python3.11
7f1c2a000000-7f1c2a200000 r-xp 00000000 08:01 456 /site/numpy.libs/libscipy_openblas64_-32a4b2a6.so
7f1c2a200000-7f1c2a400000 rw-p 00200000 08:01 456 /site/numpy.libs/libscipy_openblas64_-32a4b2a6.so
7f1c2b000000-7f1c2b021000 rw-p 00000000 00:00 0
7f1c2c000000-7f1c2c010000 r-xp 00000000 08:01 789 /usr/lib/libgfortran-040039e1.so.5.0.0
7f1c2d000000-7f1c2d001000 r--p 00000000 08:01 790 /tmp/old lib.so (deleted)
7ffd1e000000-7ffd1e021000 rw-p 00000000 00:00 0                          [stack]
"""


def test_parse_mapped_paths_lists_each_file_once_without_anonymous_or_deleted_ones() -> None:
    assert _openblas_maps.parse_mapped_paths(MAPS) == [
        "/usr/bin/python3.11",
        "/site/numpy.libs/libscipy_openblas64_-32a4b2a6.so",
        "/usr/lib/libgfortran-040039e1.so.5.0.0",
    ]


def test_native_pool_paths_keeps_the_thread_pool_libraries() -> None:
    paths = [
        "/usr/bin/python3.11",
        "/site/numpy.libs/libscipy_openblas64_-32a4b2a6.so",
        "/usr/lib/x86_64-linux-gnu/libgomp.so.1",
        "/usr/lib/libopenblasp-r0.3.21.so",
    ]
    assert _openblas_maps.native_pool_paths(paths) == paths[1:]


@pytest.mark.parametrize(
    "maps",
    [
        "",  # no native pool library at all
        MAPS + "7f1c2e000000-7f1c2e010000 r-xp 00000000 08:01 791 /usr/lib/libgomp.so.1\n",
        "7f1c2e000000-7f1c2e010000 r-xp 00000000 08:01 791 /opt/mkl/libmkl_rt.so.2\n",
    ],
    ids=["none", "openmp-too", "mkl"],
)
def test_anything_but_openblas_alone_is_left_to_threadpoolctl(
    monkeypatch: pytest.MonkeyPatch, maps: str
) -> None:
    monkeypatch.setattr(_openblas_maps, "_read_maps", lambda: maps)
    assert _openblas_maps.find_forked_openblas() is None


def test_no_maps_file_is_left_to_threadpoolctl(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_openblas_maps, "_read_maps", lambda: None)
    assert _openblas_maps.find_forked_openblas() is None


def _pthreads_openblas_here() -> tuple[_openblas_maps.ForkedOpenBLAS, ...]:
    pytest.importorskip("numpy")
    found = _openblas_maps.find_forked_openblas()
    if not found:
        pytest.skip("needs numpy on a pthreads OpenBLAS that exports blas_cpu_number (Linux)")
    return found


def test_the_parent_scan_needs_no_threadpoolctl_on_a_pthreads_openblas(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    found = _pthreads_openblas_here()
    assert all("openblas" in library.path for library in found)
    monkeypatch.setattr(_chunk_worker, "_native_pools", None)
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)  # importing it raises
    _chunk_worker.scan_native_pools_before_fork()
    scanned = _chunk_worker._native_pools
    assert scanned is not None and isinstance(scanned[2], tuple)
    assert [library.path for library in scanned[2]] == [library.path for library in found]


def test_lower_threads_only_lowers() -> None:
    class Count:
        value = 2

    count = Count()
    library = _openblas_maps.ForkedOpenBLAS("x", count, lambda: count.value)
    assert not library.lower_threads(3)
    assert count.value == 2
    assert not library.lower_threads(0)
    assert library.lower_threads(1)
    assert count.value == 1
