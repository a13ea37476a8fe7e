"""``submit`` and the futures it returns, as ``ProcessPoolExecutor`` promises them: results,
exceptions with their remote traceback, ``wait``, ``as_completed``, ``cancel``, and
``shutdown`` with and without waiting or cancelling. ``submit`` goes to the pool on every path."""

from __future__ import annotations

import concurrent.futures as cf
import os
import threading
from pathlib import Path

import pytest

import amorsize_executor
from amorsize_executor import AdaptiveProcessPoolExecutor

from . import _work
from ._helpers import wait_for_file, wait_gone, wait_until

pytestmark = pytest.mark.timeout(60)


def test_submit_returns_the_result(executor: AdaptiveProcessPoolExecutor) -> None:
    future = executor.submit(_work.square, 7)
    assert future.result(timeout=30) == 49
    assert future.done() and not future.cancelled()
    assert future.exception() is None


def test_submit_passes_positional_and_keyword_arguments(
    executor: AdaptiveProcessPoolExecutor,
) -> None:
    assert executor.submit(_work.add, 2, b=40).result(timeout=30) == 42
    assert executor.submit(_work.sleep_for, 0, value="kw").result(timeout=30) == "kw"


def test_submit_runs_in_a_worker_process(executor: AdaptiveProcessPoolExecutor) -> None:
    assert executor.submit(_work.pid_of).result(timeout=30) != os.getpid()


def test_submit_reraises_the_exception_with_its_remote_traceback(
    executor: AdaptiveProcessPoolExecutor,
) -> None:
    future = executor.submit(_work.raise_value_error_from_worker, 3)
    with pytest.raises(ValueError, match="raised for 3") as info:
        future.result(timeout=30)
    assert isinstance(future.exception(), ValueError)
    cause = info.value.__cause__
    assert cause is not None, "a worker's exception must carry its traceback as __cause__"
    assert "raise_value_error_from_worker" in str(cause)


def test_submit_cause_is_the_public_remote_traceback_type() -> None:
    with AdaptiveProcessPoolExecutor(max_workers=1) as ex, pytest.raises(ValueError) as info:
        ex.submit(_work.raise_value_error_from_worker, 1).result(timeout=30)
    assert isinstance(info.value.__cause__, amorsize_executor.RemoteTraceback)


def test_wait_all_completed_returns_every_future(executor: AdaptiveProcessPoolExecutor) -> None:
    futures = [executor.submit(_work.square, i) for i in range(8)]
    done, not_done = cf.wait(futures, timeout=30, return_when=cf.ALL_COMPLETED)
    assert done == set(futures) and not not_done
    assert [f.result() for f in futures] == [i * i for i in range(8)]


def test_wait_first_completed_and_first_exception(
    executor: AdaptiveProcessPoolExecutor, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    blocked = executor.submit(_work.wait_for_path, str(release), "late")
    failing = executor.submit(_work.fail_on, 1, frozenset({1}))
    try:
        done, not_done = cf.wait([blocked, failing], timeout=30, return_when=cf.FIRST_EXCEPTION)
        assert done == {failing} and not_done == {blocked}
        quick = executor.submit(_work.square, 3)
        done, _ = cf.wait([blocked, quick], timeout=30, return_when=cf.FIRST_COMPLETED)
        assert quick in done and blocked not in done
    finally:
        release.touch()
    assert blocked.result(timeout=30) == "late"


def test_wait_with_a_timeout_reports_unfinished_futures(
    executor: AdaptiveProcessPoolExecutor, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    blocked = executor.submit(_work.wait_for_path, str(release), "late")
    try:
        done, not_done = cf.wait([blocked], timeout=0.05)
        assert not done and not_done == {blocked}
    finally:
        release.touch()
    assert blocked.result(timeout=30) == "late"


def test_as_completed_yields_every_future_once(executor: AdaptiveProcessPoolExecutor) -> None:
    futures = [executor.submit(_work.square, i) for i in range(10)]
    seen = list(cf.as_completed(futures, timeout=30))
    assert sorted(seen, key=futures.index) == futures
    assert sorted(f.result() for f in seen) == [i * i for i in range(10)]


def test_cancel_a_queued_future(tmp_path: Path) -> None:
    # One worker, blocked: everything queued behind it beyond the pool's call queue stays
    # pending, so the last future can be cancelled.
    release, started = tmp_path / "release", tmp_path / "started"
    with AdaptiveProcessPoolExecutor(max_workers=1) as ex:
        blocker = ex.submit(_work.wait_for_path, str(release), "b", str(started))
        queued = [ex.submit(_work.square, i) for i in range(6)]
        wait_for_file(started)
        try:
            assert queued[-1].cancel()
            assert queued[-1].cancelled() and queued[-1].done()
            with pytest.raises(cf.CancelledError):
                queued[-1].result(timeout=0)
        finally:
            release.touch()
        assert blocker.result(timeout=30) == "b"
        assert [f.result(timeout=30) for f in queued[:-1]] == [i * i for i in range(5)]


def test_a_finished_future_cannot_be_cancelled(executor: AdaptiveProcessPoolExecutor) -> None:
    future = executor.submit(_work.square, 2)
    assert future.result(timeout=30) == 4
    assert not future.cancel()
    assert not future.cancelled()


def test_shutdown_wait_true_finishes_pending_work() -> None:
    ex = AdaptiveProcessPoolExecutor(max_workers=2)
    futures = [ex.submit(_work.sleep_for, 0.01, i) for i in range(6)]
    ex.shutdown(wait=True)
    assert all(f.done() for f in futures)
    assert [f.result() for f in futures] == list(range(6))


def test_shutdown_wait_false_still_completes_submitted_work() -> None:
    ex = AdaptiveProcessPoolExecutor(max_workers=2)
    futures = [ex.submit(_work.square, i) for i in range(6)]
    ex.shutdown(wait=False)
    assert [f.result(timeout=30) for f in futures] == [i * i for i in range(6)]
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        ex.submit(_work.square, 1)


@pytest.mark.parametrize("wait", [True, False], ids=["wait", "nowait"])
def test_shutdown_cancel_futures_cancels_what_has_not_started(wait: bool, tmp_path: Path) -> None:
    release, started = tmp_path / "release", tmp_path / "started"
    ex = AdaptiveProcessPoolExecutor(max_workers=1)
    blocker = ex.submit(_work.wait_for_path, str(release), "b", str(started))
    queued = [ex.submit(_work.square, i) for i in range(8)]
    wait_for_file(started)
    if wait:
        # shutdown(wait=True) returns only once the blocker has finished: a helper thread
        # releases it as soon as the cancellation is visible (or gives up, so the test fails
        # on the assertion below instead of hanging).
        def release_after_cancel() -> None:
            try:
                wait_until(queued[-1].cancelled, "shutdown to cancel the queue")
            finally:
                release.touch()

        helper = threading.Thread(target=release_after_cancel)
        helper.start()
        ex.shutdown(wait=True, cancel_futures=True)
        helper.join()
    else:
        ex.shutdown(wait=False, cancel_futures=True)
        release.touch()
    assert blocker.result(timeout=30) == "b"
    assert queued[-1].cancelled(), "work queued behind a busy worker must be cancelled"
    for i, future in enumerate(queued):
        # Items already handed to the worker's call queue may still run; the rest are
        # cancelled. Either way no future is left pending.
        if not future.cancelled():
            assert future.result(timeout=30) == i * i


def test_submit_after_shutdown_raises_runtime_error(
    executor: AdaptiveProcessPoolExecutor,
) -> None:
    executor.shutdown()
    with pytest.raises(RuntimeError, match=r"^cannot schedule new futures after shutdown$"):
        executor.submit(_work.square, 1)


def test_shutdown_twice_is_harmless(executor: AdaptiveProcessPoolExecutor) -> None:
    assert executor.submit(_work.square, 3).result(timeout=30) == 9
    executor.shutdown()
    executor.shutdown()
    executor.shutdown(wait=False, cancel_futures=True)


def test_context_manager_returns_the_executor_and_shuts_it_down() -> None:
    ex = AdaptiveProcessPoolExecutor(max_workers=2)
    with ex as entered:
        assert entered is ex
        assert ex.submit(_work.square, 5).result(timeout=30) == 25
        pids = ex._backend.worker_pids()
        assert pids
    wait_gone(pids)
    with pytest.raises(RuntimeError, match="cannot schedule new futures after shutdown"):
        ex.submit(_work.square, 1)


def test_context_manager_shuts_down_when_the_body_raises() -> None:
    ex = AdaptiveProcessPoolExecutor(max_workers=1)
    with pytest.raises(KeyError), ex:
        ex.submit(_work.square, 5).result(timeout=30)
        pids = ex._backend.worker_pids()
        raise KeyError("from the body")
    wait_gone(pids)
    with pytest.raises(RuntimeError):
        ex.map(_work.square, [1])
