"""The probe: run ``fn`` on the first items in the calling process and measure them.

Mechanism layer. It hands each result on as soon as its call returned (``probe_stream``
yields them; ``_probe_calls`` keeps the consumer's time out of the figures) and returns the
exception, if one is raised, for its position; it decides nothing about serial or parallel.
Clocks, the serializer and the memory meter are arguments, so tests script them and assert
exact figures.

How long it runs is its own small rule: stop when the input ends, when ``fn`` raises, when
the time budget is spent (slow items), at the count cap (very fast items), or once the mean
is stable enough to plan on. It never stops on one call alone (a first call is often cold:
imports, caches, lazy set-up), unless the caller judges that call long enough to plan on
(``plan_on_lone_call``), and a first call that a later one shows to have been cold
(``first_call_is_cold``) is left out of the means and needs a warm timed call after it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

import cloudpickle

from ._meters import count_voluntary_switches, measure_peak_memory
from ._probe_calls import HandOns, PickledSize, in_sample
from ._probe_figures import COLD_CALL_FACTOR as COLD_CALL_FACTOR
from ._probe_figures import METERED_CALL_MIN_S as METERED_CALL_MIN_S
from ._probe_figures import TRIVIAL_CALL_S as TRIVIAL_CALL_S
from ._probe_figures import TRIVIAL_GROUP_ITEMS as TRIVIAL_GROUP_ITEMS
from ._probe_figures import TimedCalls
from ._probe_figures import first_call_is_cold as first_call_is_cold
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

WAITING_WORKERS_MIN_S = 0.002
"""With workers warm, the probe stops once it has two calls and this much time: each
further call in the caller is one the workers could have run. 2 ms still measures hundreds of
fast calls (their figure is stable by then); a slow call's figure is corrected by the chunks'
own. Measured: 30 items of 10 ms in a program whose pool was already warm, the probe's third
call made the job about 6% slower than the stdlib pool."""

STABLE_RELATIVE_ERROR = 0.10
"""The probe may stop once the standard error of the mean per-item time is this share of the
mean."""


@dataclass
class ProbeOutcome:
    """What the probe ran: results in input order (collected by ``probe`` only: the stream
    hands them on), then possibly the exception of the next item, and the figures measured."""

    results: list[Any]
    error: BaseException | None
    """Raised by ``fn`` for the item after the last result, or by the input producing it."""
    measurements: WorkMeasurements
    exhausted: bool
    """True when the input ended during the probe: nothing is left to plan for."""
    n_pulled: int = field(default=0)
    """Items taken from the input (results plus the failing one, if any)."""


def probe(
    fn: Callable[..., Any],
    source: Iterator[tuple[Any, ...]],
    **options: Any,
) -> ProbeOutcome:
    """``probe_stream`` run to its end, its results collected into the outcome (the
    command line's ``explain``, tests); ``options`` are ``probe_stream``'s."""
    results: list[Any] = []
    stream = probe_stream(fn, source, **options)
    while True:
        try:
            results.append(next(stream))
        except StopIteration as stop:
            outcome: ProbeOutcome = stop.value
            outcome.results = results
            return outcome


def probe_stream(
    fn: Callable[..., Any],
    source: Iterator[tuple[Any, ...]],
    *,
    wall_clock: Callable[[], float] = time.perf_counter,
    cpu_clock: Callable[[], float] = time.process_time,
    dumps: Callable[[object], bytes] = cloudpickle.dumps,
    result_size: Callable[[object], float] | None = None,
    budget_s: float = PROBE_BUDGET_S,
    max_items: int = PROBE_MAX_ITEMS,
    workers_waiting: Callable[[], bool] = lambda: False,
    measure_memory: Callable[[Callable[[], Any]], tuple[Any, int]] | None = None,
    voluntary_switches: Callable[[], int | None] | None = None,
    after_timed_call: Callable[[float, float, int], None] | None = None,
    plan_on_lone_call: Callable[[float, float], int | None] | None = None,
) -> Generator[Any, None, ProbeOutcome]:
    """Run ``fn(*args)`` for the first items of ``source`` and measure them, yielding each
    result as soon as its call returned; returns the outcome (without the results, which
    the probe does not keep: a result the consumer dropped is freed).

    Between two results the consumer has control: the time it takes (and pickling a result
    to measure its size, by ``result_size``, by default one reused pickler, for a sample of
    the results: ``_probe_calls.HandOns.sizes_result``) counts neither as ``fn``'s wall or
    CPU time nor against the budget (``_probe_calls``). The items' arguments are pickled
    once at the end, as one list (``dumps``), as a chunk is: those of the same sample
    (``_probe_calls.next_in_sample``).

    The second call runs alone under ``measure_memory`` (peak resident memory by default)
    to learn how much memory a call needs, unless the first call was faster than
    ``METERED_CALL_MIN_S`` (too fast to need memory that matters: 0 is reported); its timing
    is left out of the means because the meter's own file reads would weigh on a fast call.
    A slow first call still leaves room for that second one (up to twice the budget) so that
    memory is known whenever there is more input.

    Exceptions raised by ``fn``, or by ``source`` while producing an item, are caught and
    returned, not raised: the caller delivers them at their position. ``after_timed_call``
    is told, after the second call and after the timed group that follows it, the wall and
    CPU seconds of the fastest call so far and how many calls that is the fastest of (the
    caller may start workers then, while the probe goes on); never after the first call
    alone, which may be cold. Time spent in it does not count against the budget.

    ``plan_on_lone_call`` is asked, after a first call timed alone with more input left, with
    that call's wall and CPU seconds: a memory figure in bytes (an upper bound, since the
    call ran unmetered) means the probe stops on that call and reports the figure; ``None``
    means it goes on as usual (see ``_early_start.lone_call_is_enough``).

    A first call that the second shows to have been cold (``first_call_is_cold``) is left
    out of the means, and the probe does not stop before a warm call has been timed; the
    excess is reported as ``first_call_extra_s``. ``workers_waiting`` says whether warm
    workers are there (started before, or during the probe), which further calls here would
    keep from work: then two calls and ``WAITING_WORKERS_MIN_S`` are enough.

    The garbage collector is paused while a group of fast calls runs, as ``timeit`` does
    (resumed whenever a result is handed on): the argument tuples the probe builds would
    otherwise trigger a collection of the whole heap inside a group now and then, a pause
    of a millisecond or more in a large program, which a sub-microsecond call's figure
    would carry. Slow calls, the first one and the memory-metered one run with the
    collector as the caller has it, so a call that makes cyclic garbage is measured with
    the memory it really needs. The voluntary context switches of a group are counted
    around it, the consumer's included.
    """
    return _probe_items(
        fn,
        source,
        HandOns(wall_clock, cpu_clock, result_size if result_size is not None else PickledSize()),
        dumps=dumps,
        budget_s=budget_s,
        max_items=max_items,
        workers_waiting=workers_waiting,
        meter=measure_memory if measure_memory is not None else measure_peak_memory,
        switches=voluntary_switches
        if voluntary_switches is not None
        else count_voluntary_switches,
        after_timed_call=after_timed_call,
        plan_on_lone_call=plan_on_lone_call,
    )


def _probe_items(
    fn: Callable[..., Any],
    source: Iterator[tuple[Any, ...]],
    hand_ons: HandOns,
    *,
    dumps: Callable[[object], bytes],
    budget_s: float,
    max_items: int,
    workers_waiting: Callable[[], bool],
    meter: Callable[[Callable[[], Any]], tuple[Any, int]],
    switches: Callable[[], int | None],
    after_timed_call: Callable[[float, float, int], None] | None,
    plan_on_lone_call: Callable[[float, float], int | None] | None = None,
) -> Generator[Any, None, ProbeOutcome]:
    wall_clock = hand_ons.wall_clock
    timed = TimedCalls()
    probed_args: list[tuple[Any, ...]] = []
    memory_bytes = 0
    traced = False
    error: BaseException | None = None
    exhausted = False
    n_pulled = 0
    batch_size = 1
    early = _EarlyReports(after_timed_call, wall_clock)
    start_s = wall_clock()
    while hand_ons.n_results < max_items and error is None and not exhausted:
        # The second call runs alone under the memory meter (the first is timed: if it is
        # slow, it may be the only one); a traced call's time is left out of the means.
        n_before = hand_ons.n_results
        tracing = n_before == 1 and not traced
        size = 1 if tracing else min(batch_size, max_items - n_before)
        batch, exhausted, input_error = _take(source, size)
        if not batch:
            error = input_error
            break
        n_pulled += len(batch)
        away_s = hand_ons.wall_s
        switches0 = None if tracing else switches()
        metered = tracing and timed.first_call_may_need_memory
        error, wall_s, cpu_s, n_bytes = yield from hand_ons.timed(
            fn, batch, meter if metered else None
        )
        if tracing:
            traced, memory_bytes = True, n_bytes
        probed_args.extend(in_sample(batch, n_before, hand_ons.n_results))
        # Time away from fn (the consumer, pickling) is neither fn's nor the budget's.
        start_s += hand_ons.wall_s - away_s
        if error is not None:
            break  # a partial batch's time is not a clean sample
        error = input_error
        if cpu_s is not None:  # None: a quick group's hand-on was slow, no sample
            # Per call: a timed group is one call, or a few of a fast function.
            call = (wall_s / len(batch), cpu_s / len(batch))
            if tracing:
                timed.add_traced(*call)
            # Starting workers is not probing: it does not spend the probe's budget.
            start_s += early.report(call, tracing=tracing)
            if not tracing:
                switches1 = switches()
                n_switches = (
                    None if switches0 is None or switches1 is None else switches1 - switches0
                )
                timed.add_group(len(batch), wall_s, cpu_s, n_switches)
                if timed.group_means_s[-1] < FAST_CALL_S:
                    # Clock reads cost about a microsecond: time fast calls in growing groups.
                    batch_size = min(2 * batch_size, MAX_BATCH_ITEMS)
                lone = timed.n_calls == 1 and not exhausted and error is None
                if plan_on_lone_call is not None and lone:
                    lone_call_memory = plan_on_lone_call(*call)
                    if lone_call_memory is not None:
                        memory_bytes = lone_call_memory
                        break
        elapsed_s = wall_clock() - start_s
        if probe_is_done(
            n_items=hand_ons.n_results,
            n_warm_samples=timed.n_warm_samples,
            elapsed_s=elapsed_s,
            trusted=_is_stable(timed.warm_means_s, elapsed_s),
            budget_s=budget_s,
            max_items=max_items,
            workers_waiting=workers_waiting(),
            trivial_calls=timed.ends_on_trivial_calls,
        ):
            break

    n_results, n_sized = hand_ons.n_results, hand_ons.n_sized
    item_bytes, args_pickle_s = _measure_items(probed_args, dumps, wall_clock)
    wall_s, cpu_s, switches_per_call, cold_extra_s = timed.per_call()
    measurements = WorkMeasurements(
        n_probed=n_results,
        wall_s_per_item=max(0.0, wall_s),
        cpu_s_per_item=max(0.0, cpu_s),
        item_bytes=item_bytes,
        result_bytes=hand_ons.result_bytes / n_sized if n_sized else 0.0,
        pickle_s_per_item=args_pickle_s + (hand_ons.pickle_s / n_sized if n_sized else 0.0),
        memory_bytes_per_call=memory_bytes,
        first_call_extra_s=cold_extra_s,
        voluntary_switches_per_item=switches_per_call,
    )
    return ProbeOutcome([], error, measurements, exhausted, n_pulled)


def _measure_items(
    args: list[tuple[Any, ...]],
    dumps: Callable[[object], bytes],
    wall_clock: Callable[[], float],
) -> tuple[float, float]:
    """Pickled bytes and pickling seconds of an item's arguments, as means over ``args``.

    Pickled as one list, as a chunk is: pickling items one by one would charge each tiny
    item the fixed cost of a ``dumps`` call, many times what it costs inside a chunk. That
    fixed cost (an empty list pickled, after the items, so it runs warm) is left out: a
    chunk of many items pays it once, and the sample is smaller than a fast job's chunks. A
    size that cannot be pickled is ``inf``.
    """
    if not args:
        return 0.0, 0.0
    start_s = wall_clock()
    try:
        n_bytes = float(len(dumps(args)))
    except Exception:
        n_bytes = math.inf
    pickle_s = wall_clock() - start_s
    if n_bytes != math.inf:
        start_s = wall_clock()
        n_bytes -= len(dumps([]))
        pickle_s -= wall_clock() - start_s
    return n_bytes / len(args), max(0.0, pickle_s) / len(args)


def _take(
    source: Iterator[tuple[Any, ...]], size: int
) -> tuple[list[tuple[Any, ...]], bool, BaseException | None]:
    """Up to ``size`` items of ``source``: ``(items, the input ended, the exception the input
    raised producing the next one)``; that exception is delivered at its position too."""
    batch: list[tuple[Any, ...]] = []
    while len(batch) < size:
        try:
            batch.append(next(source))
        except StopIteration:
            return batch, True, None
        except Exception as exc:
            return batch, False, exc
    return batch, False, None


@dataclass
class _EarlyReports:
    """What ``probe`` tells ``after_timed_call``: from the second call on, never on the
    first alone (it may be cold), the fastest call so far, after the traced call and after
    the next timed group."""

    after_timed_call: Callable[[float, float, int], None] | None
    wall_clock: Callable[[], float]
    fastest_call: tuple[float, float] | None = None
    n_reported: int = 0

    def report(self, call: tuple[float, float], *, tracing: bool) -> float:
        """Take the ``(wall s, CPU s)`` of a call (of the traced one, with ``tracing``) and
        report if it is time; returns the seconds the report took."""
        if self.n_reported >= 2 or self.after_timed_call is None:
            return 0.0
        if not (tracing or self.n_reported):
            if self.fastest_call is None:
                self.fastest_call = call  # the first call: kept, not reported alone
            return 0.0
        self.fastest_call = call if self.fastest_call is None else min(self.fastest_call, call)
        self.n_reported += 1
        started_s = self.wall_clock()
        self.after_timed_call(*self.fastest_call, self.n_reported + 1)
        return self.wall_clock() - started_s


def probe_is_done(
    *,
    n_items: int,
    n_warm_samples: int,
    elapsed_s: float,
    trusted: bool,
    budget_s: float = PROBE_BUDGET_S,
    max_items: int = PROBE_MAX_ITEMS,
    lone_call_ok: bool = False,
    workers_waiting: bool = False,
    trivial_calls: bool = False,
) -> bool:
    """The probe's stopping rule, for the probe in the caller and the one in a worker
    (``_worker_probe``): stop once the figure can be trusted, ``max_items`` were measured,
    or ``budget_s`` is spent; but never on one call alone (a first call is often cold:
    imports, caches, lazy set-up; the call after it shows whether it was), and after a
    first call shown to be cold, not before a warm call was timed.

    Args:
        n_items: items measured so far.
        n_warm_samples: timed samples (a call, a group of calls, a chunk) besides a first
            call shown to be cold (``first_call_is_cold``).
        elapsed_s: wall time since the probe began.
        trusted: the warm measurements so far make a figure to plan on (in the caller: the
            per-item means are stable, ``_is_stable``; in a worker, where each chunk times
            many calls at once: at least ``PROBE_MIN_S`` of compute was measured).
        lone_call_ok: one call may be enough (in a worker: the pool is already chosen,
            since ``fn`` may not run in the caller, the chunks' own figures soon correct
            the chunk size, and a second probe chunk would keep the other workers idle).
        workers_waiting: warm workers are there while the probe runs (idle, or busy with
            other work): two calls and ``WAITING_WORKERS_MIN_S`` are enough.
        trivial_calls: the last sample was a group of ``TRIVIAL_GROUP_ITEMS`` calls or more
            faster than ``TRIVIAL_CALL_S`` (in the caller, where handing each result on costs
            more).
    """
    if n_items >= max_items:
        return True
    if n_warm_samples < 1 or (n_items < 2 and not lone_call_ok):
        return False
    if workers_waiting and n_items >= 2 and elapsed_s >= WAITING_WORKERS_MIN_S:
        return True
    return trusted or trivial_calls or elapsed_s >= budget_s


def _is_stable(samples: list[float], elapsed_s: float) -> bool:
    n = len(samples)
    if n < PROBE_MIN_ITEMS or elapsed_s < PROBE_MIN_S:
        return False
    mean = sum(samples) / n
    if mean <= 0:
        return True
    variance = sum((s - mean) ** 2 for s in samples) / (n - 1)
    return math.sqrt(variance / n) <= STABLE_RELATIVE_ERROR * mean
