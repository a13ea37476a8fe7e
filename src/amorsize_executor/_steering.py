"""The steering of a running ``map()``: what completed chunks teach about the next ones.

Policy layer: no clock, no I/O, no process. A ``Steering`` is made from a plan and handed
numbers (each chunk's compute time, what a result cost the caller); it answers with numbers
(the next chunk's size, how many items may be in flight, a chunk's time budget, the sizes a
stopped chunk's rest is split into) and one judgement (the pool is losing to serial). The
decisions themselves are ``_cost_model``'s pure functions; this class keeps the running
figures they are fed with.
"""

from __future__ import annotations

from dataclasses import replace

from . import _cost_model
from ._records import Plan, format_seconds

FEEDBACK_WEIGHT = 0.5
"""Weight of the newest chunk in the running per-item estimate (an exponential average):
high enough to follow a workload that changes, low enough that one odd chunk does not swing
the chunk size."""

MAX_OUTSTANDING_WINDOWS = 4
"""Finished chunks may wait for the consumer up to this many windows' worth of items, so a
slow oldest chunk does not idle the workers, while memory stays bounded."""


class Steering:
    """The running estimate, chunk size and window of one plan.

    Args:
        plan: the plan the run follows (serial or parallel).
        chunksize: the user's ``chunksize`` (kept exactly), or ``None``: automatic.
        buffersize: the user's ``buffersize`` (the stdlib's bound on items in flight), or
            ``None``.
    """

    def __init__(self, plan: Plan, *, chunksize: int | None, buffersize: int | None) -> None:
        self.plan = plan
        self._user_chunksize = chunksize
        self._buffersize = buffersize
        self.chunksize = plan.chunksize
        self.window = plan.window_items
        """Items that may be unfinished at once (0 once the pool lost to serial)."""
        if buffersize is not None and chunksize is None:
            self.chunksize = max(1, min(self.chunksize, buffersize))
        self.observed_s_per_item = 0.0
        self.observed_cpu_s_per_item = 0.0
        self._n_chunks_received = 0
        self._steady_parent_s = 0.0
        self._steady_items = 0

    @property
    def parallel(self) -> bool:
        return self.plan.mode == "parallel"

    @property
    def s_per_item(self) -> float:
        """The running per-item estimate, or the probe's before any chunk came back."""
        return self.observed_s_per_item or self.plan.measurements.wall_s_per_item

    # -- sizes ----------------------------------------------------------------------------

    def next_chunksize(self, n_items_unsent: int | None) -> int:
        """The size of the next chunk: the fed-back size, or smaller near the end of the
        input (``_cost_model.guided_chunksize``); the user's ``chunksize`` exactly."""
        if self._user_chunksize is not None:
            return self.chunksize
        return _cost_model.guided_chunksize(
            chunksize=self.chunksize,
            n_items_unsent=n_items_unsent,
            n_workers=self.plan.n_workers,
            s_per_item=self.s_per_item,
        )

    def outstanding_cap(self) -> int:
        """Items submitted but not yet consumed: the user's ``buffersize`` exactly, as in
        the stdlib; else several windows, so finished chunks can wait for the consumer."""
        if self._buffersize is not None:
            return self._buffersize
        return MAX_OUTSTANDING_WINDOWS * self.window

    def chunk_budget(self, n_items: int) -> tuple[float, int]:
        """The time budget of a new chunk of ``n_items`` and how often its worker reads the
        clock (``_cost_model.chunk_budget_s``, ``budget_check_every``)."""
        s_per_item = self.s_per_item
        budget_s = _cost_model.chunk_budget_s(
            n_items=n_items,
            s_per_item=s_per_item,
            task_roundtrip_s=self.plan.facts.task_roundtrip_s,
        )
        return budget_s, _cost_model.budget_check_every(s_per_item)

    def split_sizes(self, n_unrun: int, recent_s_per_item: float) -> list[int]:
        """Sizes of the chunks that carry a stopped chunk's ``n_unrun`` unstarted items."""
        return _cost_model.split_unrun(
            n_unrun=n_unrun,
            recent_s_per_item=recent_s_per_item,
            n_workers=self.plan.n_workers,
            task_roundtrip_s=self.plan.facts.task_roundtrip_s,
        )

    # -- feedback -------------------------------------------------------------------------

    def learn(self, *, n_results: int, compute_s: float, cpu_s: float) -> None:
        """Fold a completed chunk into the running estimate and resize the next chunks."""
        if n_results == 0:
            return
        per_item_s = compute_s / n_results
        cpu_per_item_s = cpu_s / n_results
        if self.observed_s_per_item == 0.0:
            self.observed_s_per_item = per_item_s
            self.observed_cpu_s_per_item = cpu_per_item_s
        else:
            self.observed_s_per_item += FEEDBACK_WEIGHT * (per_item_s - self.observed_s_per_item)
            self.observed_cpu_s_per_item += FEEDBACK_WEIGHT * (
                cpu_per_item_s - self.observed_cpu_s_per_item
            )
        if self._user_chunksize is not None:
            return
        plan = self.plan
        self.chunksize = _cost_model.revise_chunksize(
            chunksize=self.chunksize,
            observed_s_per_item=self.observed_s_per_item,
            task_roundtrip_s=plan.facts.task_roundtrip_s,
        )
        if self._buffersize is None:
            self.window = max(
                self.window,
                _cost_model.choose_window_items(
                    plan.measurements, plan.n_workers, self.chunksize, None
                ),
            )
        else:
            self.chunksize = min(self.chunksize, self._buffersize)

    def judge_pool(self, *, n_results: int, parent_s: float, may_fall_back: bool) -> Plan | None:
        """Count what a chunk's results cost the calling thread (waiting for them and
        receiving them; ``parent_s``). Once the steady state shows the pool losing to
        serial (``_cost_model.pool_is_losing``), return the plan with the reason added and
        close the window: no chunk is sent from then on. ``None``: keep the pool.

        ``may_fall_back``: the run may still switch (serial allowed, input left, no error,
        no shutdown, not switched already); the cost is counted either way."""
        plan = self.plan
        self._n_chunks_received += 1
        n_startup_chunks = _cost_model.WINDOW_MIN_ROUNDS * plan.n_workers
        if plan.mode != "parallel" or self._n_chunks_received <= n_startup_chunks:
            return None  # the first rounds carry the start-up and the pipeline filling
        self._steady_parent_s += parent_s
        self._steady_items += n_results
        if not may_fall_back or self._steady_items == 0:
            return None
        parent_s_per_item = self._steady_parent_s / self._steady_items
        serial_s_per_item = _cost_model.serial_s_per_item_now(
            probed_s=plan.measurements.wall_s_per_item,
            worker_wall_s=self.observed_s_per_item,
            worker_cpu_s=self.observed_cpu_s_per_item,
        )
        if not _cost_model.pool_is_losing(
            parent_s_per_item=parent_s_per_item,
            serial_s_per_item=serial_s_per_item,
            n_chunks_measured=self._n_chunks_received - n_startup_chunks,
            measured_s=self._steady_parent_s,
        ):
            return None
        # The plan stays what was decided (parallel); the reason and the outcome say what
        # happened.
        self.window = 0
        self.plan = replace(
            plan,
            reasons=(
                *plan.reasons,
                f"switched to serial part-way: each result cost the caller "
                f"{format_seconds(parent_s_per_item)} from the pool against "
                f"{format_seconds(serial_s_per_item)} for a call here; the rest ran here",
            ),
        )
        return self.plan


REVISIT_CHANGE = 0.3
"""A serial run over an input of known length re-plans when its calls have become this much
slower than the probe measured."""


def serial_worth_revisiting(
    *,
    wall_s_per_item: float,
    planned_s_per_item: float,
    length_known: bool,
    fell_back: bool,
) -> bool:
    """Whether a serial run should re-plan now. After the pool already lost once on this
    input, never. With an unknown length, always: more input has shown up. With a known
    one, only when calls now take longer than the plan's figure by ``REVISIT_CHANGE``;
    otherwise the same facts would give the same plan, and re-planning would only tax a
    tiny job."""
    if fell_back:
        return False
    if not length_known or planned_s_per_item <= 0:
        return True
    # Only slower calls can turn a serial plan parallel: faster ones shrink the serial time
    # more than a pool's (whose per-item costs of shipping stay).
    return wall_s_per_item / planned_s_per_item - 1 > REVISIT_CHANGE
