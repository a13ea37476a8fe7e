"""A fresh pool's first result does not wait for the start-cost record: the record (a write
to the on-disk cache) runs off the thread that delivers results."""

from __future__ import annotations

import multiprocessing
import threading
from typing import Any

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


def _wait_for(event: Any) -> None:
    event.wait(60)


def test_the_start_cost_recorder_is_running_before_the_first_answer() -> None:
    """Its thread starts before the fork, not from the callback on the thread that delivers
    results (a thread's start there held results back while new workers took the cores)."""
    context = multiprocessing.get_context("fork")
    answer_gate = context.Event()
    recorded: list[str] = []
    backend = PoolBackend(
        max_workers=1,
        mp_context=context,
        initializer=_wait_for,
        initargs=(answer_gate,),
        max_tasks_per_child=None,
        default_workers=lambda: 1,
        record_start_s=lambda method, seconds: recorded.append(method),
    )
    before = set(threading.enumerate())
    try:
        backend.prepare(1)  # forks the worker, which waits in its initializer
        recorders = [
            t
            for t in threading.enumerate()
            if t.name == "amorsize-record-start" and t not in before
        ]
        assert recorders and not recorded
    finally:
        answer_gate.set()
        backend.shutdown()
    assert recorded == ["fork"]
    assert not any(t.is_alive() for t in recorders)
