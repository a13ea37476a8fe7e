"""The calls a probe timed and the per-call figures they add up to.

Mechanism layer, no clock: ``_probe`` reports each timed group (its calls, wall and CPU
seconds, voluntary switches) and the memory-metered call; this record says what to plan on:
without a first call the one after it shows to have been cold (``first_call_is_cold``), and
for calls too fast for their hand-ons (``TRIVIAL_CALL_S``), the last group alone. It also
says when such calls end the probe (``ends_on_trivial_calls``) and whether the second call
is worth the memory meter (``METERED_CALL_MIN_S``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

TRIVIAL_CALL_S = 0.5e-6
"""Calls faster than this cost less than handing their results on in the caller (about
1-2 µs a result in a ``map()``, measured on the 2-core VM: two clock reads, the collector's
pause lifted and resumed, a share of the results' sizing, the input's and the stream's
generators): once a group of ``TRIVIAL_GROUP_ITEMS`` of them was timed, the probe stops
short of the count cap. Their figure needs no more: such calls plan serial on any machine (a
pool's per-item costs alone exceed them), and the serial run times groups of its own, of
hundreds of calls, as the count doubles (``_serial_run``), and re-plans on those."""

TRIVIAL_GROUP_ITEMS = 16
"""The group of calls under ``TRIVIAL_CALL_S`` that ends the probe: 32 calls in all (groups
of 1, 1 traced, 2, 4, 8, 16), 0.8 µs of calls timed together at 50 ns each, where a clock
read costs about 40 ns and is charged for. Measured on the 2-core VM (x*x+1 over a list, in a
``map()``): the probe took 300 µs when it stopped after the first full group of 64 (128
calls), about 2 µs a call, against a 50k-item job's 2.8 ms of serial work."""

METERED_CALL_MIN_S = 50e-6
"""The second call runs under the memory meter only when the first took at least this long:
a faster call cannot have grown the resident memory by more than about 1 MiB (fresh pages
are faulted in at about 2.6 GB/s on the 2-core VM: 64 MiB in 25 ms; memory reused from the
process's heap does not grow it at all), nothing against a worker's own
(``_cost_model.WORKER_BASE_BYTES``, 64 MiB), so the plan is the same with 0. The meter's
three file accesses cost 15 µs in a warm process and 170 µs in a fresh one's first
``map()``, against 2.8 ms for 50k trivial calls (the 2-core VM, CPython 3.11)."""

COLD_CALL_FACTOR = 3.0
"""A first call more than this many times slower than the call after it was cold (a first
import, caches filling, a lazy set-up), not a sign of the work to come. The numpy example
here: 21 ms for the first call of a 200x200 solve, 3-4 ms for every later one. Items whose
cost varies this much from one to the next are rare, and dropping a genuinely heavy first
item only errs towards serial, the safe side."""


@dataclass
class TimedCalls:
    """The calls a probe timed, and the per-call figures they add up to. A first call that
    the memory-metered call after it shows to have been cold (``first_call_is_cold``) is
    left out of the means; what it took beyond a warm call is ``per_call``'s last figure."""

    group_means_s: list[float] = field(default_factory=list)
    """Wall seconds per call of each timed group, in order (the first group is one call)."""
    wall_s: float = 0.0
    cpu_s: float = 0.0
    n_calls: int = 0
    n_switches: int | None = 0
    """Voluntary context switches over the timed calls; ``None`` once one count was missing."""
    first_call: tuple[float, float, int | None] | None = None
    """Wall and CPU seconds and voluntary switches of the first timed call."""
    traced_call: tuple[float, float] | None = None
    """Wall and CPU seconds of the memory-metered call (the second): an upper bound of a warm
    call, its wall time carrying the meter's two file reads."""
    cold_first: bool = False
    n_last_group: int = 0
    """Calls in the last group timed."""
    last_group: tuple[float, float, int | None] = (0.0, 0.0, None)
    """Wall and CPU seconds and voluntary switches of the last group timed."""

    def add_group(self, n_calls: int, wall_s: float, cpu_s: float, n_switches: int | None) -> None:
        self.n_last_group = n_calls
        self.last_group = (wall_s, cpu_s, n_switches)
        if self.first_call is None:
            self.first_call = (wall_s / n_calls, cpu_s / n_calls, n_switches)
        self.group_means_s.append(wall_s / n_calls)
        self.wall_s += wall_s
        self.cpu_s += cpu_s
        self.n_calls += n_calls
        if self.n_switches is not None:
            self.n_switches = None if n_switches is None else self.n_switches + n_switches

    @property
    def ends_on_trivial_calls(self) -> bool:
        """The last group timed held ``TRIVIAL_GROUP_ITEMS`` calls or more, each faster than
        ``TRIVIAL_CALL_S`` on average."""
        return self.n_last_group >= TRIVIAL_GROUP_ITEMS and self.group_means_s[-1] < TRIVIAL_CALL_S

    @property
    def first_call_may_need_memory(self) -> bool:
        """The first timed call took ``METERED_CALL_MIN_S`` or longer (or was not timed):
        the traced call is worth the memory meter."""
        return self.first_call is None or self.first_call[0] >= METERED_CALL_MIN_S

    def add_traced(self, wall_s: float, cpu_s: float) -> None:
        self.traced_call = (wall_s, cpu_s)
        first = self.first_call
        self.cold_first = first is not None and first_call_is_cold(first[0], wall_s)

    @property
    def warm_means_s(self) -> list[float]:
        """The groups' means without a cold first call: what stability is judged on."""
        return self.group_means_s[1:] if self.cold_first else self.group_means_s

    @property
    def n_warm_samples(self) -> int:
        return len(self.warm_means_s)

    def per_call(self) -> tuple[float, float, float | None, float]:
        """``(wall s, CPU s, voluntary switches or None, the cold first call's extra s)``
        per call, planned from the calls after a cold first one: the timed ones, else the
        traced one. A probe that ended on trivial calls (``ends_on_trivial_calls``) plans on
        its last group alone: each call of the smaller groups before it carries the clock
        reads and hand-on steps that the reads' calibration misses (about 0.1-0.3 µs, more
        than the call), which the largest group spreads thinnest (x*x+1, 32 calls probed:
        0.25 µs over all of them, 0.11 µs over the last group, as over 128 calls)."""
        wall_s, cpu_s, n_calls, n_switches = self.wall_s, self.cpu_s, self.n_calls, self.n_switches
        extra_s = 0.0
        first, traced = self.first_call, self.traced_call
        if self.ends_on_trivial_calls:
            (wall_s, cpu_s, n_switches), n_calls = self.last_group, self.n_last_group
            if self.cold_first and first is not None:
                extra_s = max(0.0, first[0] - wall_s / n_calls)
        elif self.cold_first and first is not None and traced is not None:
            wall_s, cpu_s, n_calls = wall_s - first[0], cpu_s - first[1], n_calls - 1
            if n_switches is not None and first[2] is not None:
                n_switches -= first[2]
            else:
                n_switches = None
            if n_calls == 0:
                wall_s, cpu_s, n_calls, n_switches = traced[0], traced[1], 1, None
            extra_s = max(0.0, first[0] - wall_s / n_calls)
        if n_calls == 0:
            return 0.0, 0.0, None, extra_s
        switches = None if n_switches is None else n_switches / n_calls
        return wall_s / n_calls, cpu_s / n_calls, switches, extra_s


def first_call_is_cold(first_call_s: float, next_call_s: float) -> bool:
    """Whether a first call of ``first_call_s`` was cold, given that the call after it took
    ``next_call_s``: slower by more than ``COLD_CALL_FACTOR``. A cold first call says how
    long a process's first call takes (each new worker pays that once), not how long the
    work takes, so the plan must not rest on it."""
    return first_call_s > COLD_CALL_FACTOR * max(0.0, next_call_s)
