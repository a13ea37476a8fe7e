"""The meters the probe reads about one call: the peak resident memory it needed, and the
voluntary context switches of the calling thread (how often it gave up the CPU to wait).

Mechanism layer, thin I/O: each reads the operating system and reports a number (0 or
``None`` where the platform has none); ``_probe`` takes them as arguments, so its tests
script them instead.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

try:
    import resource

    _RUSAGE_THREAD: int | None = getattr(resource, "RUSAGE_THREAD", None)
except ImportError:  # Windows
    _RUSAGE_THREAD = None


def count_voluntary_switches() -> int | None:
    """Voluntary context switches of the calling thread so far (Linux), else ``None``."""
    if _RUSAGE_THREAD is None:
        return None
    return int(resource.getrusage(_RUSAGE_THREAD).ru_nvcsw)


def measure_peak_memory(call: Callable[[], Any]) -> tuple[Any, int]:
    """Run ``call`` once and return its result and the peak extra resident memory it needed.

    Reads the process's resident set size (RSS) before the call and its high-water mark
    after it, having reset the mark through ``/proc/self/clear_refs`` (Linux): it counts
    every allocation, Python's and native libraries', and costs two small file accesses. It
    does not slow the call, unlike tracemalloc, which slows allocation-heavy code many
    times over. Elsewhere, the growth of the process's lifetime peak (``ru_maxrss``) is used,
    which misses a call whose peak stays under an earlier one. 0 means unknown.
    """
    rss_before = _read_status_bytes("VmRSS:")
    if rss_before is not None and _reset_peak_rss():
        result = call()
        peak = _read_status_bytes("VmHWM:")
        return result, 0 if peak is None else max(0, peak - rss_before)
    peak_before = _lifetime_peak_rss_bytes()
    result = call()
    peak_after = _lifetime_peak_rss_bytes()
    if peak_before is None or peak_after is None:
        return result, 0
    return result, max(0, peak_after - peak_before)


def peak_memory_bound() -> int:
    """An upper bound of the extra memory any call made so far needed: the process's peak
    resident memory (``VmHWM``, since the process started or the meter last reset it; else
    the lifetime peak), which the call's peak was part of. 0 means unknown. For a call that
    was not metered (see ``_probe``'s lone call): no call can have needed more."""
    peak = _read_status_bytes("VmHWM:")
    if peak is None:
        peak = _lifetime_peak_rss_bytes()
    return 0 if peak is None else peak


def _read_status_bytes(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` in bytes, or ``None`` where there is none.

    Read with raw system calls: a text-mode ``open`` looks up a codec and builds a buffered
    reader, which on a process's first call costs ten times the read itself."""
    key = field.encode("ascii")
    try:
        fd = os.open("/proc/self/status", os.O_RDONLY)
        try:
            data = os.read(fd, 1 << 16)
        finally:
            os.close(fd)
        start = data.index(key) + len(key)
        return int(data[start : data.index(b"kB", start)]) * 1024
    except (OSError, ValueError):
        return None


def _reset_peak_rss() -> bool:
    try:
        fd = os.open("/proc/self/clear_refs", os.O_WRONLY)
        try:
            os.write(fd, b"5")
        finally:
            os.close(fd)
    except OSError:
        return False
    return True


def _lifetime_peak_rss_bytes() -> int | None:
    try:
        import resource
    except ImportError:
        return None
    peak = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return peak if sys.platform == "darwin" else peak * 1024  # macOS reports bytes
