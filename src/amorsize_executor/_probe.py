"""The probe: run ``fn`` on the first items in the calling process and measure them.

Mechanism layer. It measures and keeps every result (and the exception, if one is raised,
at its position); it decides nothing about serial or parallel. Clocks, the serializer and
the memory meter are arguments, so tests script them and assert exact figures.

How long it runs is its own small rule: stop when the input ends, when ``fn`` raises, when
the time budget is spent (slow items), at the count cap (very fast items), or once the mean
is stable enough to plan on.
"""

from __future__ import annotations

import gc
import math
import os
import time

try:
    import resource

    _RUSAGE_THREAD: int | None = getattr(resource, "RUSAGE_THREAD", None)
except ImportError:  # Windows
    _RUSAGE_THREAD = None
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import cloudpickle

from ._records import WorkMeasurements

PROBE_BUDGET_S = 0.03
"""Wall-clock budget of the probe. Its results are kept, so this is not wasted work; it only
postpones the moment a pool could start. 30 ms is 2-6% of the shortest jobs a pool can win on
this machine (about 0.5 s), and two slow items fit in it."""

PROBE_MAX_ITEMS = 256
"""Count cap for very fast items: enough for a stable mean, and at a few µs per item still
well under a millisecond."""

PROBE_MIN_ITEMS = 4
"""Items measured at least (when the budget allows) before the estimate can be called stable."""

PROBE_MIN_S = 0.002
"""Wall time measured at least before the estimate can be called stable: below this the
clock's resolution and one-off effects (a first import, a cold cache) dominate."""

FAST_CALL_S = 50e-6
"""Calls faster than this are timed in groups (doubling up to ``MAX_BATCH_ITEMS``): two clock
reads and a context-switch count cost about 1-2 µs, which would swamp a 0.1 µs call."""

MAX_BATCH_ITEMS = 64

STABLE_RELATIVE_ERROR = 0.10
"""The probe may stop once the standard error of the mean per-item time is this share of the
mean."""


@dataclass
class ProbeOutcome:
    """What the probe ran: results in input order, then possibly the exception of the next
    item, and the figures measured."""

    results: list[Any]
    error: BaseException | None
    """Raised by ``fn`` for the item after the last result, or by the input producing it."""
    measurements: WorkMeasurements
    exhausted: bool
    """True when the input ended during the probe: nothing is left to plan for."""
    n_pulled: int = field(default=0)
    """Items taken from the input (results plus the failing one, if any)."""


def _measure_pickling(
    args: list[tuple[Any, ...]],
    results: list[Any],
    dumps: Callable[[object], bytes],
    wall_clock: Callable[[], float],
) -> tuple[float, float, float]:
    """Mean pickled bytes of an item and of a result, and seconds to pickle both, per item.

    Pickled as one list each, as a chunk is: pickling items one by one would charge each
    tiny item the fixed cost of a ``dumps`` call, many times what it costs inside a chunk.
    A size that cannot be pickled is ``inf``.
    """
    n_items = len(args)
    if n_items == 0:
        return 0.0, 0.0, 0.0
    start_s = wall_clock()
    sizes: list[float] = []
    for batch in (args, results):
        try:
            sizes.append(len(dumps(batch)) / n_items)
        except Exception:
            sizes.append(math.inf)
    return sizes[0], sizes[1], (wall_clock() - start_s) / n_items


def probe(
    fn: Callable[..., Any],
    source: Iterator[tuple[Any, ...]],
    *,
    wall_clock: Callable[[], float] = time.perf_counter,
    cpu_clock: Callable[[], float] = time.process_time,
    dumps: Callable[[object], bytes] = cloudpickle.dumps,
    budget_s: float = PROBE_BUDGET_S,
    max_items: int = PROBE_MAX_ITEMS,
    measure_memory: Callable[[Callable[[], Any]], tuple[Any, int]] | None = None,
    voluntary_switches: Callable[[], int | None] | None = None,
    after_timed_call: Callable[[float, float, int], None] | None = None,
) -> ProbeOutcome:
    """Run ``fn(*args)`` for the first items of ``source`` and measure them.

    The second call runs under ``measure_memory`` (peak resident memory by default) to learn
    how much memory a call needs; its timing is left out of the means because the meter's
    own file reads would weigh on a fast call. A slow first call still leaves room for that
    second one (up to twice the budget) so that memory is known whenever there is more input.

    Exceptions raised by ``fn``, or by ``source`` while producing an item, are caught and
    returned, not raised: the caller delivers them at their position. ``after_timed_call``
    is told, after each of the first two timed calls, the wall and CPU seconds of the
    fastest of them so far and how many were timed (the caller may start workers then,
    while the probe goes on).

    The garbage collector is paused while a group of fast calls is timed, as ``timeit``
    does: the argument tuples the probe builds would otherwise trigger a collection of the
    whole heap inside a group now and then, a pause of a millisecond or more in a large
    program, which a sub-microsecond call's figure would carry. Slow calls, the first one
    and the memory-metered one run with the collector as the caller has it, so a call that
    makes cyclic garbage is measured with the memory it really needs.
    """
    return _probe_items(
        fn,
        source,
        wall_clock=wall_clock,
        cpu_clock=cpu_clock,
        dumps=dumps,
        budget_s=budget_s,
        max_items=max_items,
        measure_memory=measure_memory,
        voluntary_switches=voluntary_switches,
        after_timed_call=after_timed_call,
    )


def _probe_items(
    fn: Callable[..., Any],
    source: Iterator[tuple[Any, ...]],
    *,
    wall_clock: Callable[[], float],
    cpu_clock: Callable[[], float],
    dumps: Callable[[object], bytes],
    budget_s: float,
    max_items: int,
    measure_memory: Callable[[Callable[[], Any]], tuple[Any, int]] | None,
    voluntary_switches: Callable[[], int | None] | None,
    after_timed_call: Callable[[float, float, int], None] | None,
) -> ProbeOutcome:
    meter = measure_memory if measure_memory is not None else measure_peak_memory
    switches = voluntary_switches if voluntary_switches is not None else count_voluntary_switches
    switches_total = 0
    results: list[Any] = []
    batch_means: list[float] = []
    timed_wall_s = timed_cpu_s = 0.0
    n_timed = 0
    probed_args: list[tuple[Any, ...]] = []
    memory_bytes = 0
    traced = False
    error: BaseException | None = None
    exhausted = False
    n_pulled = 0
    batch_size = 1
    fastest_call: tuple[float, float] | None = None
    start_s = wall_clock()
    while len(results) < max_items and error is None and not exhausted:
        # The second call runs alone under the memory meter (the first is timed: if it is
        # slow, it may be the only one); a traced call's time is left out of the means.
        tracing = len(results) == 1 and not traced
        size = 1 if tracing else min(batch_size, max_items - len(results))
        batch: list[tuple[Any, ...]] = []
        input_error: BaseException | None = None
        while len(batch) < size:
            try:
                batch.append(next(source))
            except StopIteration:
                exhausted = True
                break
            except Exception as exc:  # the input raised: delivered at its position too
                input_error = exc
                break
        if not batch:
            error = input_error
            break
        n_pulled += len(batch)
        n_before = len(results)
        switches0 = None if tracing else switches()
        wall0, cpu0 = wall_clock(), cpu_clock()
        try:
            if tracing:
                result, memory_bytes = meter(lambda: fn(*batch[0]))  # noqa: B023 - called now
                results.append(result)
                traced = True
            elif len(batch) > 1 and gc.isenabled():
                gc.disable()
                try:
                    for args in batch:
                        results.append(fn(*args))
                finally:
                    gc.enable()
            else:
                for args in batch:
                    results.append(fn(*args))
        except Exception as exc:
            error = exc
        wall1, cpu1 = wall_clock(), cpu_clock()
        probed_args.extend(batch[: len(results) - n_before])
        if error is not None:
            break  # a partial batch's time is not a clean sample
        error = input_error
        if not tracing:
            if len(batch_means) < 2 and after_timed_call is not None:
                # Per call: the second timed group is one call, or two of a fast function.
                call = ((wall1 - wall0) / len(batch), (cpu1 - cpu0) / len(batch))
                fastest_call = call if fastest_call is None else min(fastest_call, call)
                after_timed_call(*fastest_call, len(batch_means) + 1)
            batch_means.append((wall1 - wall0) / len(batch))
            timed_wall_s += wall1 - wall0
            timed_cpu_s += cpu1 - cpu0
            n_timed += len(batch)
            switches1 = switches()
            if switches0 is not None and switches1 is not None and switches_total >= 0:
                switches_total += switches1 - switches0
            else:
                switches_total = -1
            if batch_means[-1] < FAST_CALL_S:
                # Clock reads cost about a microsecond: time fast calls in growing groups.
                batch_size = min(2 * batch_size, MAX_BATCH_ITEMS)
        elapsed_s = wall_clock() - start_s
        if probe_is_done(
            n_items=len(results),
            elapsed_s=elapsed_s,
            trusted=_is_stable(batch_means, elapsed_s),
            budget_s=budget_s,
            max_items=max_items,
            lone_call_grace=True,
        ):
            break

    n_done = len(results)
    item_bytes, result_bytes, pickle_s = _measure_pickling(probed_args, results, dumps, wall_clock)
    if n_timed:
        wall_s, cpu_s = timed_wall_s / n_timed, timed_cpu_s / n_timed
    else:
        wall_s = cpu_s = 0.0
    measurements = WorkMeasurements(
        n_probed=n_done,
        wall_s_per_item=max(0.0, wall_s),
        cpu_s_per_item=max(0.0, cpu_s),
        item_bytes=item_bytes,
        result_bytes=result_bytes,
        pickle_s_per_item=pickle_s,
        memory_bytes_per_call=memory_bytes,
        voluntary_switches_per_item=(
            switches_total / n_timed if n_timed and switches_total >= 0 else None
        ),
    )
    return ProbeOutcome(results, error, measurements, exhausted, n_pulled)


def probe_is_done(
    *,
    n_items: int,
    elapsed_s: float,
    trusted: bool,
    budget_s: float = PROBE_BUDGET_S,
    max_items: int = PROBE_MAX_ITEMS,
    lone_call_grace: bool = False,
) -> bool:
    """The probe's stopping rule, for the probe in the caller and the one in a worker
    (``_worker_probe``): stop once the figure can be trusted, ``max_items`` were measured,
    or ``budget_s`` is spent.

    Args:
        n_items: items measured so far.
        elapsed_s: wall time since the probe began.
        trusted: the measurements so far make a figure to plan on (in the caller: the
            per-item means are stable, ``_is_stable``; in a worker, where each chunk times
            many calls at once: at least ``PROBE_MIN_S`` of compute was measured).
        lone_call_grace: a single call that took the whole budget gets up to twice it for
            a second one (in the caller, where the first call may carry a one-off cost).
    """
    if trusted or n_items >= max_items:
        return True
    if elapsed_s < budget_s:
        return False
    return not (lone_call_grace and n_items == 1 and elapsed_s < 2 * budget_s)


def _is_stable(samples: list[float], elapsed_s: float) -> bool:
    n = len(samples)
    if n < PROBE_MIN_ITEMS or elapsed_s < PROBE_MIN_S:
        return False
    mean = sum(samples) / n
    if mean <= 0:
        return True
    variance = sum((s - mean) ** 2 for s in samples) / (n - 1)
    return math.sqrt(variance / n) <= STABLE_RELATIVE_ERROR * mean


def count_voluntary_switches() -> int | None:
    """Voluntary context switches of the calling thread so far (Linux), else ``None``."""
    if _RUSAGE_THREAD is None:
        return None
    return int(resource.getrusage(_RUSAGE_THREAD).ru_nvcsw)


def measure_peak_memory(call: Callable[[], Any]) -> tuple[Any, int]:
    """Run ``call`` once and return its result and the peak extra resident memory it needed.

    Reads the process's resident set size (RSS) before the call and its high-water mark
    after it, having reset the mark through ``/proc/self/clear_refs`` (Linux): it counts
    every allocation, Python's and native libraries', and costs two small file accesses. It
    does not slow the call, unlike tracemalloc, which slows allocation-heavy code many
    times over. Elsewhere, the growth of the process's lifetime peak (``ru_maxrss``) is used,
    which misses a call whose peak stays under an earlier one. 0 means unknown.
    """
    rss_before = _read_status_bytes("VmRSS:")
    if rss_before is not None and _reset_peak_rss():
        result = call()
        peak = _read_status_bytes("VmHWM:")
        return result, 0 if peak is None else max(0, peak - rss_before)
    peak_before = _lifetime_peak_rss_bytes()
    result = call()
    peak_after = _lifetime_peak_rss_bytes()
    if peak_before is None or peak_after is None:
        return result, 0
    return result, max(0, peak_after - peak_before)


def _read_status_bytes(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` in bytes, or ``None`` where there is none.

    Read with raw system calls: a text-mode ``open`` looks up a codec and builds a buffered
    reader, which on a process's first call costs ten times the read itself."""
    key = field.encode("ascii")
    try:
        fd = os.open("/proc/self/status", os.O_RDONLY)
        try:
            data = os.read(fd, 1 << 16)
        finally:
            os.close(fd)
        start = data.index(key) + len(key)
        return int(data[start : data.index(b"kB", start)]) * 1024
    except (OSError, ValueError):
        return None


def _reset_peak_rss() -> bool:
    try:
        fd = os.open("/proc/self/clear_refs", os.O_WRONLY)
        try:
            os.write(fd, b"5")
        finally:
            os.close(fd)
    except OSError:
        return False
    return True


def _lifetime_peak_rss_bytes() -> int | None:
    try:
        import resource
    except ImportError:
        return None
    peak = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return peak if sys.platform == "darwin" else peak * 1024  # macOS reports bytes
