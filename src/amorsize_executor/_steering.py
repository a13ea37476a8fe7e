"""The steering of a running ``map()``: what completed chunks teach about the next ones.

Policy layer: no clock, no I/O, no process. The rules are pure functions (``revise_chunksize``,
``guided_chunksize``, ``chunk_budget_s``, ``split_unrun``, ``pool_is_losing``, ...), as the
plan's are in ``_cost_model``. A ``Steering`` is made from a plan and handed numbers (each
chunk's compute time, what a result cost the caller); it keeps the running figures those
rules are fed with, and answers with numbers (the next chunk's size, how many items may be in
flight, a chunk's time budget, the sizes a stopped chunk's rest is split into) and one
judgement (the pool is losing to serial).
"""

from __future__ import annotations

import math
from dataclasses import replace

from . import _cost_model
from ._contention import outside_slowdown, unrun_s_per_item
from ._cost_model import (
    CPU_BOUND_SHARE,
    MAX_CHUNK_ITEMS,
    MAX_CHUNK_S,
    PARALLEL_MARGIN,
    TARGET_CHUNK_S,
)
from ._records import Plan, format_seconds

FEEDBACK_WEIGHT = 0.5
"""Weight of the newest chunk in the running per-item estimate (an exponential average):
high enough to follow a workload that changes, low enough that one odd chunk does not swing
the chunk size."""

MAX_OUTSTANDING_WINDOWS = 4
"""Finished chunks may wait for the consumer up to this many windows' worth of items, so a
slow oldest chunk does not idle the workers, while memory stays bounded."""

MAX_READ_AHEAD_BYTES = 4 * 2**20
"""Pickled input bytes that may be in flight (sent, results not yet consumed) without a
``buffersize``: a few MiB keep two to dozens of workers fed with chunks of any size, while
a long input of large items (a generator of 2 KiB items, say) is not read tens of
thousands of items (tens of MiB) ahead of the consumer. At least one chunk more than the
workers is always allowed in flight."""


GUIDED_MIN_CHUNK_S = 0.002
"""Near the end of the input, chunks shrink no further than this much work: ten dispatch
round trips (about 0.2 ms each here), so each still spends most of its time computing,
while a last chunk this short leaves the other workers idle for at most as long."""

CHUNK_BUDGET_FACTOR = 2.0
"""A chunk that has run this many times its expected duration stops starting items and
sends the rest back to be split among the workers. A false stop is cheap (one round trip,
and the rest goes out again); a late one leaves the other workers idle at the end of the
job. On the skewed benchmark (items 100x slower at the end), 3x left a worker idle for
about 50 ms per run that 2x did not; noise on this shared machine rarely reaches 2x."""

MIN_CHUNK_BUDGET_S = 0.005
"""A chunk is never stopped before this long: under it, the round trip of sending the rest
again costs more than a straggler could."""

MIN_BUDGET_ROUNDTRIPS = 20
"""Nor before this many dispatch round trips: the same bound on a slow transport."""

CLOCK_CHECK_S = 1e-5
"""With a budget, the worker reads the clock about this often in work done (a read costs
about 50 ns, under 1% of it)."""


def revise_chunksize(
    *,
    chunksize: int,
    observed_s_per_item: float,
    task_roundtrip_s: float,
) -> int:
    """The next chunk's size from what completed chunks measured (runtime feedback).

    Aims each chunk at ``TARGET_CHUNK_S`` (and at least a hundred dispatch round trips),
    moving at most a factor of two per step so one odd chunk cannot swing the size. The end
    of the input is ``guided_chunksize``'s business, applied as each chunk is sent.
    """
    if observed_s_per_item <= 0:
        target = chunksize * 2
    else:
        target_s = max(TARGET_CHUNK_S, 100 * task_roundtrip_s)
        target = max(1, round(target_s / observed_s_per_item))
    target = min(
        target,
        max(1, int(MAX_CHUNK_S / observed_s_per_item)) if observed_s_per_item > 0 else target,
    )
    size = min(MAX_CHUNK_ITEMS, max(chunksize // 2, min(chunksize * 2, target)))
    return max(1, size)


def guided_chunksize(
    *, chunksize: int, n_items_unsent: int | None, n_workers: int, s_per_item: float = 0.0
) -> int:
    """The size of the chunk about to be sent, shrunk near the end of a known-length input
    (guided self-scheduling): at most half of each worker's share of the items not yet
    sent, so the last chunks are short and finish together, and a slow stretch at the end
    lands in several small chunks that every worker takes a part of, not in one long one.
    Items already in flight do not count: they are some worker's already.

    Never below ``GUIDED_MIN_CHUNK_S`` of work at ``s_per_item`` (nor below one item): the
    chunks of a fast end would otherwise cost more in dispatch than they balance.
    """
    if n_items_unsent is None:
        return max(1, chunksize)
    guided = math.ceil(n_items_unsent / (2 * max(1, n_workers)))
    floor = int(GUIDED_MIN_CHUNK_S / s_per_item) if s_per_item > 0 else 1
    return max(1, min(chunksize, max(guided, floor)))


def capped_chunksize(
    chunksize: int, *, under_deadline: bool, item_bytes: float, n_workers: int
) -> int:
    """An automatic chunk size as it may be sent: 1 when ``map()`` has a ``timeout`` (a
    worker sends a chunk's results back together, so a slow item would hold the finished
    results of its chunk past the deadline; the stdlib, ``chunksize=1``, yields each of
    them), and no more items of ``item_bytes`` pickled bytes each than fit, one chunk per
    worker plus one, in ``MAX_READ_AHEAD_BYTES`` (0 bytes: not known yet, no cap)."""
    if under_deadline:
        return 1
    if item_bytes > 0:
        fitting = int(MAX_READ_AHEAD_BYTES / ((n_workers + 1) * item_bytes))
        chunksize = min(chunksize, max(1, fitting))
    return chunksize


def read_ahead_items(*, item_bytes: float, n_workers: int, chunksize: int) -> int:
    """Items that may be in flight without a ``buffersize``: as many as fit in
    ``MAX_READ_AHEAD_BYTES`` of pickled input at ``item_bytes`` each (any number while that
    is not known: 0), and never fewer than one chunk of ``chunksize`` more than there are
    workers (so none of them waits for input)."""
    floor = (n_workers + 1) * max(1, chunksize)
    if item_bytes <= 0:
        return max(floor, MAX_READ_AHEAD_BYTES)
    return max(floor, int(MAX_READ_AHEAD_BYTES / item_bytes))


def chunk_budget_s(*, n_items: int, s_per_item: float, task_roundtrip_s: float) -> float:
    """How long a chunk of ``n_items`` may run before it hands its unstarted items back."""
    expected_s = n_items * max(0.0, s_per_item)
    return max(
        CHUNK_BUDGET_FACTOR * expected_s,
        MIN_CHUNK_BUDGET_S,
        MIN_BUDGET_ROUNDTRIPS * task_roundtrip_s,
    )


def budget_check_every(s_per_item: float) -> int:
    """Items between two clock reads in a budgeted chunk (see ``CLOCK_CHECK_S``)."""
    if s_per_item <= 0:
        return 1
    return max(1, min(MAX_CHUNK_ITEMS, round(CLOCK_CHECK_S / s_per_item)))


def split_unrun(
    *, n_unrun: int, recent_s_per_item: float, n_workers: int, task_roundtrip_s: float
) -> list[int]:
    """Sizes of the chunks that carry a stopped chunk's unstarted items, in order.

    The items next to the ones that overran probably cost what those did, so each piece
    aims at ``TARGET_CHUNK_S`` at that rate, and there are at least as many pieces as
    workers (when there are enough items), so the slow stretch spreads over all of them.
    """
    if n_unrun <= 0:
        return []
    target_s = max(TARGET_CHUNK_S, 100 * task_roundtrip_s)
    items_per_target = target_s / recent_s_per_item if recent_s_per_item > 0 else math.inf
    size = n_unrun if items_per_target >= n_unrun else max(1, int(items_per_target))
    size = min(size, max(1, math.ceil(n_unrun / max(1, n_workers))))
    sizes = [size] * (n_unrun // size)
    if n_unrun % size:
        sizes.append(n_unrun % size)
    return sizes


FALLBACK_MIN_CHUNKS = 4
"""Chunks the parent must have received in the steady state (after the first
``WINDOW_MIN_ROUNDS`` rounds, which carry the start-up and the filling of the pipeline)
before it may judge that the pool is losing to serial."""

FALLBACK_MIN_S = 0.05
"""Nor before it has spent this long on them: a few short chunks on a shared machine say
more about a neighbour's burst than about the pool (a 2-core CI run once saw the first
20 ms of 1 ms calls look slower than serial)."""


def serial_s_per_item_now(
    *,
    probed_s: float,
    worker_wall_s: float,
    worker_cpu_s: float,
    n_workers: int = 1,
    n_usable_cores: int = 1,
) -> float:
    """What a call would cost in the caller now, to judge a running pool against.

    The probe's figure, unless the workers show calls have become slower since: for calls
    that compute, by their CPU time (their wall time also counts the cores the workers and
    the parent take from each other, which serial would not pay), stretched by the share of
    their wall time that processes outside this ``map()`` took (``outside_slowdown``: the
    pool's ``n_workers`` on ``n_usable_cores``; the defaults count none); for calls that
    wait, by their wall time (waiting is not shared). Never below the probe's figure.
    """
    if worker_wall_s > 0 and worker_cpu_s / worker_wall_s < CPU_BOUND_SHARE:
        now_s = worker_wall_s
    else:
        now_s = worker_cpu_s * outside_slowdown(
            worker_wall_s=worker_wall_s,
            worker_cpu_s=worker_cpu_s,
            n_workers=n_workers,
            n_usable_cores=n_usable_cores,
        )
    return max(probed_s, now_s)


def pool_is_losing(
    *,
    parent_s_per_item: float,
    serial_s_per_item: float,
    n_chunks_measured: int,
    measured_s: float,
) -> bool:
    """Whether a running pool is slower than finishing in the caller would be.

    ``parent_s_per_item`` is what each result has cost the calling thread in the steady
    state: waiting for it, receiving and unpickling it, but not the consumer's own time
    between results (serial would pay that too). When that exceeds a call in the caller by
    more than ``PARALLEL_MARGIN``, the pool is a loss: results too large to ship, or too
    few cores left once the parent takes its share. ``measured_s`` is the steady state's
    length in that time.
    """
    if n_chunks_measured < FALLBACK_MIN_CHUNKS or measured_s < FALLBACK_MIN_S:
        return False
    if serial_s_per_item <= 0:
        return False
    return parent_s_per_item > serial_s_per_item * (1 + PARALLEL_MARGIN)


class Steering:
    """The running estimate, chunk size and window of one plan.

    Args:
        plan: the plan the run follows (serial or parallel).
        chunksize: the user's ``chunksize`` (kept exactly), or ``None``: automatic.
        buffersize: the user's ``buffersize`` (the stdlib's bound on items in flight), or
            ``None``.
        under_deadline: ``map()`` has a ``timeout``: automatic chunks hold one item each
            (``capped_chunksize``).
    """

    def __init__(
        self,
        plan: Plan,
        *,
        chunksize: int | None,
        buffersize: int | None,
        under_deadline: bool = False,
    ) -> None:
        self.plan = plan
        self._user_chunksize = chunksize
        self._buffersize = buffersize
        self._under_deadline = under_deadline
        self.chunksize = plan.chunksize
        self.window = plan.window_items
        """Items that may be unfinished at once (0 once the pool lost to serial)."""
        if buffersize is not None and chunksize is None:
            self.chunksize = max(1, min(self.chunksize, buffersize))
        self.observed_s_per_item = 0.0
        self.observed_cpu_s_per_item = 0.0
        self.observed_item_bytes = 0.0
        """Pickled input bytes per item of the latest chunk (0 until one came back)."""
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

    @property
    def item_bytes(self) -> float:
        """Pickled input bytes per item: the latest chunk's, or the probe's if larger."""
        return max(self.observed_item_bytes, self.plan.measurements.item_bytes)

    # -- sizes ----------------------------------------------------------------------------

    def next_chunksize(self, n_items_unsent: int | None) -> int:
        """The size of the next chunk: the fed-back size, or smaller near the end of the
        input (``guided_chunksize``); the user's ``chunksize`` exactly; 1 under a deadline,
        and fewer items when they are large (``capped_chunksize``)."""
        if self._user_chunksize is not None:
            return self.chunksize
        return self._capped(
            guided_chunksize(
                chunksize=self.chunksize,
                n_items_unsent=n_items_unsent,
                n_workers=self.plan.n_workers,
                s_per_item=self.s_per_item,
            )
        )

    def outstanding_cap(self) -> int:
        """Items submitted but not yet consumed: the user's ``buffersize`` exactly, as in
        the stdlib; else several windows, so finished chunks can wait for the consumer, and
        no more than ``MAX_READ_AHEAD_BYTES`` of pickled input (``read_ahead_items``)."""
        if self._buffersize is not None:
            return self._buffersize
        chunksize = self.chunksize
        if self._user_chunksize is None:
            chunksize = self._capped(chunksize)
        read_ahead = read_ahead_items(
            item_bytes=self.item_bytes, n_workers=self.plan.n_workers, chunksize=chunksize
        )
        return min(MAX_OUTSTANDING_WINDOWS * self.window, read_ahead)

    def _capped(self, chunksize: int) -> int:
        return capped_chunksize(
            chunksize,
            under_deadline=self._under_deadline,
            item_bytes=self.item_bytes,
            n_workers=self.plan.n_workers,
        )

    def chunk_budget(self, n_items: int) -> tuple[float, int]:
        """The time budget of a new chunk of ``n_items`` and how often its worker reads the
        clock (``chunk_budget_s``, ``budget_check_every``)."""
        s_per_item = self.s_per_item
        budget_s = chunk_budget_s(
            n_items=n_items,
            s_per_item=s_per_item,
            task_roundtrip_s=self.plan.facts.task_roundtrip_s,
        )
        return budget_s, budget_check_every(s_per_item)

    def split_sizes(
        self,
        n_unrun: int,
        recent_s_per_item: float,
        *,
        n_ran: int = 0,
        cpu_s: float = 0.0,
        voluntary_switches: int | None = None,
    ) -> list[int]:
        """Sizes of the chunks that carry a stopped chunk's ``n_unrun`` unstarted items,
        from the rate of its last stretch, or the running estimate when the stop came from
        time other processes took (``unrun_s_per_item``: ``n_ran`` items run in ``cpu_s``
        CPU seconds with ``voluntary_switches``)."""
        expected_cpu_s = self.observed_cpu_s_per_item or self.plan.measurements.cpu_s_per_item
        rate_s = unrun_s_per_item(
            budget_factor=CHUNK_BUDGET_FACTOR,
            recent_s_per_item=recent_s_per_item,
            n_ran=n_ran,
            cpu_s=cpu_s,
            voluntary_switches=voluntary_switches,
            expected_s_per_item=self.s_per_item,
            expected_cpu_s_per_item=expected_cpu_s,
        )
        return split_unrun(
            n_unrun=n_unrun,
            recent_s_per_item=rate_s,
            n_workers=self.plan.n_workers,
            task_roundtrip_s=self.plan.facts.task_roundtrip_s,
        )

    # -- feedback -------------------------------------------------------------------------

    def learn(self, *, n_results: int, compute_s: float, cpu_s: float, items_bytes: int) -> None:
        """Fold a completed chunk into the running estimate and resize the next chunks
        (``items_bytes``: its pickled input, for the read-ahead cap)."""
        if n_results == 0:
            return
        self.observed_item_bytes = items_bytes / n_results
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
        self.chunksize = revise_chunksize(
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
        serial (``pool_is_losing``), return the plan with the reason added and
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
        serial_s_per_item = serial_s_per_item_now(
            probed_s=plan.measurements.wall_s_per_item,
            worker_wall_s=self.observed_s_per_item,
            worker_cpu_s=self.observed_cpu_s_per_item,
            n_workers=plan.n_workers,
            n_usable_cores=plan.n_usable_cores,
        )
        if not pool_is_losing(
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
