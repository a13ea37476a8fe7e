"""A fresh pool's first results do not wait for the start-cost record: the record (a write
to the on-disk cache) runs off the thread that delivers results, and only once the pool's
start is over (``RECORD_DELAY_S``) or it shuts down."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from amorsize_executor import _pool_backend, _start_cost_cache, _start_recorder
from amorsize_executor._pool_backend import PoolBackend


def test_the_first_result_arrives_before_the_start_cost_record_runs_and_shutdown_starts_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_start_recorder, "RECORD_DELAY_S", 60.0)
    recording = threading.Event()
    release = threading.Event()
    recorded: list[str] = []

    def record(start_method: str, seconds: float) -> None:
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
        record_start_s=record,
    )
    try:
        future = backend.submit(abs, -3)
        assert future.result(timeout=30) == 3
        assert not recording.wait(0.2)  # waiting for the delay, or for the shutdown
    finally:
        backend.shutdown()  # returns while the record runs: it waits for none
    assert recording.wait(30) and not recorded
    release.set()
    _start_recorder.finish_pending_records()
    assert recorded == ["loky"]


def test_a_waiting_record_writes_when_the_delay_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_start_recorder, "RECORD_DELAY_S", 0.0)
    recorded = threading.Event()
    recorder = _start_recorder.StartRecorder(lambda method, seconds: recorded.set(), "fork", 0.0)
    answer: Future[int] = Future()
    answer.set_result(0)
    recorder.on_answer(answer)
    assert recorded.wait(30)  # no shutdown needed


def test_the_record_thread_is_started_without_waiting_for_it_to_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The callback runs on the thread that delivers results: a ``threading.Thread`` start
    there waits until the new thread runs (0.5-1.5 ms while new workers hold the cores)."""
    started: list[tuple[Any, tuple[Any, ...]]] = []
    monkeypatch.setattr(
        _start_recorder._thread, "start_new_thread", lambda fn, args: started.append((fn, args))
    )
    recorded: list[tuple[str, float]] = []
    recorder = _start_recorder.StartRecorder(
        lambda method, seconds: recorded.append((method, seconds)), "fork", 0.0
    )
    answer: Future[int] = Future()
    answer.set_result(0)
    recorder.on_answer(answer)
    assert len(started) == 1 and not recorded  # started, not run: nothing waited for it
    fn, args = started[0]
    thread = threading.Thread(target=fn, args=args)
    thread.start()
    recorder.close()  # the record waits for the delay or this, not longer
    thread.join(30)
    assert [method for method, _ in recorded] == ["fork"]


def test_no_record_and_no_wait_without_an_answer() -> None:
    recorded: list[str] = []
    recorder = _start_recorder.StartRecorder(
        lambda method, seconds: recorded.append(method), "fork", 0.0
    )
    answer: Future[int] = Future()
    answer.cancel()
    recorder.on_answer(answer)
    recorder.close()  # returns at once: no record was started
    assert not recorded


_NO_SHUTDOWN_PROGRAM = """
from amorsize_executor import AdaptiveProcessPoolExecutor

if __name__ == "__main__":
    executor = AdaptiveProcessPoolExecutor(max_workers=1)
    assert executor.submit(abs, -2).result(timeout=60) == 2
    # no shutdown: the interpreter's exit stops the pool
"""


def test_a_program_that_never_shuts_its_executor_down_still_stores_its_start_cost(
    tmp_path: Path,
) -> None:
    """The record waits ``RECORD_DELAY_S`` (a second) after the first answer; a program
    that exits sooner without a shutdown writes it at its exit."""
    script = tmp_path / "no_shutdown.py"
    script.write_text(_NO_SHUTDOWN_PROGRAM)
    cache_dir = tmp_path / "cache"
    env = dict(os.environ, AMORSIZE_CACHE_DIR=str(cache_dir))
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(_pool_backend.__file__).parents[1]), *filter(None, [env.get("PYTHONPATH")])]
    )
    done = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    cache_path = cache_dir / "worker_start.json"
    samples = {
        method: _start_cost_cache.worker_start_samples_s(method, cache_path)
        for method in ("fork", "loky", "forkserver", "spawn")
    }
    assert any(samples.values()), samples
