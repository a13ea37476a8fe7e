"""When a serial run must re-plan because the clock says its calls have become slower.

Policy layer: pure. The caller reads the clock once per batch of calls and reports the
batch's seconds and items; nothing here reads a clock.

A serial plan predicts ``s_per_item`` for every call. The probe sees only the first items,
so a slow stretch later in the input (a few items a hundred times slower) goes unseen by it.
``SerialWatch`` keeps a one-sided cumulative sum (CUSUM) of the time spent beyond the
prediction: each batch adds ``elapsed - n * s_per_item``, and the sum never goes below zero,
so batches on time do not build credit against a later stretch, and a stretch is measured
from the moment it started. Once the excess exceeds ``margin_s`` (the predicted cost of
starting a pool, so that a switch could have paid for itself already), the run is behind.

A part's time includes the consumer's (results are handed out lazily), so being behind is a
suspicion, not proof: the run then re-checks, timing its next calls alone with a look at the
clock after each step of them (``RECHECK_STEP_S``), and re-plans on them. The re-check ends
as soon as those calls alone overshoot their prediction by the margin (confirmed: the rate
of the calls so far is the figure to re-plan on, after as few slow calls as the margin
allows), or once it has run as long as the stretch that raised the suspicion (``recheck_s``,
at most ``RECHECK_MAX_MARGINS`` margins and ``RECHECK_MAX_ITEMS`` calls): calls that stay on
time that long were not what made the stretch slow (a slow consumer, a pause), and the
re-plan finds their rate unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ._cost_model import CPU_BOUND_SHARE, predict_start_s
from ._records import Plan, SystemFacts

SERIAL_CHECK_S = 1e-3
"""A serial batch between two looks at the clock is at most this much predicted work. One
look (two clock reads, a comparison, a generator step) costs about 2-5 µs: under 0.5% of
this. A slow stretch is then seen after at most this long of predicted work, e.g. five
calls predicted at 0.2 ms (however slow they turn out)."""

SERIAL_OVERSHOOT_MIN_S = 0.01
"""The excess that triggers a re-plan is never below this: less is within the noise of a
shared machine (a preemption lasts a scheduler slice of a few ms), and each re-plan costs
about 50 µs."""


RECHECK_MAX_MARGINS = 4.0
"""A re-check lasts as long as the stretch that raised the suspicion, but no more than this
many margins: a stretch of one long call (a pause, one huge item) need not hold the results
of a re-check back as long. Over four margins of calls, an excess of one margin is a rate a
third above the prediction (4 against 3), the change a known-length serial run re-plans on
(``_steering.REVISIT_CHANGE``, 0.3): a slower rate is confirmed within the re-check."""


RECHECK_MAX_ITEMS = 4096
"""Nor more calls than this, as the largest timed group of a serial batch: their results wait
in a list until the re-check ends, and a stretch of fast calls lasting a few margins would
otherwise hold hundreds of thousands."""

RECHECK_STEP_S = 5e-5
"""A re-check reads the clock after calls worth this much predicted work (at least one
call): for calls of 50 µs or more, after each; faster calls go in groups, so that the read
(about 0.1 µs) and the step (about 0.5 µs) do not make trivial calls look several times
slower than they are (the same bound as the probe's ``FAST_CALL_S``)."""


def serial_check_items(s_per_item: float) -> int:
    """Calls per serial batch between two looks at the clock: ``SERIAL_CHECK_S`` of
    predicted work, at least one call."""
    if s_per_item <= 0 or not math.isfinite(s_per_item):
        return 1 << 30
    return max(1, int(SERIAL_CHECK_S / s_per_item))


def overshoot_margin_s(facts: SystemFacts) -> float:
    """Excess over the serial prediction that justifies a re-plan: what the model predicts a
    worker's start costs (``_cost_model.predict_start_s``: what switching costs before it
    can gain; nothing when a worker is warm already), never below ``SERIAL_OVERSHOOT_MIN_S``."""
    return max(SERIAL_OVERSHOOT_MIN_S, predict_start_s(facts, 1))


@dataclass
class SerialWatch:
    """The running excess of a serial run over its prediction (see the module docstring)."""

    s_per_item: float
    """Predicted seconds per call."""
    margin_s: float
    """Excess that triggers a re-plan (``overshoot_margin_s``)."""
    cpu_share: float = 0.0
    """The planned calls' CPU share when they compute (at least ``CPU_BOUND_SHARE``), else
    0: a re-check of computing calls counts their CPU time (``calls_own_s``)."""
    excess_s: float = 0.0
    recheck_s: float = 0.0
    """While positive, the run is re-checking: its next calls are timed alone for up to this
    many seconds (``recheck_over``)."""
    stretch_s: float = 0.0
    """Seconds since the excess was last zero."""
    stretch_items: int = 0
    """Calls since the excess was last zero."""

    def observe(self, elapsed_s: float, n_items: int) -> float | None:
        """Count a batch of ``n_items`` calls that took ``elapsed_s``. Returns the stretch's
        seconds per call when the excess passes the margin (re-plan now), else ``None``."""
        if n_items <= 0:
            return None
        self.excess_s += elapsed_s - n_items * self.s_per_item
        if self.excess_s <= 0:
            self.excess_s, self.stretch_s, self.stretch_items = 0.0, 0.0, 0
            return None
        self.stretch_s += elapsed_s
        self.stretch_items += n_items
        if self.excess_s > self.margin_s:
            return self.stretch_s / self.stretch_items
        return None

    def start_recheck(self) -> None:
        """The run is behind (``observe`` returned a rate): time the next calls alone for as
        long as the stretch lasted (at most ``RECHECK_MAX_MARGINS`` margins), counting the
        excess afresh."""
        self.recheck_s = min(self.stretch_s, RECHECK_MAX_MARGINS * self.margin_s)
        self.excess_s, self.stretch_s, self.stretch_items = 0.0, 0.0, 0

    def calls_own_s(self, elapsed_s: float, cpu_s: float) -> float:
        """The seconds of a re-check that its calls themselves took: for calls that compute,
        no more than their CPU time at the planned share, since time other processes took
        from the caller (a preemption of 10-20 ms on a busy machine) is not the calls' and
        would make a few fast calls look slow; for calls that wait, the wall time."""
        if self.cpu_share <= 0:
            return elapsed_s
        return min(elapsed_s, cpu_s / self.cpu_share)

    def recheck_over(self, elapsed_s: float, cpu_s: float, n_items: int) -> bool:
        """Whether a re-check may stop after ``n_items`` calls timed alone took
        ``elapsed_s`` (``cpu_s`` of CPU time): they overshot their prediction by the margin
        (the slowness is the calls'), or they have run for ``recheck_s`` (it was not)."""
        own_s = self.calls_own_s(elapsed_s, cpu_s)
        return own_s - n_items * self.s_per_item > self.margin_s or elapsed_s >= self.recheck_s

    def recheck_figure_s(self, elapsed_s: float, cpu_s: float, n_items: int) -> float:
        """The seconds of a finished re-check's ``n_items`` calls to re-plan on: their own
        (``calls_own_s``) when they overshot the margin; otherwise no more than predicted:
        calls within the margin over the whole re-check are on time, and a pause inside it
        (of other processes, shorter than the margin, or longer but unseen in the CPU time
        of calls that wait) must not make thousands of fast calls look slow to the re-plan."""
        own_s = self.calls_own_s(elapsed_s, cpu_s)
        if own_s - n_items * self.s_per_item > self.margin_s:
            return own_s
        return min(own_s, n_items * self.s_per_item)

    def recheck_step_items(self) -> int:
        """Calls between two clock reads of a re-check (``RECHECK_STEP_S``)."""
        if self.s_per_item <= 0 or not math.isfinite(self.s_per_item):
            return 1
        return max(1, int(RECHECK_STEP_S / self.s_per_item))

    def check_items(self) -> int:
        """Calls to run before the next look at the clock (``serial_check_items``)."""
        return serial_check_items(self.s_per_item)

    def rebase(self, s_per_item: float) -> None:
        """A re-plan kept the run serial at ``s_per_item``: predict that from now on."""
        self.s_per_item = s_per_item
        self.excess_s, self.stretch_s, self.stretch_items = 0.0, 0.0, 0
        self.recheck_s = 0.0


def watch_for(plan: Plan) -> SerialWatch:
    """The clock check of a serial run held to ``plan``'s per-item time; calls that compute
    (their CPU share at least ``CPU_BOUND_SHARE``) are judged by their CPU time when
    re-checked, so a preemption by another process does not pass for slow calls."""
    cpu_share = plan.measurements.cpu_share
    return SerialWatch(
        plan.measurements.wall_s_per_item,
        overshoot_margin_s(plan.facts),
        cpu_share=cpu_share if cpu_share >= CPU_BOUND_SHARE else 0.0,
    )
