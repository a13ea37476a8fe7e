"""The stdlib process pool used for ``max_tasks_per_child``, with the two ways it can leave
queued work unrun fixed: workers that exit at their limit are always replaced, and
``shutdown(wait=False)`` still runs the work already given.

Mechanism layer, used by ``_pool_backend``. It overrides two methods of the stdlib pool and
reads its private attributes (``_processes``, ``_spawn_process``, ``_max_workers``, the
shutdown flags), the same on Python 3.11 to 3.13; where ``_spawn_process`` is missing it falls
back to the stdlib's own behaviour.
"""

from __future__ import annotations

import concurrent.futures
import functools
import threading
from collections.abc import Callable
from typing import Any


class RecyclingProcessPool(concurrent.futures.ProcessPoolExecutor):
    """The stdlib pool for ``max_tasks_per_child``, which replaces every worker that exits at
    its limit.

    The stdlib's own pool (3.11 to 3.13.0 at least; CPython gh-115634) asks its
    ``_idle_worker_semaphore`` whether to replace such a worker. That semaphore counts tasks
    finished, not workers idle: a task that finished while others were queued leaves a token
    that can outlive its worker, the replacement is skipped, and once the last worker has
    exited the queued chunks wait for ever (``map()`` hangs waiting for its oldest chunk,
    the pool's manager thread waits for results from no worker). Whether a token is left
    when a worker exits depends on whether the next chunk was submitted first: a race,
    which is why it hung only sometimes. Here the pool is kept at ``max_workers`` workers,
    as a loky pool is, on the count of its processes alone (CPython's own fix also replaces
    on that count); each ``submit()`` then starts one missing worker (as the stdlib's pool
    starts one per call), and the semaphore is not read.
    """

    def _adjust_process_count(self) -> None:
        # Read once: ``shutdown(wait=False)`` drops the pool's processes and queues, and a
        # worker exiting after that cannot be replaced (the stdlib leaves its work unrun).
        processes: dict[int, Any] | None = getattr(self, "_processes", None)
        spawn: Callable[[], None] | None = getattr(self, "_spawn_process", None)
        max_workers: int | None = getattr(self, "_max_workers", None)
        # A stdlib whose pool no longer starts workers this way keeps its own behaviour.
        if spawn is None or max_workers is None:
            super()._adjust_process_count()
            return
        if processes is not None and len(processes) < max_workers:
            spawn()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """As the stdlib's, but without waiting the pool still runs the work it was given.

        The stdlib's ``shutdown(wait=False)`` drops the pool's processes and queues at once,
        and its manager thread holds the pool only weakly: a worker exiting at its limit
        after that is never replaced and the work still queued never runs (CPython
        gh-119592), so results already asked for never come and the interpreter's exit,
        which waits for that work, hangs. Here a thread does the waiting shutdown, holding
        the pool until its work is done; new work is refused at once, as the stdlib does.
        """
        if wait:
            super().shutdown(wait=True, cancel_futures=cancel_futures)
            return
        with self._shutdown_lock:
            self._cancel_pending_futures = cancel_futures
            self._shutdown_thread = True
            if self._executor_manager_thread_wakeup is not None:
                self._executor_manager_thread_wakeup.wakeup()
        finish = functools.partial(super().shutdown, wait=True, cancel_futures=cancel_futures)
        try:
            threading.Thread(target=finish, name="max-tasks-pool-shutdown", daemon=True).start()
        except RuntimeError:  # the interpreter is shutting down: no new thread
            super().shutdown(wait=False, cancel_futures=cancel_futures)
