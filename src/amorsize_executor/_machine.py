"""The one place that assembles the facts a plan is made on.

Mechanism layer. The executor, its ``map()`` runs and the CLI all ask here:

- ``machine_facts()``: this machine's cores and memory, shared by every executor in the
  process and re-read when older than ``FACTS_MAX_AGE_S``;
- ``core_facts()``: the cores alone, for a pool sized without a plan (``submit()``'s);
- ``facts_for(backend)``: the facts of where ``backend``'s workers run, its own when it
  reads them itself (a cluster, threads), else this machine's with the backend's start
  method (and why it is that one, for ``explain()``), its start cost (measured and cached
  on disk, or the estimate) and warm workers;
- ``facts_for_start_method(method)``: what a new pool started with ``method`` would plan
  with (the CLI's view of a fresh executor: nothing cached in memory, no warm worker).
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable

from . import _start_cost_cache, _system_facts
from ._backend import Backend
from ._records import CoreFacts, SystemFacts

FACTS_MAX_AGE_S = 1.0
"""Machine facts (free memory above all) are re-read when older than this: fresh enough for
memory that changes over seconds, and it keeps a burst of small ``map()`` calls from paying
about 0.4 ms each to read cgroup files."""

_machine_facts_cache: tuple[float, SystemFacts] | None = None
_core_facts_cache: tuple[float, CoreFacts] | None = None
_machine_facts_lock = threading.Lock()

_start_cost_memo: dict[tuple[str, str], tuple[tuple[int, int, int], float | None]] = {}
"""The on-disk start cost per (start method, cache file), with the file's inode, modification
time and size when it was read: read again only once the file changed (a store writes a new
file and renames it over the old one, so the inode changes even where times are coarse). A
``map()`` that starts workers during its probe reads its facts twice in a few milliseconds;
each read of the file took 0.2-0.7 ms on the 2-core VM while the new workers were booting
(2026-12-02), a ``stat`` a few microseconds."""


def machine_facts() -> SystemFacts:
    """This machine's facts, shared by every executor in the process and re-read when older
    than ``FACTS_MAX_AGE_S``."""
    global _machine_facts_cache
    with _machine_facts_lock:
        now_s = time.monotonic()
        if _machine_facts_cache is None or now_s - _machine_facts_cache[0] >= FACTS_MAX_AGE_S:
            _machine_facts_cache = (now_s, _system_facts.read_system_facts("loky"))
        return _machine_facts_cache[1]


def core_facts() -> CoreFacts:
    """The cores this process may use, for sizing a pool without a plan: from the shared
    ``machine_facts()`` while they are fresh, else read alone (no memory files) and kept as
    long (a fresh executor's first ``submit()`` asks twice before its pool forks: its size,
    its workers' thread share)."""
    global _core_facts_cache
    with _machine_facts_lock:
        now_s = time.monotonic()
        full = _machine_facts_cache
        if full is not None and now_s - full[0] < FACTS_MAX_AGE_S:
            facts = full[1]
            return CoreFacts(
                n_logical_cores=facts.n_logical_cores,
                n_physical_cores=facts.n_physical_cores,
                n_affinity_cores=facts.n_affinity_cores,
                cpu_quota_cores=facts.cpu_quota_cores,
                env_core_limit=facts.env_core_limit,
            )
        if _core_facts_cache is None or now_s - _core_facts_cache[0] >= FACTS_MAX_AGE_S:
            _core_facts_cache = (now_s, _system_facts.read_core_facts())
        return _core_facts_cache[1]


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
    measured_s = _cached_start_s(method)
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


def _cached_start_s(method: str) -> float | None:
    """``_start_cost_cache.load_worker_start_s(method)``, read again only when the cache
    file changed (see ``_start_cost_memo``)."""
    path = _start_cost_cache.default_cache_path()
    key = (method, str(path))
    try:
        stat = os.stat(path)
        version = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
    except OSError:
        version = (-1, -1, -1)  # no file (yet): nothing is cached, until one is written
    with _machine_facts_lock:
        memo = _start_cost_memo.get(key)
        if memo is not None and memo[0] == version:
            return memo[1]
    measured_s = _start_cost_cache.load_worker_start_s(method, path)
    with _machine_facts_lock:
        _start_cost_memo[key] = (version, measured_s)
    return measured_s


def facts_for_start_method(method: str) -> SystemFacts:
    """The facts a new executor would plan with (no warm workers) using ``method``, read
    now (not from the process-wide cache)."""
    cached_s = _start_cost_cache.load_worker_start_s(method)
    return _system_facts.read_system_facts(
        method,
        worker_start_s=cached_s,
        worker_start_source="measured" if cached_s is not None else "estimate",
    )
