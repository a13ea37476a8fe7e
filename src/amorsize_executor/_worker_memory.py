"""loky's memory-leak check in our workers, with the resident size read from
``/proc/self/statm`` instead of through psutil.

Mechanism layer, imported inside workers, so it stays small and imports nothing heavy.
``parse_statm_rss_bytes`` is pure (the file's text in, bytes out); ``read_rss_bytes`` reads
the file; ``use_statm_for_loky_memory_check`` is what the worker initializer calls.

Why: after its first task, and then at most once a second, a loky worker measures its
resident size (``loky.process_executor._get_memory_usage``: a full ``gc.collect()``, then
``psutil.Process(pid).memory_info().rss``) to recycle a worker that leaks. In a freshly forked
worker the psutil half cost 0.35-0.42 ms (a new ``Process`` reads its start time first; a
second call 0.05 ms) and the ``/proc/self/statm`` read 0.03 ms, measured on the quiet 2-core
VM (2026-12-02); while a fresh pool starts, the two workers and the parent share the two
cores, and the check held a worker back from its next task by 0.6-2.3 ms (timestamps in the
worker, ``after_thread_pool`` and ``mp_objects`` host programs). The stdlib's workers do no
such check, so every millisecond of it is ours. What the check decides stays loky's: the
same collection, the same figure (the kernel's resident pages, which psutil reads from
``/proc/PID/statm`` too), the same threshold. Elsewhere than Linux nothing is replaced.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable
from typing import Any

_STATM = "/proc/self/statm"


def parse_statm_rss_bytes(text: str, page_bytes: int) -> int | None:
    """The resident size in bytes from the text of ``/proc/self/statm`` (its second field
    counts resident pages), or ``None`` when the text is not what the kernel writes."""
    fields = text.split()
    if len(fields) < 2 or not fields[1].isdigit() or page_bytes <= 0:
        return None
    return int(fields[1]) * page_bytes


def read_rss_bytes() -> int | None:
    """This process's resident size in bytes, ``None`` where ``/proc/self/statm`` is not
    readable (not Linux)."""
    try:
        fd = os.open(_STATM, os.O_RDONLY)
    except OSError:
        return None
    try:
        text = os.read(fd, 256).decode("ascii", "replace")
    except OSError:
        return None
    finally:
        os.close(fd)
    return parse_statm_rss_bytes(text, os.sysconf("SC_PAGE_SIZE"))


def _statm_memory_usage(original: Callable[..., int]) -> Callable[..., int]:
    """loky's ``_get_memory_usage(pid, force_gc=False)`` reading this process's own file; any
    other pid, or a failed read, goes to loky's own function."""

    def memory_usage(pid: int, force_gc: bool = False) -> int:
        if pid != os.getpid():
            return original(pid, force_gc=force_gc)
        if force_gc:
            gc.collect()
        rss_bytes = read_rss_bytes()
        return original(pid) if rss_bytes is None else rss_bytes

    memory_usage.__wrapped__ = original  # type: ignore[attr-defined]
    return memory_usage


def use_statm_for_loky_memory_check() -> None:
    """In a loky worker, let loky's memory-leak check read ``/proc/self/statm`` (see the
    module docstring). Does nothing in a worker of another pool (the stdlib's: loky is not
    imported there, and is not imported here), where that file is not readable, where loky
    does not check (psutil missing) or has no such function (another loky version), or when
    done already (a worker forked from a worker inherits it)."""
    process_executor: Any = sys.modules.get("loky.process_executor")
    if process_executor is None or read_rss_bytes() is None:
        return
    original: Any = getattr(process_executor, "_get_memory_usage", None)
    if (
        not getattr(process_executor, "_USE_PSUTIL", False)
        or not callable(original)
        or hasattr(original, "__wrapped__")
    ):
        return
    process_executor._get_memory_usage = _statm_memory_usage(original)
