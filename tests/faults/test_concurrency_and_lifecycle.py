"""One executor shared by threads; an executor inherited by a forked child; many executors
created and shut down in a row; a huge lazy input. Real processes, no durations asserted."""

from __future__ import annotations

import multiprocessing
import os
import select
import signal
import threading
import time

import psutil
import pytest

from amorsize_executor import AdaptiveProcessPoolExecutor

from ..conftest import live_children, make_facts
from ..contract._helpers import wait_until
from ..contract._paths import PARALLEL, SERIAL, ExecPath
from . import _work

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("path", [PARALLEL, SERIAL], ids=["parallel", "serial"])
def test_map_and_submit_from_four_threads_on_one_executor(path: ExecPath) -> None:
    n_threads, rounds = 4, 3
    start = threading.Barrier(n_threads)
    errors: list[BaseException] = []

    def work(thread_index: int) -> None:
        try:
            start.wait(timeout=30)
            for round_index in range(rounds):
                base = 1000 * thread_index + 100 * round_index
                items = range(base, base + 60)
                future = ex.submit(_work.square, base)
                assert list(ex.map(_work.square, items)) == [x * x for x in items]
                assert future.result(timeout=60) == base * base
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    with path.executor() as ex:
        threads = [threading.Thread(target=work, args=(i,)) for i in range(n_threads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=90)
        assert not any(thread.is_alive() for thread in threads), "a thread hung"
    assert not errors, errors


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_an_executor_used_in_a_forked_child_raises_a_clear_runtime_error() -> None:
    with PARALLEL.executor() as ex:
        assert list(ex.map(_work.square, range(5))) == [0, 1, 4, 9, 16]
        read_end, write_end = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the child, which reports via the pipe
            try:
                os.close(read_end)
                lines = []
                for name, call in (
                    ("map", lambda: ex.map(_work.square, [1, 2])),
                    ("submit", lambda: ex.submit(_work.square, 1)),
                ):
                    try:
                        call()
                        lines.append(f"{name}: no error")
                    except BaseException as exc:
                        lines.append(f"{name}: {type(exc).__name__}: {exc}")
                os.write(write_end, "\n".join(lines).encode())
            finally:
                os._exit(0)
        os.close(write_end)
        try:
            report = _read_until_closed(read_end)
        finally:
            os.close(read_end)
            status = _reap(child)
        assert os.waitstatus_to_exitcode(status) == 0, report
        lines = report.splitlines()
        assert len(lines) == 2, report
        for line in lines:
            assert ": RuntimeError: " in line, line
            assert "forked child" in line and "create a new executor" in line, line
        # The parent's executor is untouched.
        assert list(ex.map(_work.square, range(5))) == [0, 1, 4, 9, 16]


def _read_until_closed(fd: int, deadline_s: float = 30) -> str:
    chunks = []
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks).decode()


def _reap(pid: int, deadline_s: float = 30) -> int:
    """The forked child's wait status; a child still running at the deadline is killed."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"the forked child {pid} did not exit")


def _resources() -> tuple[int, int, set[int]]:
    return (
        threading.active_count(),
        psutil.Process().num_fds(),
        {p.pid for p in live_children()},
    )


@pytest.mark.parametrize(
    ("n_executors", "context"),
    [(100, "fork"), (8, None)],
    ids=["100-fork", "8-default-context"],
)
def test_many_executors_in_a_row_leak_nothing(n_executors: int, context: str | None) -> None:
    """Each executor starts a pool (isolate=True), maps, submits and shuts down. The 100-fold
    loop uses the fork context to stay fast; the default context (which may pick forkserver)
    is exercised with fewer rounds."""
    kwargs = {
        "max_workers": 1,
        "isolate": True,
        "system_facts": make_facts(),
        "mp_context": None if context is None else multiprocessing.get_context(context),
    }
    # One round first: process-wide singletons (resource tracker, forkserver) start once.
    with AdaptiveProcessPoolExecutor(**kwargs) as ex:
        assert list(ex.map(_work.square, range(3))) == [0, 1, 4]
    threads_before, fds_before, children_before = _resources()

    for i in range(n_executors):
        with AdaptiveProcessPoolExecutor(**kwargs) as ex:
            assert list(ex.map(_work.square, [i, i + 1])) == [i * i, (i + 1) ** 2]
            assert ex.submit(_work.square, i).result(timeout=60) == i * i

    wait_until(
        lambda: threading.active_count() <= threads_before,
        f"threads to return to {threads_before} (now {threading.active_count()}: "
        f"{[t.name for t in threading.enumerate()]})",
    )
    wait_until(
        lambda: not ({p.pid for p in live_children()} - children_before),
        "worker processes to exit",
    )
    fds_after = psutil.Process().num_fds()
    assert fds_after - fds_before <= 10, f"file descriptors grew from {fds_before} to {fds_after}"


def test_a_huge_lazy_input_keeps_memory_bounded() -> None:
    """Two million 48-byte items: kept all at once they would cost about 290 MB in this
    process; consumed lazily, the growth must stay well below that."""
    n_items = 2_000_000
    process = psutil.Process()

    def items():
        for _ in range(n_items):
            yield bytes(48)  # a new object each time

    with AdaptiveProcessPoolExecutor(max_workers=2, isolate=True, system_facts=make_facts()) as ex:
        assert list(ex.map(_work.payload_len, [b"warm"] * 8)) == [4] * 8
        baseline = process.memory_info().rss
        peak = baseline
        total = n_seen = 0
        for length in ex.map(_work.payload_len, items()):
            total += length
            n_seen += 1
            if n_seen % 10_000 == 0:
                peak = max(peak, process.memory_info().rss)
    assert n_seen == n_items and total == 48 * n_items
    growth_mb = (peak - baseline) / 2**20
    assert growth_mb < 200, f"RSS grew by {growth_mb:.0f} MB"


def _sleep_skewed(x: int) -> int:
    import time

    time.sleep(0.0005 if x % 60 < 40 else 0.01)  # stretches 20x slower: chunks stop early
    return x


def test_shutdown_from_another_thread_while_chunks_are_resent_keeps_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``shutdown(wait=True)`` resends handed-back items on its own thread while the reader
    does the same on another: the window between finding a chunk's place and inserting its
    pieces is widened on the shutdown thread, so any unguarded interleaving shows."""
    import threading
    import time

    from amorsize_executor import _steering

    split = _steering.split_unrun
    shutdown_thread: list[threading.Thread] = []

    def slow_split(**kwargs: int | float) -> list[int]:
        if threading.current_thread() in shutdown_thread:
            time.sleep(0.2)
        return split(**kwargs)

    monkeypatch.setattr(_steering, "split_unrun", slow_split)
    ex = AdaptiveProcessPoolExecutor(max_workers=2)
    results = ex.map(_sleep_skewed, range(400))
    got: list[int] = []
    errors: list[BaseException] = []

    def read() -> None:
        try:
            for value in results:
                got.append(value)
                time.sleep(0.003)
        except BaseException as exc:  # reported below
            errors.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(0.15)
    shutdown_thread.append(threading.current_thread())
    ex.shutdown(wait=True)
    reader.join(60)
    assert not errors
    assert got == list(range(400))
