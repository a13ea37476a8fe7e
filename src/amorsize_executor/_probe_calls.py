"""The probe's calls in the caller, each result handed on as soon as its call returned.

Mechanism layer: it runs ``fn`` and reads clocks; it decides nothing. The probe (``_probe``)
times its calls in groups; a result must nevertheless reach the consumer before the next call
(an item may wait for the consumer to have received the one before it), so each group yields
every result on its own, and what happens while the consumer holds control is kept out of the
figures:

    fn(*args) ─► read wall (and CPU) ─► pickled size of the result (sampled) ─► yield result
      ▲                                   (the collector as the caller has it)      │ consumer
      └────────── read (CPU and) wall ◄── (a group's collector pause resumed) ◄─────┘

The time between the two reads (the result's sizing, the consumer) is subtracted from the
group's wall and CPU time, and so is each read's own cost (``read_cost_s``, measured on the
clocks given), so a fast call measures as it did when a group handed its results on
together. The collector is never left paused while the consumer has control.

Reading the CPU clock costs about 0.2 µs (a system call), four times a wall-clock read and
more than a trivial call: a group of fast calls whose consumer took control back quickly at
every result in the group before (``QUICK_HAND_ON_S``) reads the wall clock alone around each
hand-on, and counts the time away as CPU time too (a quick group). Should a hand-on of a
quick group turn out slow, the group's CPU time is unknown: it is no sample (``timed``
returns ``None`` for it), and the next group reads both clocks again.
"""

from __future__ import annotations

import gc
import itertools
import math
import pickle
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import cloudpickle

PER_DUMP_OVERHEAD_BYTES = 12
"""What pickling a result on its own adds over its share of a chunk's list of results: the
protocol header (2 bytes), a frame header (9) and the stop opcode (1). Measured: ints,
tuples, strings, lists, dicts and 1 KB bytes pickled alone came out 12 bytes above their
mean size in one list (cloudpickle, protocol 5)."""

UNFRAMED_DUMP_OVERHEAD_BYTES = 3
"""The same for a result so small that its pickle has no frame (under 4 bytes of opcodes:
``None``, a small int): the header and the stop opcode only. A framed pickle is at least 15
bytes (12 of overhead and 3 or more of opcodes), an unframed one at most 5."""

MIN_FRAMED_DUMP_BYTES = 15

BUFFERED_RESULT_BYTES = 64 * 1024
"""Results at least this large are also pickled for real when sized: the counter takes a
large ``bytes`` or array as one write without copying it, so its time says nothing of the
copy into a chunk's pickle, which for 1 MiB results is most of their pickling cost (measured
on the 2-core VM, big_results_1mb: 7-10 µs a result counted, against 0.5-0.9 ms pickled in a
list as a chunk does; planned on the counter's figure, that job went to a pool that lost to
serial). Below it, the copy is a small share of what the counter's pass costs anyway."""

SIZED_FIRST_RESULTS = 16
"""Results whose pickled size the probe measures, every one, before it samples: sizing one
costs about 0.5 µs (most of a trivial call's hand-on), and a mean over 16 is close enough
for a figure the cost model multiplies by thousands of items."""

SIZED_RESULT_EVERY = 8
"""After the first ``SIZED_FIRST_RESULTS``, one result in this many is sized: a 256-item
probe sizes 46 results, not 256. The probe's items are pickled on the same sample."""


def next_in_sample(n: int) -> int:
    """The first count of results handed on, from ``n`` on, at which a result (or an item) is
    in the sample the probe sizes: each of the first ``SIZED_FIRST_RESULTS``, then one in
    ``SIZED_RESULT_EVERY``."""
    if n < SIZED_FIRST_RESULTS:
        return n
    return -(-n // SIZED_RESULT_EVERY) * SIZED_RESULT_EVERY


def in_sample(batch: list[tuple[Any, ...]], n_before: int, n_after: int) -> list[tuple[Any, ...]]:
    """The items of ``batch`` (its first at count ``n_before``, its last run at
    ``n_after - 1``) that the probe pickles at its end: a sample, as the results sized
    (``next_in_sample``). The others are freed as the probe goes, so a long probe does not
    keep hundreds of argument tuples alive (the collector counts each, and a collection
    among large young lists costs milliseconds: 1.5 ms among 200k-item lists, measured)."""
    sample = []
    index = next_in_sample(n_before)
    while index < n_after:
        sample.append(batch[index - n_before])
        index = next_in_sample(index + 1)
    return sample


N_FIXED_COST_SAMPLES = 3
"""Sizing calls on ``None`` timed to learn a sizing call's fixed cost (the smallest counts)."""

QUICK_HAND_ON_S = 5e-6
"""A hand-on (the consumer's part: the result's sizing aside) shorter than this is counted
as CPU time. Leaving the CPU and being woken again takes longer: measured on the 2-core VM
(CPython 3.11), ``time.sleep(0)`` took 27 µs at least (77 µs typically). What is quicker, a
round trip to another thread of the process through a pipe (2.5 µs, 1.3 µs of it off the
calling thread's CPU), runs that other thread meanwhile, which the process's CPU clock
counts as well."""

N_CALIBRATION_READS = 8
"""Back-to-back reads of a clock whose smallest gap is its cost per read: a few suffice
(the smallest gap is rarely interrupted), and they cost about 2 µs for both clocks."""


def read_cost_s(clock: Callable[[], float]) -> float:
    """Seconds one read of ``clock`` costs, as its smallest gap between back-to-back reads:
    a hand-on leaves about one read of each clock inside the time a call is charged."""
    reads = [clock() for _ in range(N_CALIBRATION_READS)]
    return max(0.0, min(later - earlier for earlier, later in itertools.pairwise(reads)))


class PickledSize:
    """The pickled size of one result, by one reused pickler writing to a counter (no bytes
    are kept): about 0.4 µs a small result, a quarter of a ``cloudpickle.dumps`` call."""

    def __init__(self) -> None:
        self._n_bytes = 0
        self._pickler = self._new_pickler()

    def _new_pickler(self) -> cloudpickle.Pickler:
        return cloudpickle.Pickler(self, protocol=pickle.HIGHEST_PROTOCOL)

    def write(self, data: bytes) -> int:
        """The pickler's output: counted, then dropped."""
        self._n_bytes += len(data)
        return len(data)

    def __call__(self, result: object) -> float:
        """Bytes ``result`` adds to a chunk's pickled results; ``inf`` if it cannot be
        pickled."""
        self._n_bytes = 0
        try:
            self._pickler.dump(result)
        except Exception:
            self._pickler = self._new_pickler()  # a failed dump may leave it half-written
            return math.inf
        finally:
            # The memo holds every object pickled: cleared, it keeps no result alive.
            self._pickler.clear_memo()
        n_bytes = self._n_bytes
        if n_bytes >= BUFFERED_RESULT_BYTES:
            # Counting skips what a chunk pays for a large result: copying it into the
            # pickle's buffer (and that buffer's growth). Timed by the caller: a real dump.
            cloudpickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
        if n_bytes >= MIN_FRAMED_DUMP_BYTES:
            return float(n_bytes - PER_DUMP_OVERHEAD_BYTES)
        return float(max(0, n_bytes - UNFRAMED_DUMP_OVERHEAD_BYTES))


@dataclass
class HandOns:
    """What the hand-ons of a probe took, to be kept out of its figures, and the pickled
    sizes of the results sized (``sizes_result``).

    Args:
        wall_clock, cpu_clock: the clocks the probe times its calls with.
        result_size: the pickled size of one result (``inf``: it cannot be pickled).
    """

    wall_clock: Callable[[], float]
    cpu_clock: Callable[[], float]
    result_size: Callable[[object], float]
    wall_s: float = 0.0
    """Wall seconds between the reads around the hand-ons (sizing, the consumer)."""
    cpu_s: float = 0.0
    """CPU seconds between the reads around the hand-ons that read the CPU clock."""
    pickle_s: float = 0.0
    """Wall seconds spent measuring the sized results' pickled sizes."""
    result_bytes: float = 0.0
    """Pickled bytes of the sized results, in all."""
    n_sized: int = 0
    n_results: int = 0
    quick: bool = False
    """Every hand-on of the last group took under ``QUICK_HAND_ON_S`` (the next group of
    several calls may then read the wall clock alone: a quick group)."""
    _next_sized: int = 0
    """``n_results`` when the next result to size is handed on (-1: none)."""
    _wall_read_s: float | None = None
    _cpu_read_s: float | None = None
    _fixed_sizing_s: float | None = None

    def read_costs(self) -> tuple[float, float]:
        """``(wall s, CPU s)`` a hand-on that reads both clocks leaves inside the time
        charged to a call: one read of the wall clock; one of the CPU clock and two of the
        wall clock, in CPU time."""
        if self._cpu_read_s is None:
            self._cpu_read_s = read_cost_s(self.cpu_clock)
        wall_read_s = self.wall_read_s()
        return wall_read_s, self._cpu_read_s + 2 * wall_read_s

    def wall_read_s(self) -> float:
        """Seconds one read of the wall clock costs (measured once)."""
        if self._wall_read_s is None:
            self._wall_read_s = read_cost_s(self.wall_clock)
        return self._wall_read_s

    def sizes_result(self) -> bool:
        """Whether the next result handed on is sized (``next_in_sample``; none once one
        could not be pickled: the size is ``inf`` then)."""
        return self.n_results == self._next_sized

    def size(self, result: object) -> float:
        """Count ``result``'s pickled size and the time pickling it took beyond the fixed
        cost of a sizing call (``fixed_sizing_s``): a chunk pickles all its results in one
        call, so only what a result adds to it is that result's pickling time. Returns the
        wall seconds the sizing took (part of a hand-on, not the consumer's)."""
        wall = self.wall_clock
        if self._fixed_sizing_s is None:
            self._fixed_sizing_s = self.fixed_sizing_s()
        started_s = wall()
        self.result_bytes += self.result_size(result)
        self.n_sized += 1
        sized_s = wall() - started_s
        unpicklable = self.result_bytes == math.inf
        self._next_sized = -1 if unpicklable else next_in_sample(self.n_results + 1)
        self.pickle_s += max(0.0, sized_s - self._fixed_sizing_s)
        return sized_s

    def fixed_sizing_s(self) -> float:
        """What one call of ``result_size`` costs on nothing (``None``), the smallest of
        ``N_FIXED_COST_SAMPLES``: about 0.5 µs of the default pickler's set-up and output,
        ten times what a small result adds to a chunk's list."""
        wall = self.wall_clock
        best_s = math.inf
        for _ in range(N_FIXED_COST_SAMPLES):
            started_s = wall()
            self.result_size(None)
            best_s = min(best_s, wall() - started_s)
        return max(0.0, best_s)

    def timed(
        self,
        fn: Callable[..., Any],
        batch: list[tuple[Any, ...]],
        meter: Callable[[Callable[[], Any]], tuple[Any, int]] | None = None,
    ) -> Generator[Any, None, tuple[BaseException | None, float, float | None, int]]:
        """``fn`` on every item of ``batch`` in turn (its one item under ``meter``, when
        given), each result yielded as soon as its call returned; returns what ``fn`` raised,
        the wall and CPU seconds of the calls alone (the hand-ons and the reads' own cost
        left out), and the peak bytes the meter saw (0 without one). The CPU seconds are
        ``None`` when a quick group's hand-on turned out slow (see the module docstring):
        the group is then no sample. With several items the collector is paused while ``fn``
        runs (see ``_probe.probe_stream``), never while the consumer has control; a
        collector the consumer turned off is left off."""
        if meter is not None:
            return self._metered(fn, batch[0], meter)
        if len(batch) > 1 and self.quick:
            return self._quick_group(fn, batch)
        return self._clocked_group(fn, batch)

    def _metered(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        meter: Callable[[Callable[[], Any]], tuple[Any, int]],
    ) -> Generator[Any, None, tuple[BaseException | None, float, float | None, int]]:
        wall, cpu = self.wall_clock, self.cpu_clock
        wall0, cpu0 = wall(), cpu()
        failed, memory_bytes, held = _call_metered(fn, args, meter)
        wall1, cpu1 = wall(), cpu()
        if failed is None:
            handed_s = wall()
            sized_s = self.size(held[0]) if self.sizes_result() else 0.0
            self.n_results += 1
            yield held.pop()
            hand_on_s = wall() - handed_s
            self.wall_s += hand_on_s
            self.quick = hand_on_s - sized_s < QUICK_HAND_ON_S
        return failed, wall1 - wall0, cpu1 - cpu0, memory_bytes

    def _clocked_group(
        self, fn: Callable[..., Any], batch: list[tuple[Any, ...]]
    ) -> Generator[Any, None, tuple[BaseException | None, float, float | None, int]]:
        """Both clocks read around each hand-on: its CPU time is measured, not assumed."""
        wall, cpu = self.wall_clock, self.cpu_clock
        away_wall_s, away_cpu_s, n_before = self.wall_s, self.cpu_s, self.n_results
        error: BaseException | None = None
        quick = True
        paused = len(batch) > 1 and gc.isenabled()
        if paused:
            gc.disable()
        wall0, cpu0 = wall(), cpu()
        try:
            for args in batch:
                try:
                    # In a list popped as it is yielded: while the consumer holds the result,
                    # this frame must not (a dropped result is freed, as with the stdlib).
                    held = [fn(*args)]
                except Exception as exc:
                    error = exc
                    break
                handed_s, handed_cpu_s = wall(), cpu()
                resume = paused
                if paused:
                    gc.enable()
                    paused = False
                sized_s = self.size(held[0]) if self.sizes_result() else 0.0
                self.n_results += 1
                yield held.pop()
                if resume and gc.isenabled():
                    gc.disable()
                    paused = True
                self.cpu_s += cpu() - handed_cpu_s
                hand_on_s = wall() - handed_s
                self.wall_s += hand_on_s
                quick = quick and hand_on_s - sized_s < QUICK_HAND_ON_S
            wall1, cpu1 = wall(), cpu()
        finally:
            if paused:
                gc.enable()
        self.quick = quick
        n_done = self.n_results - n_before
        wall_read_s, cpu_read_s = self.read_costs() if n_done else (0.0, 0.0)
        wall_s = wall1 - wall0 - (self.wall_s - away_wall_s) - n_done * wall_read_s
        cpu_s = cpu1 - cpu0 - (self.cpu_s - away_cpu_s) - n_done * cpu_read_s
        return error, max(0.0, wall_s), max(0.0, cpu_s), 0

    def _quick_group(
        self, fn: Callable[..., Any], batch: list[tuple[Any, ...]]
    ) -> Generator[Any, None, tuple[BaseException | None, float, float | None, int]]:
        """The wall clock alone read around each hand-on; the time away counts as CPU time
        too (``QUICK_HAND_ON_S``), unless a hand-on turns out slow: the CPU time is then
        ``None``."""
        wall, enable, disable, enabled = self.wall_clock, gc.enable, gc.disable, gc.isenabled
        n_before = self.n_results
        error: BaseException | None = None
        quick = True
        away_s = 0.0
        # One list for the group, emptied as each result is yielded: while the consumer holds
        # the result, this frame must not (a dropped result is freed, as with the stdlib).
        held: list[Any] = []
        pausing = enabled()
        if pausing:
            disable()
        wall0, cpu0 = wall(), self.cpu_clock()
        try:
            for args in batch:
                try:
                    held.append(fn(*args))
                except Exception as exc:
                    error = exc
                    break
                handed_s = wall()
                if pausing:
                    enable()
                n = self.n_results
                sized_s = self.size(held[0]) if n == self._next_sized else 0.0
                self.n_results = n + 1
                yield held.pop()
                if pausing:
                    if enabled():
                        disable()
                    else:
                        pausing = False  # the consumer turned it off: it stays off
                hand_on_s = wall() - handed_s
                away_s += hand_on_s
                if hand_on_s - sized_s >= QUICK_HAND_ON_S:
                    quick = False
            wall1, cpu1 = wall(), self.cpu_clock()
        finally:
            self.wall_s += away_s
            if pausing and not enabled():
                enable()
        self.quick = quick
        charged_s = (self.n_results - n_before) * self.wall_read_s()
        wall_s = max(0.0, wall1 - wall0 - away_s - charged_s)
        if not quick:
            return error, wall_s, None, 0
        return error, wall_s, max(0.0, cpu1 - cpu0 - away_s - charged_s), 0


def _call_metered(
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    meter: Callable[[Callable[[], Any]], tuple[Any, int]],
) -> tuple[BaseException | None, int, list[Any]]:
    """``fn(*args)`` under the memory meter: ``(what fn raised, the peak bytes it needed,
    its result in a list to hand on)``."""
    try:
        result, memory_bytes = meter(lambda: fn(*args))
    except Exception as exc:
        return exc, 0, []
    return None, memory_bytes, [result]
