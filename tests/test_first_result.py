"""A fresh pool's first result does not wait for the start-cost record: the record (a write
to the on-disk cache) runs off the thread that delivers results."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any

import pytest

from amorsize_executor import _pool_backend
from amorsize_executor._pool_backend import PoolBackend


def test_the_first_result_arrives_while_the_start_cost_record_is_still_running() -> None:
    recording = threading.Event()
    release = threading.Event()
    recorded: list[str] = []

    def slow_record(start_method: str, seconds: float) -> None:
        recording.set()
        release.wait(60)
        recorded.append(start_method)

    # One worker: it answers the backend's start probe first, then the call submitted here,
    # so a record run by the thread that delivers results would hold this result back.
    backend = PoolBackend(
        max_workers=1,
        mp_context=None,
        initializer=None,
        initargs=(),
        max_tasks_per_child=None,
        default_workers=lambda: 1,
        record_start_s=slow_record,
    )
    try:
        future = backend.submit(abs, -3)
        assert recording.wait(30)
        assert future.result(timeout=30) == 3
    finally:
        release.set()
        backend.shutdown()
    assert recorded == ["loky"]


def test_the_record_thread_is_started_without_waiting_for_it_to_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The callback runs on the thread that delivers results: a ``threading.Thread`` start
    there waits until the new thread runs (0.5-1.5 ms while new workers hold the cores)."""
    started: list[tuple[Any, tuple[Any, ...]]] = []
    monkeypatch.setattr(
        _pool_backend._thread, "start_new_thread", lambda fn, args: started.append((fn, args))
    )
    recorded: list[tuple[str, float]] = []
    recorder = _pool_backend._StartRecorder(
        lambda method, seconds: recorded.append((method, seconds)), "fork", 0.0
    )
    answer: Future[int] = Future()
    answer.set_result(0)
    recorder.on_answer(answer)
    assert len(started) == 1 and not recorded  # started, not run: nothing waited for it
    fn, args = started[0]
    fn(*args)
    recorder.close()
    assert [method for method, _ in recorded] == ["fork"]


def test_no_record_and_no_wait_without_an_answer() -> None:
    recorded: list[str] = []
    recorder = _pool_backend._StartRecorder(
        lambda method, seconds: recorded.append(method), "fork", 0.0
    )
    answer: Future[int] = Future()
    answer.cancel()
    recorder.on_answer(answer)
    recorder.close()  # returns at once: no record was started
    assert not recorded
