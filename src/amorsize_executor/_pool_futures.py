"""The stdlib's future semantics on top of a loky pool: the future ``submit()`` returns, and
which calls ``shutdown(cancel_futures=True)`` may still cancel; and the quick stop of a pool
whose workers never got any work.

Mechanism layer, used by ``_pool_backend``. loky's futures and its ``shutdown`` differ from
the stdlib's in what a user can observe (exception types, ``running()``, what a cancelling
shutdown leaves to complete); these pieces make them match, or (the quick stop) leave
nothing observable different.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import signal
import threading
from concurrent.futures import Future
from typing import Any

import loky

from ._chunk_io import to_stdlib_error

EXTRA_QUEUED_CALLS = 1
"""The stdlib's ``concurrent.futures.process.EXTRA_QUEUED_CALLS``: its call queue holds this
many calls beyond one per worker, and a call in that queue is no longer cancellable."""


def cancel_unheld(pool: loky.ProcessPoolExecutor, not_counted: Future[Any] | None) -> None:
    """loky's ``shutdown`` has no ``cancel_futures``: cancel the futures no worker holds.

    As in the stdlib, the oldest calls up to the size of its call queue (one per worker plus
    ``EXTRA_QUEUED_CALLS``) count as held by the workers and complete, even when loky's
    manager thread has not moved them to its own queue yet: the stdlib's manager always
    fills its call queue before it looks at the shutdown flag, so a ``shutdown`` right after
    ``submit`` still lets the first calls run. ``not_counted`` (the pool's start-timing
    no-op) takes no place among them.
    """
    pending: dict[Any, Any] = dict(getattr(pool, "_pending_work_items", None) or {})
    n_held = int(getattr(pool, "_max_workers", 1)) + EXTRA_QUEUED_CALLS
    for _, work_item in sorted(pending.items(), key=lambda pair: pair[0]):
        if work_item.future is not_counted:
            continue
        if n_held > 0 and not work_item.future.done():
            n_held -= 1
            continue
        work_item.future.cancel()


class RelayFuture(Future[Any]):
    """The future ``submit()`` returns: it follows the pool's own future, so cancelling it
    cancels the work, and hands a worker's exception on with the stdlib's types
    (``to_stdlib_error``): its traceback as a ``RemoteTraceback`` ``__cause__``, as
    ``map()`` does."""

    def __init__(self, inner: Future[Any]) -> None:
        super().__init__()
        self._inner = inner
        inner.add_done_callback(self._follow)

    def cancel(self) -> bool:
        if not self._inner.cancel():  # already running or done: like the stdlib, refuse
            return False
        return super().cancel()

    def running(self) -> bool:
        """Running once the pool handed the call to a worker, as the stdlib's future."""
        return super().running() or (not self.done() and self._inner.running())

    def _follow(self, inner: Future[Any]) -> None:
        if inner.cancelled():
            Future.cancel(self)
            self.set_running_or_notify_cancel()
            return
        if not self.set_running_or_notify_cancel():
            return
        error = inner.exception()
        if error is None:
            self.set_result(inner.result())
            return
        self.set_exception(to_stdlib_error(error))


def stop_unused_workers(pool: loky.ProcessPoolExecutor) -> bool:
    """``shutdown(wait=True)`` for a loky pool whose workers never got any of the caller's
    work (at most the start no-op): its workers are killed, even while they start, instead
    of sent a sentinel and joined. Returns ``False``, having done nothing, for a pool not laid
    out as this expects (``_laid_out_for_takeover``: another loky, a pool whose workers exit
    on their own after an idle timeout, one whose manager thread is gone): shut it down as
    usual.

    Why: a ``with`` block whose workers were started in the background for a job that then
    ended serially (``_early_start``) waited 3-4 ms here for workers that did nothing once
    they had started, 4.4-4.7 ms while they were starting (2-core VM, 2026-12-02): the
    start, then the sentinels' trip through loky's queue feeder thread and each worker
    waking to exit in turn. loky's own ``kill_workers=True`` is slower still (4.5-5 ms:
    psutil scans every process of the machine for each worker's children).

    Safe because: nothing of the caller's ran in them and no initializer of the user's
    is running (the caller's conditions); a worker flushes its standard streams at the end
    of ``init_worker``. The workers are taken out of loky's hands first, under the lock
    loky's own spawning and reaping take (its manager thread, which waits on the sentinels
    of that very dict, then neither waits on them nor sees them die), then
    ``shutdown(wait=False, kill_workers=True)`` makes the manager fail the start no-op if it
    is pending (it holds nothing else) and stop; it is woken before any worker dies, so it
    sees a shutdown, never a broken pool. A worker would only report back by itself after an
    idle timeout, which would make the manager start a replacement, hence that exception.
    """
    if not _laid_out_for_takeover(pool):
        return False
    manager = pool._executor_manager_thread
    with pool._processes_management_lock:
        processes: dict[int, Any] = dict(pool._processes)
        if not all(_is_started_process(p) for p in processes.values()):
            return False
        pool._processes.clear()
    pool.shutdown(wait=False, kill_workers=True)
    for process in processes.values():
        _kill(process)
    for process in processes.values():
        process.join()
    manager.join()
    return True


def _laid_out_for_takeover(pool: loky.ProcessPoolExecutor) -> bool:
    """Whether ``pool`` has the private layout ``stop_unused_workers`` relies on, as loky
    3.4 to 3.7 have it (read in each): a dict of worker processes by pid with its lock, a
    live manager thread that waits on that same dict's workers, no idle timeout, and a
    ``shutdown`` that takes ``kill_workers``. Anything else keeps the usual shutdown."""
    processes = getattr(pool, "_processes", None)
    manager = getattr(pool, "_executor_manager_thread", None)
    return (
        type(processes) is dict
        and hasattr(getattr(pool, "_processes_management_lock", None), "__enter__")
        and isinstance(manager, threading.Thread)
        and manager.is_alive()
        and getattr(manager, "processes", None) is processes
        and "_timeout" in vars(pool)
        and pool._timeout is None
        and _shutdown_takes_kill_workers(type(pool).shutdown)
    )


@functools.cache
def _shutdown_takes_kill_workers(shutdown: Any) -> bool:
    try:
        return "kill_workers" in inspect.signature(shutdown).parameters
    except (AttributeError, TypeError, ValueError):
        return False


def _is_started_process(process: Any) -> bool:
    return isinstance(getattr(process, "pid", None), int) and callable(
        getattr(process, "join", None)
    )


def _kill(process: Any) -> None:
    """SIGKILL by pid on POSIX: loky's own ``Popen`` (its default ``loky`` start method) has
    no ``kill()``, so ``process.kill()`` would fail there and the join after it hang; on
    Windows ``terminate()`` is ``TerminateProcess``. A process known to have exited is not
    signalled (its pid may have been reaped and reused), as the stdlib's ``Popen.kill``
    does; one gone meanwhile is skipped."""
    with contextlib.suppress(OSError, ValueError):
        if process.exitcode is not None:
            return
        if hasattr(signal, "SIGKILL"):
            os.kill(process.pid, signal.SIGKILL)
        else:
            process.terminate()
