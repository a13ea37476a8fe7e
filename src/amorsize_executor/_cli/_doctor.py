"""``doctor``: what a new executor sees on this machine (cores and their limits, memory, the
start method and its cost, versions, environment overrides), as text or JSON."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import importlib.util
import multiprocessing
import os
import platform
import sys
import time
from collections.abc import Mapping
from multiprocessing.context import BaseContext
from typing import Any

import psutil

from .. import (
    _cost_model,
    _machine,
    _start_cost_cache,
    _start_method,
    _start_recorder,
    _system_facts,
    _worker_policy,
)
from .._executor import AdaptiveProcessPoolExecutor
from .._records import SystemFacts
from .._start_choice import start_method_now
from ._common import EXIT_FUNCTION_RAISED, EXIT_OK, __version__, _prog_name
from ._reports import (
    _bytes_text,
    _check_export_path,
    _emit,
    _load_report,
    _make_report,
    _seconds_text,
)

MEASURE_TIMEOUT_S = 120.0
"""How long ``doctor --measure`` waits for its one worker to answer. Generous: it exists
only to turn a worker that never starts into an error instead of a hang."""

_START_METHOD_ORDER = ("fork", "forkserver", "spawn", "loky")


def _run_doctor(args: argparse.Namespace) -> int:
    previous = _load_report(args.compare_with) if args.compare_with is not None else None
    _check_export_path(args.export)
    # Before measuring: the pool's threads take a moment to end after it shuts down, and
    # would make this process look multi-threaded.
    start = _start_method_now()
    measured = None if args.measure is None else _measure_worker_start(args.measure, start)
    report = _make_report("doctor", _machine_report(start, measured), None)
    _emit(args, report, _format_doctor(report["machine"]), previous)
    if measured is not None and measured["error"] is not None:
        print(
            f"{_prog_name()} doctor: error: could not start a worker to measure: "
            f"{measured['error']}",
            file=sys.stderr,
        )
        return EXIT_FUNCTION_RAISED
    return EXIT_OK


def _available_start_methods() -> list[str]:
    """Start methods this platform offers, and loky's own (a fresh interpreter)."""
    methods = [*multiprocessing.get_all_start_methods(), "loky"]
    rank = {method: position for position, method in enumerate(_START_METHOD_ORDER)}
    return sorted(methods, key=lambda method: rank.get(method, len(rank)))


_StartChoice = tuple[str, str, int]
"""``(start method, reason, this process's thread count)``."""


def _start_method_now() -> _StartChoice:
    """The start method a pool created now would use, why, and this process's thread count,
    decided as ``_start_choice.choose_context`` decides it."""
    method, reason = start_method_now()
    return method, reason, _start_method.count_os_threads()


def _facts_for(start: _StartChoice) -> SystemFacts:
    """The facts a new executor would plan with (no warm workers) using ``start``."""
    return _machine.facts_for_start_method(start[0])


def _context_for(method: str) -> BaseContext | None:
    if method == "auto":
        return None
    if method == "loky":
        from loky.backend.context import get_context

        context: BaseContext = get_context("loky")
        return context
    return multiprocessing.get_context(method)


_NOT_STORED = (
    "not stored: the cached samples already say as much (it is within their range and near "
    "their median), or the cache file could not be written"
)
"""Why a measurement may leave the cache as it was (``_start_cost_cache.record_worker_start_s``
skips a sample close to what a full set says)."""


def _measure_worker_start(method: str, start: _StartChoice) -> dict[str, Any]:
    """Start a 1-worker pool and time it until a no-op answers. The executor's backend
    stores the figure in the start-cost cache, as it does for every new pool; that stored
    figure is the one reported (the wall time around it also counts making the executor)."""
    measured_method = start[0] if method == "auto" else method
    samples_before = _start_cost_cache.worker_start_samples_s(measured_method)
    started_s = time.perf_counter()
    try:
        with AdaptiveProcessPoolExecutor(max_workers=1, mp_context=_context_for(method)) as pool:
            pool.submit(int).result(timeout=MEASURE_TIMEOUT_S)
            elapsed_s: float | None = time.perf_counter() - started_s
        error = None
    except Exception as exc:
        elapsed_s, error = None, f"{type(exc).__name__}: {exc}"
    _start_recorder.finish_pending_records()  # the pool's sample, written after its shutdown
    samples_after = _start_cost_cache.worker_start_samples_s(measured_method)
    stored = error is None and samples_after != samples_before and bool(samples_after)
    return {
        "start_method": measured_method,
        "worker_start_s": samples_after[-1] if stored else elapsed_s,
        "stored": stored,
        "error": error,
    }


def _machine_report(start: _StartChoice, measured: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a new executor sees, as JSON-ready data (see ``_format_doctor``)."""
    method, reason, n_threads = start
    facts = _facts_for(start)
    n_cpu_bound, cpu_bound_limit = _cost_model.choose_usable_cores(facts, cpu_bound=True)
    n_waiting, waiting_limit = _cost_model.choose_usable_cores(facts, cpu_bound=False)
    # What a program running more threads than this one would get instead.
    busy_method, _ = _worker_policy.choose_start_method(
        default_method=_start_method.default_start_method(), n_os_threads=n_threads + 1
    )
    by_method: dict[str, dict[str, Any]] = {}
    for each in _available_start_methods():
        cached_s = _start_cost_cache.load_worker_start_s(each)
        by_method[each] = {
            "worker_start_s": cached_s
            if cached_s is not None
            else _system_facts.estimate_worker_start_s(each),
            "source": "measured" if cached_s is not None else "estimate",
        }
    cache_path = _start_cost_cache.default_cache_path()
    memory = psutil.virtual_memory()
    return {
        "platform": {
            "system": platform.system(),
            "release": platform.release(),
            "machine": platform.machine(),
        },
        "cores": {
            "n_logical": facts.n_logical_cores,
            "n_physical": facts.n_physical_cores,
            "n_affinity": facts.n_affinity_cores,
            "cgroup_quota_cores": facts.cpu_quota_cores,
            "env_core_limit": facts.env_core_limit,
            "n_usable_cpu_bound": n_cpu_bound,
            "cpu_bound_limited_by": cpu_bound_limit,
            "n_usable_waiting": n_waiting,
            "waiting_limited_by": waiting_limit,
        },
        "memory": {
            "available_bytes": facts.available_memory_bytes,
            "os_available_bytes": int(memory.available),
            "os_total_bytes": int(memory.total),
            "cgroup_headroom_bytes": _system_facts.read_cgroup_memory_headroom_bytes(),
        },
        "workers": {
            "start_method": method,
            "start_method_reason": reason,
            "n_threads": n_threads,
            "start_method_with_more_threads": busy_method,
            "start_methods_available": _available_start_methods(),
            "worker_start_s": facts.worker_start_s,
            "worker_start_source": facts.worker_start_source,
            "worker_start_by_method": by_method,
            "cache_path": str(cache_path),
            "cache_exists": cache_path.is_file(),
            "measured_now": measured,
        },
        "versions": _versions(),
        "environment": {
            _system_facts.ENV_MAX_WORKERS: os.environ.get(_system_facts.ENV_MAX_WORKERS),
            _start_cost_cache.ENV_CACHE_DIR: os.environ.get(_start_cost_cache.ENV_CACHE_DIR),
        },
    }


def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {
        "python": f"{platform.python_version()} ({platform.python_implementation()})",
        "amorsize-executor": __version__,
    }
    for distribution in ("loky", "cloudpickle", "psutil", "tqdm"):
        try:
            versions[distribution] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            versions[distribution] = None
    return versions


def _format_doctor(machine: Mapping[str, Any]) -> str:
    cores = _section(machine, "cores")
    memory = _section(machine, "memory")
    workers = _section(machine, "workers")
    env = _section(machine, "environment")
    prog = _prog_name()
    quota = cores.get("cgroup_quota_cores")
    headroom = memory.get("cgroup_headroom_bytes")
    method = workers.get("start_method")
    source = workers.get("worker_start_source")
    if source == "measured":
        start_note = "measured on this machine: the median of the cached samples"
    else:
        start_note = f"estimate: nothing measured here yet; `{prog} doctor --measure` measures"
    lines = [
        f"amorsize-executor {__version__}: what a new executor sees on this machine",
        "",
        "cores",
        _row("logical", f"{cores.get('n_logical')} (os.cpu_count)"),
        _row("physical", f"{_or_unknown(cores.get('n_physical'))} (psutil)"),
        _row("affinity", f"{_or_unknown(cores.get('n_affinity'))} (CPUs this process may use)"),
        _row("cgroup CPU quota", "none" if quota is None else f"{quota:g} cores"),
        _row("environment cap", _env_cap_text(cores.get("env_core_limit"), env)),
        _row(
            "usable",
            f"{cores.get('n_usable_cpu_bound')} for CPU-bound work (limited by "
            f"{cores.get('cpu_bound_limited_by')}); {cores.get('n_usable_waiting')} for "
            f"work that waits (limited by {cores.get('waiting_limited_by')})",
        ),
        "memory",
        _row("available", f"{_bytes_text(memory.get('available_bytes'))} for new workers"),
        _row(
            "OS available",
            f"{_bytes_text(memory.get('os_available_bytes'))} of "
            f"{_bytes_text(memory.get('os_total_bytes'))}",
        ),
        _row(
            "cgroup headroom",
            "no limit" if headroom is None else f"{_bytes_text(headroom)} below the limit",
        ),
        "workers",
        _row("start method now", f"{workers.get('start_method_reason')}"),
        _row("", _threads_note(workers)),
        _row("start methods", ", ".join(workers.get("start_methods_available") or [])),
        _row(
            "worker start cost",
            f"{_seconds_text(workers.get('worker_start_s'))} with {method} ({start_note})",
        ),
    ]
    by_method = workers.get("worker_start_by_method") or {}
    lines.append(
        _row(
            "  by method",
            "; ".join(
                f"{name} {_seconds_text(entry.get('worker_start_s'))} ({entry.get('source')})"
                for name, entry in by_method.items()
            ),
        )
    )
    measured = workers.get("measured_now")
    if measured:
        if measured.get("error"):
            lines.append(_row("measured now", f"failed: {measured.get('error')}"))
        else:
            lines.append(
                _row(
                    "measured now",
                    f"{_seconds_text(measured.get('worker_start_s'))} to start 1 "
                    f"{measured.get('start_method')} worker and run a no-op "
                    f"({'stored' if measured.get('stored', True) else _NOT_STORED})",
                )
            )
    cache_state = "exists" if workers.get("cache_exists") else "not written yet"
    lines += [
        _row("cache file", f"{workers.get('cache_path')} ({cache_state})"),
        "versions",
    ]
    for name, version in (machine.get("versions") or {}).items():
        lines.append(_row(name, "not installed" if version is None else str(version)))
    lines.append("environment")
    for name, value in env.items():
        lines.append(_row(name, "unset" if value is None else repr(value)))
    return "\n".join(lines)


def _threads_note(workers: Mapping[str, Any]) -> str:
    n_threads = workers.get("n_threads")
    note = f"(this process runs {n_threads} thread{'' if n_threads == 1 else 's'}"
    other = workers.get("start_method_with_more_threads")
    if other and other != workers.get("start_method"):
        note += f"; a program running more threads gets {other}"
    return note + ")"


def _env_cap_text(limit: object, env: Mapping[str, Any]) -> str:
    raw = env.get(_system_facts.ENV_MAX_WORKERS)
    if raw is None:
        return f"none ({_system_facts.ENV_MAX_WORKERS} unset)"
    if limit is None:
        return f"none ({_system_facts.ENV_MAX_WORKERS}={raw!r} is not a positive int: ignored)"
    return f"{limit} ({_system_facts.ENV_MAX_WORKERS}={raw!r})"


def _row(label: str, value: str) -> str:
    return f"  {label:<20} {value}".rstrip()


def _section(report: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = report.get(key)
    return value if isinstance(value, Mapping) else {}


def _or_unknown(value: object) -> str:
    return "unknown" if value is None else str(value)
