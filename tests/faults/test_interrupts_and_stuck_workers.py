"""Ctrl-C and stuck workers, each in a program of its own (see ``_scripts``): the program must
exit promptly after SIGINT, a stuck worker must be killable with ``terminate_workers()``, and
no worker may outlive the program. The deadlines only turn a hang into a failure."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..contract._helpers import alive, wait_gone
from ._scripts import Script

pytestmark = pytest.mark.timeout(120)

EXIT_DEADLINE_S = 30
"""Ten times what a prompt exit needs here (well under a second, even on a busy machine);
short, because a hang costs this much."""

LONG_CALL = """
def long_call():
    # A minute in steps of 10 ms, not one sleep: a SIGINT that lands after "running" is
    # written but before a single sleep begins only sets Python's flag (no call checks it
    # on the way into sleep), and that sleep would then run its whole minute before the
    # KeyboardInterrupt is raised, in any Python program (seen once in ~80 runs on 3.13).
    # A loop checks the flag at every step.
    for _ in range(6000):
        time.sleep(0.01)
"""

SLOW_ITEMS = (
    LONG_CALL
    + """
def slow(x):
    if x == 0:
        # The first item is measured by the probe: long enough for it to be satisfied, so
        # map() returns and the interrupt arrives while the results are being iterated.
        time.sleep(0.01)
        return x
    report("running", os.getpid())
    long_call()
    return x
"""
)

ALL_SLOW = (
    LONG_CALL
    + """
def slow(x):
    report("running", os.getpid())
    long_call()
    return x
"""
)

PARALLEL_MAIN_TEMPLATE = """
if __name__ == "__main__":
    ex = AdaptiveProcessPoolExecutor(max_workers=2, isolate=True)
    ex.submit(int).result()
    report("workers", *ex._backend.worker_pids())
    for r in ex.map(slow, range(8)):
        report("result", r)
        {loop_body}
    report("finished")
"""

PARALLEL_MAIN = PARALLEL_MAIN_TEMPLATE.format(loop_body="pass")


def interrupted_run(tmp_path: Path, body: str, *, whole_group: bool, wait_for: str) -> None:
    with Script(body, tmp_path) as script:
        script.wait_for(wait_for)
        script.wait_for("running")
        script.interrupt(whole_group=whole_group)
        exited = script.exited_within(EXIT_DEADLINE_S)
        assert exited, (
            f"still running {EXIT_DEADLINE_S} s after SIGINT; stderr: {script.stderr[-8000:]}"
        )
        assert script.process.returncode != 0
        assert not any(line[:1] == ["finished"] for line in script.lines)
        wait_gone(script.pids, deadline_s=EXIT_DEADLINE_S)
        assert not alive(script.pids)


def test_ctrl_c_in_a_terminal_while_map_probes_in_a_worker(tmp_path: Path) -> None:
    """A terminal's Ctrl-C signals the whole foreground process group, workers included."""
    interrupted_run(tmp_path, ALL_SLOW + PARALLEL_MAIN, whole_group=True, wait_for="workers")


def test_ctrl_c_in_a_terminal_while_iterating_a_parallel_map(tmp_path: Path) -> None:
    interrupted_run(tmp_path, SLOW_ITEMS + PARALLEL_MAIN, whole_group=True, wait_for="result")


def test_sigint_to_the_main_process_while_iterating_kills_the_workers(tmp_path: Path) -> None:
    """Only the main process is signalled (``kill -INT``): the workers, stuck in ``fn``, must
    be killed by the executor itself."""
    interrupted_run(tmp_path, SLOW_ITEMS + PARALLEL_MAIN, whole_group=False, wait_for="result")


def test_sigint_in_the_callers_own_loop_body_kills_the_workers(tmp_path: Path) -> None:
    """The interrupt lands in the caller's code between two results, never in the result
    iterator: the program ends on the KeyboardInterrupt, and the workers, stuck in ``fn``,
    must not hold its exit up (the pools' exit hooks would wait for their calls)."""
    # The caller's own long work after the first result: Ctrl-C lands in it.
    body = SLOW_ITEMS + PARALLEL_MAIN_TEMPLATE.format(loop_body="while True: time.sleep(0.01)")
    interrupted_run(tmp_path, body, whole_group=False, wait_for="result")


def test_ctrl_c_while_fn_runs_in_the_caller(tmp_path: Path) -> None:
    body = (
        ALL_SLOW
        + """
if __name__ == "__main__":
    ex = AdaptiveProcessPoolExecutor(max_workers=2)
    ex.submit(int).result()
    report("workers", *ex._backend.worker_pids())
    for r in ex.map(slow, range(8)):
        report("result", r)
    report("finished")
"""
    )
    interrupted_run(tmp_path, body, whole_group=False, wait_for="workers")


def test_sigint_to_the_main_process_while_map_probes_in_a_worker(tmp_path: Path) -> None:
    interrupted_run(tmp_path, ALL_SLOW + PARALLEL_MAIN, whole_group=False, wait_for="workers")


def test_terminate_workers_on_an_idle_pool_then_map_again(tmp_path: Path) -> None:
    body = """
if __name__ == "__main__":
    ex = AdaptiveProcessPoolExecutor(max_workers=2, isolate=True)
    report("mapped", *ex.map(abs, [-1, -2, -3]))
    report("workers", *ex._backend.worker_pids())
    ex.kill_workers()
    report("terminated")
    report("mapped", *ex.map(abs, [-4, -5]))
    report("workers", *ex._backend.worker_pids())
    ex.shutdown()
    report("finished")
"""
    with Script(body, tmp_path) as script:
        first = [int(pid) for pid in script.wait_for("workers")[1:]]
        script.wait_for("terminated", deadline_s=EXIT_DEADLINE_S)
        wait_gone(first)
        assert [line[1:] for line in script.lines if line[0] == "mapped"] == [["1", "2", "3"]]
        assert script.wait_for("finished")
        assert [line[1:] for line in script.lines if line[0] == "mapped"][1] == ["4", "5"]
        assert script.exited_within(EXIT_DEADLINE_S)
        assert script.process.returncode == 0, script.stderr[-3000:]
        wait_gone(script.pids)


TIMEOUT_THEN_TERMINATE = (
    ALL_SLOW
    + """
from concurrent.futures import TimeoutError as FuturesTimeoutError

if __name__ == "__main__":
    ex = AdaptiveProcessPoolExecutor(max_workers=2, isolate=True)
    results = ex.map(slow, [1, 2], timeout=0.5)
    try:
        next(results)
    except FuturesTimeoutError:
        report("timed-out")
    report("workers", *ex._backend.worker_pids())
    ex.terminate_workers()
    report("terminated")
    report("mapped", *ex.map(abs, [-1, -2, -3]))
    report("workers", *ex._backend.worker_pids())
    ex.shutdown()
    report("finished")
"""
)


def test_a_worker_stuck_after_a_timeout_is_killed_by_terminate_workers(tmp_path: Path) -> None:
    with Script(TIMEOUT_THEN_TERMINATE, tmp_path) as script:
        script.wait_for("timed-out", deadline_s=60)
        stuck = [int(pid) for pid in script.wait_for("workers")[1:]]
        script.wait_for("terminated", deadline_s=EXIT_DEADLINE_S)
        wait_gone(stuck)
        assert script.wait_for("mapped")[1:] == ["1", "2", "3"]
        script.wait_for("finished")
        assert script.exited_within(EXIT_DEADLINE_S)
        assert script.process.returncode == 0, script.stderr[-3000:]
        wait_gone(script.pids)
