"""One ``map()`` call, wired end to end. This is the only module that connects the input
layer, the probe, the cost model and a backend.

    iterables ──zip──► _input.Source (counts pulls; an input error waits for its position)
        │
        ├──► probe: in the caller (_probe.probe)  or  in a worker (first small chunks)
        │               │ measurements
        │               ▼
        │    system facts ──► _cost_model.plan_map ──► Plan (serial | n workers, chunksize)
        ▼                                                  │
    serial: fn(*args) in the caller; revisited at doubling item counts, may switch
    parallel: chunks ──► backend.submit_chunk ──► window of futures ──► results in order
                  ▲                                         │
                  └── revise_chunksize, guided_chunksize ◄──┘ chunk compute times, items left

Results leave in input order through one generator: probe results, then serial results or
chunk results, then the error that ended the stream (from ``fn``, the input, or pickling) at
its position. The generator's ``finally`` cancels whatever is still pending, as the stdlib's
result iterator does.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FuturesTimeoutError
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from itertools import chain, starmap
from typing import Any, TypeVar

import cloudpickle

from . import _cost_model, _probe, _serial_watch, _system_facts
from ._chunk_worker import ChunkPayload, ChunkResult
from ._errors import (
    RemoteTraceback,
    UnpicklableExceptionError,
    UnpicklableItemError,
    UnpicklableResultError,
    WorkerCrashedError,
)
from ._fn_for_workers import FnForWorkers
from ._input import Source
from ._pool_backend import Backend
from ._records import Plan, RunOutcome, SystemFacts, WorkMeasurements, format_seconds

logger = logging.getLogger("amorsize_executor")

FEEDBACK_WEIGHT = 0.5
"""Weight of the newest chunk in the running per-item estimate (an exponential average):
high enough to follow a workload that changes, low enough that one odd chunk does not swing
the chunk size."""

STRICT_SERIAL_S = 2e-6
"""Serial calls slower than this run through a Python loop that ends the stream for good at
the first exception, as the stdlib's result iterator does (about 0.1 µs per item, under 5%
of such a call). Faster calls run at C speed (``map``/``starmap`` over the input), where that
loop would double their cost; there a consumer that keeps calling ``next()`` after an
exception may still get the rest of the current batch, as with the builtin ``map``."""

REVISIT_CHANGE = 0.3
"""A serial run over an input of known length re-plans when its calls have become this much
slower than the probe measured."""

SERIAL_TIMED_CALLS = 8
"""While running serially, at least this many calls per batch are timed (as one group) for
the re-plan; the rest run untimed."""

MAX_OUTSTANDING_WINDOWS = 4
"""Finished chunks may wait for the consumer up to this many windows' worth of items, so a
slow oldest chunk does not idle the workers, while memory stays bounded."""

PROGRESS_INTERVAL_S = 0.1
"""With a progress callback, serial work reports at least this often (in predicted time)."""

WORKER_PROBE_FIRST_ITEMS = 1
"""Items in the first chunk of a probe run in a worker; each further probe chunk is four
times larger until the measured compute time is long enough to trust."""


_Method = TypeVar("_Method", bound=Callable[..., Any])


def _locked(method: _Method) -> _Method:
    """Run the method holding the run's lock: ``shutdown()`` may act on a run from another
    thread than the one reading its results, and both change the chunks in flight."""

    @functools.wraps(method)
    def wrapper(self: MapRun, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


@dataclass(frozen=True)
class MapOptions:
    """The per-call settings a ``map()`` run needs, already validated by the facade."""

    max_workers: int | None
    chunksize: int | None
    buffersize: int | None
    deadline_s: float | None
    """``time.monotonic()`` value after which results raise ``TimeoutError``."""
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


@dataclass(eq=False)
class _Chunk:
    """A chunk in flight; compared by identity (two chunks are never the same)."""

    first_index: int
    n_items: int
    future: Future[ChunkResult]
    items: list[tuple[Any, ...]] | None = None
    """Kept while a budgeted chunk runs: the items it may hand back unstarted."""


class MapRun:
    """The state of one ``map()`` call: probe results, the plan, chunks in flight."""

    def __init__(
        self,
        fn: Callable[..., Any],
        source: Source,
        *,
        backend: Backend,
        read_facts: Callable[[Backend], SystemFacts],
        options: MapOptions,
        publish_plan: Callable[[Plan], None],
    ) -> None:
        self._fn = fn
        self._source = source
        self._backend = backend
        self._read_facts = read_facts
        self._options = options
        self._publish_plan = publish_plan
        self._ready: deque[Any] = deque()
        self._pending: deque[_Chunk] = deque()
        self._error: BaseException | None = None
        self._error_index = -1
        self._in_flight_items = 0
        self._n_delivered = 0
        self._fn_for_workers = FnForWorkers(
            fn, workers_share_files=bool(getattr(backend, "workers_share_files", False))
        )
        """``fn`` pickled once for the chunks: in each, or once per worker when large."""
        self._plan: Plan | None = None
        self._chunksize = 1
        self._window = 1
        self._observed_s_per_item = 0.0
        self._observed_cpu_s_per_item = 0.0
        self._chunksizes: list[int] = []
        self._busy_s = 0.0
        self._started_s = time.perf_counter()
        self._switched = False
        self._fell_back = False
        self._n_chunks_received = 0
        self._steady_parent_s = 0.0
        self._steady_items = 0
        self._stream_failed = False
        self._shutdown = False
        self._closed = False
        self._in_process = bool(getattr(backend, "runs_in_process", False))
        """Chunks run in this process (threads): sent as objects, never pickled."""
        self._budgets = options.chunksize is None and hasattr(backend, "keep_open")
        """Whether chunks get a time budget: the user fixed no chunk size, and the backend
        can stay open after ``shutdown(wait=False)`` until handed-back items are resent."""
        self._keeping_backend_open = False
        self._started_early = False
        self._lock = threading.RLock()
        """Guards the chunks in flight (``_pending`` and its counts); never held while
        waiting for a result."""
        self._done_lock = threading.Lock()
        """Guards what chunk completions update, from the pool's threads: taken alone or
        inside ``_lock``, never the other way round."""
        self._n_unfinished = 0
        """Items of the chunks sent whose futures are not done yet."""
        self._finished_budgeted: deque[Future[ChunkResult]] = deque()
        """Budgeted chunks that finished since ``_resend_unrun`` last looked."""
        self._a_chunk_finished = threading.Event()

    # -- start: probe and plan --------------------------------------------------------

    def start(self) -> None:
        """Probe, plan, and put the first window of work in flight (runs inside ``map()``)."""
        if self._options.serial_allowed:
            self._probe_in_caller()
        else:
            self._probe_in_worker()

    def _probe_in_caller(self) -> None:
        outcome = _probe.probe(self._fn, self._source, after_timed_call=self._start_workers_early)
        self._ready.extend(outcome.results)
        if outcome.error is not None:
            # fn raised, or the input itself raised while producing the next item.
            self._set_error(outcome.error, len(outcome.results))
        self._busy_s += outcome.measurements.wall_s_per_item * len(outcome.results)
        self._make_plan(outcome.measurements, exhausted=outcome.exhausted)

    def _start_workers_early(self, fastest_call_s: float, its_cpu_s: float, n_timed: int) -> None:
        """Start the pool while the probe goes on when its first calls already say the job
        is long and CPU-bound (see ``_cost_model.workers_to_start_early``); once at most."""
        if self._started_early:
            return

        def workers_for(n_cores: int) -> int:
            return _cost_model.workers_to_start_early(
                fastest_call_s=fastest_call_s,
                its_cpu_s=its_cpu_s,
                n_calls_timed=n_timed,
                n_items_left=self._source.n_remaining,
                n_usable_cores=n_cores,
                max_workers=self._options.max_workers,
            )

        # Decided on the most cores there could be first: reading the machine costs more
        # than most calls, and most jobs are ruled out without it.
        if not workers_for(max(2, _system_facts.read_logical_cores())):
            return
        try:
            facts = self._read_facts(self._backend)
        except Exception as exc:
            logger.debug("early start skipped: facts unreadable (%s)", exc)
            return
        n_workers = workers_for(_cost_model.choose_usable_cores(facts, cpu_bound=True)[0])
        if n_workers:
            self._started_early = True
            logger.debug("starting %d worker(s) while the probe runs", n_workers)
            try:
                self._backend.prepare(n_workers)
            except Exception as exc:  # a guess only: the plan starts what it needs
                logger.debug("early start failed (%s); the plan decides", exc)

    def _probe_in_worker(self) -> None:
        """Measure by running small first chunks on a worker: ``fn`` must not run here."""
        m = self._options
        facts = self._read_facts(self._backend)
        n_cores, _ = _cost_model.choose_usable_cores(facts, cpu_bound=True)
        self._backend.prepare(min(n_cores, m.max_workers or n_cores))
        n_items = compute_s = cpu_s = 0.0
        item_bytes = result_bytes = 0.0
        switches: float | None = 0.0
        size = WORKER_PROBE_FIRST_ITEMS
        probe_started_s = time.perf_counter()
        while self._error is None and not self._source.exhausted:
            chunk = self._submit_next(size)
            if chunk is None:
                break
            self._pending.popleft()
            self._in_flight_items -= chunk.n_items
            try:
                result = self._wait(chunk)
            except FuturesTimeoutError:
                # The deadline passed while probing: the iterator raises it in place.
                self._pending.appendleft(chunk)
                self._in_flight_items += chunk.n_items
                break
            if result is None:
                break
            self._ready.extend(result.results)
            n_items += result.n_results
            compute_s += result.compute_s
            cpu_s += result.cpu_s
            item_bytes += result.items_bytes
            result_bytes += len(result.results_bytes)
            if switches is not None and result.voluntary_switches is not None:
                switches += result.voluntary_switches
            else:
                switches = None
            elapsed_s = time.perf_counter() - probe_started_s
            if (
                compute_s >= _probe.PROBE_MIN_S
                or elapsed_s >= _probe.PROBE_BUDGET_S
                or n_items >= _probe.PROBE_MAX_ITEMS
            ):
                break
            size *= 4
        per = max(1.0, n_items)
        measurements = WorkMeasurements(
            n_probed=int(n_items),
            wall_s_per_item=compute_s / per,
            cpu_s_per_item=cpu_s / per,
            item_bytes=item_bytes / per,
            result_bytes=result_bytes / per,
            pickle_s_per_item=0.0,
            memory_bytes_per_call=0,
            measured_in_worker=True,
            voluntary_switches_per_item=None if switches is None else switches / per,
        )
        self._make_plan(measurements, exhausted=self._source.exhausted)

    def _make_plan(self, measurements: WorkMeasurements, *, exhausted: bool) -> None:
        m = self._options
        if self._in_process:
            # Nothing is pickled on the way to a thread: neither cost nor picklability count.
            measurements = replace(
                measurements, item_bytes=0.0, result_bytes=0.0, pickle_s_per_item=0.0
            )
        remaining = 0 if exhausted or self._error is not None else self._source.n_remaining
        if remaining == 0 and m.serial_allowed:
            plan = self._plan_with(
                SystemFacts.not_read("not chosen"), measurements, remaining, m.serial_allowed
            )
        else:
            plan = self._plan_reading_facts_if_needed(
                measurements, remaining, serial_allowed=m.serial_allowed
            )
        if (
            plan.mode == "parallel"
            and self._error is None
            and not exhausted
            and not self._in_process
        ):
            try:
                self._fn_for_workers.ensure()
            except Exception as exc:
                if m.serial_allowed:
                    plan = replace(
                        plan,
                        mode="serial",
                        n_workers=1,
                        chunksize=1,
                        window_items=0,
                        reasons=(
                            *plan.reasons,
                            f"fn cannot be pickled ({exc}): it runs in the calling process",
                        ),
                    )
                else:
                    raise
        self._set_plan(plan)
        logger.debug("map() plan:\n%s", plan.explain())
        if plan.mode == "parallel":
            self._backend.prepare(plan.n_workers)
            self._fill()

    def _plan_with(
        self,
        facts: SystemFacts,
        measurements: WorkMeasurements,
        remaining: int | None,
        serial_allowed: bool,
    ) -> Plan:
        m = self._options
        return _cost_model.plan_map(
            facts,
            measurements,
            n_items=remaining,
            n_items_lower_bound=max(1, self._source.n_pulled),
            max_workers=m.max_workers,
            chunksize=m.chunksize,
            buffersize=m.buffersize,
            serial_allowed=serial_allowed,
        )

    def _plan_reading_facts_if_needed(
        self, measurements: WorkMeasurements, remaining: int | None, *, serial_allowed: bool
    ) -> Plan:
        """The plan on this machine's facts, read only when needed: a job that is serial
        even on the most favourable figures (every core free, the fastest start, free
        transfers) is serial on the real ones, and reading the machine (cgroup files,
        psutil) would cost a tiny job more than its work."""
        if serial_allowed and self._options.local_machine:
            # Warm workers start for free: the bound then has no start cost at all.
            fastest_start_s = (
                0.0 if self._backend.n_warm_workers else _system_facts.fastest_start_prior_s()
            )
            bound = self._plan_with(
                SystemFacts.most_favourable(_system_facts.read_logical_cores(), fastest_start_s),
                measurements,
                remaining,
                serial_allowed,
            )
            if bound.mode == "serial":
                return bound
        if not self._in_process:
            # Only now is fn pickled to count its size: most small jobs never get here.
            measurements = self._fn_for_workers.with_size(measurements)
        return self._plan_with(
            self._read_facts(self._backend), measurements, remaining, serial_allowed
        )

    def _set_plan(self, plan: Plan) -> None:
        self._plan = plan
        self._chunksize = plan.chunksize
        self._window = plan.window_items
        if self._options.buffersize is not None and self._options.chunksize is None:
            self._chunksize = max(1, min(self._chunksize, self._options.buffersize))
        self._publish_plan(plan)

    # -- parallel: submit, collect, feed back --------------------------------------------

    @_locked
    def _submit_next(self, size: int) -> _Chunk | None:
        """Pull up to ``size`` items and submit them as one chunk; ``None`` if nothing was
        pulled. An input or pickling error is recorded at its position."""
        first_index = self._source.n_pulled
        items, input_error = self._source.take(size)
        chunk: _Chunk | None = None
        if items:
            chunk = self._submit_items(first_index, items)
            if chunk is not None:
                self._pending.append(chunk)
        if input_error is not None:
            self._set_error(input_error, self._source.n_pulled)
        return chunk

    def _submit_items(self, first_index: int, items: list[tuple[Any, ...]]) -> _Chunk | None:
        """Submit ``items`` (the input from ``first_index`` on) as one chunk, counted in
        flight but not yet placed in ``_pending``; ``None`` if nothing could be sent."""
        if self._in_process:
            budget_s, check_every = self._chunk_budget(len(items))
            payload = ChunkPayload(b"", b"", budget_s, check_every, fn=self._fn, items=items)
            return self._send(first_index, items, payload)
        fn_bytes, fn_ref = self._fn_for_workers.for_chunk()
        try:
            items_bytes = cloudpickle.dumps(items)
        except Exception:
            offset, exc = _first_unpicklable(items)
            self._set_error(
                UnpicklableItemError(first_index + offset, _type_names(items[offset]), str(exc)),
                first_index + offset,
            )
            items = items[:offset]
            if not items:
                return None
            items_bytes = cloudpickle.dumps(items)
        budget_s, check_every = self._chunk_budget(len(items))
        return self._send(
            first_index,
            items,
            ChunkPayload(fn_bytes, items_bytes, budget_s, check_every, fn_ref=fn_ref),
        )

    def _send(
        self, first_index: int, items: list[tuple[Any, ...]], payload: ChunkPayload
    ) -> _Chunk | None:
        try:
            future = self._backend.submit_chunk(payload)
        except RuntimeError as exc:
            # A replacement pool could not be had (shut down): report it in place.
            self._set_error(exc, first_index)
            return None
        self._in_flight_items += len(items)
        self._chunksizes.append(len(items))
        budgeted = payload.budget_s is not None
        chunk = _Chunk(first_index, len(items), future, items if budgeted else None)
        with self._done_lock:
            self._n_unfinished += len(items)
        # Neither the chunk nor this run is held by the callback: a future keeps its
        # callbacks after running them, and a cycle through them would keep every read
        # chunk's results in memory until a full garbage collection.
        future.add_done_callback(
            functools.partial(_tell_run_chunk_done, weakref.ref(self), len(items), budgeted)
        )
        return chunk

    def _on_chunk_done(self, future: Future[ChunkResult], n_items: int, budgeted: bool) -> None:
        """Count a chunk finished and wake the consumer; runs in the pool's thread (or at
        once, in this one, for a future already done). Keeping the count here, not by
        asking every future in flight whether it is done, keeps the parent's work per
        chunk constant: on a machine whose cores the workers fill, the parent's CPU time
        is taken from them."""
        with self._done_lock:
            self._n_unfinished -= n_items
            if budgeted:
                self._finished_budgeted.append(future)
        self._a_chunk_finished.set()

    def _chunk_budget(self, n_items: int) -> tuple[float | None, int]:
        """The time budget of a new chunk and how often its worker reads the clock; no
        budget while probing, after ``shutdown()``, or when budgets are off for this run."""
        plan = self._plan
        if not self._budgets or self._shutdown or plan is None or plan.mode != "parallel":
            return None, 1
        if not self._keeping_backend_open:
            self._backend.keep_open()  # type: ignore[attr-defined]
            self._keeping_backend_open = True
        s_per_item = self._observed_s_per_item or plan.measurements.wall_s_per_item
        budget_s = _cost_model.chunk_budget_s(
            n_items=n_items, s_per_item=s_per_item, task_roundtrip_s=plan.facts.task_roundtrip_s
        )
        return budget_s, _cost_model.budget_check_every(s_per_item)

    @_locked
    def _resend_unrun(self, *, every_finished: bool = False) -> None:
        """Chunks that stopped at their budget: send their unstarted items again, split over
        the workers, placed right after them so results keep their order. Every finished
        budgeted chunk is looked at once; a piece may stop and be split again in turn.

        Looked at: the chunks whose callbacks reported them finished, the oldest chunk if it
        is done (a future is done before its callbacks have run, and the consumer is about
        to take it), and with ``every_finished`` every done chunk in flight. A chunk the
        consumer already took off the queue is left to it (see ``_segments``)."""
        with self._done_lock:
            # Kept alive for the whole pass: the ids below must not be reused meanwhile.
            finished = list(self._finished_budgeted)
            self._finished_budgeted.clear()
        finished_ids = {id(future) for future in finished}
        if not finished_ids and not every_finished:
            head = self._pending[0] if self._pending else None
            if head is None or head.items is None or not head.future.done():
                return
        position = 0
        while position < len(self._pending):
            chunk = self._pending[position]
            position += 1
            if chunk.items is None:
                continue
            if id(chunk.future) in finished_ids or (
                (position == 1 or every_finished) and chunk.future.done()
            ):
                for piece in self._split_off_unrun(chunk):
                    self._pending.insert(position, piece)
                    position += 1

    def _split_off_unrun(self, chunk: _Chunk) -> list[_Chunk]:
        """The chunks that carry a finished budgeted chunk's unstarted items (none if it ran
        them all, failed or was cancelled), already sent; ``chunk`` then counts only the
        items it ran. Looks at a chunk once."""
        items, chunk.items = chunk.items, None
        plan = self._plan
        if items is None or plan is None:
            return []
        if chunk.future.cancelled() or chunk.future.exception() is not None:
            return []
        result = chunk.future.result()
        if result.n_unrun <= 0 or result.failure is not None:
            return []
        rest = items[result.n_results :]
        first_index = chunk.first_index + result.n_results
        chunk.n_items = result.n_results
        self._in_flight_items -= len(rest)
        sizes = _cost_model.split_unrun(
            n_unrun=len(rest),
            recent_s_per_item=result.recent_s_per_item,
            n_workers=plan.n_workers,
            task_roundtrip_s=plan.facts.task_roundtrip_s,
        )
        pieces: list[_Chunk] = []
        for size in sizes:
            piece = self._submit_items(first_index, rest[:size])
            if piece is None:
                break  # the error is recorded at the piece's position
            pieces.append(piece)
            first_index += size
            rest = rest[size:]
        return pieces

    @_locked
    def _stop_keeping_backend_open(self) -> None:
        if self._keeping_backend_open:
            self._keeping_backend_open = False
            self._backend.allow_close()  # type: ignore[attr-defined]

    @_locked
    def _fill(self) -> None:
        """Keep the workers fed: submit chunks while fewer than ``window`` items are
        unfinished and the outstanding items stay under ``_outstanding_cap()``."""
        if self._fell_back or (self._shutdown and not self._options.drain_on_shutdown):
            return
        while (
            self._error is None
            and not self._source.exhausted
            and self._in_flight_items < self._outstanding_cap()
            and self._n_unfinished_items() < self._window
        ):
            if self._submit_next(self._next_chunksize()) is None:
                break

    def _next_chunksize(self) -> int:
        """The size of the next chunk: the fed-back size, or smaller near the end of the
        input (``_cost_model.guided_chunksize``); the user's ``chunksize`` exactly."""
        if self._options.chunksize is not None or self._plan is None:
            return self._chunksize
        return _cost_model.guided_chunksize(
            chunksize=self._chunksize,
            n_items_unsent=self._source.n_remaining,
            n_workers=self._plan.n_workers,
            s_per_item=self._observed_s_per_item or self._plan.measurements.wall_s_per_item,
        )

    def _outstanding_cap(self) -> int:
        """Items submitted but not yet consumed: the user's ``buffersize`` exactly, as in
        the stdlib; else several windows, so finished chunks can wait for the consumer."""
        if self._options.buffersize is not None:
            return self._options.buffersize
        return MAX_OUTSTANDING_WINDOWS * self._window

    def _n_unfinished_items(self) -> int:
        return self._n_unfinished

    def _await_head(self) -> None:
        """Wait until the oldest chunk is done, refilling whenever any chunk finishes.

        Results leave in order, but workers finish out of order: waiting on the oldest chunk
        alone would leave a worker idle once its own chunks are done and the window is full
        of finished results (head-of-line blocking). The stdlib avoids this by submitting
        everything at once; we refill on every completion instead, within bounds.
        """
        self._resend_unrun()
        with self._lock:
            head = self._pending[0].future
        while not head.done():
            timeout_s = None
            if self._options.deadline_s is not None:
                timeout_s = self._options.deadline_s - time.monotonic()
                if timeout_s <= 0:
                    return  # ``_wait`` raises the TimeoutError in place
            # Cleared before looking, so a chunk finishing meanwhile wakes the next wait.
            self._a_chunk_finished.wait(timeout_s)
            self._a_chunk_finished.clear()
            self._resend_unrun()
            self._fill()
        self._resend_unrun()

    def _wait(self, chunk: _Chunk) -> _ChunkOutcome | None:
        """The chunk's results, or ``None`` after recording its error at its position."""
        timeout_s = None
        if self._options.deadline_s is not None:
            timeout_s = max(0.0, self._options.deadline_s - time.monotonic())
        try:
            result = chunk.future.result(timeout=timeout_s)
        except FuturesTimeoutError:
            raise
        except CancelledError:
            raise
        except BrokenProcessPool as exc:
            self._backend.mark_broken()
            error = WorkerCrashedError(
                chunk.first_index, chunk.first_index + chunk.n_items - 1, str(exc)
            )
            error.__cause__ = exc
            self._set_error(error, chunk.first_index)
            return None
        except Exception as exc:  # the chunk could not run at all (e.g. unpickling)
            self._set_error(exc, chunk.first_index)
            return None
        try:
            results: list[Any] = (
                result.results
                if result.results is not None
                else cloudpickle.loads(result.results_bytes)
            )
        except Exception as exc:
            self._set_error(
                UnpicklableResultError(chunk.first_index, "result", f"cannot be loaded: {exc}"),
                chunk.first_index,
            )
            return None
        outcome = _ChunkOutcome(
            results=results,
            n_results=result.n_results,
            compute_s=result.compute_s,
            cpu_s=result.cpu_s,
            items_bytes=result.items_bytes,
            results_bytes=result.results_bytes,
            voluntary_switches=result.voluntary_switches,
        )
        if result.failure is not None:
            self._set_error(
                _failure_exception(result, chunk.first_index),
                chunk.first_index + result.failure.offset,
            )
        self._busy_s += result.compute_s
        return outcome

    def _learn(self, outcome: _ChunkOutcome) -> None:
        if outcome.n_results == 0 or self._plan is None:
            return
        per_item_s = outcome.compute_s / outcome.n_results
        cpu_per_item_s = outcome.cpu_s / outcome.n_results
        if self._observed_s_per_item == 0.0:
            self._observed_s_per_item = per_item_s
            self._observed_cpu_s_per_item = cpu_per_item_s
        else:
            self._observed_s_per_item += FEEDBACK_WEIGHT * (per_item_s - self._observed_s_per_item)
            self._observed_cpu_s_per_item += FEEDBACK_WEIGHT * (
                cpu_per_item_s - self._observed_cpu_s_per_item
            )
        if self._options.chunksize is not None:
            return
        plan = self._plan
        self._chunksize = _cost_model.revise_chunksize(
            chunksize=self._chunksize,
            observed_s_per_item=self._observed_s_per_item,
            task_roundtrip_s=plan.facts.task_roundtrip_s,
        )
        if self._options.buffersize is None:
            self._window = max(
                self._window,
                _cost_model.choose_window_items(
                    plan.measurements, plan.n_workers, self._chunksize, None
                ),
            )
        else:
            self._chunksize = min(self._chunksize, self._options.buffersize)

    def _judge_pool(self, n_results: int, parent_s: float) -> None:
        """Count what this chunk's results cost the calling thread (waiting for them and
        receiving them; ``parent_s``) once the steady state
        shows the pool losing to serial, stop sending chunks: the ones in flight are
        still collected, then the rest of the input runs here."""
        plan = self._plan
        self._n_chunks_received += 1
        n_startup_chunks = _cost_model.WINDOW_MIN_ROUNDS * (plan.n_workers if plan else 1)
        if plan is None or plan.mode != "parallel" or self._n_chunks_received <= n_startup_chunks:
            return  # the first rounds carry the start-up and the pipeline filling
        self._steady_parent_s += parent_s
        self._steady_items += n_results
        if (
            self._fell_back
            or not self._options.serial_allowed
            or self._shutdown
            or self._source.exhausted
            or self._error is not None
            or self._steady_items == 0
        ):
            return
        m = plan.measurements
        parent_s_per_item = self._steady_parent_s / self._steady_items
        serial_s_per_item = _cost_model.serial_s_per_item_now(
            probed_s=m.wall_s_per_item,
            worker_wall_s=self._observed_s_per_item,
            worker_cpu_s=self._observed_cpu_s_per_item,
        )
        if not _cost_model.pool_is_losing(
            parent_s_per_item=parent_s_per_item,
            serial_s_per_item=serial_s_per_item,
            n_chunks_measured=self._n_chunks_received - n_startup_chunks,
            measured_s=self._steady_parent_s,
        ):
            return
        # The plan stays what was decided (parallel); the reason and the outcome say what
        # happened. No chunk is sent from now on; the serial path takes the rest.
        self._fell_back = True
        self._window = 0
        self._plan = replace(
            plan,
            reasons=(
                *plan.reasons,
                f"switched to serial part-way: each result cost the caller "
                f"{format_seconds(parent_s_per_item)} from the pool against "
                f"{format_seconds(serial_s_per_item)} for a call here; the rest ran here",
            ),
        )
        self._publish_plan(self._plan)
        logger.debug("map() fell back to serial:\n%s", self._plan.explain())

    # -- serial ------------------------------------------------------------------------

    def _serial_segments(self) -> Iterator[Iterable[Any]]:
        """Run the rest in the caller as segments, re-planning whenever the count doubles.

        This is the hot path of small jobs: each batch runs its first few calls one by one,
        timed, for the re-plan; the rest is handed out as a ``starmap`` over the input, which
        the consumer drains at C speed, so the caller pays next to nothing per item over a
        plain ``map``. An exception from ``fn`` or the input propagates at its position.
        """
        fn = self._fn
        source = self._source
        checkpoint = max(2 * source.n_pulled, 16)
        perf, cpu = time.perf_counter, time.process_time
        progress = self._options.on_progress
        watch = self._new_serial_watch()
        while not source.exhausted and self._error is None:
            n_batch = checkpoint - source.n_pulled
            if progress is not None:
                n_batch = min(n_batch, self._progress_batch_items())
            timed: list[Any] = []
            # One pair of clock reads around a group of calls worth about FAST_CALL_S, so
            # the reads (about 1 µs) do not inflate the figure for very fast calls.
            n_group = self._timed_group_items()
            if self._options.buffersize is not None:
                n_group = min(n_group, self._options.buffersize)
            # One iterable with a length: the group runs at C speed too (``list.extend``
            # keeps the results made before an exception).
            single = source.single_batch(min(n_group, n_batch))
            t0, c0 = perf(), cpu()
            try:
                if single is not None:
                    timed.extend(map(fn, single[0]))
                else:
                    for args in source.iter_up_to(min(n_group, n_batch)):
                        timed.append(fn(*args))
            except Exception:
                if timed:
                    self._delivered(len(timed))
                    yield timed
                raise
            timed_s, timed_cpu_s = perf() - t0, cpu() - c0
            if timed:
                self._delivered(len(timed))
                yield timed
            if source.input_error is not None:
                raise source.input_error
            per_item_s = timed_s / len(timed) if timed else 0.0
            checkpoint *= 2
            # Re-plan on fresh figures, before the bulk of the batch runs, so a switch to a
            # pool takes that bulk with it.
            if timed and not (self._shutdown or source.exhausted):
                self._busy_s += per_item_s * n_batch
                if self._worth_revisiting(per_item_s) and self._revisit(
                    per_item_s, timed_cpu_s / len(timed)
                ):
                    return
            if watch is not None and timed:
                # Timed alone (no consumer in between): the rate the parts are held to.
                watch.rebase(per_item_s)
            n_rest = n_batch - len(timed)
            # The rest of the batch runs in parts of bounded predicted time, with a look at
            # the clock between two parts (``_serial_watch``): a slow stretch is seen there.
            while n_rest > 0 and not source.exhausted:
                n_part = n_rest if watch is None else min(n_rest, watch.check_items())
                n_rest -= n_part
                part_started_s, n_pulled_before = perf(), source.n_pulled
                if progress is None and per_item_s < STRICT_SERIAL_S:
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
                    if self._stream_failed:
                        return
                if watch is not None and self._behind_prediction(
                    watch, perf() - part_started_s, source.n_pulled - n_pulled_before
                ):
                    # A new batch starts here: its timed calls measure fn alone (a part's
                    # time includes the consumer's) and re-plan on them.
                    break

    def _new_serial_watch(self) -> _serial_watch.SerialWatch | None:
        """The clock check of this serial run (``_serial_watch``); none once a pool lost."""
        if self._plan is None or self._fell_back:
            return None
        return _serial_watch.SerialWatch(
            self._plan.measurements.wall_s_per_item,
            _serial_watch.overshoot_margin_s(self._plan.facts),
        )

    def _behind_prediction(
        self, watch: _serial_watch.SerialWatch, elapsed_s: float, n_items: int
    ) -> bool:
        """Count a serial part's time; whether the run is behind its prediction by more than
        the watch's margin (the watch then starts over)."""
        stretch_s_per_item = watch.observe(elapsed_s, n_items)
        if stretch_s_per_item is None or self._shutdown or self._source.exhausted:
            return False
        logger.debug(
            "serial run %s behind its prediction after %d items (%s per item lately): "
            "timing the next calls to re-plan",
            format_seconds(watch.excess_s),
            self._source.n_pulled,
            format_seconds(stretch_s_per_item),
        )
        watch.rebase(watch.s_per_item)
        return True

    def _timed_group_items(self) -> int:
        """Serial calls timed together for the re-plan: about ``FAST_CALL_S`` of work."""
        per_item_s = self._plan.measurements.wall_s_per_item if self._plan else 0.0
        if per_item_s <= 0:
            return SERIAL_TIMED_CALLS
        return max(SERIAL_TIMED_CALLS, min(4096, int(_probe.FAST_CALL_S / per_item_s)))

    def _checked_calls(self, n_items: int) -> Iterator[Any]:
        """Up to ``n_items`` serial results; the first exception ends the whole stream."""
        fn = self._fn
        progress = self._options.on_progress
        for args in self._source.iter_up_to(n_items):
            try:
                result = fn(*args)
            except BaseException:
                self._stream_failed = True
                raise
            self._n_delivered += 1
            yield result
            if progress is not None:
                progress(1)
        if self._source.input_error is not None:
            self._stream_failed = True
            raise self._source.input_error

    def _progress_batch_items(self) -> int:
        """Serial items per progress update: about ``PROGRESS_INTERVAL_S`` of work."""
        per_item_s = self._plan.measurements.wall_s_per_item if self._plan else 0.0
        if per_item_s <= 0:
            return 1024
        return max(1, int(PROGRESS_INTERVAL_S / per_item_s))

    def _worth_revisiting(self, wall_s_per_item: float) -> bool:
        """Whether a serial run should re-plan now. With an unknown length, always: more
        input has shown up. With a known one, only when calls now take a different time
        from the one the plan was made with (by ``REVISIT_CHANGE``); otherwise the same
        facts would give the same plan, and re-planning would only tax a tiny job."""
        if self._fell_back:
            return False  # the pool already lost once on this input
        if self._source.n_total is None or self._plan is None:
            return True
        planned_s = self._plan.measurements.wall_s_per_item
        if planned_s <= 0:
            return True
        # Only slower calls can turn a serial plan parallel: faster ones shrink the serial
        # time more than a pool's (whose per-item costs of shipping stay).
        return wall_s_per_item / planned_s - 1 > REVISIT_CHANGE

    def _revisit(self, wall_s_per_item: float, cpu_s_per_item: float) -> bool:
        """Re-plan with what serial execution has measured; switch if a pool now wins."""
        assert self._plan is not None
        if self._shutdown:
            return False  # the pool is closing: the rest stays here
        measurements = replace(
            self._plan.measurements,
            wall_s_per_item=wall_s_per_item,
            cpu_s_per_item=cpu_s_per_item,
        )
        remaining = self._source.n_remaining if self._source.n_total is not None else None
        plan = self._plan_reading_facts_if_needed(measurements, remaining, serial_allowed=True)
        if plan.mode != "parallel":
            self._start_workers_for_stream(plan)
            return False
        if not self._in_process:
            try:
                self._fn_for_workers.ensure()
            except Exception:
                return False
        plan = replace(
            plan,
            reasons=(
                *plan.reasons,
                "switched from serial: the running measurements show a pool now wins",
            ),
        )
        self._switched = True
        self._set_plan(plan)
        logger.debug("map() switched to parallel:\n%s", plan.explain())
        self._backend.prepare(plan.n_workers)
        self._fill()
        return True

    def _start_workers_for_stream(self, plan: Plan) -> None:
        """Input of unknown length, kept serial only by the pool's start cost: start the
        workers in the background now, so the next re-plan finds them warm
        (``_cost_model.workers_to_prestart_for_stream``); once per run."""
        if self._started_early or self._source.n_total is not None or self._in_process:
            return

        def workers_for(facts: SystemFacts) -> int:
            return _cost_model.workers_to_prestart_for_stream(
                facts,
                plan.measurements,
                n_items_assumed=plan.n_items_assumed,
                max_workers=self._options.max_workers,
            )

        facts = plan.facts
        n_workers = workers_for(facts)
        if n_workers and not facts.was_read:
            # Decided on the most favourable bound so far: confirm on the machine's facts.
            try:
                facts = self._read_facts(self._backend)
            except Exception as exc:
                logger.debug("stream prestart skipped: facts unreadable (%s)", exc)
                return
            n_workers = workers_for(facts)
        if n_workers:
            self._started_early = True
            logger.debug("starting %d worker(s) while the serial stream goes on", n_workers)
            try:
                self._backend.prepare(n_workers)
            except Exception as exc:  # a guess only: the next re-plan starts what it needs
                logger.debug("stream prestart failed (%s)", exc)

    # -- the result stream ---------------------------------------------------------------

    def results(self) -> Iterator[Any]:
        """The results in input order (see the module docstring).

        The stream is a chain of segments (lists of results, serial ``starmap`` batches)
        that the consumer drains at C speed; Python code runs once per segment, not per item.
        """
        segments = self._segments()
        results: ResultIterator = ResultIterator.from_iterable(segments)  # type: ignore[assignment]
        results.segments = segments
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
        try:
            while True:
                if self._ready:
                    batch = list(self._ready)
                    self._ready.clear()
                    self._delivered(len(batch))
                    yield batch
                    continue
                if self._pending:
                    started_s = time.perf_counter()
                    self._await_head()
                    with self._lock:
                        chunk = self._pending.popleft()
                    outcome = self._wait(chunk)
                    with self._lock:
                        if chunk.items is not None and outcome is not None:
                            # Finished after ``_await_head`` looked (a deadline cut its
                            # wait short): its unstarted items go out now, next in line.
                            self._pending.extendleft(reversed(self._split_off_unrun(chunk)))
                        self._in_flight_items -= chunk.n_items
                    waited_s = time.perf_counter() - started_s
                    if outcome is not None:
                        self._learn(outcome)
                        if self._error is None or self._error_index > chunk.first_index:
                            self._fill()
                        self._ready.extend(outcome.results)
                        self._judge_pool(outcome.n_results, waited_s)
                    continue
                if self._error is not None:
                    self._cancel_pending()
                    raise self._error
                if self._source.exhausted:
                    return
                if self._plan is not None and (self._plan.mode == "serial" or self._fell_back):
                    yield from self._serial_segments()
                    if self._stream_failed:
                        return
                    continue
                if self._shutdown and not self._options.drain_on_shutdown:
                    raise RuntimeError(
                        "cannot schedule new futures after shutdown: the executor was shut "
                        "down while this map() still had input of unknown length to read. "
                        "Consume the results before leaving the 'with' block, or pass a list."
                    )
                self._fill()
        except BaseException as exc:
            interrupted = isinstance(exc, KeyboardInterrupt)
            raise
        finally:
            self._close(interrupted)

    def _delivered(self, n_items: int) -> None:
        """Count results handed to the consumer's iterator (and report them as progress)."""
        self._n_delivered += n_items
        if self._options.on_progress is not None and n_items:
            self._options.on_progress(n_items)

    def _close(self, interrupted: bool) -> None:
        if self._closed:
            return
        self._closed = True
        self._cancel_pending()
        if interrupted:
            # Before the backend is released: a deferred close would take the pool away.
            self._backend.terminate_workers()
        self._stop_keeping_backend_open()
        self._fn_for_workers.release()
        self._source.close()
        if self._options.on_finish is not None:
            self._options.on_finish()
        if self._plan is not None:
            wall_s = time.perf_counter() - self._started_s
            self._publish_plan(
                self._plan.with_outcome(
                    RunOutcome(
                        wall_s=wall_s,
                        n_items=self._n_delivered,
                        n_chunks=len(self._chunksizes),
                        chunksizes=tuple(self._chunksizes),
                        worker_busy_s=self._busy_s,
                        n_workers=self._plan.n_workers,
                        switched_to_parallel=self._switched,
                        switched_to_serial=self._fell_back,
                    )
                )
            )

    @_locked
    def _cancel_pending(self) -> None:
        for chunk in self._pending:
            chunk.future.cancel()
        self._pending.clear()
        self._in_flight_items = 0

    @_locked
    def _set_error(self, error: BaseException, index: int) -> None:
        """Record the error that ends the stream; an earlier position wins."""
        if self._error is None or index < self._error_index:
            self._error, self._error_index = error, index
            # Nothing after the error's position may run.
            for chunk in list(self._pending):
                if chunk.first_index > index:
                    chunk.future.cancel()
                    self._pending.remove(chunk)
                    self._in_flight_items -= chunk.n_items
            self._source.close()

    # -- called by the executor ----------------------------------------------------------

    def on_shutdown(self, *, wait: bool, cancel_futures: bool) -> None:
        """``shutdown()`` was called while this run is alive.

        With ``cancel_futures``, pending chunks are cancelled (the iterator then raises
        ``CancelledError`` where they stood, as the stdlib's does). Otherwise, a parallel
        run over an input of known length submits the rest now, so the results can still
        be read after the ``with`` block, exactly as with the stdlib's eager ``map``.
        """
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                for chunk in self._pending:
                    chunk.future.cancel()
                self._stop_keeping_backend_open()
                return
            if (
                self._options.drain_on_shutdown
                and self._plan is not None
                and self._plan.mode == "parallel"
                and not self._fell_back
            ):
                while self._error is None and not self._source.exhausted:
                    if self._submit_next(self._next_chunksize()) is None:
                        break
        if wait:
            # Chunks sent before now may still stop at their budget: resend their unstarted
            # items (without a budget now) while the pool is open, until none is left.
            while True:
                with self._lock:
                    budgeted = [c.future for c in self._pending if c.items is not None]
                if not budgeted:
                    break
                concurrent.futures.wait(budgeted)
                self._resend_unrun(every_finished=True)
            self._stop_keeping_backend_open()
            with self._lock:
                in_flight = list(self._pending)
            for chunk in in_flight:
                with contextlib.suppress(CancelledError):
                    chunk.future.exception()


class ResultIterator(chain):  # type: ignore[type-arg]
    """The iterator ``map()`` returns: a chain of result segments (C speed per item) that,
    like the stdlib's generator, can be closed to stop the work early."""

    segments: Generator[Iterable[Any], None, None]
    finalizer: weakref.finalize[Any, Any]

    def close(self) -> None:
        """Stop: cancel what is pending and read no more input."""
        self.segments.close()
        self.finalizer()


@dataclass(frozen=True)
class _ChunkOutcome:
    results: list[Any]
    n_results: int
    compute_s: float
    cpu_s: float
    items_bytes: int
    results_bytes: bytes
    voluntary_switches: int | None


def _tell_run_chunk_done(
    run_ref: weakref.ref[MapRun], n_items: int, budgeted: bool, future: Future[ChunkResult]
) -> None:
    """A chunk future's done-callback: tells its run, if the run is still alive."""
    run = run_ref()
    if run is not None:
        run._on_chunk_done(future, n_items, budgeted)


def _failure_exception(result: ChunkResult, first_index: int) -> BaseException:
    failure = result.failure
    assert failure is not None
    index = first_index + failure.offset
    error: BaseException
    if failure.kind == "result":
        error = UnpicklableResultError(index, failure.type_name, str(failure.error))
    elif failure.kind == "exception":
        error = UnpicklableExceptionError(index, failure.type_name, str(failure.error))
    else:
        error = failure.error
    error.__cause__ = RemoteTraceback(failure.tb_text)
    return error


def _first_unpicklable(items: list[tuple[Any, ...]]) -> tuple[int, Exception]:
    for offset, args in enumerate(items):
        try:
            cloudpickle.dumps(args)
        except Exception as exc:
            return offset, exc
    raise AssertionError("a chunk failed to pickle but each item pickles alone")


def _type_names(args: tuple[Any, ...]) -> str:
    names = [type(a).__qualname__ for a in args]
    return names[0] if len(names) == 1 else "(" + ", ".join(names) + ")"
