"""The one place that assembles the facts a plan is made on.

Mechanism layer. The executor, its ``map()`` runs and the CLI all ask here:

- ``machine_facts()``: this machine's cores and memory, shared by every executor in the
  process and re-read when older than ``FACTS_MAX_AGE_S``;
- ``facts_for(backend)``: the facts of where ``backend``'s workers run, its own when it
  reads them itself (a cluster, threads), else this machine's with the backend's start
  method (and why it is that one, for ``explain()``), its start cost (measured and cached
  on disk, or the estimate) and warm workers;
- ``facts_for_start_method(method)``: what a new pool started with ``method`` would plan
  with (the CLI's view of a fresh executor: nothing cached in memory, no warm worker).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable

from . import _start_cost_cache, _system_facts
from ._backend import Backend
from ._records import SystemFacts

FACTS_MAX_AGE_S = 1.0
"""Machine facts (free memory above all) are re-read when older than this: fresh enough for
memory that changes over seconds, and it keeps a burst of small ``map()`` calls from paying
about 0.4 ms each to read cgroup files."""

_machine_facts_cache: tuple[float, SystemFacts] | None = None
_machine_facts_lock = threading.Lock()


def machine_facts() -> SystemFacts:
    """This machine's facts, shared by every executor in the process and re-read when older
    than ``FACTS_MAX_AGE_S``."""
    global _machine_facts_cache
    with _machine_facts_lock:
        now_s = time.monotonic()
        if _machine_facts_cache is None or now_s - _machine_facts_cache[0] >= FACTS_MAX_AGE_S:
            _machine_facts_cache = (now_s, _system_facts.read_system_facts("loky"))
        return _machine_facts_cache[1]


def _no_reason(method: str) -> str:
    return ""


def facts_for(
    backend: Backend, *, start_method_reason: Callable[[str], str] = _no_reason
) -> SystemFacts:
    """Facts for a plan on ``backend`` (see the module docstring). ``start_method_reason``
    says why workers start with the backend's start method (asked only for a process pool
    on this machine)."""
    own = backend.read_facts()
    if own is not None:  # a cluster or threads: the backend knows its own facts
        return own
    method = backend.start_method
    measured_s = _start_cost_cache.load_worker_start_s(method)
    return dataclasses.replace(
        machine_facts(),
        start_method=method,
        n_warm_workers=backend.n_warm_workers,
        worker_start_s=(
            measured_s if measured_s is not None else _system_facts.estimate_worker_start_s(method)
        ),
        worker_start_source="measured" if measured_s is not None else "estimate",
        start_method_reason=start_method_reason(method),
    )


def facts_for_start_method(method: str) -> SystemFacts:
    """The facts a new executor would plan with (no warm workers) using ``method``, read
    now (not from the process-wide cache)."""
    cached_s = _start_cost_cache.load_worker_start_s(method)
    return _system_facts.read_system_facts(
        method,
        worker_start_s=cached_s,
        worker_start_source="measured" if cached_s is not None else "estimate",
    )
