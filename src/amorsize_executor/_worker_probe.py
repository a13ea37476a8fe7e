"""The probe run in workers, for runs where ``fn`` must not run in the caller (``timeout``,
an ``initializer``, ``isolate=True``): small first chunks, several in flight, until
``_probe.probe_is_done`` says the figures can be trusted.

    send_chunk(1) ×n_slots ──► (the run reads each chunk in order and hands its results on)
          ▲                                  │ its outcome
          └── another, while not done ◄── took(outcome): done? ──► measurements() ──► plan

Unless the user gave a ``chunksize`` (then every chunk has that size, as in the stdlib),
the first ``PROBE_SINGLE_CHUNKS`` chunks hold one item each, and the probe does not end
before it has sent them, so the first results reach the consumer one by one, as they would
from the stdlib's ``chunksize=1`` (in a job of up to ``PROBE_SINGLE_CHUNKS + 1`` items, an
item that waits for the consumer to have received the ones before it never shares their
chunk), and ``n_slots`` of them are in flight at once, so the workers are not left idle
between round trips. Later chunks are each four times the last (never over the user's
``chunksize``): fast items need a few more round trips to measure enough compute time, and
the probe sends no more than ``PROBE_MAX_ITEMS`` items in all.

It is handed a callable that sends one chunk of a given size and a clock, and is told each
chunk's outcome; it never touches the run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import NamedTuple

from . import _probe
from ._chunk_io import ChunkOutcome
from ._records import WorkMeasurements
from ._steering import capped_chunksize

PROBE_SINGLE_CHUNKS = 8
"""Probe chunks of one item each before they grow: a job of up to this many items is probed
(and its results delivered) one item at a time. On two workers that is about four round
trips of a fresh pool (a few ms), where fast items would otherwise be measured in two."""

PROBE_GROWTH = 4
"""Each probe chunk after the single ones is this many times the last: fast items reach the
``PROBE_MIN_S`` of compute a figure is trusted on in a few more round trips."""


class WorkerProbe:
    """Which probe chunks to send and when the figures suffice (see the module docstring).

    Args:
        send_chunk: sends the next chunk of up to the given size; False if nothing was sent
            (the input ended, an error was recorded).
        n_slots: probe chunks kept in flight (two per worker started for the run).
        under_deadline: the run has a ``timeout`` and automatic chunks: one item a chunk
            (``_steering.capped_chunksize``; item sizes count once a plan knows its workers).
        chunksize: the user's ``chunksize``, the size of every probe chunk (no single-item
            ones then: the stdlib's results come a chunk at a time too), or ``None``.
        wall_clock: the clock of the probe's budget.
    """

    def __init__(
        self,
        send_chunk: Callable[[int], bool],
        *,
        n_slots: int,
        under_deadline: bool = False,
        chunksize: int | None = None,
        wall_clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._send_chunk = send_chunk
        self._n_slots = max(1, n_slots)
        self._under_deadline = under_deadline
        self._chunksize = chunksize
        self._wall_clock = wall_clock
        self._chunks: list[_ChunkFigures] = []
        self._cold_first = False
        # A chunk size the user gave is every chunk's, the probe's too, as in the stdlib
        # (whose results come a chunk at a time then as well).
        self._size = chunksize or 1
        self._n_sent = 0
        self._n_items_sent = 0
        self._n_in_flight = 0
        self._started_s = wall_clock()
        self.done = False

    def send(self) -> None:
        """Fill the free slots with probe chunks, unless the probe is done or has sent the
        ``PROBE_MAX_ITEMS`` it stops at (so it reads no further ahead than that)."""
        while not self.done and self._n_in_flight < self._n_slots:
            if self._n_sent >= PROBE_SINGLE_CHUNKS:
                self._size = capped_chunksize(
                    self._size * PROBE_GROWTH,
                    under_deadline=self._under_deadline,
                    item_bytes=0.0,
                    n_workers=1,
                )
            n_left = _probe.PROBE_MAX_ITEMS - self._n_items_sent
            if n_left < 1:
                return
            # The user's chunk size is kept whole; an automatic one stops at the cap.
            size = min(self._size, self._chunksize or n_left)
            if not self._send_chunk(size):
                return
            self._n_sent += 1
            self._n_items_sent += size
            self._n_in_flight += 1

    def took(self, outcome: ChunkOutcome) -> bool:
        """Count a probe chunk read in order (its results already on their way to the
        consumer); True once the figures can be trusted (the probe is then done)."""
        self._n_in_flight -= 1
        chunks = self._chunks
        chunks.append(
            _ChunkFigures(
                outcome.n_results,
                outcome.compute_s,
                outcome.cpu_s,
                outcome.items_bytes,
                len(outcome.results_bytes),
                outcome.voluntary_switches,
            )
        )
        if len(chunks) == 2:
            self._cold_first = _is_cold_first_chunk(chunks[0], chunks[1])
        warm = chunks[1:] if self._cold_first else chunks
        # Not before the single-item chunks are sent: a plan made sooner could put the last
        # items of a short job into one chunk, each held until the slowest is done.
        if not self.done and (self._n_sent >= PROBE_SINGLE_CHUNKS or self._chunksize):
            self.done = _probe.probe_is_done(
                n_items=sum(chunk.n_results for chunk in chunks),
                n_warm_samples=len(warm),
                elapsed_s=self._wall_clock() - self._started_s,
                trusted=sum(chunk.compute_s for chunk in warm) >= _probe.PROBE_MIN_S,
                lone_call_ok=True,
            )
        return self.done

    def measurements(self) -> WorkMeasurements:
        """The figures of the chunks read (zeros before any), and the probe is done: the
        chunks still in flight are the run's, read as any other."""
        self.done = True
        return _measurements(self._chunks, self._cold_first)


class _ChunkFigures(NamedTuple):
    """What the probe keeps of a chunk it was told about: its figures, not its results
    (the consumer's once handed on)."""

    n_results: int
    compute_s: float
    cpu_s: float
    items_bytes: int
    results_n_bytes: int
    voluntary_switches: int | None


def _is_cold_first_chunk(first: _ChunkFigures, second: _ChunkFigures) -> bool:
    """Whether ``first``, a chunk of one call, was a cold call by the per-call time of
    ``second``."""
    if first.n_results != 1 or second.n_results < 1:
        return False
    return _probe.first_call_is_cold(first.compute_s, second.compute_s / second.n_results)


def _measurements(chunks: list[_ChunkFigures], cold_first: bool) -> WorkMeasurements:
    """Per-item figures over ``chunks``: times from the warm ones (all but a cold first),
    sizes from all of them."""
    warm = chunks[1:] if cold_first else chunks
    n_items = sum(chunk.n_results for chunk in chunks)
    per = max(1, n_items)
    per_warm = max(1, sum(chunk.n_results for chunk in warm))
    wall_s_per_item = sum(chunk.compute_s for chunk in warm) / per_warm
    counts = [chunk.voluntary_switches for chunk in warm]
    switches = None if None in counts else sum(c for c in counts if c is not None) / per_warm
    return WorkMeasurements(
        n_probed=n_items,
        wall_s_per_item=wall_s_per_item,
        cpu_s_per_item=sum(chunk.cpu_s for chunk in warm) / per_warm,
        item_bytes=sum(chunk.items_bytes for chunk in chunks) / per,
        result_bytes=sum(chunk.results_n_bytes for chunk in chunks) / per,
        pickle_s_per_item=0.0,
        memory_bytes_per_call=0,
        measured_in_worker=True,
        first_call_extra_s=max(0.0, chunks[0].compute_s - wall_s_per_item) if cold_first else 0.0,
        voluntary_switches_per_item=switches,
    )
