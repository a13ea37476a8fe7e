"""The dask backend on a real local cluster: the executor's contract (order, laziness,
exceptions at their position, timeouts, submit), worker loss, and the cluster facts.

Everything runs on a ``LocalCluster`` bound to 127.0.0.1. Nothing here asserts a duration:
waits are on files and deadline polling, and the timeouts only turn a hang into a failure.
Functions that run on workers live at module level so workers import them by reference.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import copyreg
import functools
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pytest

# Importing distributed runs tblib's ``pickling_support.install()``: it registers a pickler
# (copyreg) for every exception class defined so far in this process, and for tracebacks.
# The executor's other tests, collected in the same process, then see their "unpicklable"
# exceptions pickle fine. So it is undone right after the import, and again (dask re-installs
# it for exceptions it reports) when this module is done.
_DISPATCH_TABLE_BEFORE = dict(copyreg.dispatch_table)
distributed = pytest.importorskip("distributed")
import dask  # noqa: E402

from amorsize_executor import (  # noqa: E402
    AdaptiveProcessPoolExecutor,
    RemoteTraceback,
    WorkerCrashedError,
)
from amorsize_executor._dask_backend import DaskBackend  # noqa: E402
from amorsize_executor._dask_facts import read_cluster_facts  # noqa: E402

pytestmark = pytest.mark.timeout(120)


def undo_tblib_pickling() -> None:
    from tblib import pickling_support  # type: ignore[import-untyped]

    tblib_reducers = (pickling_support.pickle_exception, pickling_support.pickle_traceback)
    for cls, reducer in list(copyreg.dispatch_table.items()):
        if getattr(reducer, "func", reducer) in tblib_reducers:  # func: a partial's
            if cls in _DISPATCH_TABLE_BEFORE:
                copyreg.dispatch_table[cls] = _DISPATCH_TABLE_BEFORE[cls]
            else:
                del copyreg.dispatch_table[cls]


undo_tblib_pickling()


@pytest.fixture(scope="module", autouse=True)
def pickling_restored() -> Iterator[None]:
    yield
    undo_tblib_pickling()


WAIT_S = 60.0
"""Deadline for anything awaited here: only turns a hang into a failure."""


@contextlib.contextmanager
def start_cluster(n_workers: int = 2) -> Iterator[Any]:
    """A local cluster on 127.0.0.1, closed on exit with this process's environment restored.

    Each dask nanny sets ``distributed.nanny.pre-spawn-environ`` (``OMP_NUM_THREADS=1``,
    ``PYTHONHASHSEED``, ...) in the environment of *this* process before it spawns a worker;
    left there, it would change what later tests' pools and subprocesses inherit.
    """
    saved = dict(os.environ)
    try:
        with distributed.LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            # The scheduler serves HTTP (health, metrics) even without a dashboard, on 8787
            # by default: a random local port instead, so concurrent clusters don't collide.
            scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
        ) as local_cluster:
            yield local_cluster
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    # Module scope: started before the first test's leak check takes its snapshot of child
    # processes, closed after the last one's, so its two workers are never seen as leaks.
    # That holds because no test kills them: a worker dask restarts is a new process, which
    # the check would report (the crash tests use a cluster of their own).
    with start_cluster() as local_cluster:
        yield local_cluster


@pytest.fixture(scope="module")
def client(cluster: Any) -> Iterator[Any]:
    with distributed.Client(cluster, set_as_default=False) as dask_client:
        yield dask_client


@pytest.fixture(scope="module")
def cluster_facts(client: Any) -> Any:
    return read_cluster_facts(client)


def make_executor(client: Any, facts: Any, **options: Any) -> AdaptiveProcessPoolExecutor:
    """The executor on the dask backend, given as an object with the facts measured once
    (``backend="dask", client=...`` builds the same backend; see the shorthand's test)."""
    return AdaptiveProcessPoolExecutor(backend=DaskBackend(client), system_facts=facts, **options)


@pytest.fixture
def isolated(client: Any, cluster_facts: Any) -> Iterator[AdaptiveProcessPoolExecutor]:
    """An executor that never runs ``fn`` in this process, so every map goes to dask."""
    with make_executor(client, cluster_facts, isolate=True) as ex:
        yield ex


# -- functions the workers run -------------------------------------------------------------


def square(x: int) -> int:
    return x * x


def sleepy_square(x: int) -> int:
    time.sleep(0.001)
    return x * x


def fail_at_7(x: int) -> int:
    if x == 7:
        raise ValueError(f"item {x} is bad")
    return x * x


def divide(a: float, b: float) -> float:
    return a / b


def echo_keywords(x: int, *, key: str, workers: str) -> tuple[int, str, str]:
    """Its keywords share names with ``Client.submit``'s own: they must reach ``fn``."""
    return x, key, workers


def wait_for_file(path: str) -> str:
    """Block a worker thread until ``path`` exists (the test creates it to release us)."""
    deadline = time.monotonic() + WAIT_S
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.01)
    return path


def wait_to_be_cancelled(path: str) -> str:
    """``wait_for_file`` under a name of its own, to find its task on the scheduler."""
    return wait_for_file(path)


def exit_first_time(x: int, *, k: int, marker_dir: str) -> int:
    """Kill the worker on the first attempt at item ``k`` only: dask's retry succeeds."""
    if x == k:
        marker = Path(marker_dir) / f"died-at-{k}"
        if not marker.exists():
            marker.touch()
            os._exit(1)
    return x * x


def exit_always(x: int, *, k: int) -> int:
    if x == k:
        os._exit(1)
    return x * x


def exit_now() -> None:
    os._exit(1)


def scheduler_task_keys(dask_scheduler: Any) -> list[str]:
    """Runs on the scheduler: the keys it still knows."""
    return [str(key) for key in dask_scheduler.tasks]


def wait_until(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.02)


# -- the cluster as facts -------------------------------------------------------------------


def test_cluster_facts_describe_the_running_workers(client: Any, cluster_facts: Any) -> None:
    facts = cluster_facts
    assert facts.n_logical_cores == 2
    assert facts.n_warm_workers == 2
    assert (facts.n_physical_cores, facts.n_affinity_cores, facts.cpu_quota_cores) == (
        None,
        None,
        None,
    )
    assert facts.start_method == "dask"
    assert facts.worker_start_s == 0.0
    assert facts.task_roundtrip_s > 0
    assert facts.ipc_bytes_per_s > 0
    assert facts.available_memory_bytes > 0


def test_round_trip_and_transfer_are_measured_once_per_client(
    client: Any, cluster_facts: Any
) -> None:
    again = DaskBackend(client).read_facts()
    assert again.task_roundtrip_s == cluster_facts.task_roundtrip_s
    assert again.ipc_bytes_per_s == cluster_facts.ipc_bytes_per_s


def test_backend_reports_worker_threads_as_warm(client: Any) -> None:
    backend = DaskBackend(client)
    assert backend.n_warm_workers == 2
    assert backend.start_method == "dask"
    assert backend.worker_pids() == []
    backend.prepare(8)  # starts nothing, and returns at once: workers are there
    backend.shutdown()


# -- map ----------------------------------------------------------------------------------


def test_map_over_a_list_returns_results_in_order(isolated: AdaptiveProcessPoolExecutor) -> None:
    assert list(isolated.map(square, range(300), chunksize=7)) == [x * x for x in range(300)]
    plan = isolated.last_plan
    assert plan is not None and plan.mode == "parallel"
    assert plan.outcome is not None and plan.outcome.n_chunks > 1


def test_map_over_several_iterables(isolated: AdaptiveProcessPoolExecutor) -> None:
    assert list(isolated.map(divide, [1, 4, 9, 16], [1, 2, 3, 4])) == [1.0, 2.0, 3.0, 4.0]


def test_map_over_a_generator_reads_it_lazily(isolated: AdaptiveProcessPoolExecutor) -> None:
    n_items, buffersize, chunksize = 200, 8, 2
    pulled = 0

    def numbers() -> Iterator[int]:
        nonlocal pulled
        for x in range(n_items):
            pulled += 1
            yield x

    # Ahead of the consumer: at most the probe's first chunks (1 + 4 items of at least
    # 1 ms stop it), the window, and one chunk being filled.
    bound = 5 + buffersize + chunksize + 1
    results = []
    for result in isolated.map(
        sleepy_square, numbers(), buffersize=buffersize, chunksize=chunksize
    ):
        results.append(result)
        assert pulled <= len(results) + bound
        if len(results) % 20 == 0:
            time.sleep(0.05)  # a slow consumer: the input must not run ahead meanwhile
            assert pulled <= len(results) + bound
    assert results == [x * x for x in range(n_items)]
    plan = isolated.last_plan
    assert plan is not None and plan.mode == "parallel"


def test_an_exception_arrives_at_its_position_with_its_type(
    isolated: AdaptiveProcessPoolExecutor,
) -> None:
    results = []
    with pytest.raises(ValueError, match="item 7 is bad") as info:
        for result in isolated.map(fail_at_7, range(40), chunksize=3):
            results.append(result)
    assert type(info.value) is ValueError
    assert isinstance(info.value.__cause__, RemoteTraceback)
    assert results == [x * x for x in range(7)]


def test_timeout_raises_timeout_error(client: Any, cluster_facts: Any, tmp_path: Path) -> None:
    release = tmp_path / "release"
    with make_executor(client, cluster_facts) as ex:
        try:
            results = ex.map(wait_for_file, [str(release)] * 4, timeout=0.5)
            with pytest.raises(concurrent.futures.TimeoutError):
                list(results)
        finally:
            release.touch()  # frees the worker threads still waiting


def test_tiny_work_runs_serially(client: Any, cluster_facts: Any) -> None:
    with make_executor(client, cluster_facts) as ex:
        assert list(ex.map(square, range(100))) == [x * x for x in range(100)]
        plan = ex.last_plan
    assert plan is not None and plan.mode == "serial"


def test_the_dask_shorthand_plans_with_the_cluster_facts(client: Any) -> None:
    with AdaptiveProcessPoolExecutor(backend="dask", client=client, isolate=True) as ex:
        assert list(ex.map(square, range(50))) == [x * x for x in range(50)]
        plan = ex.last_plan
    assert plan is not None and plan.mode == "parallel"
    assert (plan.facts.start_method, plan.facts.n_logical_cores) == ("dask", 2)
    assert client.status == "running"  # the executor's shutdown leaves a passed client open


# -- submit -------------------------------------------------------------------------------


def test_submit_returns_results_and_original_exceptions(
    isolated: AdaptiveProcessPoolExecutor,
) -> None:
    assert isolated.submit(pow, 2, 10).result(timeout=WAIT_S) == 1024
    with pytest.raises(ZeroDivisionError):
        isolated.submit(divide, 1, 0).result(timeout=WAIT_S)
    echoed = isolated.submit(echo_keywords, 3, key="k", workers="w").result(timeout=WAIT_S)
    assert echoed == (3, "k", "w")


def test_cancelling_a_future_cancels_the_dask_task(client: Any, tmp_path: Path) -> None:
    release = tmp_path / "release"
    backend = DaskBackend(client)
    try:
        future = backend.submit(wait_to_be_cancelled, str(release))
        assert future.cancel()
        assert future.cancelled()

        def forgotten() -> bool:
            keys = client.run_on_scheduler(scheduler_task_keys)
            return not any(key.startswith("wait_to_be_cancelled") for key in keys)

        wait_until(forgotten, "the scheduler to forget the cancelled task")
        # The cancellation was acknowledged, as executors do: wait() sees it done.
        done, _ = concurrent.futures.wait([future], timeout=WAIT_S)
        assert done == {future}
    finally:
        release.touch()  # a call already running on a worker is not interrupted by dask
        backend.shutdown()


def test_terminate_workers_fails_our_futures_and_spares_the_workers(
    client: Any, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    workers_before = set(client.nthreads())
    backend = DaskBackend(client)
    try:
        future = backend.submit(wait_for_file, str(release))
        backend.terminate_workers()
        with pytest.raises(BrokenProcessPool, match="terminate_workers"):
            future.result(timeout=WAIT_S)
    finally:
        release.touch()
    assert set(client.nthreads()) == workers_before
    assert backend.submit(square, 4).result(timeout=WAIT_S) == 16
    backend.shutdown()


# -- the client's ownership, shutdown, errors ----------------------------------------------


def test_a_passed_client_stays_open_after_shutdown(client: Any) -> None:
    backend = DaskBackend(client)
    backend.shutdown()
    assert client.status == "running"
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        backend.submit(square, 2)


def test_an_address_makes_an_owned_client_closed_on_shutdown(cluster: Any) -> None:
    backend = DaskBackend(cluster.scheduler_address)
    assert backend.submit(square, 5).result(timeout=WAIT_S) == 25
    backend.shutdown()
    assert backend.client.status == "closed"


def test_shutdown_without_waiting_keeps_results_readable(cluster: Any) -> None:
    backend = DaskBackend(cluster.scheduler_address)
    future = backend.submit(sleepy_square, 6)
    backend.shutdown(wait=False)
    assert future.result(timeout=WAIT_S) == 36
    wait_until(lambda: backend.client.status == "closed", "the owned client to close")


def test_a_cluster_without_workers_is_reported_clearly() -> None:
    with (
        start_cluster(n_workers=0) as empty,
        distributed.Client(empty, set_as_default=False) as empty_client,
    ):
        backend = DaskBackend(empty_client, wait_for_workers_s=0.2)
        with pytest.raises(RuntimeError, match="has no worker"):
            backend.prepare(2)
        with pytest.raises(RuntimeError, match=r"dask worker tcp://127\.0\.0\.1"):
            read_cluster_facts(empty_client, wait_for_workers_s=0.2)
        backend.shutdown()


def test_client_of_the_wrong_type_is_refused() -> None:
    with pytest.raises(TypeError, match=r"distributed\.Client or a scheduler address"):
        DaskBackend(42)  # type: ignore[arg-type]


def test_module_imports_without_distributed() -> None:
    code = (
        "import sys; sys.modules['distributed'] = None\n"
        "import amorsize_executor._dask_backend as m\n"
        "try:\n"
        "    m.DaskBackend('tcp://127.0.0.1:1')\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=WAIT_S, check=True
    )
    assert "pip install 'amorsize-executor[dask]'" in out.stdout


# -- worker loss ----------------------------------------------------------------------------


@pytest.fixture
def fragile_client() -> Iterator[Any]:
    """A cluster of its own, where a task may kill one worker and is dropped after two.

    Function scope: the workers dask restarts after a crash are new processes, so they must
    be gone before the leak check of the same test runs.
    """
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 1}),
        start_cluster() as local_cluster,
        distributed.Client(local_cluster, set_as_default=False) as dask_client,
    ):
        yield dask_client


def test_a_worker_killed_once_is_survived(fragile_client: Any, tmp_path: Path) -> None:
    fn = functools.partial(exit_first_time, k=5, marker_dir=str(tmp_path))
    facts = read_cluster_facts(fragile_client)
    with make_executor(fragile_client, facts, isolate=True) as ex:
        assert list(ex.map(fn, range(20), chunksize=2)) == [x * x for x in range(20)]
    assert (tmp_path / "died-at-5").exists()


def test_a_task_that_always_kills_its_worker_raises_broken_process_pool(
    fragile_client: Any,
) -> None:
    fn = functools.partial(exit_always, k=5)
    facts = read_cluster_facts(fragile_client)
    results = []
    with (
        make_executor(fragile_client, facts, isolate=True) as ex,
        pytest.raises(BrokenProcessPool) as info,
    ):
        for result in ex.map(fn, range(20), chunksize=2):
            results.append(result)
    error = info.value
    assert isinstance(error, WorkerCrashedError)
    # The stream stops where the lost items begin: the killer's chunk (4..5), or an earlier
    # one that dask had queued on the same worker (it gives up on every task it had
    # assigned to the dead worker, so which chunks fail depends on its queueing).
    assert error.first_index <= 5, (error.first_index, error.last_index)
    assert f"items {error.first_index}..{error.last_index}" in str(error)
    assert results == [x * x for x in range(error.first_index)]
    assert isinstance(error.__cause__, BrokenProcessPool)
    assert isinstance(error.__cause__.__cause__, distributed.KilledWorker)


def test_a_submitted_call_that_kills_its_worker_raises_broken_process_pool(
    fragile_client: Any,
) -> None:
    backend = DaskBackend(fragile_client)
    with pytest.raises(BrokenProcessPool, match="allowed-failures") as info:
        backend.submit(exit_now).result(timeout=WAIT_S)
    assert isinstance(info.value.__cause__, distributed.KilledWorker)
    backend.shutdown()
