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
    of sent a sentinel and joined. Returns ``False``, having done nothing, for a pool whose
    workers exit on their own after an idle timeout (see below): shut it down as usual.

    Why: a ``with`` block whose workers were started in the background for a job that then
    ended serially (``_early_start``) waited 3-4 ms here for workers that did nothing once
    they had started, 4.4-4.7 ms while they were starting (2-core VM, 2026-12-02): the
    start, then the sentinels' trip through loky's queue feeder thread and each worker
    waking to exit in turn. loky's own ``kill_workers=True`` is slower still (4.5-5 ms:
    psutil scans every process of the machine for each worker's children).

    Safe because: nothing of the caller's ran in them and no initializer of the user's
    is running (the caller's conditions); a worker flushes its standard streams at the end
    of ``init_worker``. The workers are taken out of loky's hands first (its manager thread
    then neither waits on them nor sees them die), then ``shutdown(wait=False,
    kill_workers=True)`` makes the manager fail the start no-op if it is pending (it holds
    nothing else) and stop; a worker would only report back by itself after an idle
    timeout, which would make the manager start a replacement, hence the exception.
    """
    if getattr(pool, "_timeout", None) is not None:
        return False
    manager = getattr(pool, "_executor_manager_thread", None)
    with pool._processes_management_lock:
        processes: dict[int, Any] = dict(pool._processes)
        pool._processes.clear()
    pool.shutdown(wait=False, kill_workers=True)
    for process in processes.values():
        _kill(process)
    for process in processes.values():
        process.join()
    if isinstance(manager, threading.Thread):
        manager.join()
    return True


def _kill(process: Any) -> None:
    """SIGKILL by pid on POSIX: loky's own ``Popen`` (its default ``loky`` start method) has
    no ``kill()``, so ``process.kill()`` would fail there and the join after it hang; on
    Windows ``terminate()`` is ``TerminateProcess``. A process gone already is skipped."""
    with contextlib.suppress(OSError, TypeError):
        if hasattr(signal, "SIGKILL"):
            os.kill(process.pid, signal.SIGKILL)
        else:
            process.terminate()
