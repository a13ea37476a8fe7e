"""One ``map()`` call, wired end to end. This is the only module that connects the input
layer, the probe, the plan and a backend; each job is done by a room of its own:

    iterables ──zip──► _input.Source (counts pulls; an input error waits for its position)
        │
        ├──► probe (_run_probe): in the caller (_probe)  or  in workers (_worker_probe)
        │               │ measurements
        │               ▼
        │    _planning.Planner (facts via _machine) ──► Plan (serial | n workers, chunksize)
        ▼                                                  │
    serial: _serial_run.SerialRun in the caller; revisited at doubling item counts
    parallel: _chunk_window.ChunkWindow ──► backend.submit_chunk ──► results in order
                  ▲                                         │
                  └──────── _steering.Steering ◄────────────┘ chunk compute times, items
                   (chunk size, window, budgets; the pool-is-losing judgement)

Results leave in input order through one generator, each probe result as soon as its call
returned (the probe in the caller runs inside the stream; a worker's probe chunks are read
as they complete), then serial results or chunk results, then the error that ended the
stream (from ``fn``, the input, or pickling) at its position. The generator's ``finally``
cancels whatever is still pending, as the stdlib's result iterator does.
"""

from __future__ import annotations

import logging
import time
import weakref
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from itertools import chain
from types import NotImplementedType
from typing import Any

from . import _arg_copies, _fn_cost, _serial_watch
from ._after_shutdown import after_shutdown_message, serial_after_shutdown
from ._backend import Backend
from ._chunk_window import ChunkWindow
from ._fn_for_workers import FnForWorkers
from ._input import Source
from ._planning import PlanLimits, Planner
from ._records import Plan, RunOutcome, SystemFacts, WorkMeasurements
from ._run_probe import RunProbe
from ._serial_run import SerialRun, handed_on
from ._steering import Steering, serial_worth_revisiting

logger = logging.getLogger("amorsize_executor")


@dataclass(frozen=True)
class MapOptions:
    """The per-call settings a ``map()`` run needs, already validated by the facade."""

    max_workers: int | None
    chunksize: int | None
    buffersize: int | None
    deadline_s: float | None
    """``RunClocks.monotonic`` value after which results raise ``TimeoutError``."""
    serial_allowed: bool
    drain_on_shutdown: bool
    """Whether ``shutdown()`` must submit the rest of the input (a known, finite length)."""
    on_progress: Callable[[int], None] | None = None
    """Called with the number of items just delivered to the consumer."""
    local_machine: bool = True
    """Whether plans are for this machine's cores, read from it (not given facts, not a
    cluster): only then can a favourable bound from this machine rule a pool out early."""
    on_finish: Callable[[], None] | None = None
    """Called once when the result stream ends, however it ends (closes a progress bar)."""


@dataclass(frozen=True)
class RunClocks:
    """Every clock a run reads, injectable so tests can script time (as trio's
    ``MockClock``): wall and CPU time of the probe and of serial calls, the caller's wait
    for chunk results, and the deadline's clock."""

    wall: Callable[[], float] = time.perf_counter
    cpu: Callable[[], float] = time.process_time
    monotonic: Callable[[], float] = time.monotonic


class MapRun:
    """The state of one ``map()`` call: the plan, what was delivered, which room runs."""

    def __init__(
        self,
        fn: Callable[..., Any],
        source: Source,
        *,
        backend: Backend,
        read_facts: Callable[[Backend], SystemFacts],
        options: MapOptions,
        publish_plan: Callable[[Plan], None],
        clocks: RunClocks = RunClocks(),
    ) -> None:
        self._fn = fn
        self._source = source
        # fn's arguments in the caller: copies, as from a pool (threads: the caller's own).
        self._caller_items = _arg_copies.for_caller(source, backend, options.buffersize)
        self._backend = backend
        self._read_facts = read_facts
        self._options = options
        self._publish_plan = publish_plan
        self._clocks = clocks
        self._ready: deque[Any] = deque()
        self._fn_for_workers = _fn_for_workers(fn, backend)
        self._window = ChunkWindow(
            fn,
            source,
            backend,
            fn_for_workers=self._fn_for_workers,
            # Budgets need the backend to stay open until handed-back items are resent.
            budgets=options.chunksize is None and backend.can_keep_open,
            deadline_s=options.deadline_s,
            monotonic=clocks.monotonic,
        )
        self._planner = Planner(
            self._fn_for_workers,
            source,
            PlanLimits(
                max_workers=options.max_workers,
                chunksize=options.chunksize,
                buffersize=options.buffersize,
                serial_allowed=options.serial_allowed,
                local_machine=options.local_machine,
            ),
            read_facts=lambda: read_facts(backend),
            in_process=backend.runs_in_process,
            fastest_start_s=lambda: backend.fastest_start_s,
            prepare=backend.prepare,
        )
        self._plan: Plan | None = None
        self._steering: Steering | None = None
        self._serial: SerialRun | None = None
        self._probe = RunProbe(
            fn,
            source,
            self._window,
            backend,
            caller_items=self._caller_items,
            plan=self._make_plan,
            delivered=self._delivered,
            abandon=lambda: self.abandon(interrupted=True),
            shut_down=lambda: self._shutdown,
            start_workers_early=self._planner.start_workers_early,
            plan_on_lone_call=self._planner.memory_if_lone_call_enough,
            read_facts=lambda: read_facts(backend),
            max_workers=options.max_workers,
            chunksize=options.chunksize,
            under_deadline=options.deadline_s is not None and options.chunksize is None,
            wall_clock=clocks.wall,
            cpu_clock=clocks.cpu,
        )
        self._n_delivered = 0
        self._busy_s = 0.0
        """Compute seconds of the probe and of serial work (the chunks' are the window's)."""
        self._started_s = clocks.wall()
        self._switched = False
        self._fell_back = False
        self._shutdown = False
        self._closed = False

    # -- start: probe and plan --------------------------------------------------------

    def start(self) -> None:
        """Put the first work in flight inside ``map()``, as the stdlib does: the probe's
        first chunks in workers; in the caller nothing: its probe runs in the result stream
        (``RunProbe.in_caller``), so each result is handed on as soon as its call returned."""
        if not self._options.serial_allowed:
            self._probe.start_in_workers()

    def _make_plan(self, measurements: WorkMeasurements, exhausted: bool) -> None:
        if not measurements.measured_in_worker:  # the chunks' compute is the window's
            self._busy_s += measurements.wall_s_per_item * measurements.n_probed
        plan = self._planner.first_plan(
            measurements, exhausted=exhausted, failed=self._window.error is not None
        )
        if plan.mode == "parallel" and self._shutdown and self._options.serial_allowed:
            # Nothing was sent before shutdown() (the probe runs in the stream): the pool is
            # closing, and the rest runs here, so every result is still delivered.
            plan = serial_after_shutdown(plan)
        self._set_plan(plan)
        if logger.isEnabledFor(logging.DEBUG):  # explain() is not free on a tiny job
            logger.debug("map() plan:\n%s", plan.explain())
        if plan.mode == "parallel":
            self._backend.prepare(plan.n_workers)
            self._window.fill()

    def _set_plan(self, plan: Plan) -> None:
        self._plan = plan
        self._steering = Steering(
            plan,
            chunksize=self._options.chunksize,
            buffersize=self._options.buffersize,
            under_deadline=self._options.deadline_s is not None,
        )
        self._window.steering = self._steering
        self._publish_plan(plan)

    # -- serial ------------------------------------------------------------------------

    def _serial_segments(self) -> Iterator[Iterable[Any]]:
        """The rest of the input in the caller (``SerialRun``), until it ends or a pool
        takes over (``_on_serial_timed``)."""
        assert self._plan is not None
        window = self._window
        self._serial = SerialRun(
            self._fn,
            self._caller_items,
            planned_s_per_item=self._plan.measurements.wall_s_per_item,
            buffersize=self._options.buffersize,
            on_progress=self._options.on_progress,
            delivered=self._delivered,
            on_timed=self._on_serial_timed,
            wall_clock=self._clocks.wall,
            cpu_clock=self._clocks.cpu,
            # The clock check of this serial run; none once a pool lost to it.
            watch=None if self._fell_back else _serial_watch.watch_for(self._plan),
        )
        return self._serial.segments(stopped=lambda: window.error is not None)

    def _on_serial_timed(
        self, wall_s_per_item: float, cpu_s_per_item: float, n_batch: int
    ) -> bool:
        """A serial batch timed its first calls: re-plan if worth it; True if a pool took
        over the rest."""
        if self._shutdown:
            return False  # the pool is closing: the rest stays here
        self._busy_s += wall_s_per_item * n_batch
        assert self._plan is not None
        if not serial_worth_revisiting(
            wall_s_per_item=wall_s_per_item,
            planned_s_per_item=self._plan.measurements.wall_s_per_item,
            length_known=self._source.n_total is not None,
            fell_back=self._fell_back,
        ):
            return False
        plan = self._planner.plan_switch(self._plan, wall_s_per_item, cpu_s_per_item)
        if plan is None:
            return False
        self._switched = True
        self._set_plan(plan)
        logger.debug("map() switched to parallel:\n%s", plan.explain())
        self._backend.prepare(plan.n_workers)
        self._window.fill()
        return True

    # -- the result stream ---------------------------------------------------------------

    def results(self) -> Iterator[Any]:
        """The results in input order (see the module docstring).

        The stream is a chain of segments (lists of results, serial ``map`` batches) that
        the consumer drains at C speed; Python code runs once per segment, not per item.
        """
        segments = self._segments()
        results: ResultIterator = ResultIterator.from_iterable(segments)  # type: ignore[assignment]
        results.segments = segments
        results.remaining = lambda: _not_delivered(self._source.n_total, self._n_delivered)
        # A generator never started runs no ``finally``: closing or dropping the iterator
        # must still cancel the chunks sent by ``start()`` and release the backend.
        finalizer = weakref.finalize(results, self.abandon)
        finalizer.atexit = False
        results.finalizer = finalizer
        return results

    def abandon(self, *, interrupted: bool = False) -> None:
        """End the run without reading on: cancel what is pending, release the backend."""
        self._close(interrupted)

    def _segments(self) -> Generator[Iterable[Any], None, None]:
        interrupted = False
        window = self._window
        try:
            while True:
                if self._plan is None and self._options.serial_allowed:
                    if self._closed:
                        return  # abandoned while probing
                    yield self._probe.in_caller()
                    continue
                if self._ready:
                    batch = list(self._ready)
                    self._ready.clear()
                    self._delivered(len(batch))
                    yield handed_on(batch)
                    continue
                if window.pending:
                    self._read_head()
                    continue
                if window.error is not None:
                    window.cancel_pending()
                    raise window.error
                if self._source.exhausted:
                    return
                if self._plan is not None and (self._plan.mode == "serial" or self._fell_back):
                    yield from self._serial_segments()
                    if self._serial is not None:
                        if self._serial.failed:
                            return
                        self._n_delivered += self._serial.n_checked
                        self._serial = None
                    continue
                if self._shutdown and not self._options.drain_on_shutdown:
                    raise RuntimeError(after_shutdown_message(self._options.buffersize))
                window.fill()
        except BaseException as exc:
            interrupted = isinstance(exc, KeyboardInterrupt)
            raise
        finally:
            self._close(interrupted)

    def _read_head(self) -> None:
        """Take the oldest chunk's results into the ready queue, feed its figures back, keep
        the window full, and judge whether the pool still pays."""
        window, steering = self._window, self._steering
        started_s = self._clocks.wall()
        chunk, outcome = window.take_head()
        waited_s = self._clocks.wall() - started_s
        if self._probe.in_workers:  # a probe chunk: the probe decides what comes next
            self._ready.extend(outcome.results if outcome is not None else ())
            self._probe.took(outcome)
            return
        if outcome is None:
            return
        if steering is not None:
            steering.learn(
                n_results=outcome.n_results,
                compute_s=outcome.compute_s,
                cpu_s=outcome.cpu_s,
                items_bytes=outcome.items_bytes,
            )
        if window.error is None or window.error_index > chunk.first_index:
            window.fill()
        self._ready.extend(outcome.results)
        if steering is None:
            return
        fallback = steering.judge_pool(
            n_results=outcome.n_results,
            parent_s=waited_s,
            may_fall_back=not (
                self._fell_back
                or not self._options.serial_allowed
                or self._shutdown
                or self._source.exhausted
                or window.error is not None
            ),
        )
        if fallback is not None:
            # No chunk is sent from now on; the ones in flight are still collected, then the
            # serial path takes the rest.
            self._fell_back = True
            window.sending = False
            self._plan = fallback
            self._publish_plan(fallback)
            logger.debug("map() fell back to serial:\n%s", fallback.explain())

    def _delivered(self, n_items: int) -> None:
        """Count results handed to the consumer's iterator (and report them as progress)."""
        self._n_delivered += n_items
        if self._options.on_progress is not None and n_items:
            self._options.on_progress(n_items)

    def _close(self, interrupted: bool) -> None:
        if self._closed:
            return
        self._closed = True
        self._probe.close()
        window = self._window
        window.cancel_pending()
        if interrupted:
            # Before the backend is released: a deferred close would take the pool away.
            self._backend.terminate_workers()
        window.stop_keeping_backend_open()
        self._fn_for_workers.release()
        self._source.close()
        if self._options.on_finish is not None:
            self._options.on_finish()
        n_checked = 0
        if self._serial is not None:
            n_checked = self._serial.n_checked
            # It holds this run's callbacks: a cycle left for the garbage collector would
            # keep the run's chunks and results alive, and its pause lands in a later call.
            self._serial = None
        if self._plan is not None:
            outcome = _outcome_of(
                self._plan,
                window,
                wall_s=self._clocks.wall() - self._started_s,
                n_items=self._n_delivered + n_checked,
                busy_s=self._busy_s,
                switches=(self._switched, self._fell_back),
            )
            self._publish_plan(self._plan.with_outcome(outcome))

    # -- called by the executor ----------------------------------------------------------

    def on_shutdown(self, *, wait: bool, cancel_futures: bool) -> None:
        """``shutdown()`` was called while this run is alive.

        With ``cancel_futures``, pending chunks are cancelled (the iterator then raises
        ``CancelledError`` where they stood, as the stdlib's does). Otherwise, a parallel
        run over an input of known length submits the rest now, so the results can still
        be read after the ``with`` block, exactly as with the stdlib's eager ``map``.
        """
        window = self._window
        with window.lock:
            self._shutdown = True
            window.closing = True
            if not self._options.drain_on_shutdown:
                window.sending = False
            if not cancel_futures:
                self._probe.took(None)  # ends a probe in workers: its plan sends the rest
            if cancel_futures:
                for chunk in window.pending:
                    chunk.future.cancel()
                window.stop_keeping_backend_open()
                return
            if (
                self._options.drain_on_shutdown
                and self._plan is not None
                and self._plan.mode == "parallel"
                and not self._fell_back
            ):
                window.drain()
        if wait:
            window.wait_for_budgeted()
            window.stop_keeping_backend_open()
            window.wait_for_all()


class ResultIterator(chain):  # type: ignore[type-arg]
    """The iterator ``map()`` returns: a chain of result segments (C speed per item) that,
    like the stdlib's generator, can be closed to stop the work early."""

    segments: Generator[Iterable[Any], None, None]
    finalizer: weakref.finalize[Any, Any]
    remaining: Callable[[], int | None]

    def __length_hint__(self) -> int | NotImplementedType:
        """The results still to come, when the input's length is known: ``list()`` then
        sizes its list once instead of growing it (measured, 200k results of a trivial
        ``fn``: 0.3-0.4 ms of 13.5 less, on the 2-core reference VM); else unknown."""
        n_remaining = self.remaining()
        return NotImplemented if n_remaining is None else n_remaining

    def close(self) -> None:
        """Stop: cancel what is pending and read no more input."""
        self.segments.close()
        self.finalizer()


def _not_delivered(n_total: int | None, n_delivered: int) -> int | None:
    """Results still to come, by the input's length (exact or hinted), or ``None``."""
    return None if n_total is None else max(0, n_total - n_delivered)


def _fn_for_workers(fn: Callable[..., Any], backend: Backend) -> FnForWorkers:
    """``fn`` pickled once for the run's chunks: in each, or once per worker when large and
    the backend's workers can share a file."""
    share_files = backend.workers_share_files
    return FnForWorkers(
        fn,
        once_per_worker=lambda n_bytes: _fn_cost.fn_travels_once_per_worker(
            n_bytes, workers_share_files=share_files
        ),
    )


def _outcome_of(
    plan: Plan,
    window: ChunkWindow,
    *,
    wall_s: float,
    n_items: int,
    busy_s: float,
    switches: tuple[bool, bool],
) -> RunOutcome:
    """What a run did, for its plan's ``outcome``: ``busy_s`` is the compute of the probe
    and serial work (the chunks' is the window's); ``switches`` says whether it switched
    to parallel and to serial."""
    return RunOutcome(
        wall_s=wall_s,
        n_items=n_items,
        n_chunks=len(window.chunksizes),
        chunksizes=tuple(window.chunksizes),
        worker_busy_s=busy_s + window.busy_s,
        n_workers=plan.n_workers,
        switched_to_parallel=switches[0],
        switched_to_serial=switches[1],
    )
