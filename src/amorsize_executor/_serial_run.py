"""The rest of a ``map()`` run in the calling process: the hot path of small jobs.

    source ──► batch (up to the next checkpoint, doubling) ──► first calls timed as a group
                                                                   │ per-item wall, CPU
                                   on_timed(...) ── the run re-plans; True: a pool took over
                                                                   │ False
               rest of the batch ──► map(fn, items) at C speed  (fast calls, no progress)
                                 └─► checked loop: the first exception ends the stream
               ... in parts of bounded predicted time (``_serial_watch``): a look at the
                   clock between two parts; a run behind its prediction ends the batch, and
                   the next batch's timed calls re-check it (a look at the clock after each
                   step of calls, until they overshoot or stay on time as long) and re-plan

``SerialRun`` is handed the function, the input, the figures it needs and two clocks (wall,
CPU; injectable: the clock check reads the wall clock); it never reads the run's state, and
tells the run what happened through ``delivered`` and ``on_timed``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from itertools import repeat, starmap
from typing import Any

from . import _probe
from ._arg_copies import CallerItems
from ._input import Source
from ._records import format_seconds
from ._serial_watch import RECHECK_MAX_ITEMS, SERIAL_CHECK_S, SerialWatch

logger = logging.getLogger("amorsize_executor")

STRICT_SERIAL_S = 2e-6
"""Serial calls slower than this run through a Python loop that ends the stream for good at
the first exception, as the stdlib's result iterator does (about 0.1 µs per item, under 5%
of such a call). Faster calls run at C speed (``map``/``starmap`` over the input), where that
loop would double their cost; there a consumer that keeps calling ``next()`` after an
exception may still get the rest of the current batch, as with the builtin ``map``."""

SERIAL_TIMED_CALLS = 8
"""While running serially, at least this many calls per batch are timed (as one group) for
the re-plan; the rest run untimed."""

BATCH_MIN_S = SERIAL_CHECK_S
"""A batch holds at least this much predicted work, wherever the count doubles: each batch
costs about 15-30 µs of Python besides its calls (a timed group handed on, the re-plan's
test, the watch's rebase, a part's slice and look at the clock), which on trivial calls
outweighed the early batches' own work (x*x+1 over 50k ints, the 2-core VM: ten batches
from 64 items on, 0.3 ms of a 2.8 ms job). No shorter than one part of the clock check
(``_serial_watch.SERIAL_CHECK_S``), so a slow stretch is seen no later than before; calls
slower than a few µs are unaffected (twice the items pulled is the larger)."""

PROGRESS_INTERVAL_S = 0.1
"""With a progress callback, serial work reports at least this often (in predicted time)."""


def timed_group_items(planned_s_per_item: float) -> int:
    """Serial calls timed together for the re-plan: about ``FAST_CALL_S`` of work."""
    if planned_s_per_item <= 0:
        return SERIAL_TIMED_CALLS
    return max(SERIAL_TIMED_CALLS, min(4096, int(_probe.FAST_CALL_S / planned_s_per_item)))


def batch_min_items(s_per_item: float) -> int:
    """Items of a batch at least: ``BATCH_MIN_S`` of calls at ``s_per_item`` (none when
    the figure is 0, as on a scripted clock)."""
    if s_per_item <= 0 or not math.isfinite(s_per_item):
        return 0
    return int(BATCH_MIN_S / s_per_item)


def progress_batch_items(planned_s_per_item: float) -> int:
    """Serial items per progress update: about ``PROGRESS_INTERVAL_S`` of work."""
    if planned_s_per_item <= 0:
        return 1024
    return max(1, int(PROGRESS_INTERVAL_S / planned_s_per_item))


class SerialRun:
    """Runs the rest of the input in the caller, as segments the consumer drains.

    Args:
        fn: the function.
        source: the input (already past the probe), as ``fn`` may get it (copies: see
            ``_arg_copies.for_caller``).
        planned_s_per_item: the plan's per-call figure (sizes the timed groups).
        buffersize: the user's ``buffersize`` (caps a timed group), or ``None``.
        on_progress: the progress callback, or ``None``.
        delivered: told how many results were handed out in a list or a C-speed batch.
        on_timed: told ``(wall_s_per_item, cpu_s_per_item, n_batch)`` after each timed
            group, before the bulk of its batch runs; returns True when a pool took over
            (this run then ends).
        wall_clock, cpu_clock: the clocks the timed groups read.
        watch: the clock check of the rest of each batch (``_serial_watch.SerialWatch``),
            or ``None`` for none (after a pool lost to serial).
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        source: Source | CallerItems,
        *,
        planned_s_per_item: float,
        buffersize: int | None,
        on_progress: Callable[[int], None] | None,
        delivered: Callable[[int], None],
        on_timed: Callable[[float, float, int], bool],
        wall_clock: Callable[[], float] = time.perf_counter,
        cpu_clock: Callable[[], float] = time.process_time,
        watch: SerialWatch | None = None,
    ) -> None:
        self._fn = fn
        self._source = source
        self._planned_s_per_item = planned_s_per_item
        self._buffersize = buffersize
        self._on_progress = on_progress
        self._delivered = delivered
        self._on_timed = on_timed
        self._wall_clock = wall_clock
        self._cpu_clock = cpu_clock
        self._watch = watch
        self.failed = False
        """An exception ended the stream inside a checked loop: nothing more may follow."""
        self.n_checked = 0
        """Results handed out one by one by the checked loop (not told to ``delivered``)."""

    def segments(self, stopped: Callable[[], bool]) -> Iterator[Iterable[Any]]:
        """Run the rest in the caller as segments, re-planning whenever the count doubles (at
        least ``BATCH_MIN_S`` of calls apart), while ``stopped()`` is false (an error is
        recorded).

        This is the hot path of small jobs: each batch runs its first few calls timed as a
        group, for the re-plan; the rest is handed out as a ``map``/``starmap`` over the
        input, which the consumer drains at C speed, so the caller pays next to nothing per
        item over a plain ``map``. An exception from ``fn`` or the input propagates at its
        position.
        """
        fn = self._fn
        source = self._source
        checkpoint = max(2 * source.n_pulled, 16)
        perf, cpu = self._wall_clock, self._cpu_clock
        progress = self._on_progress
        rate_s = self._planned_s_per_item  # the latest figure: the plan's, then each group's
        while not source.exhausted and not stopped():
            checkpoint = max(checkpoint, source.n_pulled + batch_min_items(rate_s))
            n_batch = checkpoint - source.n_pulled
            if progress is not None:
                n_batch = min(n_batch, progress_batch_items(self._planned_s_per_item))
            timed: list[Any] = []
            # One pair of clock reads around a group of calls worth about FAST_CALL_S, so
            # the reads (about 1 µs) do not inflate the figure for very fast calls.
            n_group = timed_group_items(self._planned_s_per_item)
            if self._buffersize is not None:
                n_group = min(n_group, self._buffersize)
            # After the run fell behind, the calls are timed in steps (``_recheck``).
            rechecking = self._watch is not None and self._watch.recheck_s > 0
            # One iterable with a length: the group runs at C speed too (``list.extend``
            # keeps the results made before an exception).
            single = None if rechecking else source.single_batch(min(n_group, n_batch))
            t0, c0 = perf(), cpu()
            try:
                if rechecking:
                    n_most = min(n_batch, RECHECK_MAX_ITEMS, self._buffersize or n_batch)
                    self._recheck(timed, n_most, t0, c0)
                elif single is not None:
                    timed.extend(map(fn, single[0]))
                else:
                    for args in source.iter_up_to(min(n_group, n_batch)):
                        timed.append(fn(*args))
            except Exception:
                if timed:
                    self._delivered(len(timed))
                    yield handed_on(timed)
                raise
            timed_s, timed_cpu_s = perf() - t0, cpu() - c0
            if rechecking and self._watch is not None:
                timed_s = self._watch.recheck_figure_s(timed_s, timed_cpu_s, len(timed))
            n_timed = len(timed)  # handing the results on empties the list
            if timed:
                self._delivered(n_timed)
                yield handed_on(timed)
            if source.input_error is not None:
                raise source.input_error
            per_item_s = timed_s / n_timed if n_timed else 0.0
            if n_timed:
                rate_s = per_item_s
            checkpoint *= 2
            # Re-plan on fresh figures, before the bulk of the batch runs, so a switch to a
            # pool takes that bulk with it.
            if (
                n_timed
                and not source.exhausted
                and self._on_timed(per_item_s, timed_cpu_s / n_timed, n_batch)
            ):
                return
            if self._watch is not None and n_timed:
                # Timed alone (no consumer in between): the rate the parts are held to.
                self._watch.rebase(per_item_s)
            yield from self._rest_of_batch(n_batch - n_timed, per_item_s)
            if self.failed:
                return

    def _rest_of_batch(
        self, n_rest: int, per_item_s: float
    ) -> Generator[Iterable[Any], None, None]:
        """The batch's calls after its timed group, in parts of bounded predicted time with
        a look at the clock between two (``_serial_watch``): a slow stretch is seen there,
        and ends the batch early. Stops after an exception (``failed``)."""
        fn, source, watch, perf = self._fn, self._source, self._watch, self._wall_clock
        while n_rest > 0 and not source.exhausted:
            n_part = n_rest if watch is None else min(n_rest, watch.check_items())
            n_rest -= n_part
            part_started_s, n_pulled_before = perf(), source.n_pulled
            if self._on_progress is None and per_item_s < STRICT_SERIAL_S:
                # C speed: no Python code per item (see STRICT_SERIAL_S for the cost).
                single = source.single_batch(n_part)
                if single is not None:
                    yield map(fn, single[0])
                    self._delivered(single[1])
                else:
                    bare = source.bare_batch(n_part)
                    if bare is not None:
                        yield map(fn, bare)
                    else:
                        yield starmap(fn, source.batch(n_part))
                    self._delivered(source.settle_batch(n_part))
            else:
                yield self._checked_calls(n_part)
                if self.failed:
                    return
            if watch is not None and self._behind_prediction(
                watch, perf() - part_started_s, source.n_pulled - n_pulled_before
            ):
                # A new batch starts here: its timed calls measure fn alone (a part's time
                # includes the consumer's) and re-plan on them.
                return

    def _recheck(
        self, timed: list[Any], n_items: int, started_s: float, started_cpu_s: float
    ) -> None:
        """A timed group after the run fell behind: up to ``n_items`` calls into ``timed``,
        with a clock read after each step of calls (``SerialWatch.recheck_step_items``),
        until the watch says the re-check is over (``SerialWatch.recheck_over``: the calls
        overshot, or ran on time long enough)."""
        fn, source, perf, cpu = self._fn, self._source, self._wall_clock, self._cpu_clock
        watch = self._watch
        assert watch is not None
        step = watch.recheck_step_items()
        while len(timed) < n_items:
            n_before, n_step = len(timed), min(step, n_items - len(timed))
            single = source.single_batch(n_step)
            if single is not None:
                timed.extend(map(fn, single[0]))  # C speed, as the timed groups
            else:
                for args in source.iter_up_to(n_step):
                    timed.append(fn(*args))
            if len(timed) - n_before < n_step:
                return  # the input ended
            if watch.recheck_over(perf() - started_s, cpu() - started_cpu_s, len(timed)):
                return

    def _behind_prediction(self, watch: SerialWatch, elapsed_s: float, n_items: int) -> bool:
        """Count a part's time; whether the run is behind its prediction by more than the
        watch's margin (the watch then starts over)."""
        stretch_s_per_item = watch.observe(elapsed_s, n_items)
        if stretch_s_per_item is None or self._source.exhausted:
            return False
        logger.debug(
            "serial run %s behind its prediction after %d items (%s per item lately): "
            "timing the next calls to re-plan",
            format_seconds(watch.excess_s),
            self._source.n_pulled,
            format_seconds(stretch_s_per_item),
        )
        watch.start_recheck()
        return True

    def _checked_calls(self, n_items: int) -> Iterator[Any]:
        """Up to ``n_items`` serial results; the first exception ends the whole stream."""
        fn = self._fn
        progress = self._on_progress
        for args in self._source.iter_up_to(n_items):
            try:
                # In a list popped as it is yielded: this generator must not keep the
                # result alive after the consumer dropped it (as the stdlib's iterator).
                result = [fn(*args)]
            except BaseException:
                self.failed = True
                raise
            self.n_checked += 1
            yield result.pop()
            if progress is not None:
                progress(1)
        if self._source.input_error is not None:
            self.failed = True
            raise self._source.input_error


def handed_on(results: list[Any]) -> Iterator[Any]:
    """The results in order, each dropped from ``results`` as it is handed to the consumer
    (C speed): a consumer that drops each result frees it, as with the stdlib's iterator,
    which pops each result off its list as it yields it."""
    results.reverse()
    return map(list.pop, repeat(results, len(results)))
