"""The plan of one ``map()``: measurements and facts in, a ``Plan`` out, with every check a
``map()`` makes. Used by ``_map_run.MapRun`` and by the CLI's ``explain`` (which plans
without running), so both decide alike.

    measurements ──► nothing left to plan for? ──► serial on placeholder facts
                 ──► serial even on the most favourable facts? (local machine only:
                     every core, the fastest start, free transfers) ──► serial, no read
                 ──► read_facts() ──► _cost_model.plan_map
                 ──► parallel but fn cannot be pickled ──► serial (when allowed) or raise

``fn``'s pickled size counts in the plan once the cheap bound leaves a pool possible
(``FnForWorkers.with_size``). A serial plan over an input of unknown length that only the
pool's start keeps serial starts workers in the background (``start_workers_for_stream``).

Run layer: it reads facts only through the ``read_facts`` callable it is handed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

from . import _cost_model, _early_start, _fn_cost, _meters, _system_facts
from ._fn_for_workers import FnForWorkers
from ._input import Source
from ._records import Plan, SystemFacts, WorkMeasurements

logger = logging.getLogger("amorsize_executor")

NO_WORK = WorkMeasurements(
    n_probed=0,
    wall_s_per_item=0.0,
    cpu_s_per_item=0.0,
    item_bytes=0.0,
    result_bytes=0.0,
    pickle_s_per_item=0.0,
    memory_bytes_per_call=0,
)
"""Figures of no work at all, for ``FnForWorkers.with_size`` to add ``fn``'s own to."""


@dataclass(frozen=True)
class PlanLimits:
    """The user's settings a plan must respect."""

    max_workers: int | None
    chunksize: int | None
    buffersize: int | None
    serial_allowed: bool
    local_machine: bool
    """Plans are for this machine's cores, read from it: only then may a favourable bound
    from this machine rule a pool out without reading the facts."""


class Planner:
    """Plans (and re-plans) one ``map()`` over ``source``.

    Args:
        fn: the function as its chunks carry it (its picklability and size are part of
            the plan).
        source: the input (how much was pulled and is left).
        limits: the user's settings.
        read_facts: the facts of where the workers run (read only when needed).
        in_process: the workers are threads of this process: nothing is pickled.
        fastest_start_s: the least a worker's start can cost (``Backend.fastest_start_s``).
        prepare: starts workers (``Backend.prepare``), for the start during the probe.
    """

    def __init__(
        self,
        fn: FnForWorkers,
        source: Source,
        limits: PlanLimits,
        *,
        read_facts: Callable[[], SystemFacts],
        in_process: bool,
        fastest_start_s: Callable[[], float],
        prepare: Callable[[int], None] | None = None,
    ) -> None:
        self._fn = fn
        self._source = source
        self._limits = limits
        self._read_facts = read_facts
        self._in_process = in_process
        self._fastest_start_s = fastest_start_s
        self._prepare = prepare
        self._started_early = False

    def start_workers_early(self, fastest_call_s: float, its_cpu_s: float, n_timed: int) -> None:
        """Start the pool while the probe goes on when its first calls already say the job
        is long and CPU-bound (see ``_early_start.workers_to_start_early``); once at most.
        The probe's ``after_timed_call``."""
        if self._started_early or self._prepare is None:
            return

        def workers_for(n_cores: int, fn_load_s_per_worker: float = 0.0) -> int:
            return _early_start.workers_to_start_early(
                fastest_call_s=fastest_call_s,
                its_cpu_s=its_cpu_s,
                n_calls_timed=n_timed,
                n_items_left=self._source.n_remaining,
                n_usable_cores=n_cores,
                max_workers=self._limits.max_workers,
                fn_load_s_per_worker=fn_load_s_per_worker,
            )

        # Decided on the most cores there could be first: reading the machine costs more
        # than most calls, and most jobs are ruled out without it.
        if not workers_for(max(2, _system_facts.read_logical_cores())):
            return
        try:
            facts = self._read_facts()
        except Exception as exc:
            logger.debug("early start skipped: facts unreadable (%s)", exc)
            return
        n_workers = workers_for(
            _cost_model.choose_usable_cores(facts, cpu_bound=True)[0],
            self._fn_load_s_per_worker(facts),
        )
        if n_workers:
            self._started_early = True
            logger.debug("starting %d worker(s) while the probe runs", n_workers)
            try:
                self._prepare(n_workers)
            except Exception as exc:  # a guess only: the plan starts what it needs
                logger.debug("early start failed (%s); the plan decides", exc)

    def _fn_load_s_per_worker(self, facts: SystemFacts) -> float:
        """What one worker's copy of ``fn`` costs before its first item
        (``_fn_cost.fn_shipping_s`` of one chunk to one worker: a ``fn`` that travels in
        every chunk reaches each worker at least once); 0 for workers that share the
        caller's ``fn``, or an ``fn`` that cannot be pickled (the plan finds that out).
        Pickling it here is the pickling the plan would do anyway; a large ``fn``'s buffers
        are not copied."""
        if self._in_process:
            return 0.0
        sized = self._fn.with_size(NO_WORK)
        return _fn_cost.fn_shipping_s(facts, sized, n_chunks=1, n_workers=1)

    def memory_if_lone_call_enough(self, call_s: float, its_cpu_s: float) -> int | None:
        """The probe's ``plan_on_lone_call``: an upper bound of the call's memory when its
        first call alone is enough to plan on (``_early_start.lone_call_is_enough``: long
        against a worker's start, a pool yet to be forked, the items left fit in one round)
        and that bound cannot change the plan (``_early_start.memory_cannot_matter``);
        ``None`` (probe on) otherwise."""
        n_left = self._source.n_remaining if self._source.n_total is not None else None
        if (
            self._in_process
            or not self._limits.serial_allowed
            or n_left is None
            or n_left < 1
            # Not worth reading the machine for calls short against any start (most jobs).
            or call_s
            < _early_start.LONE_CALL_START_MULTIPLE * _system_facts.fastest_start_prior_s()
        ):
            return None
        try:
            facts = self._read_facts()
        except Exception as exc:
            logger.debug("no plan on a lone call: facts unreadable (%s)", exc)
            return None
        measurements = WorkMeasurements(
            n_probed=1,
            wall_s_per_item=call_s,
            cpu_s_per_item=its_cpu_s,
            item_bytes=0.0,
            result_bytes=0.0,
            pickle_s_per_item=0.0,
            memory_bytes_per_call=0,
        )
        enough = _early_start.lone_call_is_enough(
            call_s=call_s,
            worker_start_s=facts.worker_start_s,
            # Workers forked after this call: warm ones were forked before it.
            workers_inherit_state=facts.start_method == "fork" and facts.n_warm_workers == 0,
            n_items_left=n_left,
            n_usable_cores=_cost_model.choose_usable_cores(facts, cpu_bound=True)[0],
            max_workers=self._limits.max_workers,
        )
        if not enough:
            return None
        bound = _meters.peak_memory_bound()
        if not _early_start.memory_cannot_matter(
            facts,
            measurements,
            memory_bound_bytes=bound,
            n_items_left=n_left,
            max_workers=self._limits.max_workers,
        ):
            return None
        logger.debug("planning on the first call alone (%.3f s, %d item(s) left)", call_s, n_left)
        return bound

    def first_plan(self, measurements: WorkMeasurements, *, exhausted: bool, failed: bool) -> Plan:
        """The plan after the probe; ``fn`` is pickled when the plan sends it to workers.

        ``exhausted``: the probe read the whole input; ``failed``: an error already ends
        the stream (nothing is left to plan for).

        Raises:
            Exception: ``fn`` cannot be pickled and serial is not allowed.
        """
        limits = self._limits
        if self._in_process:
            # Nothing is pickled on the way to a thread: neither cost nor picklability count.
            measurements = replace(
                measurements, item_bytes=0.0, result_bytes=0.0, pickle_s_per_item=0.0
            )
        remaining = 0 if exhausted or failed else self._source.n_remaining
        if remaining == 0 and limits.serial_allowed:
            plan = self._plan_with(
                SystemFacts.not_read("not chosen"), measurements, remaining, serial_allowed=True
            )
        else:
            plan = self._plan_reading_facts_if_needed(
                measurements, remaining, serial_allowed=limits.serial_allowed
            )
        if plan.mode == "parallel" and not failed and not exhausted and not self._in_process:
            try:
                self._fn.ensure()
            except Exception as exc:
                if not limits.serial_allowed:
                    raise
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
        return plan

    def plan_switch(
        self, plan: Plan, wall_s_per_item: float, cpu_s_per_item: float
    ) -> Plan | None:
        """Re-plan a serial run with what it has measured: the parallel plan to switch to
        (``fn`` pickled, unless threads run it), or ``None`` to stay serial."""
        measurements = replace(
            plan.measurements, wall_s_per_item=wall_s_per_item, cpu_s_per_item=cpu_s_per_item
        )
        source = self._source
        remaining = source.n_remaining if source.n_total is not None else None
        new = self._plan_reading_facts_if_needed(measurements, remaining, serial_allowed=True)
        if new.mode != "parallel":
            self.start_workers_for_stream(new)
            return None
        if not self._in_process:
            try:
                self._fn.ensure()
            except Exception:
                return None
        new = replace(
            new,
            reasons=(
                *new.reasons,
                "switched from serial: the running measurements show a pool now wins",
            ),
        )
        return new

    def start_workers_for_stream(self, plan: Plan) -> None:
        """Input of unknown length, kept serial only by the pool's start cost: start the
        workers in the background now, so the next re-plan finds them warm
        (``_early_start.workers_to_prestart_for_stream``); once per run."""
        if (
            self._started_early
            or self._prepare is None
            or self._source.n_total is not None
            or self._in_process
        ):
            return

        def workers_for(facts: SystemFacts) -> int:
            return _early_start.workers_to_prestart_for_stream(
                facts,
                plan.measurements,
                n_items_assumed=plan.n_items_assumed,
                max_workers=self._limits.max_workers,
            )

        facts = plan.facts
        n_workers = workers_for(facts)
        if n_workers and not facts.was_read:
            # Decided on the most favourable bound so far: confirm on the machine's facts.
            try:
                facts = self._read_facts()
            except Exception as exc:
                logger.debug("stream prestart skipped: facts unreadable (%s)", exc)
                return
            n_workers = workers_for(facts)
        if n_workers:
            self._started_early = True
            logger.debug("starting %d worker(s) while the serial stream goes on", n_workers)
            try:
                self._prepare(n_workers)
            except Exception as exc:  # a guess only: the next re-plan starts what it needs
                logger.debug("stream prestart failed (%s)", exc)

    def _plan_with(
        self,
        facts: SystemFacts,
        measurements: WorkMeasurements,
        remaining: int | None,
        *,
        serial_allowed: bool,
    ) -> Plan:
        limits = self._limits
        return _cost_model.plan_map(
            facts,
            measurements,
            n_items=remaining,
            n_items_lower_bound=max(1, self._source.n_pulled),
            max_workers=limits.max_workers,
            chunksize=limits.chunksize,
            buffersize=limits.buffersize,
            serial_allowed=serial_allowed,
        )

    def _plan_reading_facts_if_needed(
        self, measurements: WorkMeasurements, remaining: int | None, *, serial_allowed: bool
    ) -> Plan:
        """The plan on the real facts, read only when needed: a job that is serial even on
        the most favourable figures (every core free, the fastest start, free transfers)
        is serial on the real ones, and reading the machine (cgroup files, psutil) would
        cost a tiny job more than its work."""
        if serial_allowed and self._limits.local_machine:
            bound = self._plan_with(
                SystemFacts.most_favourable(
                    _system_facts.read_logical_cores(), self._fastest_start_s()
                ),
                measurements,
                remaining,
                serial_allowed=serial_allowed,
            )
            if bound.mode == "serial":
                return bound
        if not self._in_process:
            # Only now is fn pickled to count its size: most small jobs never get here.
            measurements = self._fn.with_size(measurements)
        return self._plan_with(
            self._read_facts(), measurements, remaining, serial_allowed=serial_allowed
        )
