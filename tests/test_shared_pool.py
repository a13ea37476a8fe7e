"""The ``keep_warm`` option with real processes: executors that ask for the same kind of pool
share one, its workers outlive ``shutdown()`` and exit after the idle timeout, one executor's
shutdown touches only its own work, and a crash leaves a working pool for the next executor.
No timing: waits are for events, with deadlines that only turn a hang into a failure."""

from __future__ import annotations

import math
import multiprocessing
import os
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import psutil
import pytest

from amorsize_executor import AdaptiveProcessPoolExecutor, WorkerCrashedError, _shared_pools
from amorsize_executor._pool_backend import PoolBackend

from .fakes import FakeBackend

pytestmark = pytest.mark.timeout(120)

DEADLINE_S = 60.0
"""How long to wait for an event before calling it a hang (the events take well under 1 s)."""

WARM_S = 60.0
"""An idle timeout no test outlives: the pool stays warm for the whole test."""


@pytest.fixture(autouse=True)
def no_shared_pool_left() -> Iterator[None]:
    """Stop the shared pools each test started, before the leak check looks for processes."""
    yield
    _shared_pools.shutdown_shared_pools()


def tag_worker(tag: str) -> None:
    global _TAG
    _TAG = tag


_TAG = "none"


def read_tag() -> tuple[int, str]:
    return os.getpid(), _TAG


def slow(x: int) -> int:
    """Ten milliseconds of waiting: far above any pickling noise, so plans are parallel."""
    time.sleep(0.01)
    return x * x


def exit_at(x: int) -> int:
    if x == 3:
        os._exit(1)
    return x


def wait_for_file(path: str, started: str | None = None) -> int:
    """Blocks a worker until ``path`` exists; creates ``started`` first, if given."""
    if started is not None:
        Path(started).touch()
    deadline = time.monotonic() + DEADLINE_S
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return os.getpid()


def wait_for(path: Path) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert path.exists(), f"{path.name} never appeared"


def pids_of(ex: AdaptiveProcessPoolExecutor, n_calls: int = 8) -> set[int]:
    """Pids that answered ``n_calls`` submitted calls (the pool starts if it has to)."""
    return {ex.submit(os.getpid).result(timeout=DEADLINE_S) for _ in range(n_calls)}


def alive(pids: set[int]) -> set[int]:
    living = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                living.add(pid)
        except psutil.NoSuchProcess:
            pass
    return living


def wait_until_exited(pids: set[int]) -> set[int]:
    """Poll until none of ``pids`` is alive, or the deadline; returns those still alive."""
    deadline = time.monotonic() + DEADLINE_S
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive(pids)


def test_executors_in_sequence_share_the_same_workers() -> None:
    with AdaptiveProcessPoolExecutor(2, keep_warm=WARM_S) as first:
        first_pids = pids_of(first)
        pool_pids = set(first._backend.worker_pids())
    assert first_pids <= pool_pids
    assert alive(pool_pids) == pool_pids, "shutdown() stopped the shared workers"
    with AdaptiveProcessPoolExecutor(2, keep_warm=WARM_S) as second:
        assert second._backend.n_warm_workers == len(pool_pids)
        assert pids_of(second) <= pool_pids
        assert set(second._backend.worker_pids()) == pool_pids


def test_the_default_executor_still_owns_its_pool() -> None:
    with AdaptiveProcessPoolExecutor(2) as ex:
        assert type(ex._backend) is PoolBackend
        pids = pids_of(ex)
    assert not wait_until_exited(pids)


@pytest.mark.parametrize(
    ("other_options", "shared"),
    [
        ({"initializer": tag_worker, "initargs": ("a",)}, True),
        ({"initializer": tag_worker, "initargs": ("b",)}, False),
        ({"initializer": lambda tag: tag_worker(tag), "initargs": ("a",)}, False),
        ({"initializer": None, "initargs": ()}, False),
        ({"initializer": tag_worker, "initargs": ("a",), "keep_warm": WARM_S / 2}, False),
        ({"initializer": tag_worker, "initargs": ("a",), "max_workers": 1}, False),
    ],
    ids=["same", "other-initargs", "other-initializer", "no-initializer", "other-timeout", "size"],
)
def test_only_executors_asking_for_the_same_pool_share_it(
    other_options: dict[str, Any], shared: bool
) -> None:
    options: dict[str, Any] = {"max_workers": 2, "keep_warm": WARM_S}
    with AdaptiveProcessPoolExecutor(initializer=tag_worker, initargs=("a",), **options) as first:
        first_answers = {first.submit(read_tag).result(timeout=DEADLINE_S) for _ in range(4)}
        with AdaptiveProcessPoolExecutor(**{**options, **other_options}) as other:
            other_answers = {other.submit(read_tag).result(timeout=DEADLINE_S) for _ in range(4)}
            same_pool = first._backend._backend is other._backend._backend  # type: ignore[attr-defined]
            first_pids = set(first._backend.worker_pids())
            other_pids = set(other._backend.worker_pids())
    assert {tag for _, tag in first_answers} == {"a"}
    assert same_pool is shared
    if shared:
        assert other_pids == first_pids
    else:
        assert not other_pids & first_pids
        expected_tag = other_options["initargs"][0] if other_options["initargs"] else "none"
        assert {tag for _, tag in other_answers} == {expected_tag}


def test_workers_outlive_shutdown_then_exit_after_the_idle_timeout() -> None:
    # Long enough that the workers cannot time out between the two executors below.
    keep_warm = 2.0
    with AdaptiveProcessPoolExecutor(2, keep_warm=keep_warm) as first:
        assert list(first.map(slow, range(200))) == [x * x for x in range(200)]
        pool_pids = set(first._backend.worker_pids())
    assert pool_pids and alive(pool_pids) == pool_pids
    with AdaptiveProcessPoolExecutor(2, keep_warm=keep_warm) as warm:
        assert list(warm.map(slow, range(200))) == [x * x for x in range(200)]
        plan = warm.last_plan
        pool_pids |= set(warm._backend.worker_pids())
    assert plan is not None and plan.mode == "parallel"
    assert plan.facts.n_warm_workers > 0

    assert not wait_until_exited(pool_pids), "the idle workers did not exit"
    with AdaptiveProcessPoolExecutor(2, keep_warm=keep_warm) as cold:
        assert cold._backend.n_warm_workers == 0
        assert list(cold.map(slow, range(200))) == [x * x for x in range(200)]
        plan = cold.last_plan
        new_pids = set(cold._backend.worker_pids())
    assert plan is not None and plan.facts.n_warm_workers == 0
    assert new_pids and not new_pids & pool_pids


def test_cancel_futures_cancels_only_this_executors_work(tmp_path: Path) -> None:
    release, started = tmp_path / "release", tmp_path / "started"
    mine = AdaptiveProcessPoolExecutor(1, keep_warm=WARM_S)
    theirs = AdaptiveProcessPoolExecutor(1, keep_warm=WARM_S)
    try:
        blocker = mine.submit(wait_for_file, str(release), str(started))
        wait_for(started)
        # The one worker is busy: beyond the few calls loky has already queued for it
        # (those count as running), all of these are pending.
        my_pending = [mine.submit(os.getpid) for _ in range(6)]
        their_pending: Future[int] = theirs.submit(os.getpid)
        mine.shutdown(wait=False, cancel_futures=True)
        assert not their_pending.cancelled()
        assert any(future.cancelled() for future in my_pending)
        release.touch()
        worker = blocker.result(timeout=DEADLINE_S)
        assert their_pending.result(timeout=DEADLINE_S) == worker
    finally:
        release.touch()
        mine.shutdown()
        theirs.shutdown()


def test_shutdown_waits_for_this_executors_work_only(tmp_path: Path) -> None:
    release = tmp_path / "release"
    theirs = AdaptiveProcessPoolExecutor(2, keep_warm=WARM_S)
    try:
        their_blocker = theirs.submit(wait_for_file, str(release))
        with AdaptiveProcessPoolExecutor(2, keep_warm=WARM_S) as mine:
            my_future = mine.submit(os.getpid)
        # Leaving the block waited for my call, not for theirs, which is still blocked.
        assert my_future.done() and not their_blocker.done()
        with pytest.raises(RuntimeError, match="after shutdown"):
            mine.submit(os.getpid)
    finally:
        release.touch()
        theirs.shutdown()
    assert their_blocker.result(timeout=DEADLINE_S) > 0


def test_a_crash_in_one_executors_job_gives_the_next_a_new_pool() -> None:
    with AdaptiveProcessPoolExecutor(2, keep_warm=WARM_S, isolate=True) as first:
        old_pids = pids_of(first)
        with pytest.raises(WorkerCrashedError):
            list(first.map(exit_at, range(8), chunksize=1))
    with AdaptiveProcessPoolExecutor(2, keep_warm=WARM_S, isolate=True) as second:
        assert list(second.map(abs, range(-20, 0))) == list(range(20, 0, -1))
        new_pids = pids_of(second)
    assert not new_pids & old_pids
    assert not wait_until_exited(old_pids)


def test_a_crash_in_a_submitted_call_is_reported_and_the_pool_rebuilt() -> None:
    with AdaptiveProcessPoolExecutor(2, keep_warm=WARM_S) as first:
        old_pids = pids_of(first)
        with pytest.raises(BrokenProcessPool):
            first.submit(os._exit, 1).result(timeout=DEADLINE_S)
    with AdaptiveProcessPoolExecutor(2, keep_warm=WARM_S) as second:
        assert not pids_of(second) & old_pids


def test_the_shared_pool_grows_when_idle_and_keeps_its_size_while_busy(tmp_path: Path) -> None:
    release = tmp_path / "release"
    small = AdaptiveProcessPoolExecutor(keep_warm=WARM_S)
    big = AdaptiveProcessPoolExecutor(keep_warm=WARM_S)
    try:
        small._backend.prepare(1)
        assert small._backend.n_warm_workers == 1
        blocker = small.submit(wait_for_file, str(release))
        big._backend.prepare(2)  # work in flight: the pool is kept as it is
        assert big._backend.n_warm_workers == 1
        release.touch()
        blocker.result(timeout=DEADLINE_S)
        deadline = time.monotonic() + DEADLINE_S
        while small._backend._backend._in_flight.n_calls and time.monotonic() < deadline:  # type: ignore[attr-defined]
            time.sleep(0.01)
        big._backend.prepare(2)  # idle now: grown by replacement
        assert big._backend.n_warm_workers == 2
        assert small._backend.n_warm_workers == 2
    finally:
        release.touch()
        small.shutdown()
        big.shutdown()


def test_an_executor_still_attached_after_the_pools_are_stopped_gets_a_new_one() -> None:
    with AdaptiveProcessPoolExecutor(2, keep_warm=WARM_S) as ex:
        old_pids = pids_of(ex)
        _shared_pools.shutdown_shared_pools()
        assert not wait_until_exited(old_pids)
        assert ex._backend.n_warm_workers == 0
        assert not pids_of(ex) & old_pids


def _attach_in_child(parent_backend_id: int, result: Any) -> None:
    handle = AdaptiveProcessPoolExecutor(2, keep_warm=WARM_S)._backend
    shared = handle._backend  # type: ignore[attr-defined]
    # The registry the child inherited names the parent's pool; it must not be reused.
    result.value = int(id(shared) != parent_backend_id and shared.n_warm_workers == 0)


def test_a_forked_child_does_not_reuse_the_parents_shared_pool() -> None:
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork on this platform")
    context = multiprocessing.get_context("fork")
    with AdaptiveProcessPoolExecutor(2, keep_warm=WARM_S) as ex:
        pids_of(ex)
        parent_backend_id = id(ex._backend._backend)  # type: ignore[attr-defined]
        result = context.Value("i", -1)
        child = context.Process(target=_attach_in_child, args=(parent_backend_id, result))
        child.start()
        child.join(DEADLINE_S)
    assert child.exitcode == 0
    assert result.value == 1


@pytest.mark.parametrize("value", ["60", b"1", [1], True, 1j])
def test_keep_warm_of_the_wrong_type_raises_type_error(value: object) -> None:
    with pytest.raises(TypeError, match="keep_warm must be a number of seconds or None"):
        AdaptiveProcessPoolExecutor(keep_warm=value)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [0, -1, 0.0, -0.5, math.inf, math.nan])
def test_keep_warm_not_positive_and_finite_raises_value_error(value: float) -> None:
    with pytest.raises(ValueError, match="keep_warm must be a positive, finite number"):
        AdaptiveProcessPoolExecutor(keep_warm=value)


@pytest.mark.skipif(
    sys.version_info < (3, 11), reason="max_tasks_per_child itself is refused before 3.11"
)
def test_keep_warm_with_max_tasks_per_child_is_refused() -> None:
    with pytest.raises(ValueError, match="keep_warm cannot be combined with max_tasks_per_child"):
        AdaptiveProcessPoolExecutor(keep_warm=WARM_S, max_tasks_per_child=2)


@pytest.mark.parametrize(
    "backend", ["dask", "threads", FakeBackend()], ids=["dask", "threads", "object"]
)
def test_keep_warm_with_another_backend_is_refused(backend: object) -> None:
    with pytest.raises(ValueError, match="keep_warm applies to the local process pool only"):
        AdaptiveProcessPoolExecutor(keep_warm=WARM_S, backend=backend)  # type: ignore[arg-type]
