"""A worker that dies of a segmentation fault while ``sys.stderr`` is an ``io.StringIO``: the
caller must learn that the pool broke, and why."""

import contextlib
import ctypes
import io
import os
from concurrent.futures.process import BrokenProcessPool

from _host import MAX_WORKERS, Clock, pool_class, report

PARENT = os.getpid()


def crash_in_worker(x: int) -> int:
    if os.getpid() != PARENT and x == 2:
        ctypes.string_at(0)  # reads address 0: SIGSEGV
    return x


if __name__ == "__main__":
    clock = Clock()
    error, message = None, ""
    with contextlib.redirect_stderr(io.StringIO()):
        try:
            with pool_class()(max_workers=MAX_WORKERS) as pool:
                futures = [pool.submit(crash_in_worker, x) for x in range(4)]
                [f.result(timeout=60) for f in futures]
        except BrokenProcessPool as exc:
            error, message = "BrokenProcessPool", str(exc)
    report(elapsed_s=clock(), error=error, message=message)
