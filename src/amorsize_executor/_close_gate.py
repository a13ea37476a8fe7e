"""When a backend may really close after ``shutdown()``.

Mechanism layer, shared by every backend that supports time-boxed chunks. A ``map()`` run
whose chunks may hand back unstarted items holds the backend open (``keep_open``) until it
has resent them or ended (``allow_close``). Meanwhile ``shutdown(wait=False)`` must not take
the pool away: the close is deferred to the last ``allow_close``. ``shutdown(wait=True)``
and ``cancel_futures=True`` close at once (the run has then resent everything, or the work
is being dropped).
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class CloseGate:
    """Counts the runs holding a backend open and runs its ``close`` at the right moment.

    ``close(wait, cancel_futures)`` is the backend's own closing; it is called outside the
    gate's lock, at most once per deferred ``shutdown``.
    """

    def __init__(self, close: Callable[[bool, bool], None]) -> None:
        self._close = close
        self._lock = threading.Lock()
        self._n_keeping_open = 0
        self._deferred = False

    @property
    def n_keeping_open(self) -> int:
        return self._n_keeping_open

    @property
    def deferred(self) -> bool:
        """Whether a ``shutdown(wait=False)`` waits for the last ``allow_close``."""
        return self._deferred

    def keep_open(self) -> None:
        with self._lock:
            self._n_keeping_open += 1

    def allow_close(self) -> None:
        with self._lock:
            self._n_keeping_open -= 1
            close_now = self._deferred and self._n_keeping_open == 0
            if close_now:
                self._deferred = False
        if close_now:
            self._close(False, False)

    def shutdown(self, wait: bool, cancel_futures: bool) -> None:
        with self._lock:
            if self._n_keeping_open and not wait and not cancel_futures:
                self._deferred = True
                return
        self._close(wait, cancel_futures)
