"""Plain records passed between layers: what the machine offers, what the probe measured,
what the cost model decided and what actually happened.

Data layer: these classes hold values and format them for people; they make no decision,
read no clock and import nothing else of ours.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

Mode = Literal["serial", "parallel"]


NO_TRANSFER_BYTES_PER_S = 1e18
"""The transfer rate that stands for "nothing is transferred": chunks handed over by
reference in this process (threads), or the free transfer a favourable bound assumes. Finite,
so an unpicklable item's infinite size stays infinite in the model's arithmetic."""


@dataclass(frozen=True)
class CoreFacts:
    """The cores this process may use (the core fields of ``SystemFacts``): all a pool sized
    without a plan (``submit()``'s) needs, read without the memory files."""

    n_logical_cores: int
    n_physical_cores: int | None
    n_affinity_cores: int | None
    cpu_quota_cores: float | None
    env_core_limit: int | None = None


@dataclass(frozen=True)
class SystemFacts:
    """What this machine offers to a process pool, as read or measured by mechanism code.

    Every limit that could not be read is ``None`` and simply takes no part in the ``min()``.
    """

    n_logical_cores: int
    """``os.cpu_count()``: hardware threads the OS reports."""
    n_physical_cores: int | None
    """Physical cores (``psutil.cpu_count(logical=False)``); ``None`` when unknown."""
    n_affinity_cores: int | None
    """CPUs this process may run on (``sched_getaffinity``); ``None`` where unsupported."""
    cpu_quota_cores: float | None
    """cgroup CPU quota in cores (``quota / period``); ``None`` when unlimited."""
    available_memory_bytes: int
    """Memory a new worker may use: the smaller of the OS's and the cgroup's headroom."""
    start_method: str
    """How workers are started: ``"loky"``, ``"spawn"``, ``"fork"``, ``"forkserver"``."""
    worker_start_s: float
    """Seconds from asking for one more worker to it running a task."""
    worker_start_source: str = "estimate"
    """Where ``worker_start_s`` came from: ``"estimate"``, ``"measured"`` (cached on disk) or
    ``"cluster"`` (a cluster's workers are already running)."""
    task_roundtrip_s: float = 2e-4
    """Fixed parent-side cost of sending one task to a worker and receiving its result.
    ``benchmarks/calibrate.py`` on the 2-core reference VM (2026-11-28, CPython 3.11.7,
    loky 3.7.0, fork): 147 µs per chunk when chunks are pipelined (what the model charges
    per chunk), 334 µs for one chunk's round trip alone; 0.2 ms lies between."""
    ipc_bytes_per_s: float = 5e8
    """Throughput at which the parent takes in pickled results (its CPU, all threads);
    ``NO_TRANSFER_BYTES_PER_S`` where nothing crosses a process boundary (threads, and the
    favourable bound), which ``to_dict`` reports as ``None``.
    ``benchmarks/calibrate.py``, same VM: 627 MB/s for 1 MiB results; kept a little lower
    because the parent's share of two cores is contended while workers run."""
    n_warm_workers: int = 0
    """Workers already alive in this executor's pool: they cost nothing to start."""
    env_core_limit: int | None = None
    """``AMORSIZE_MAX_WORKERS`` from the environment, an operator's cap; ``None`` if unset."""
    start_method_reason: str = ""
    """Why workers start with ``start_method`` (shown by ``explain()``); empty when unknown."""

    @classmethod
    def not_read(cls, start_method: str) -> SystemFacts:
        """Placeholder facts for a plan that needed none (the probe consumed the whole
        input): reading cgroup files would cost more than the job itself. Every figure in
        them is a stand-in: ``to_dict()`` shows them as ``None``."""
        return cls(
            n_logical_cores=1,
            n_physical_cores=None,
            n_affinity_cores=None,
            cpu_quota_cores=None,
            available_memory_bytes=0,
            start_method=start_method,
            worker_start_s=0.0,
            worker_start_source="not read",
        )

    @classmethod
    def most_favourable(cls, n_logical_cores: int, worker_start_s: float) -> SystemFacts:
        """The best a pool could hope for on this machine: every logical core usable, no
        memory limit, the fastest start, free dispatch and transfer. A plan that is serial
        even on these needs no real facts, and reading them would cost a tiny job dearly."""
        return cls(
            n_logical_cores=n_logical_cores,
            n_physical_cores=None,
            n_affinity_cores=None,
            cpu_quota_cores=None,
            available_memory_bytes=2**62,
            start_method="not chosen",
            worker_start_s=worker_start_s,
            worker_start_source="bound",
            task_roundtrip_s=0.0,
            ipc_bytes_per_s=NO_TRANSFER_BYTES_PER_S,
        )

    @property
    def was_read(self) -> bool:
        return self.worker_start_source not in ("not read", "bound")

    def unread_fields(self) -> tuple[str, ...]:
        """Fields holding a stand-in, not a figure read from this machine: every one when
        nothing was read, the favourable assumptions (unlimited memory, free transfers, no
        start method yet) of a bound. ``worker_start_s`` of a bound is the fastest start
        known, labelled by ``worker_start_source``."""
        if self.worker_start_source == "not read":
            return tuple(name for name in _FACT_FIELDS if name != "worker_start_source")
        if self.worker_start_source == "bound":
            return _BOUND_STAND_INS
        return ()

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe; a figure that was not read is ``None`` (see ``unread_fields``)."""
        data = asdict(self)
        for name in self.unread_fields():
            data[name] = None
        if self.ipc_bytes_per_s >= NO_TRANSFER_BYTES_PER_S:
            data["ipc_bytes_per_s"] = None  # no transfer: no rate to report
        return data


_FACT_FIELDS = tuple(SystemFacts.__dataclass_fields__)
_BOUND_STAND_INS = (
    "n_physical_cores",
    "n_affinity_cores",
    "cpu_quota_cores",
    "available_memory_bytes",
    "start_method",
    "task_roundtrip_s",
    "ipc_bytes_per_s",
    "n_warm_workers",
    "env_core_limit",
)


@dataclass(frozen=True)
class WorkMeasurements:
    """Per-item figures the probe measured by running ``fn`` on the first items."""

    n_probed: int
    """Items the figures are averaged over."""
    wall_s_per_item: float
    """Mean wall-clock seconds of one call of ``fn``."""
    cpu_s_per_item: float
    """Mean CPU seconds of one call: far below the wall time means the call mostly waits."""
    item_bytes: float
    """Mean pickled size of one item's arguments."""
    result_bytes: float
    """Mean pickled size of one result."""
    pickle_s_per_item: float
    """Mean seconds to pickle one item's arguments and its result (the parent pays about this
    again to unpickle, so the model counts it on both sides)."""
    memory_bytes_per_call: int
    """Peak extra memory one call needed; a worker needs about this much besides its base."""
    measured_in_worker: bool = False
    """True when the figures came from a worker (isolation): no serial plan is possible."""
    voluntary_switches_per_item: float | None = None
    """Times a call gave up the CPU by itself (sleep, I/O, locks), on average; tells waiting
    from being preempted on a busy machine. ``None`` where the OS does not report it."""
    first_call_extra_s: float = 0.0
    """Seconds the first call took beyond a warm one, when a later call showed it was cold
    (imports, caches, lazy set-up); left out of the per-item figures. A worker started
    afresh pays about this much again on its own first call."""
    fn_bytes_per_chunk: float = 0.0
    """Pickled size of ``fn`` where it travels inside every chunk (a small ``fn``)."""
    fn_bytes_per_worker: float = 0.0
    """Pickled size of a large ``fn`` that each worker unpickles once (see ``_fn_transport``),
    its large buffers excluded."""
    fn_mapped_bytes: float = 0.0
    """Large buffers inside ``fn`` (numpy arrays' data), written once to shared memory and
    memory-mapped by each worker."""

    @property
    def cpu_share(self) -> float:
        """CPU time over wall time, in ``[0, 1]``: near 1 is CPU-bound, near 0 is waiting."""
        if self.wall_s_per_item <= 0:
            return 1.0
        return max(0.0, min(1.0, self.cpu_s_per_item / self.wall_s_per_item))

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: a size that could not be measured (unpicklable) becomes ``None``."""
        data = {
            k: _finite_or_none(v) if isinstance(v, float) else v for k, v in asdict(self).items()
        }
        data["cpu_share"] = self.cpu_share
        return data


@dataclass(frozen=True)
class ChunkReport:
    """What one completed chunk reported back: the runtime feedback."""

    n_items: int
    compute_s: float
    """Seconds the worker spent inside ``fn`` for the chunk's items."""
    result_bytes: int
    """Pickled size of the chunk's results."""


@dataclass(frozen=True)
class RunOutcome:
    """What actually happened when a plan ran, to compare with what was predicted."""

    wall_s: float
    n_items: int
    n_chunks: int
    chunksizes: tuple[int, ...]
    """Chunk sizes in submission order (runs of equal sizes are kept as they are)."""
    worker_busy_s: float
    """Sum of the compute seconds the workers (or the caller, when serial) reported."""
    n_workers: int
    switched_to_parallel: bool = False
    switched_to_serial: bool = False
    """The pool was losing to serial part-way: the rest ran in the calling process."""

    def serial_equivalent_s(self, probed_s_per_item: float) -> tuple[float, str]:
        """What running these items in the caller would have cost, and at which speed: the
        faster of the probe's and the one the calls ran at during this run (a cold probe
        makes the first slow, a busy pool the second)."""
        run_s_per_item = self.worker_busy_s / self.n_items if self.n_items else 0.0
        if 0 < run_s_per_item < probed_s_per_item:
            return run_s_per_item * self.n_items, "speed seen during the run"
        return probed_s_per_item * self.n_items, "probed speed"

    @property
    def utilisation(self) -> float:
        """Share of ``n_workers × wall_s`` the workers spent computing, in ``[0, 1]``."""
        capacity = self.n_workers * self.wall_s
        return 0.0 if capacity <= 0 else min(1.0, self.worker_busy_s / capacity)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["chunksizes"] = list(self.chunksizes)
        data["utilisation"] = self.utilisation
        return data


@dataclass(frozen=True)
class Plan:
    """The cost model's decision for the rest of one ``map()`` call, with its grounds."""

    mode: Mode
    n_workers: int
    """Workers to use; 1 with ``mode == "serial"`` means the calling process."""
    chunksize: int
    """Items per task sent to a worker (the first size; feedback may change later ones)."""
    predicted_serial_s: float | None
    """Predicted seconds to run the remaining items in the caller; ``None`` if not allowed."""
    predicted_parallel_s: float | None
    """Predicted seconds with ``n_workers`` workers (for a serial plan, with the best pool
    found), start-up included; ``None`` if no pool was predicted: none could be considered
    (no memory for a worker, nothing left), or serial was chosen from a lower bound alone
    (see ``parallel_floor_s``)."""
    n_items: int | None
    """Remaining items the prediction is for; ``None`` when the length is unknown."""
    n_items_assumed: int
    """Item count the prediction used (a lower bound when the length is unknown)."""
    n_usable_cores: int
    core_limit: str
    """Which constraint set ``n_usable_cores``: ``"logical"``, ``"physical"``, ``"affinity"``,
    ``"cgroup quota"``, ``"environment"`` or ``"max_workers"``."""
    window_items: int
    """Items allowed in flight at once (submitted, results not yet consumed)."""
    reasons: tuple[str, ...]
    facts: SystemFacts
    measurements: WorkMeasurements
    outcome: RunOutcome | None = field(default=None)
    parallel_floor_s: float | None = None
    """A lower bound of any pool's time, when serial was chosen from it without predicting
    a pool (``predicted_parallel_s`` is then ``None``): a bound, not a prediction."""

    @property
    def predicted_speedup(self) -> float | None:
        """Serial over parallel prediction; ``None`` unless both were predicted (a bound is
        not a prediction)."""
        if not self.predicted_serial_s or not self.predicted_parallel_s:
            return None
        return self.predicted_serial_s / self.predicted_parallel_s

    def with_outcome(self, outcome: RunOutcome) -> Plan:
        return replace(self, outcome=outcome)

    def explain(self) -> str:
        """A short report a person can read: the decision, the figures and the reasons."""
        m, f = self.measurements, self.facts
        if self.mode == "serial":
            head = "serial: the remaining items run in the calling process"
        else:
            head = (
                f"parallel: {self.n_workers} worker{'s' if self.n_workers != 1 else ''}, "
                f"chunks of {self.chunksize}"
            )
        items = (
            f"{self.n_items} items left"
            if self.n_items is not None
            else f"unknown length (planned for at least {self.n_items_assumed})"
        )
        lines = [
            f"plan: {head}",
            f"  work: {items}; {format_seconds(m.wall_s_per_item)} per item "
            f"({m.cpu_share:.0%} CPU), measured on {m.n_probed} item(s)"
            f"{' in a worker' if m.measured_in_worker else ''}",
            f"  data: {format_bytes(m.item_bytes)} in, "
            f"{format_bytes(m.result_bytes)} out per item; "
            f"{format_bytes(m.memory_bytes_per_call)} memory per call",
            (
                f"  machine: {self.n_usable_cores} usable core(s), limited by "
                f"{self.core_limit}; worker start {format_seconds(f.worker_start_s)} "
                f"({f.worker_start_source}, {f.start_method}); {f.n_warm_workers} warm "
                f"worker(s); {format_bytes(f.available_memory_bytes)} memory available"
                if f.was_read
                else (
                    "  machine: not read (nothing was left to plan for)"
                    if f.worker_start_source == "not read"
                    else "  machine: not read (serial wins even with every core free and the "
                    "fastest worker start)"
                )
            ),
            *(
                [f"  start method: {f.start_method_reason}"]
                if f.was_read and f.start_method_reason
                else []
            ),
            f"  predicted: serial {_fmt_opt_s(self.predicted_serial_s)}, "
            + (
                f"parallel at least {format_seconds(self.parallel_floor_s)} (a lower bound: "
                "no pool was predicted)"
                if self.predicted_parallel_s is None and self.parallel_floor_s is not None
                else f"parallel {_fmt_opt_s(self.predicted_parallel_s)}"
            ),
        ]
        lines.extend(f"  - {reason}" for reason in self.reasons)
        if self.outcome is not None:
            o = self.outcome
            sizes = ""
            if o.chunksizes:
                first, low, high = o.chunksizes[0], min(o.chunksizes), max(o.chunksizes)
                sizes = f" (sizes {first} first, {low}..{high})" if low != high else ""
            lines.append(
                f"  actual: {format_seconds(o.wall_s)} for {o.n_items} items "
                f"in {o.n_chunks} chunk(s)"
                f"{sizes}{' after switching to parallel' if o.switched_to_parallel else ''}"
                f"{' then the rest serially' if o.switched_to_serial else ''}; "
                f"utilisation {o.utilisation:.0%}"
            )
            serial_equivalent_s, speed = o.serial_equivalent_s(m.wall_s_per_item)
            if self.mode == "parallel" and o.wall_s > serial_equivalent_s > 0:
                lines.append(
                    f"  note: this run took longer than running it serially would have "
                    f"(about {format_seconds(serial_equivalent_s)} at the {speed})"
                )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe data: numbers, strings, lists and nested dicts only."""
        return {
            "mode": self.mode,
            "n_workers": self.n_workers,
            "chunksize": self.chunksize,
            "predicted_serial_s": _finite_or_none(self.predicted_serial_s),
            "predicted_parallel_s": _finite_or_none(self.predicted_parallel_s),
            "predicted_speedup": _finite_or_none(self.predicted_speedup),
            "parallel_floor_s": _finite_or_none(self.parallel_floor_s),
            "n_items": self.n_items,
            "n_items_assumed": self.n_items_assumed,
            "window_items": self.window_items,
            # Derived from the core limits: unknown when they were not read (a bound assumes
            # every logical core usable, which affinity or a quota may deny).
            "n_usable_cores": self.n_usable_cores if self.facts.was_read else None,
            "core_limit": self.core_limit if self.facts.was_read else None,
            "reasons": list(self.reasons),
            "facts": self.facts.to_dict(),
            "measurements": self.measurements.to_dict(),
            "outcome": None if self.outcome is None else self.outcome.to_dict(),
        }


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _fmt_opt_s(seconds: float | None) -> str:
    return "n/a" if seconds is None or not math.isfinite(seconds) else format_seconds(seconds)


def format_seconds(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.1f} µs"


def format_bytes(n_bytes: float) -> str:
    value = float(n_bytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if value < 1024 or unit == "EiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
