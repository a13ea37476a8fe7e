"""The backend contract: what a ``map()`` run and the executor need from a pool of workers.

Mechanism layer. Every backend (``PoolBackend``, ``SharedPoolHandle``, ``ThreadBackend``,
``DaskBackend``, the fake in ``tests/fakes.py``, a user's own object passed as ``backend=``)
implements all of ``Backend``. What differs between them is declared, not discovered:

==================  ===============================================================
``runs_in_process``  chunks run in this process (threads): handed over as objects,
                     never pickled
``can_keep_open``    ``keep_open()``/``allow_close()`` hold a ``shutdown(wait=False)``
                     back until the run has resent the items a budgeted chunk handed
                     back; only then do chunks get a time budget
``on_this_machine``  the workers share this machine's cores, so a favourable bound
                     read from this machine may rule a pool out early
``read_facts()``     the facts of where the workers run when the backend knows them
                     itself (a cluster, threads); ``None``: this machine's facts with
                     the backend's start method (``_machine.facts_for``)
==================  ===============================================================
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Protocol

from ._chunk_worker import ChunkPayload, ChunkResult
from ._records import SystemFacts


class Backend(Protocol):
    """What the executor and its ``map()`` runs need from a pool of workers."""

    @property
    def runs_in_process(self) -> bool:
        """Chunks run in this process: ``ChunkPayload.fn``/``items`` are used, not bytes."""
        ...

    @property
    def can_keep_open(self) -> bool:
        """``keep_open()`` really defers a ``shutdown(wait=False)`` (chunk budgets need it)."""
        ...

    @property
    def on_this_machine(self) -> bool:
        """The workers run on this machine's cores (not on a cluster)."""
        ...

    @property
    def n_warm_workers(self) -> int:
        """Workers alive now: starting that many costs nothing."""
        ...

    @property
    def start_method(self) -> str: ...

    def read_facts(self) -> SystemFacts | None:
        """The facts of where the workers run, when this backend knows them itself;
        ``None`` when they are this machine's (read once, in ``_machine``)."""
        ...

    def prepare(self, n_workers: int) -> None:
        """Make at least ``n_workers`` workers available (never more than the user's cap)."""
        ...

    def submit_chunk(self, payload: ChunkPayload) -> Future[ChunkResult]: ...

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]: ...

    def mark_broken(self) -> None:
        """A worker died: the next ``prepare`` replaces the pool."""
        ...

    def terminate_workers(self) -> None:
        """Kill every worker now (stuck or interrupted work); the pool is replaced on next use."""
        ...

    def worker_pids(self) -> list[int]: ...

    def keep_open(self) -> None:
        """Until the matching ``allow_close()``, ``shutdown(wait=False)`` lets the pool run
        on (a no-op where ``can_keep_open`` is false)."""
        ...

    def allow_close(self) -> None:
        """Release one ``keep_open()``; the last one runs a deferred shutdown."""
        ...

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None: ...
