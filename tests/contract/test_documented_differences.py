"""Where ``map`` deliberately differs from ``ProcessPoolExecutor.map``, as documented:
the input is read lazily with a bounded look-ahead; small jobs run in the calling process, but
never when ``timeout``, an ``initializer`` or ``isolate`` is given; the first items are probed
from the first ``next()`` on (in the caller) or from ``map()`` on (in workers); a generator cut
off by ``shutdown`` raises ``RuntimeError``; ``fn`` and results travel with cloudpickle. Plus
the parts of the stdlib contract these choices must not break: an explicit ``chunksize`` and
the classic script use of ``initializer``."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from amorsize_executor import AdaptiveProcessPoolExecutor

from ..conftest import make_facts
from . import _work
from ._helpers import CountingIterable, drain
from ._paths import CHUNKSIZE, PARALLEL, SERIAL, ExecPath

pytestmark = pytest.mark.timeout(60)

PROBE_ALLOWANCE = 1 + 4 + 16 + 64 + 256
"""The most items a probe reads before any plan, with room to spare: 256 in the caller or in
workers (``PROBE_MAX_ITEMS``; in workers, single items first, then chunks of 4, 16, ...)."""


# -- laziness -------------------------------------------------------------------------------


def test_an_endless_input_can_be_mapped_and_cut_short(
    path: ExecPath, executor: AdaptiveProcessPoolExecutor
) -> None:
    first = list(itertools.islice(path.map(executor, _work.square, itertools.count()), 10))
    assert first == [x * x for x in range(10)]


def test_first_results_need_only_a_bounded_prefix_of_the_input(
    path: ExecPath, executor: AdaptiveProcessPoolExecutor
) -> None:
    n_items = 5_000_000
    source = CountingIterable(n_items)
    results = path.map(executor, _work.square, source)
    assert list(itertools.islice(results, 100)) == [x * x for x in range(100)]
    # The stdlib reads all five million items before map() returns. Here the window is
    # sized in time (chunks grow towards 20 ms of fn each, doubling as chunks complete), so
    # for a sub-microsecond fn it can reach tens of thousands of items: bound it loosely.
    assert source.pulled <= n_items // 20, f"read {source.pulled} items to deliver 100"


@pytest.mark.parametrize("buffersize", [8, 64])
def test_buffersize_bounds_the_items_read_ahead_of_the_consumer(
    path: ExecPath, executor: AdaptiveProcessPoolExecutor, buffersize: int
) -> None:
    source = CountingIterable(5_000)
    results = path.map(executor, _work.square, source, buffersize=buffersize)
    chunksize = path.map_kwargs.get("chunksize", buffersize)
    # In flight at most `buffersize` items, plus the chunk just collected and not yet read.
    bound = buffersize + 2 * chunksize
    worst = 0
    for consumed, expected in enumerate(range(5_000), start=1):
        assert next(results) == expected * expected
        if consumed > PROBE_ALLOWANCE:
            worst = max(worst, source.pulled - consumed)
    assert next(results, "end") == "end"
    assert worst <= bound, f"read {worst} items ahead with buffersize={buffersize}"


# -- where fn runs ----------------------------------------------------------------------------


def test_the_serial_plan_runs_fn_in_the_calling_process() -> None:
    with SERIAL.executor() as ex:
        results = list(ex.map(_work.square_and_pid, range(300)))
        assert ex.last_plan is not None and ex.last_plan.mode == "serial"
    assert [value for value, _ in results] == [x * x for x in range(300)]
    assert {pid for _, pid in results} == {os.getpid()}


@pytest.mark.parametrize(
    ("executor_kwargs", "map_kwargs"),
    [
        ({}, {"timeout": 60}),
        ({"initializer": _work.store_init_value, "initargs": (1,)}, {}),
        ({"isolate": True}, {}),
    ],
    ids=["timeout", "initializer", "isolate"],
)
def test_fn_never_runs_in_the_caller_with_timeout_initializer_or_isolate(
    executor_kwargs: dict[str, object], map_kwargs: dict[str, object]
) -> None:
    # Facts that make serial win by far: only the option can keep fn out of the caller.
    with SERIAL.executor(**executor_kwargs) as ex:
        results = list(ex.map(_work.square_and_pid, range(40), **map_kwargs))
        assert ex.last_plan is not None and ex.last_plan.mode == "parallel"
    assert [value for value, _ in results] == [x * x for x in range(40)]
    assert os.getpid() not in {pid for _, pid in results}


def test_the_probe_runs_the_first_items_in_the_caller_then_a_pool_takes_over() -> None:
    with AdaptiveProcessPoolExecutor(max_workers=2, system_facts=make_facts()) as ex:
        results = list(ex.map(_work.square_and_pid, range(3)))  # warm-up, any plan
        results = [(x, pid) for x, pid in ex.map(_ms_of_work_and_pid, range(150))]
        assert ex.last_plan is not None and ex.last_plan.mode == "parallel"
    assert [x for x, _ in results] == [x * x for x in range(150)]
    pids = [pid for _, pid in results]
    assert pids[0] == os.getpid(), "the first item is probed in the caller"
    assert set(pids) - {os.getpid()}, "the rest must run on the pool"


def _ms_of_work_and_pid(x: int) -> tuple[int, int]:
    return _work.ms_of_work(x), os.getpid()


def test_the_probe_in_the_caller_runs_from_the_first_next_not_inside_map() -> None:
    _work.CALLS.clear()
    with SERIAL.executor() as ex:
        results = ex.map(_work.record_call, range(50), itertools.repeat(0))
        assert _work.CALLS == [], "map() itself runs no fn in the caller"
        with pytest.raises(ValueError, match="bad item 0"):
            next(results)
        assert _work.CALLS == [0]


# -- chunksize --------------------------------------------------------------------------------


def test_explicit_chunksize_is_used_when_the_probe_runs_in_the_caller() -> None:
    with AdaptiveProcessPoolExecutor(max_workers=2, system_facts=make_facts()) as ex:
        results = list(ex.map(_work.ms_of_work, range(120), chunksize=3))
        plan = ex.last_plan
    assert results == [x * x for x in range(120)]
    assert plan is not None and plan.mode == "parallel" and plan.outcome is not None
    sizes = plan.outcome.chunksizes
    assert sizes and all(size == 3 for size in sizes[:-1]) and sizes[-1] <= 3, sizes


def test_explicit_chunksize_sizes_the_probe_chunks_too_when_fn_runs_only_in_workers() -> None:
    """Documented: every chunk has the size asked for, the probe's in a worker included,
    except the last."""
    with AdaptiveProcessPoolExecutor(max_workers=2, system_facts=make_facts(), isolate=True) as ex:
        results = list(ex.map(_work.square, range(2000), chunksize=3))
        plan = ex.last_plan
    assert results == [x * x for x in range(2000)]
    assert plan is not None and plan.outcome is not None
    sizes = list(plan.outcome.chunksizes)
    assert sum(sizes) == 2000
    assert all(size == 3 for size in sizes[:-1]) and sizes[-1] <= 3, sizes


# -- closing the result iterator ----------------------------------------------------------------


def test_close_on_a_serial_map_stops_calling_fn_and_reading_input() -> None:
    # Calls over 2 µs: the serial path then promises to stop (see docs/differences.md).
    _work.CALLS.clear()
    source = CountingIterable(10_000)
    with SERIAL.executor() as ex:
        results = ex.map(_work.record_call_not_tiny, source, itertools.repeat(-1))
        assert list(itertools.islice(results, 600)) == list(range(600))
        results.close()  # type: ignore[attr-defined]
        pulled, n_calls = source.pulled, len(_work.CALLS)
        assert next(results, "closed") == "closed"
    assert source.pulled == pulled and len(_work.CALLS) == n_calls


@pytest.mark.parametrize("path", [PARALLEL, CHUNKSIZE], ids=["parallel", "chunksize"])
def test_close_on_a_parallel_map_reads_no_more_input(path: ExecPath) -> None:
    source = CountingIterable(1_000_000)
    with path.executor() as ex:
        results = path.map(ex, _work.square, source)
        assert next(results) == 0
        results.close()  # type: ignore[attr-defined]
        pulled = source.pulled
        # Whatever was already collected may still come out; nothing new is read or run.
        leftovers = list(results)
        assert leftovers == [x * x for x in range(1, 1 + len(leftovers))]
        assert source.pulled == pulled < 1_000_000
        assert list(path.map(ex, _work.square, range(5))) == [0, 1, 4, 9, 16]


# -- shutdown with a lazy input ----------------------------------------------------------------


def test_a_generator_cut_off_by_shutdown(path: ExecPath) -> None:
    with path.executor() as ex:
        results = path.map(ex, _work.square, (x for x in range(5_000)), buffersize=16)
    delivered, error = drain(results)
    assert delivered == [x * x for x in range(len(delivered))]
    if path.runs_in_caller:
        # Serial work needs no pool: it simply goes on in the caller.
        assert error is None and len(delivered) == 5_000
    else:
        assert isinstance(error, RuntimeError)
        assert "cannot schedule new futures after shutdown" in str(error)
        assert len(delivered) < 5_000


# -- what travels between processes --------------------------------------------------------------


def test_lambdas_travel_as_results_thanks_to_cloudpickle() -> None:
    with AdaptiveProcessPoolExecutor(max_workers=1, system_facts=make_facts(), isolate=True) as ex:
        makers = list(ex.map(_make_adder, range(5)))
    assert [make(100) for make in makers] == [100 + x for x in range(5)]


def _make_adder(x: int) -> object:
    return lambda y: x + y


INITIALIZER_SCRIPT = textwrap.dedent(
    """
    import sys
    from concurrent.futures import ProcessPoolExecutor
    from amorsize_executor import AdaptiveProcessPoolExecutor

    SETTING = None

    def init(value):
        global SETTING
        SETTING = value

    def work(i):
        return (SETTING, i)

    if __name__ == "__main__":
        cls = AdaptiveProcessPoolExecutor if sys.argv[1] == "ours" else ProcessPoolExecutor
        with cls(max_workers=2, initializer=init, initargs=(100,)) as ex:
            print(list(ex.map(work, range(3))), ex.submit(work, 9).result())
    """
)


def test_a_script_initializer_sets_globals_that_fn_reads(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(INITIALIZER_SCRIPT)
    outputs = {}
    for which in ("stdlib", "ours"):
        done = subprocess.run(
            [sys.executable, str(script), which],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr
        outputs[which] = done.stdout.strip()
    assert outputs["stdlib"] == "[(100, 0), (100, 1), (100, 2)] (100, 9)"
    assert outputs["ours"] == outputs["stdlib"]
