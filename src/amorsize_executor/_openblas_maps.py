"""Find the OpenBLAS libraries this process loaded, without threadpoolctl, so that a parent
about to fork workers learns what they must limit at a fraction of threadpoolctl's cost.

Mechanism layer, imported inside workers (forked ones use what the parent found), so it
imports nothing heavy. ``parse_mapped_paths`` is pure (the text of ``/proc/self/maps`` in,
paths out); ``find_forked_openblas`` reads that file and asks the libraries themselves.

Why: the parent's threadpoolctl scan before the first fork cost 2.5 ms on the 2-core VM
(importing threadpoolctl 1.7 ms, its scan 0.8 ms; numpy 2.4.6 with its pthreads OpenBLAS
0.3.31, 2026-12-02), paid before a fresh pool's first result in every program that imported
numpy; reading ``/proc/self/maps`` and opening the already loaded library takes about
0.1-0.2 ms. The common case is the only one handled (Linux, every native thread pool loaded is
a pthreads OpenBLAS that exports its thread count): anything else returns ``None`` and the
caller scans with threadpoolctl as before, which knows every library and build.
"""

from __future__ import annotations

import itertools
import os
import posixpath
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

NATIVE_POOL_PREFIXES = (
    "libopenblas",
    "libscipy_openblas",
    "openblas",
    "libblas",
    "libblis",
    "libflexiblas",
    "libmkl_rt",
    "mkl_rt",
    "libiomp",
    "libgomp",
    "libomp",
    "vcomp",
)
"""File-name prefixes of every library whose thread pool threadpoolctl (3.8) controls: one of
them loaded that is not an OpenBLAS found here sends the caller to threadpoolctl."""

OPENBLAS_PREFIXES = ("libopenblas", "libscipy_openblas")
"""The OpenBLAS file names on Linux (threadpoolctl's, without the Windows-only ones)."""

_SYMBOL_AFFIXES = tuple(itertools.product(("", "scipy_"), ("", "64_", "_64")))
"""Prefixes and suffixes OpenBLAS builds give their functions (scipy-openblas: ``scipy_`` and
``64_``), as threadpoolctl tries them."""

_PTHREADS = 1
"""What ``openblas_get_parallel`` returns for a pthreads build (0 sequential, 2 OpenMP)."""


def parse_mapped_paths(maps_text: str) -> list[str]:
    """The files mapped into the process, each once, in order of first appearance, from the
    text of ``/proc/self/maps`` (the sixth field of a line; deleted files are left out)."""
    paths: dict[str, None] = {}
    for line in maps_text.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) == 6 and fields[5].startswith("/") and not fields[5].endswith(" (deleted)"):
            paths.setdefault(fields[5], None)
    return list(paths)


def native_pool_paths(paths: Iterable[str]) -> list[str]:
    """The paths whose file name is one of a native thread pool library."""
    return [p for p in paths if posixpath.basename(p).startswith(NATIVE_POOL_PREFIXES)]


@dataclass(frozen=True)
class ForkedOpenBLAS:
    """One loaded pthreads OpenBLAS: its exported thread count (``blas_cpu_number``, what
    every call reads) and its own getter, which a forked worker inherits as they are."""

    path: str
    thread_count: Any
    """``ctypes.c_int`` in the library's memory."""
    get_num_threads: Callable[[], int]

    def lower_threads(self, n_threads: int) -> bool:
        """Lower the count to ``n_threads`` without starting a thread (see
        ``_chunk_worker._lower_forked_openblas_threads`` for why); ``False`` when the count
        would have to rise, or the library does not report the new count back."""
        if not 1 <= n_threads <= self.thread_count.value:
            return False
        self.thread_count.value = n_threads
        return int(self.get_num_threads()) == n_threads


def find_forked_openblas() -> tuple[ForkedOpenBLAS, ...] | None:
    """The pthreads OpenBLAS libraries loaded here, or ``None`` when it cannot tell that
    these are all the native thread pools (not Linux, no such library found, another
    native pool library loaded, a build that hides its thread count): scan with
    threadpoolctl then."""
    text = _read_maps()
    if text is None:
        return None
    paths = native_pool_paths(parse_mapped_paths(text))
    if not paths or not all(posixpath.basename(p).startswith(OPENBLAS_PREFIXES) for p in paths):
        return None
    found = []
    for path in paths:
        library = _open_pthreads_openblas(path)
        if library is None:
            return None
        found.append(library)
    return tuple(found)


def _read_maps() -> str | None:
    """``/proc/self/maps`` (raw reads: a text-mode ``open`` costs several times more)."""
    try:
        fd = os.open("/proc/self/maps", os.O_RDONLY)
    except OSError:
        return None
    chunks = []
    try:
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
    except OSError:
        return None
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8", "surrogateescape")


def _open_pthreads_openblas(path: str) -> ForkedOpenBLAS | None:
    import ctypes

    try:
        # RTLD_NOLOAD: only a library already loaded (never load one here).
        dynlib = ctypes.CDLL(path, mode=getattr(os, "RTLD_NOLOAD", 0) | ctypes.RTLD_LOCAL)
    except OSError:
        return None
    for prefix, suffix in _SYMBOL_AFFIXES:
        getter = getattr(dynlib, f"{prefix}openblas_get_num_threads{suffix}", None)
        if getter is not None:
            break
    else:
        return None
    parallel = getattr(dynlib, f"{prefix}openblas_get_parallel{suffix}", None)
    if parallel is None or parallel() != _PTHREADS:
        return None
    try:
        count = ctypes.c_int.in_dll(dynlib, "blas_cpu_number")
    except ValueError:
        return None
    return ForkedOpenBLAS(path=path, thread_count=count, get_num_threads=getter)
