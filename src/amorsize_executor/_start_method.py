"""What the start method of a new pool is chosen from: ``multiprocessing``'s default start
method and this process's thread count.

Mechanism layer: it reads, the pure ``_worker_policy.choose_start_method`` decides (as the stdlib
``ProcessPoolExecutor`` would: with the default context), the facade wires the two. Reading
must not fix the default context (``doctor`` and ``explain()`` only ask what it would be): a
program may still call ``multiprocessing.set_start_method`` afterwards.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from multiprocessing.context import BaseContext

import psutil


def default_start_method() -> str:
    """``multiprocessing``'s default start method, without fixing it as
    ``multiprocessing.get_start_method()`` would (a later ``set_start_method`` still works)."""
    method = multiprocessing.get_start_method(allow_none=True)
    if method is not None:
        return method
    # Not set yet: the platform's default, which multiprocessing keeps on its default
    # context object (CPython; elsewhere, asking fixes it, as the stdlib pool's start does).
    default = getattr(
        getattr(multiprocessing.context, "_default_context", None), "_default_context", None
    )
    if isinstance(default, BaseContext):
        return str(default.get_start_method())
    return str(multiprocessing.get_start_method())


def count_os_threads() -> int:
    """OS threads of this process (native ones too: BLAS, OpenMP), for the record only.

    On Linux the entries of ``/proc/self/task``: each ``map()`` asks (for the reason its
    plan shows), and a ``psutil.Process`` reads and parses more (0.1-0.5 ms on the 2-core VM
    while workers were booting, against about 20 µs, 2026-12-02)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        pass
    try:
        return int(psutil.Process().num_threads())
    except psutil.Error:
        return threading.active_count()
