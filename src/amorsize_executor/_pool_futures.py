"""The stdlib's future semantics on top of a loky pool: the future ``submit()`` returns, and
which calls ``shutdown(cancel_futures=True)`` may still cancel.

Mechanism layer, used by ``_pool_backend``. loky's futures and its ``shutdown`` differ from
the stdlib's in what a user can observe (exception types, ``running()``, what a cancelling
shutdown leaves to complete); these two pieces make them match.
"""

from __future__ import annotations

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
