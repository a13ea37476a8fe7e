"""When a serial run must re-plan because the clock says its calls have become slower.

Policy layer: pure. The caller reads the clock once per batch of calls and reports the
batch's seconds and items; nothing here reads a clock.

A serial plan predicts ``s_per_item`` for every call. The probe sees only the first items,
so a slow stretch later in the input (a few items a hundred times slower) goes unseen by it.
``SerialWatch`` keeps a one-sided cumulative sum (CUSUM) of the time spent beyond the
prediction: each batch adds ``elapsed - n * s_per_item``, and the sum never goes below zero,
so batches on time do not build credit against a later stretch, and a stretch is measured
from the moment it started. Once the excess exceeds ``margin_s`` (the predicted cost of
starting a pool, so that a switch could have paid for itself already), the run is behind: it
times its next calls alone (a part's time includes the consumer's) and re-plans on them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ._records import SystemFacts

SERIAL_CHECK_S = 1e-3
"""A serial batch between two looks at the clock is at most this much predicted work. One
look (two clock reads, a comparison, a generator step) costs about 2-5 µs: under 0.5% of
this. A slow stretch is then seen after at most this long of predicted work, e.g. five
calls predicted at 0.2 ms (however slow they turn out)."""

SERIAL_OVERSHOOT_MIN_S = 0.01
"""The excess that triggers a re-plan is never below this: less is within the noise of a
shared machine (a preemption lasts a scheduler slice of a few ms), and each re-plan costs
about 50 µs."""


def serial_check_items(s_per_item: float) -> int:
    """Calls per serial batch between two looks at the clock: ``SERIAL_CHECK_S`` of
    predicted work, at least one call."""
    if s_per_item <= 0 or not math.isfinite(s_per_item):
        return 1 << 30
    return max(1, int(SERIAL_CHECK_S / s_per_item))


def overshoot_margin_s(facts: SystemFacts) -> float:
    """Excess over the serial prediction that justifies a re-plan: a worker's start (what
    switching costs before it can gain), never below ``SERIAL_OVERSHOOT_MIN_S``."""
    return max(SERIAL_OVERSHOOT_MIN_S, facts.worker_start_s)


@dataclass
class SerialWatch:
    """The running excess of a serial run over its prediction (see the module docstring)."""

    s_per_item: float
    """Predicted seconds per call."""
    margin_s: float
    """Excess that triggers a re-plan (``overshoot_margin_s``)."""
    excess_s: float = 0.0
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

    def check_items(self) -> int:
        """Calls to run before the next look at the clock (``serial_check_items``)."""
        return serial_check_items(self.s_per_item)

    def rebase(self, s_per_item: float) -> None:
        """A re-plan kept the run serial at ``s_per_item``: predict that from now on."""
        self.s_per_item = s_per_item
        self.excess_s, self.stretch_s, self.stretch_items = 0.0, 0.0, 0
