"""The start method of a new pool, and why: the one place that reads what the choice depends
on (``_start_method``: ``multiprocessing``'s default, this process's threads) and asks the
policy (``_worker_policy.choose_start_method``).

Facade layer: it wires a reading to a decision and decides nothing itself. The executor asks
here for its pools' context, for the check of its ``initargs`` and for the reason
``explain()`` shows; the CLI's ``doctor`` and ``explain`` for the start a new pool would get.
"""

from __future__ import annotations

import logging
import multiprocessing
from multiprocessing.context import BaseContext

from . import _start_method, _worker_policy

logger = logging.getLogger("amorsize_executor")


def start_method_now(
    mp_context: BaseContext | None = None, max_tasks_per_child: int | None = None
) -> tuple[str, str]:
    """The start method a new pool with these options would get now, and why: the
    ``mp_context``'s, else the stdlib pool's (``multiprocessing``'s default context)."""
    return _worker_policy.choose_start_method(
        default_method=_start_method.default_start_method(),
        n_os_threads=_start_method.count_os_threads(),
        given_method=None if mp_context is None else str(mp_context.get_start_method()),
        max_tasks_per_child=max_tasks_per_child is not None,
    )


def start_method_reason(
    method: str, mp_context: BaseContext | None, max_tasks_per_child: int | None
) -> str:
    """Why a pool made with these options starts its workers with ``method`` (its start
    method now), for ``explain()``; just the method when it is not the one chosen now (a
    pool started before the program changed the default)."""
    chosen, reason = start_method_now(mp_context, max_tasks_per_child)
    return reason if chosen == method else method


def choose_context() -> BaseContext | None:
    """The multiprocessing context for a new pool when the user gave none (``None``: loky's)."""
    method, reason = start_method_now()
    logger.debug("start method for a new pool: %s", reason)
    return None if method == "loky" else multiprocessing.get_context(method)
