"""The probe of one ``map()`` run, up to its plan, with every result handed on as it comes.

    in the caller (serial allowed)          in workers (timeout=, initializer=, isolate=True)
    ──────────────────────────────          ────────────────────────────────────────────────
    map(): nothing                          map(): the pool started, the first probe chunks
    first next(): _probe.probe_stream,              sent (WorkerProbe: one item each, two per
        each result yielded as its call             worker), as the stdlib starts at map()
        returned; then plan(...)            the stream reads them in order, hands their
                                                results on and tells ``took``: more are
                                                sent, or plan(...)
                                            shutdown(): ``took(None)``: plan now, so that
                                                the plan sends the rest

Facade layer: it wires the probe (``_probe``, ``_worker_probe``) to the run's chunk window,
input and backend; what a plan is made of and what it starts is the run's (``plan``), which
this object is handed along with the clocks and the other callables it needs.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Generator, Iterator
from typing import Any

from . import _cost_model, _probe
from ._backend import Backend
from ._chunk_io import ChunkOutcome
from ._chunk_window import ChunkWindow
from ._input import Source
from ._records import SystemFacts, WorkMeasurements
from ._worker_probe import WorkerProbe


class RunProbe:
    """The probe of one run (see the module docstring).

    Args:
        fn, source, window, backend: the run's function, input, chunk window and backend.
        caller_items: the input as ``fn`` gets it in the caller (copies: ``_arg_copies``).
        plan: makes the run's plan from the figures; told whether the input is exhausted.
        delivered: counts results handed to the consumer by the probe in the caller.
        abandon: ends the run after an interrupt (workers may have started early).
        shut_down: whether the executor was shut down (no pool may start then).
        start_workers_early: ``_planning.Planner.start_workers_early``.
        plan_on_lone_call: ``_planning.Planner.memory_if_lone_call_enough``.
        read_facts: the facts that size the pool a probe in workers starts.
        max_workers, chunksize: the user's settings (no probe chunk exceeds ``chunksize``).
        under_deadline: the run has a ``timeout`` and automatic chunks.
        wall_clock, cpu_clock: the clocks the probe times with.
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        source: Source,
        window: ChunkWindow,
        backend: Backend,
        *,
        caller_items: Iterator[tuple[Any, ...]],
        plan: Callable[[WorkMeasurements, bool], None],
        delivered: Callable[[int], None],
        abandon: Callable[[], None],
        shut_down: Callable[[], bool],
        start_workers_early: Callable[[float, float, int], None],
        plan_on_lone_call: Callable[[float, float], int | None],
        read_facts: Callable[[], SystemFacts],
        max_workers: int | None,
        chunksize: int | None,
        under_deadline: bool,
        wall_clock: Callable[[], float],
        cpu_clock: Callable[[], float],
    ) -> None:
        self._fn = fn
        self._source = source
        self._caller_items = caller_items
        self._window = window
        self._backend = backend
        self._plan = plan
        self._delivered = delivered
        self._abandon = abandon
        self._shut_down = shut_down
        self._start_workers_early = start_workers_early
        self._plan_on_lone_call = plan_on_lone_call
        self._read_facts = read_facts
        self._max_workers = max_workers
        self._chunksize = chunksize
        self._under_deadline = under_deadline
        self._wall_clock = wall_clock
        self._cpu_clock = cpu_clock
        self._in_workers: WorkerProbe | None = None
        self._segment: Generator[Any, None, None] | None = None

    @property
    def in_workers(self) -> bool:
        """The probe in workers runs: the chunks the stream reads first are its own."""
        return self._in_workers is not None

    # -- in the caller -----------------------------------------------------------------------

    def in_caller(self) -> Generator[Any, None, None]:
        """The stream's first segment: the probe's results, each as its call returned; then
        the plan (a pool's first chunks are sent before the next result is asked for)."""
        self._segment = self._in_caller()
        return self._segment

    def close(self) -> None:
        """The run ended: a probe in the caller stops where it is (an iterator read on after
        ``close()`` must not call ``fn`` again), unless it is what ends the run."""
        segment, self._segment = self._segment, None
        if segment is not None and inspect.getgeneratorstate(segment) != inspect.GEN_RUNNING:
            segment.close()

    def _in_caller(self) -> Generator[Any, None, None]:
        try:
            outcome = yield from _probe.probe_stream(
                self._fn,
                self._caller_items,
                wall_clock=self._wall_clock,
                cpu_clock=self._cpu_clock,
                workers_waiting=lambda: self._backend.n_warm_workers > 0,
                # No pool may start once the executor was shut down.
                after_timed_call=lambda *call: (
                    None if self._shut_down() else self._start_workers_early(*call)
                ),
                plan_on_lone_call=lambda *call: (
                    None if self._shut_down() else self._plan_on_lone_call(*call)
                ),
            )
        except KeyboardInterrupt:
            self._abandon()
            raise
        n_results = outcome.measurements.n_probed
        self._delivered(n_results)
        if outcome.error is not None:
            # fn raised, or the input itself raised while producing the next item.
            self._window.set_error(outcome.error, n_results)
        self._plan(outcome.measurements, outcome.exhausted)

    # -- in workers --------------------------------------------------------------------------

    def start_in_workers(self) -> None:
        """Start the pool and send the probe's first chunks (``fn`` must not run here)."""
        n_cores, _ = _cost_model.choose_usable_cores(self._read_facts(), cpu_bound=True)
        n_workers = min(n_cores, self._max_workers or n_cores)
        self._backend.prepare(n_workers)
        window = self._window
        self._in_workers = WorkerProbe(
            lambda size: window.submit_next(size) is not None,
            # One running and one queued per worker, as a plan's window: none waits for the
            # parent between two probe chunks.
            n_slots=n_workers * _cost_model.WINDOW_MIN_ROUNDS,
            under_deadline=self._under_deadline,
            chunksize=self._chunksize,
            wall_clock=self._wall_clock,
        )
        self.took(None)

    def took(self, outcome: ChunkOutcome | None) -> None:
        """A probe chunk was read (its results already on their way; ``None``: it failed, or
        nothing was read yet): send more probe chunks, or plan once the probe is done, an
        error or the input's end ends it, or the executor is shutting down."""
        window = self._window
        with window.lock:  # shutdown() may end the probe from another thread
            probe = self._in_workers
            if probe is None:
                return
            if (outcome is None or not probe.took(outcome)) and not (
                window.error is not None or self._source.exhausted or self._shut_down()
            ):
                probe.send()
                if window.pending:
                    return
            self._in_workers = None
            self._plan(probe.measurements(), self._source.exhausted)
