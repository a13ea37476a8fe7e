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


START_ANSWER_WAIT_S = 60.0
"""Longest ``stop_unused_workers`` waits for a pool's start no-op before it leaves the pool to
a graceful shutdown (which would wait for the same start): a bound that only turns a worker
stuck in its start into the graceful path's own wait."""


def stop_unused_workers(pool: loky.ProcessPoolExecutor, first_answer: Future[Any]) -> bool:
    """``shutdown(wait=True)`` for a loky pool whose workers never got any of the caller's
    work: once its start no-op (``first_answer``) answered, the pool holds no work at all,
    and its workers are killed instead of sent a sentinel and joined. Returns ``False``,
    having done nothing, when the no-op failed (a broken pool: shut it down as usual).

    Why: a ``with`` block whose workers were started in the background for a job that then
    ended serially (``_early_start``) waited 3-4 ms here for workers that did nothing once
    they had started, 4.4-4.7 ms while they were starting (2-core VM, 2026-12-02), most of it
    the sentinels' trip through loky's queue feeder thread and each worker waking to exit in
    turn; the kill leaves the kernel's teardown of the processes, side by side (2.2 and 3.9
    ms). loky's own ``kill_workers=True`` is slower (4.5-5 ms: psutil scans every process of
    the machine for each worker's children).

    Safe because: nothing of the caller's ran in them, no initializer of the user's is
    running (the caller's condition), and a worker flushes its standard streams at the end of
    ``init_worker``, so no output is lost; the order keeps loky's manager thread from
    reporting a broken pool: ``shutdown(wait=False)`` sets the shutdown flag and writes the
    manager's wake-up before any worker dies, the manager checks the wake-up before the
    workers' ends (``wait_result_broken_or_wakeup``), sees the shutdown and, with no work
    pending, stops without waiting on the workers again; it then only joins them.
    """
    try:
        if first_answer.exception(timeout=START_ANSWER_WAIT_S) is not None:
            return False
    except Exception:  # cancelled, or still starting after the bound
        return False
    manager = getattr(pool, "_executor_manager_thread", None)
    processes: dict[int, Any] = dict(getattr(pool, "_processes", None) or {})
    pool.shutdown(wait=False)
    for process in processes.values():
        # SIGKILL on POSIX (TerminateProcess on Windows); a process gone already is skipped.
        with contextlib.suppress(OSError, ValueError, AttributeError):
            process.kill()
    if isinstance(manager, threading.Thread):
        manager.join()
    return True
