"""A fresh pool's first result does not wait for the start-cost record: the record (a write
to the on-disk cache) runs off the thread that delivers results."""

from __future__ import annotations

import threading

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
