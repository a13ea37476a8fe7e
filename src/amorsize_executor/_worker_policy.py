"""How a new pool's workers are set up: which start method, and how many native threads each
may run.

Policy layer: pure functions of numbers and names that the mechanism read (the default start
method, the threads running, the usable cores); no clock, no I/O, no process. Apart from the
cost model because they decide how workers start, not whether and how much to parallelize.
"""

from __future__ import annotations


def choose_start_method(
    *,
    default_method: str,
    n_os_threads: int,
    given_method: str | None = None,
    max_tasks_per_child: bool = False,
) -> tuple[str, str]:
    """How a new pool starts its workers, and why.

    ``given_method`` is the start method of the ``mp_context`` the user gave: it is followed.
    Without one, ``max_tasks_per_child`` gets ``spawn``, as the stdlib pool does (it refuses
    ``fork`` with that option). Otherwise, as the stdlib ``ProcessPoolExecutor`` would
    start them in the same program: with ``multiprocessing``'s default context
    (``default_method``: ``fork`` on Linux through Python 3.13, ``forkserver`` from 3.14,
    ``spawn`` on macOS and Windows, or whatever the program set with
    ``multiprocessing.set_start_method``). That makes a fresh pool start as
    fast as the stdlib's, threads or not, and lets objects made by the default context
    (``multiprocessing.Lock()``, ``Queue()``, ...) reach the workers as they reach the
    stdlib's. Forking a process that runs threads is what the stdlib does through 3.13: a
    thread holding a lock at the fork could leave the child stuck, which CPython's own locks,
    glibc's malloc and OpenBLAS guard against with at-fork handlers; a program that needs
    more passes ``mp_context`` or sets the start method, and both are followed. A ``spawn``
    default gets loky's own start instead: also a fresh interpreter per worker, at about the
    same cost, and ``fn`` need not be importable from ``__main__``.
    """
    if given_method is not None:
        return given_method, f"{given_method}: the mp_context given"
    if max_tasks_per_child:
        return "spawn", "spawn: max_tasks_per_child without mp_context, as the stdlib pool does"
    threads = f"{n_os_threads} thread(s) running"
    if default_method in ("fork", "forkserver"):
        return default_method, (
            f"{default_method}: multiprocessing's default start method here, as the stdlib "
            f"pool would use ({threads}; mp_context= or "
            "multiprocessing.set_start_method() choose another)"
        )
    return "loky", (
        f"loky: multiprocessing's default here is {default_method!r}; loky starts a fresh "
        f"interpreter per worker the same way ({threads}; mp_context= chooses another)"
    )


def choose_threads_per_worker(n_usable_cores: int, n_workers: int) -> int:
    """Native threads (BLAS, OpenMP) each worker may run so that workers x threads stays
    within the usable cores: oversubscribed cores thrash caches and lose time switching."""
    return max(1, n_usable_cores // max(1, n_workers))
