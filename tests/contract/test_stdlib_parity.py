"""Where ``ProcessPoolExecutor``'s contract is easy to miss: cancellation at shutdown, the
``running()`` state, the exception types at every edge (never one of loky's), exceptions that
cannot be unpickled, and ``map(fn)`` with no iterables. Real processes throughout."""

from __future__ import annotations

import concurrent.futures.process
import os
import subprocess
import sys
import textwrap
import tracemalloc
import weakref
from collections.abc import Iterator
from pathlib import Path

import pytest

import amorsize_executor
from amorsize_executor import AdaptiveProcessPoolExecutor, UnpicklableExceptionError

from ..faults import _work as _faults
from . import _work
from ._helpers import drain, wait_for_file
from ._paths import PATHS, ExecPath

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parents[2]


# -- shutdown(cancel_futures=True) and running() --------------------------------------------


def test_shutdown_cancel_futures_lets_the_calls_workers_hold_complete() -> None:
    # Right after the submits, as CPython's test_cancel_futures does: the pool has barely
    # started, yet the calls its call queue would hold (one per worker, plus one) run.
    ex = AdaptiveProcessPoolExecutor(max_workers=2)
    futures = [ex.submit(_work.sleep_for, 0.05, i) for i in range(30)]
    ex.shutdown(cancel_futures=True)
    cancelled = [f for f in futures if f.cancelled()]
    completed = [f for f in futures if not f.cancelled()]
    assert cancelled, "shutdown(cancel_futures=True) cancelled nothing"
    assert futures[:3] == completed[:3], "the calls the workers hold were cancelled"
    for future in completed:
        assert future.done()
        assert future.exception() is None


def test_a_future_a_worker_runs_reports_running_and_refuses_cancel(tmp_path: Path) -> None:
    release, started = tmp_path / "release", tmp_path / "started"
    with AdaptiveProcessPoolExecutor(max_workers=1) as ex:
        future = ex.submit(_work.wait_for_path, str(release), "done", str(started))
        wait_for_file(started)
        assert future.running()
        assert not future.cancel()
        release.touch()
        assert future.result(timeout=60) == "done"
        assert not future.running()


def test_shutdown_cancel_futures_does_not_cancel_a_running_call(tmp_path: Path) -> None:
    release, started = tmp_path / "release", tmp_path / "started"
    ex = AdaptiveProcessPoolExecutor(max_workers=1)
    running = ex.submit(_work.wait_for_path, str(release), "done", str(started))
    wait_for_file(started)
    queued = [ex.submit(_work.square, i) for i in range(10)]
    ex.shutdown(wait=False, cancel_futures=True)
    release.touch()
    assert running.result(timeout=60) == "done"
    assert any(f.cancelled() for f in queued)


# -- exception types: the stdlib's, never loky's ----------------------------------------------


def _run_script(body: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    package_root = str(Path(amorsize_executor.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(body)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


@pytest.mark.parametrize("call", ["submit", "map"])
def test_new_work_after_the_interpreter_began_to_exit_raises_the_stdlib_error(
    call: str,
) -> None:
    proc = _run_script(
        f"""
        import atexit
        from amorsize_executor import AdaptiveProcessPoolExecutor

        ex = AdaptiveProcessPoolExecutor(2)
        ex.submit(abs, -1).result()

        @atexit.register
        def late():
            try:
                if {call!r} == "submit":
                    ex.submit(abs, -2)
                else:
                    list(ex.map(abs, [-2]))
            except Exception as exc:
                print(type(exc).__module__, type(exc).__qualname__, exc, sep="|")
        """
    )
    assert proc.stdout.strip() == (
        "builtins|RuntimeError|cannot schedule new futures after interpreter shutdown"
    ), proc.stderr


@pytest.mark.parametrize("call", ["submit", "map"])
def test_new_work_after_shutdown_raises_the_stdlib_error(call: str) -> None:
    ex = AdaptiveProcessPoolExecutor(max_workers=1)
    ex.submit(abs, -1).result(timeout=60)
    ex.shutdown()
    with pytest.raises(RuntimeError) as info:
        if call == "submit":
            ex.submit(abs, -2)
        else:
            ex.map(abs, [-2])
    assert type(info.value) is RuntimeError
    assert str(info.value) == "cannot schedule new futures after shutdown"


def test_a_worker_dying_in_submit_gives_the_stdlib_broken_process_pool() -> None:
    with AdaptiveProcessPoolExecutor(max_workers=1) as ex:
        future = ex.submit(_faults.exit_now, os.getpid())
        error = future.exception(timeout=60)
        assert type(error) is concurrent.futures.process.BrokenProcessPool, type(error)
        # The executor goes on with a new pool, as documented.
        assert ex.submit(abs, -3).result(timeout=60) == 3


def test_a_worker_dying_in_map_gives_a_stdlib_broken_process_pool_cause() -> None:
    with (
        AdaptiveProcessPoolExecutor(max_workers=1, isolate=True) as ex,
        pytest.raises(concurrent.futures.process.BrokenProcessPool) as info,
    ):
        list(ex.map(_faults.exit_at, range(4), [2] * 4, [os.getpid()] * 4))
    chain = []
    error: BaseException | None = info.value
    while error is not None:
        chain.append(type(error))
        error = error.__cause__ or error.__context__
    assert all(not t.__module__.startswith("loky") for t in chain), chain


def test_a_classmethod_keeps_its_source_lines_in_the_worker_traceback() -> None:
    # CPython's test_traceback: the worker's traceback shows the line that raised. A method
    # pickled by value (cloudpickle) would show no source line.
    with AdaptiveProcessPoolExecutor(max_workers=1) as ex:
        error = ex.submit(_work.Raiser.raise_from_classmethod).exception(timeout=60)
    assert isinstance(error, RuntimeError) and error.args == (123,)
    cause = error.__cause__
    assert type(cause) is concurrent.futures.process._RemoteTraceback
    assert "the line a worker's traceback must show" in cause.tb


def test_a_classmethod_keeps_its_source_lines_in_the_worker_traceback_in_map() -> None:
    with AdaptiveProcessPoolExecutor(max_workers=1, isolate=True) as ex:
        results = ex.map(_work.Raiser.raise_at_two, range(4))
        assert [next(results), next(results)] == [0, 1]
        with pytest.raises(RuntimeError) as info:
            next(results)
    cause = info.value.__cause__
    assert type(cause) is concurrent.futures.process._RemoteTraceback
    assert "the line a worker's traceback must show in map()" in cause.tb


# -- exceptions that cannot be unpickled in the parent ---------------------------------------


@pytest.mark.parametrize(
    ("fn", "type_name"),
    [
        (_faults.raise_lock_holding_at, "LockHoldingError"),
        (_faults.raise_two_argument_at, "TwoArgumentError"),
    ],
    ids=["holds-a-lock", "init-needs-two-args"],
)
def test_submit_keeps_the_name_message_and_traceback_of_an_unpicklable_exception(
    fn: object, type_name: str
) -> None:
    with AdaptiveProcessPoolExecutor(max_workers=1) as ex:
        error = ex.submit(fn, 5, 5).exception(timeout=60)  # type: ignore[arg-type]
        assert isinstance(error, UnpicklableExceptionError), repr(error)
        assert error.type_name == type_name
        assert error.index is None
        assert type_name in str(error) and "at 5" in str(error), str(error)
        cause = error.__cause__
        assert isinstance(cause, amorsize_executor.RemoteTraceback)
        assert fn.__name__ in str(cause)  # type: ignore[attr-defined]
        # The pool survives it.
        assert ex.submit(abs, -4).result(timeout=60) == 4


def test_an_unpicklable_exception_keeps_its_name_where_tblib_pickles_exceptions() -> None:
    # distributed installs tblib's exception pickling on import, which pickles an exception's
    # cause and context with it: the stand-in must not drag the original (holding a lock)
    # along, or the worker dies sending it and the pool breaks.
    pytest.importorskip("tblib")
    proc = _run_script(
        """
        import threading
        import tblib.pickling_support
        from amorsize_executor import AdaptiveProcessPoolExecutor, UnpicklableExceptionError

        tblib.pickling_support.install()

        class LockHoldingError(Exception):
            def __init__(self, message):
                super().__init__(message)
                self.lock = threading.Lock()

        def raise_lock_holding(x):
            raise LockHoldingError(f"locked at {x}")

        with AdaptiveProcessPoolExecutor(max_workers=1) as ex:
            error = ex.submit(raise_lock_holding, 5).exception(timeout=60)
            assert isinstance(error, UnpicklableExceptionError), repr(error)
            assert error.type_name == "LockHoldingError" and "locked at 5" in str(error)
            assert "raise_lock_holding" in str(error.__cause__), str(error.__cause__)
            assert ex.submit(abs, -4).result(timeout=60) == 4
        print("ok")
        """
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


# -- map(fn) with no iterables ----------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS, ids=[p.name for p in PATHS])
def test_map_with_no_iterables_is_empty(path: ExecPath) -> None:
    with path.executor() as ex:
        assert list(path.map(ex, _work.square)) == []


# -- results are not kept alive once handed on ------------------------------------------------


@pytest.mark.parametrize("path", PATHS, ids=[p.name for p in PATHS])
def test_a_result_the_consumer_dropped_is_freed(path: ExecPath) -> None:
    with path.executor() as ex:
        n_seen = 0
        for token in path.map(ex, _work.make_token, range(300)):
            ref = weakref.ref(token)
            del token
            assert ref() is None, f"result {n_seen} is still alive after the consumer dropped it"
            n_seen += 1
        assert n_seen == 300


def test_a_consumer_dropping_results_holds_at_most_a_chunk_of_them() -> None:
    n_bytes, n_items = 8 * 2**20, 8
    with AdaptiveProcessPoolExecutor(max_workers=1, isolate=True) as ex:
        tracemalloc.start()
        try:
            live = []
            results = ex.map(
                _work.big_bytes, range(n_items), [n_bytes] * n_items, chunksize=n_items
            )
            for result in results:
                assert len(result) == n_bytes
                del result
                live.append(tracemalloc.get_traced_memory()[0])
        finally:
            tracemalloc.stop()
    # After the last result was dropped, neither the chunk's other results nor its pickled
    # form may still be held (before: all eight results and the chunk's bytes, 128 MiB).
    assert live[-1] < 2 * n_bytes, [f"{b / 2**20:.0f} MiB" for b in live]


# -- map(..., timeout=...) --------------------------------------------------------------------


@pytest.mark.parametrize("n_quick", [2, 40], ids=["in-the-probe", "after-the-probe"])
@pytest.mark.parametrize("path", PATHS, ids=[p.name for p in PATHS])
def test_map_timeout_yields_every_result_finished_before_the_deadline(
    path: ExecPath, n_quick: int
) -> None:
    # The stdlib's test_map_timeout: map(time.sleep, [0, 0, 6], timeout=5) yields None,
    # None, then raises. The slow item outlasts the deadline by far; the quick ones finish
    # long before it, whatever the load.
    delays = [0.0] * n_quick + [30.0]
    got = []
    with path.executor() as ex:
        results = path.map(ex, _work.sleep_for, delays, range(len(delays)), timeout=3)
        with pytest.raises(concurrent.futures.TimeoutError):
            for value in results:
                got.append(value)
        ex.terminate_workers()
    if path.map_kwargs.get("chunksize", 1) > 1:
        # The user's own chunksize: a chunk's results come back together, as in the stdlib.
        assert got == list(range(len(got)))
    else:
        assert got == list(range(n_quick))


# -- bounded read-ahead -----------------------------------------------------------------------


def test_large_items_are_read_ahead_by_a_few_mib_not_by_tens_of_thousands() -> None:
    item_bytes, n_items = 2048, 60_000
    pulled = 0

    def items() -> Iterator[bytes]:
        nonlocal pulled
        while True:
            pulled += 1
            yield bytes(item_bytes)

    worst = 0
    with AdaptiveProcessPoolExecutor(max_workers=2, isolate=True) as ex:
        results = ex.map(len, items())
        for n_consumed, length in enumerate(results):
            assert length == item_bytes
            worst = max(worst, pulled - n_consumed)
            if n_consumed == n_items:
                break
        results.close()  # type: ignore[attr-defined]
    # Before: about 40,000 items (78 MiB) read ahead of the consumer.
    assert worst * item_bytes < 12 * 2**20, f"{worst} items read ahead"


def test_an_exception_of_a_chunk_that_could_not_run_carries_no_loky_type() -> None:
    # The items fail to unpickle in the worker: the chunk's future fails in the pool itself.
    with AdaptiveProcessPoolExecutor(max_workers=1, isolate=True) as ex:
        _, error = drain(ex.map(_work.identity, [_work.FailsToLoad()]))
    assert error is not None
    chain = []
    while error is not None:
        chain.append(type(error))
        error = error.__cause__ or error.__context__
    assert all(not t.__module__.startswith("loky") for t in chain), chain


# -- fn gets copies (more cases: test_arg_copies.py) ------------------------------------------


def test_fn_mutating_its_argument_never_changes_the_callers_objects_in_caller() -> None:
    _check_fn_gets_copies(PATHS[0])


@pytest.mark.parametrize("path", PATHS[1:], ids=[p.name for p in PATHS[1:]])
def test_fn_mutating_its_argument_never_changes_the_callers_objects(path: ExecPath) -> None:
    _check_fn_gets_copies(path)


# -- known gaps (strict: they fail the run once fixed, so the marker goes) --------------------


def _check_fn_gets_copies(path: ExecPath) -> None:
    items = [[0] for _ in range(50)]
    with path.executor() as ex:
        assert list(path.map(ex, _work.append_one, items)) == [2] * 50
    assert items == [[0]] * 50


@pytest.mark.parametrize("isolate", [False, True], ids=["default", "isolate"])
def test_results_reach_the_consumer_before_a_later_item_finishes(
    tmp_path: Path, isolate: bool
) -> None:
    flag = tmp_path / "got-the-earlier-results"
    got = []
    with AdaptiveProcessPoolExecutor(max_workers=2, isolate=isolate) as ex:
        for value in ex.map(_work.handshake, range(5), [4] * 5, [str(flag)] * 5):
            got.append(value)
            if value == 3:
                flag.touch()
    assert got == [0, 1, 2, 3, 4]
