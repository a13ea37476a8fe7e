"""Workers recycled by ``max_tasks_per_child``, in a program of their own (see ``_scripts``):
every worker that exits at its limit is replaced, so queued chunks and calls all run, also
after ``shutdown(wait=False)``.

The stdlib pool behind this option (3.11 to 3.13.0 at least, CPython gh-115634) skipped the
replacement when a finished task had left its idle-worker semaphore a token: once the last
worker had exited, ``map()`` waited for its oldest chunk for ever. The deadline only turns
such a hang into a failure (with every thread's stack in the message).
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest

from ._scripts import Script

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(sys.version_info < (3, 11), reason="max_tasks_per_child needs 3.11"),
]

RECYCLED_DEADLINE_S = 60
"""Many times what these programs need here (each starts about ten spawned workers, a few
seconds on a busy 2-core machine); reached only by a hang."""

RECYCLED_RUNS = """
def square(x):
    return x * x

if __name__ == "__main__":
    # One worker, replaced after every second task, ten calls queued at once: the first
    # call's result leaves the stdlib's semaphore a token while the second is still queued,
    # and the worker exits after the second. Without the fix this hangs every time.
    with AdaptiveProcessPoolExecutor(max_workers=1, max_tasks_per_child=2) as ex:
        futures = [ex.submit(os.getpid) for _ in range(10)]
        report("pids", *[future.result() for future in futures])

    # The case reported: a (fork) pool's map(), then a pool whose workers are recycled maps
    # more chunks than one worker may run (the window submits a chunk as one finishes, so
    # whether a token is left when a worker exits is a race: this hung some of the time).
    # isolate=True: every item runs in the pool, however cheap.
    with AdaptiveProcessPoolExecutor(isolate=True) as ex:
        assert list(ex.map(square, range(200), chunksize=10)) == [x * x for x in range(200)]
    with AdaptiveProcessPoolExecutor(max_workers=2, max_tasks_per_child=2, isolate=True) as ex:
        results = list(ex.map(square, range(60), chunksize=3))
        report("mapped", len(results), int(results == [x * x for x in range(60)]))

    # shutdown(wait=False) with calls still queued: they all run, as the stdlib documents
    # (its pool drops its workers' queues at once and strands them: CPython gh-119592).
    ex = AdaptiveProcessPoolExecutor(max_workers=1, max_tasks_per_child=2)
    futures = [ex.submit(os.getpid) for _ in range(6)]
    ex.shutdown(wait=False)
    report("after_shutdown", len([future.result() for future in futures]))
    report("finished")
"""


def test_workers_recycled_at_their_limit_are_replaced_until_all_work_ran(
    tmp_path: Path,
) -> None:
    with Script(RECYCLED_RUNS, tmp_path) as script:
        exited = script.exited_within(RECYCLED_DEADLINE_S)
        stderr = script.stderr
        assert exited, f"hung with max_tasks_per_child; stacks: {stderr[-8000:]}"
        pids = [int(pid) for pid in script.wait_for("pids", 5)[1:]]
        assert len(pids) == 10
        assert max(Counter(pids).values()) <= 2, f"a worker ran past its limit: {pids}"
        assert script.wait_for("mapped", 5)[1:] == ["60", "1"]
        assert script.wait_for("after_shutdown", 5)[1:] == ["6"]
        script.wait_for("finished", 5)
        assert script.process.returncode == 0, stderr[-3000:]
