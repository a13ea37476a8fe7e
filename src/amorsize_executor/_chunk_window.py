"""The chunks of one ``map()`` in flight: submit, wait in order, budgets and resends, and the
error that ends the stream, at its position.

    source ──take(n)──► pickle items ──► backend.submit_chunk ──► pending (input order)
                             │ an unpicklable item: error at its index   │
                             ▼                                           ▼
    budgeted chunk stops early ──► its unstarted items, split (Steering.split_sizes),
                                   sent again right after it, so order holds
    oldest chunk done ──► results unpickled ──► ChunkOutcome to the run
                          a failure inside: error at its index; later chunks cancelled

Sizes come from the ``Steering`` the run hands over (``steering``); the window decides
nothing about them. It reads one clock, ``monotonic`` (injectable), for the ``timeout``
deadline. Thread safety: ``shutdown()`` may act from another thread than the consumer's, so
what changes the chunks in flight holds ``lock``; chunk completions, which arrive on the
pool's threads, only touch ``Completions``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FuturesTimeoutError
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, TypeVar

from . import _chunk_io
from ._backend import Backend
from ._chunk_io import ChunkOutcome
from ._chunk_worker import ChunkPayload, ChunkResult
from ._errors import (
    WorkerCrashedError,
)
from ._fn_for_workers import FnForWorkers
from ._input import Source
from ._steering import Steering

_Method = TypeVar("_Method", bound=Callable[..., Any])


def _locked(method: _Method) -> _Method:
    """Run the method holding the window's lock: ``shutdown()`` may act on a run from
    another thread than the one reading its results, and both change the chunks in flight."""

    @functools.wraps(method)
    def wrapper(self: ChunkWindow, *args: Any, **kwargs: Any) -> Any:
        with self.lock:
            return method(self, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


@dataclass(eq=False)
class Chunk:
    """A chunk in flight; compared by identity (two chunks are never the same)."""

    first_index: int
    n_items: int
    future: Future[ChunkResult]
    items: list[tuple[Any, ...]] | None = None
    """Kept while a budgeted chunk runs: the items it may hand back unstarted."""


class Completions:
    """Chunk completions, counted as they happen: the items still unfinished, the budgeted
    chunks finished since last asked, and a wake-up for the consumer.

    The counts change in the pool's threads (a future's done-callback) and only under this
    object's own lock, taken alone or inside the window's ``lock``, never the other way
    round. Counting here, not by asking every future in flight whether it is done, keeps
    the parent's work per chunk constant: on a machine whose cores the workers fill, the
    parent's CPU time is taken from them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.n_unfinished = 0
        """Items of the chunks sent whose futures are not done yet."""
        self._finished_budgeted: deque[Future[ChunkResult]] = deque()
        self._a_chunk_finished: threading.Event | None = None
        """Made by the first ``watch`` (a run that stays in the caller never needs it: an
        ``Event`` and its ``Condition`` cost 3.5 µs of a trivial ``map()``)."""

    def watch(self, future: Future[ChunkResult], n_items: int, budgeted: bool) -> None:
        """Count a chunk of ``n_items`` just sent until its future is done."""
        with self._lock:
            self.n_unfinished += n_items
            if self._a_chunk_finished is None:  # before any callback can set it
                self._a_chunk_finished = threading.Event()
        # Neither the chunk nor this object is held by the callback: a future keeps its
        # callbacks after running them, and a cycle through them would keep every read
        # chunk's results in memory until a full garbage collection.
        future.add_done_callback(
            functools.partial(_tell_chunk_done, weakref.ref(self), n_items, budgeted)
        )

    def on_done(self, future: Future[ChunkResult], n_items: int, budgeted: bool) -> None:
        """Count a chunk finished and wake the consumer; runs in the pool's thread (or at
        once, in this one, for a future already done)."""
        with self._lock:
            self.n_unfinished -= n_items
            if budgeted:
                self._finished_budgeted.append(future)
            finished = self._a_chunk_finished
        if finished is not None:  # always, after ``watch``
            finished.set()

    def take_finished_budgeted(self) -> list[Future[ChunkResult]]:
        """The budgeted chunks that finished since the last call."""
        with self._lock:
            finished = list(self._finished_budgeted)
            self._finished_budgeted.clear()
        return finished

    def wait(self, timeout_s: float | None) -> None:
        """Wait until a chunk finishes (or ``timeout_s`` passes)."""
        with self._lock:
            if self._a_chunk_finished is None:
                self._a_chunk_finished = threading.Event()
            finished = self._a_chunk_finished
        finished.wait(timeout_s)
        # Cleared before the caller looks, so a chunk finishing meanwhile wakes the next wait.
        finished.clear()


def _tell_chunk_done(
    completions_ref: weakref.ref[Completions],
    n_items: int,
    budgeted: bool,
    future: Future[ChunkResult],
) -> None:
    """A chunk future's done-callback: tells its counter, if it is still alive."""
    completions = completions_ref()
    if completions is not None:
        completions.on_done(future, n_items, budgeted)


class ChunkWindow:
    """The chunks in flight of one run, in input order.

    Args:
        fn: the function the chunks run.
        source: the input; the window pulls from it and closes it at an error.
        backend: where chunks run.
        budgets: chunks get a time budget (the user fixed no chunk size and the backend
            ``can_keep_open`` until handed-back items are resent).
        fn_for_workers: ``fn`` as the chunks carry it (in each, or once per worker); by
            default pickled into every chunk.
        deadline_s: ``monotonic()`` value after which waiting raises ``TimeoutError``.
        monotonic: the clock of ``deadline_s``.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        source: Source,
        backend: Backend,
        *,
        budgets: bool,
        deadline_s: float | None,
        monotonic: Callable[[], float] = time.monotonic,
        fn_for_workers: FnForWorkers | None = None,
    ) -> None:
        self._fn = fn
        self._fn_for_workers = fn_for_workers or FnForWorkers(fn)
        self._source = source
        self._backend = backend
        self._in_process = backend.runs_in_process
        """Chunks run in this process (threads): sent as objects, never pickled."""
        self._budgets = budgets
        self._deadline_s = deadline_s
        self._monotonic = monotonic
        self.steering: Steering | None = None
        """Set by the run once it has a plan; sizes and budgets come from it."""
        self.sending = True
        """Whether ``fill`` sends more (off after the pool lost, or at shutdown)."""
        self.closing = False
        """``shutdown()`` was called: no new chunk gets a budget."""
        self.pending: deque[Chunk] = deque()
        self.in_flight_items = 0
        self.error: BaseException | None = None
        self.error_index = -1
        self.chunksizes: list[int] = []
        self.busy_s = 0.0
        """Compute seconds the workers reported for the chunks read."""
        self._keeping_backend_open = False
        self.lock = threading.RLock()
        """Guards the chunks in flight (``pending`` and its counts); never held while
        waiting for a result."""
        self._completions = Completions()

    # -- errors at their positions ----------------------------------------------------------

    @_locked
    def set_error(self, error: BaseException, index: int) -> None:
        """Record the error that ends the stream; an earlier position wins."""
        if self.error is None or index < self.error_index:
            self.error, self.error_index = error, index
            # Nothing after the error's position may run.
            for chunk in list(self.pending):
                if chunk.first_index > index:
                    chunk.future.cancel()
                    self.pending.remove(chunk)
                    self.in_flight_items -= chunk.n_items
            self._source.close()

    @_locked
    def cancel_pending(self) -> None:
        for chunk in self.pending:
            chunk.future.cancel()
        self.pending.clear()
        self.in_flight_items = 0

    # -- sending ----------------------------------------------------------------------------

    @_locked
    def submit_next(self, size: int) -> Chunk | None:
        """Pull up to ``size`` items and submit them as one chunk; ``None`` if nothing was
        pulled. An input or pickling error is recorded at its position."""
        first_index = self._source.n_pulled
        items, input_error = self._source.take(size)
        chunk: Chunk | None = None
        if items:
            chunk = self._submit_items(first_index, items)
            if chunk is not None:
                self.pending.append(chunk)
        if input_error is not None:
            self.set_error(input_error, self._source.n_pulled)
        return chunk

    @_locked
    def fill(self) -> None:
        """Keep the workers fed: submit chunks while fewer than the window's items are
        unfinished and the outstanding items stay under ``Steering.outstanding_cap()``."""
        steering = self.steering
        if not self.sending or steering is None:
            return
        while (
            self.error is None
            and not self._source.exhausted
            and self.in_flight_items < steering.outstanding_cap()
            and self._completions.n_unfinished < steering.window
        ):
            if self.submit_next(steering.next_chunksize(self._source.n_remaining)) is None:
                break

    @_locked
    def drain(self) -> None:
        """Submit the rest of the input now (``shutdown()`` of a known-length input)."""
        steering = self.steering
        while steering is not None and self.error is None and not self._source.exhausted:
            if self.submit_next(steering.next_chunksize(self._source.n_remaining)) is None:
                break

    def _submit_items(self, first_index: int, items: list[tuple[Any, ...]]) -> Chunk | None:
        """Submit ``items`` (the input from ``first_index`` on) as one chunk, counted in
        flight but not yet placed in ``pending``; ``None`` if nothing could be sent."""
        if self._in_process:
            budget_s, check_every = self._chunk_budget(len(items))
            payload = ChunkPayload(b"", b"", budget_s, check_every, fn=self._fn, items=items)
            return self._send(first_index, items, payload)
        fn_bytes, fn_ref = self._fn_for_workers.for_chunk()
        items, items_bytes, error = _chunk_io.pickle_items(first_index, items)
        if error is not None:
            self.set_error(error, error.index)
            if not items:
                return None
        budget_s, check_every = self._chunk_budget(len(items))
        return self._send(
            first_index,
            items,
            ChunkPayload(fn_bytes, items_bytes, budget_s, check_every, fn_ref=fn_ref),
        )

    def _send(
        self, first_index: int, items: list[tuple[Any, ...]], payload: ChunkPayload
    ) -> Chunk | None:
        try:
            future = self._backend.submit_chunk(payload)
        except RuntimeError as exc:
            # A replacement pool could not be had (shut down): report it in place.
            self.set_error(exc, first_index)
            return None
        self.in_flight_items += len(items)
        self.chunksizes.append(len(items))
        budgeted = payload.budget_s is not None
        chunk = Chunk(first_index, len(items), future, items if budgeted else None)
        self._completions.watch(future, len(items), budgeted)
        return chunk

    # -- budgets and resends ----------------------------------------------------------------

    def _chunk_budget(self, n_items: int) -> tuple[float | None, int]:
        """The time budget of a new chunk and how often its worker reads the clock; no
        budget while probing, after ``shutdown()``, or when budgets are off for this run."""
        steering = self.steering
        if not self._budgets or self.closing or steering is None or not steering.parallel:
            return None, 1
        if not self._keeping_backend_open:
            self._backend.keep_open()
            self._keeping_backend_open = True
        return steering.chunk_budget(n_items)

    @_locked
    def stop_keeping_backend_open(self) -> None:
        if self._keeping_backend_open:
            self._keeping_backend_open = False
            self._backend.allow_close()

    @_locked
    def resend_unrun(self, *, every_finished: bool = False) -> None:
        """Chunks that stopped at their budget: send their unstarted items again, split over
        the workers, placed right after them so results keep their order. Every finished
        budgeted chunk is looked at once; a piece may stop and be split again in turn.

        Looked at: the chunks whose callbacks reported them finished, the oldest chunk if it
        is done (a future is done before its callbacks have run, and the consumer is about
        to take it), and with ``every_finished`` every done chunk in flight. A chunk the
        consumer already took off the queue is left to it (see ``take_head``)."""
        # Kept alive for the whole pass: the ids below must not be reused meanwhile.
        finished = self._completions.take_finished_budgeted()
        finished_ids = {id(future) for future in finished}
        if not finished_ids and not every_finished:
            head = self.pending[0] if self.pending else None
            if head is None or head.items is None or not head.future.done():
                return
        position = 0
        while position < len(self.pending):
            chunk = self.pending[position]
            position += 1
            if chunk.items is None:
                continue
            if id(chunk.future) in finished_ids or (
                (position == 1 or every_finished) and chunk.future.done()
            ):
                for piece in self._split_off_unrun(chunk):
                    self.pending.insert(position, piece)
                    position += 1

    def _split_off_unrun(self, chunk: Chunk) -> list[Chunk]:
        """The chunks that carry a finished budgeted chunk's unstarted items (none if it ran
        them all, failed or was cancelled), already sent; ``chunk`` then counts only the
        items it ran. Looks at a chunk once."""
        items, chunk.items = chunk.items, None
        steering = self.steering
        if items is None or steering is None:
            return []
        if chunk.future.cancelled() or chunk.future.exception() is not None:
            return []
        result = chunk.future.result()
        if result.n_unrun <= 0 or result.failure is not None:
            return []
        rest = items[result.n_results :]
        first_index = chunk.first_index + result.n_results
        chunk.n_items = result.n_results
        self.in_flight_items -= len(rest)
        pieces: list[Chunk] = []
        sizes = steering.split_sizes(
            len(rest),
            result.recent_s_per_item,
            n_ran=result.n_results,
            cpu_s=result.cpu_s,
            voluntary_switches=result.voluntary_switches,
        )
        for size in sizes:
            piece = self._submit_items(first_index, rest[:size])
            if piece is None:
                break  # the error is recorded at the piece's position
            pieces.append(piece)
            first_index += size
            rest = rest[size:]
        return pieces

    # -- receiving --------------------------------------------------------------------------

    def take_head(self) -> tuple[Chunk, ChunkOutcome | None]:
        """Wait for the oldest chunk (refilling as chunks finish) and take it: its results,
        or ``None`` after recording its error at its position.

        Raises:
            TimeoutError: the deadline passed (``concurrent.futures.TimeoutError``).
            CancelledError: the chunk was cancelled (``shutdown(cancel_futures=True)``).
        """
        self._await_head()
        with self.lock:
            chunk = self.pending.popleft()
        outcome = self.wait(chunk)
        with self.lock:
            if chunk.items is not None and outcome is not None:
                # Finished after ``_await_head`` looked (a deadline cut its wait short): its
                # unstarted items go out now, next in line.
                self.pending.extendleft(reversed(self._split_off_unrun(chunk)))
            self.in_flight_items -= chunk.n_items
        return chunk, outcome

    def _await_head(self) -> None:
        """Wait until the oldest chunk is done, refilling whenever any chunk finishes.

        Results leave in order, but workers finish out of order: waiting on the oldest chunk
        alone would leave a worker idle once its own chunks are done and the window is full
        of finished results (head-of-line blocking). The stdlib avoids this by submitting
        everything at once; we refill on every completion instead, within bounds.
        """
        self.resend_unrun()
        with self.lock:
            head = self.pending[0].future
        while not head.done():
            timeout_s = None
            if self._deadline_s is not None:
                timeout_s = self._deadline_s - self._monotonic()
                if timeout_s <= 0:
                    return  # ``wait`` raises the TimeoutError in place
            self._completions.wait(timeout_s)
            self.resend_unrun()
            self.fill()
        self.resend_unrun()

    def wait(self, chunk: Chunk) -> ChunkOutcome | None:
        """The chunk's results, or ``None`` after recording its error at its position."""
        timeout_s = None
        if self._deadline_s is not None:
            timeout_s = max(0.0, self._deadline_s - self._monotonic())
        try:
            result = chunk.future.result(timeout=timeout_s)
        except FuturesTimeoutError:
            raise
        except CancelledError:
            raise
        except BrokenProcessPool as exc:
            self._backend.mark_broken()
            crashed = WorkerCrashedError(
                chunk.first_index, chunk.first_index + chunk.n_items - 1, str(exc)
            )
            crashed.__cause__ = _chunk_io.to_stdlib_error(exc)
            self.set_error(crashed, chunk.first_index)
            return None
        except Exception as exc:  # the chunk could not run at all (e.g. unpickling)
            self.set_error(_chunk_io.to_stdlib_error(exc), chunk.first_index)
            return None
        outcome, error, index = _chunk_io.load_outcome(result, chunk.first_index)
        if error is not None:
            self.set_error(error, index)
        if outcome is not None:
            self.busy_s += result.compute_s
        return outcome

    # -- shutdown ---------------------------------------------------------------------------

    def wait_for_budgeted(self) -> None:
        """Chunks sent before now may still stop at their budget: resend their unstarted
        items (without a budget now) while the pool is open, until none is left."""
        while True:
            with self.lock:
                budgeted = [c.future for c in self.pending if c.items is not None]
            if not budgeted:
                break
            concurrent.futures.wait(budgeted)
            self.resend_unrun(every_finished=True)

    def wait_for_all(self) -> None:
        """Wait until every chunk in flight is done (cancelled ones included)."""
        with self.lock:
            in_flight = list(self.pending)
        for chunk in in_flight:
            with contextlib.suppress(CancelledError):
                chunk.future.exception()
