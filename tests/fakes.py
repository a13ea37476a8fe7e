"""A fake backend: runs chunks in this process, synchronously, and records what it was
asked to do, so dispatch decisions are tested without starting processes."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field, replace
from typing import Any

import cloudpickle

from amorsize_executor._chunk_worker import ChunkPayload, ChunkResult, run_chunk
from amorsize_executor._input import Source
from amorsize_executor._map_run import MapOptions, MapRun, RunClocks
from amorsize_executor._records import Plan, SystemFacts
from amorsize_executor._system_facts import fastest_start_prior_s

IN_FAKE_WORKER = False
"""True while the fake backend runs a chunk: lets tests tell worker calls from caller calls."""


def _run_as_worker(payload: ChunkPayload, clock: Callable[[], float] | None = None) -> ChunkResult:
    global IN_FAKE_WORKER
    IN_FAKE_WORKER = True
    try:
        return run_chunk(payload, clock)
    finally:
        IN_FAKE_WORKER = False


class OverrunningClock:
    """A worker clock on which every look is a second later: each budgeted chunk runs
    items up to its first clock check, then hands the rest back."""

    def __init__(self) -> None:
        self.now_s = 0.0

    def __call__(self) -> float:
        self.now_s += 1.0
        return self.now_s


class ScriptedClock:
    """The caller's clocks under a test's control (trio's ``MockClock`` style): reads cost
    nothing and time moves only by ``advance``. ``cpu`` is the CPU clock beside it."""

    def __init__(self) -> None:
        self.now_s = 0.0
        self.cpu_now_s = 0.0

    def __call__(self) -> float:
        return self.now_s

    def cpu(self) -> float:
        return self.cpu_now_s

    def advance(self, wall_s: float, cpu_s: float = 0.0) -> None:
        self.now_s += wall_s
        self.cpu_now_s += cpu_s


class _SlowToReceive(Future[ChunkResult]):
    """A chunk future whose result takes ``delay_s`` to arrive, like a large one on a pipe:
    slept for real, or moved on a scripted clock."""

    def __init__(self, delay_s: float, clock: ScriptedClock | None = None) -> None:
        super().__init__()
        self.delay_s = delay_s
        self.clock = clock

    def result(self, timeout: float | None = None) -> ChunkResult:
        if self.clock is not None:
            self.clock.advance(self.delay_s)
        else:
            time.sleep(self.delay_s)
        return super().result(timeout)


@dataclass
class FakeBackend:
    """Records ``prepare`` sizes and every chunk's items; runs them on submit."""

    prepared: list[int] = field(default_factory=list)
    chunks: list[list[tuple[Any, ...]]] = field(default_factory=list)
    submitted: list[tuple[Callable[..., Any], tuple[Any, ...]]] = field(default_factory=list)
    shutdowns: list[tuple[bool, bool]] = field(default_factory=list)
    terminated: int = 0
    broken: int = 0
    warm: int = 0
    hold: bool = False
    """When True, chunk futures stay pending until ``release()``."""
    held: list[tuple[Future[ChunkResult], ChunkPayload]] = field(default_factory=list)
    clock: Callable[[], float] | None = None
    """The clock budgeted chunks run with. ``None``: budgets are recorded but not applied,
    so no test's chunking depends on how fast this machine runs them."""
    budgets: list[float | None] = field(default_factory=list)
    """Each chunk's time budget, in submission order."""
    n_keeping_open: int = 0
    """Runs that asked the backend to stay open for resent items, not yet released."""
    receive_delay_per_item_s: float = 0.0
    """Seconds a chunk's ``result()`` takes per item: a transport slower than the work."""
    receive_clock: ScriptedClock | None = None
    """When set, that delay moves this clock instead of sleeping."""

    runs_in_process = False
    can_keep_open = True
    on_this_machine = True
    workers_share_files = False
    """A large ``fn`` travels inline: the fake's workers run in this process, where no
    shared-memory file is needed (``tests/test_fn_transport.py`` ships one for real)."""

    def read_facts(self) -> SystemFacts | None:
        return None

    @property
    def fastest_start_s(self) -> float:
        return 0.0 if self.warm else fastest_start_prior_s()

    @property
    def n_warm_workers(self) -> int:
        return self.warm

    @property
    def start_method(self) -> str:
        return "fake"

    def prepare(self, n_workers: int) -> None:
        self.prepared.append(n_workers)
        self.warm = max(self.warm, n_workers)

    def submit_chunk(self, payload: ChunkPayload) -> Future[ChunkResult]:
        self.chunks.append(cloudpickle.loads(payload.items_bytes))
        self.budgets.append(payload.budget_s)
        future: Future[ChunkResult] = (
            _SlowToReceive(
                self.receive_delay_per_item_s * len(self.chunks[-1]), self.receive_clock
            )
            if self.receive_delay_per_item_s
            else Future()
        )
        if self.clock is None:
            payload = replace(payload, budget_s=None)
        if self.hold:
            self.held.append((future, payload))
        else:
            future.set_result(_run_as_worker(payload, self.clock))
        return future

    def release(self) -> None:
        for future, payload in self.held:
            if future.set_running_or_notify_cancel():
                future.set_result(_run_as_worker(payload, self.clock))
        self.held.clear()

    def keep_open(self) -> None:
        self.n_keeping_open += 1

    def allow_close(self) -> None:
        assert self.n_keeping_open > 0, "allow_close() without keep_open()"
        self.n_keeping_open -= 1

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.submitted.append((fn, args))
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:
            future.set_exception(exc)
        return future

    def mark_broken(self) -> None:
        self.broken += 1

    def terminate_workers(self) -> None:
        self.terminated += 1

    def worker_pids(self) -> list[int]:
        return []

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.shutdowns.append((wait, cancel_futures))

    @property
    def items_dispatched(self) -> list[Any]:
        return [args for chunk in self.chunks for args in chunk]


def started_map_run(
    fn: Callable[..., Any],
    items: Iterable[Any],
    backend: FakeBackend,
    clocks: RunClocks,
    *,
    read_facts: Callable[[Any], SystemFacts],
    chunksize: int | None = None,
    serial_allowed: bool = True,
    local_machine: bool = False,
    publish_plan: Callable[[Plan], None] = lambda plan: None,
) -> MapRun:
    """One ``map()`` as the executor wires it, started: on the fake backend, with the test's
    clocks and facts, every other option the default."""
    run = MapRun(
        fn,
        Source((items,)),
        backend=backend,
        read_facts=read_facts,
        options=MapOptions(
            max_workers=None,
            chunksize=chunksize,
            buffersize=None,
            deadline_s=None,
            serial_allowed=serial_allowed,
            drain_on_shutdown=True,
            local_machine=local_machine,
        ),
        publish_plan=publish_plan,
        clocks=clocks,
    )
    run.start()
    return run
