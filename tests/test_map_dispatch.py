"""What map() asks of its backend, tested with a fake backend that runs chunks in-process
and records them: no processes, no timing."""

from __future__ import annotations

import itertools
import math
import operator
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from amorsize_executor import (
    AdaptiveProcessPoolExecutor,
    RemoteTraceback,
    UnpicklableItemError,
)

from . import fakes
from .conftest import make_facts
from .fakes import FakeBackend

pytestmark = pytest.mark.timeout(30)

PARALLEL = make_facts()  # free, instant workers: any measurable work goes parallel
SERIAL = make_facts(worker_start_s=1000.0)  # a pool can never pay off


def slow_double(x: int) -> int:
    time.sleep(0.002)
    return 2 * x


class Pulls:
    """A generator wrapper that counts the items pulled from it."""

    def __init__(self, n: int | None = None) -> None:
        self.pulled = 0
        self.n = n

    def __iter__(self) -> Iterator[int]:
        for i in itertools.count() if self.n is None else range(self.n):
            self.pulled += 1
            yield i


def executor(
    backend: FakeBackend, facts: Any = PARALLEL, **kwargs: Any
) -> AdaptiveProcessPoolExecutor:
    return AdaptiveProcessPoolExecutor(backend=backend, system_facts=facts, **kwargs)


def test_parallel_plan_dispatches_every_item_once_in_order(fake_backend: FakeBackend) -> None:
    with executor(fake_backend) as ex:
        results = list(ex.map(slow_double, range(200)))
        plan = ex.last_plan
    assert results == [2 * x for x in range(200)]
    assert plan is not None and plan.mode == "parallel"
    probed = plan.measurements.n_probed
    dispatched = [args[0] for args in fake_backend.items_dispatched]
    # The probe ran the first items in the caller; the backend got each later item once.
    assert dispatched == list(range(probed, 200))
    assert fake_backend.prepared[0] == plan.n_workers
    assert plan.outcome is not None and plan.outcome.n_items == 200


def test_serial_plan_never_touches_the_backend(fake_backend: FakeBackend) -> None:
    with executor(fake_backend, SERIAL) as ex:
        assert list(ex.map(slow_double, range(50))) == [2 * x for x in range(50)]
        assert ex.last_plan is not None and ex.last_plan.mode == "serial"
    assert fake_backend.chunks == []
    assert fake_backend.prepared == []


def test_explicit_chunksize_is_used_for_every_chunk(fake_backend: FakeBackend) -> None:
    with executor(fake_backend) as ex:
        assert list(ex.map(slow_double, range(100), chunksize=7)) == [2 * x for x in range(100)]
    sizes = [len(chunk) for chunk in fake_backend.chunks]
    assert sizes[:-1] == [7] * (len(sizes) - 1)
    assert 1 <= sizes[-1] <= 7


def test_window_bounds_what_is_pulled_ahead_of_the_consumer(fake_backend: FakeBackend) -> None:
    source = Pulls()
    with executor(fake_backend) as ex:
        results = ex.map(slow_double, source, chunksize=4, buffersize=12)
        # The probe runs in the stream, each result handed on as its call returned: map()
        # pulls nothing, and the first result needs only the first item.
        assert source.pulled == 0
        first = [next(results)]
        assert source.pulled == 1
        while ex.last_plan is None:
            first.append(next(results))
        probed = ex.last_plan.measurements.n_probed
        first.extend(itertools.islice(results, probed + 20 - len(first)))
        assert first == [2 * x for x in range(probed + 20)]
        assert source.pulled <= probed + 20 + 12 + 4
        results.close()  # type: ignore[attr-defined]


def test_islice_over_count_returns(fake_backend: FakeBackend) -> None:
    with executor(fake_backend) as ex:
        assert list(itertools.islice(ex.map(slow_double, itertools.count()), 10)) == [
            2 * x for x in range(10)
        ]


def test_fn_exception_in_a_chunk_arrives_at_its_position(fake_backend: FakeBackend) -> None:
    def fail_at_150(x: int) -> int:
        if x == 150:
            raise ValueError("item 150")
        return slow_double(x)

    with executor(fake_backend) as ex:
        results = ex.map(fail_at_150, range(300))
        got = []
        with pytest.raises(ValueError, match="item 150") as info:
            for r in results:
                got.append(r)
    assert got == [2 * x for x in range(150)]
    assert isinstance(info.value.__cause__, RemoteTraceback)
    assert "fail_at_150" in str(info.value.__cause__)
    # Nothing after the failing item was dispatched once the error was known.
    assert max(args[0] for args in fake_backend.items_dispatched) < 300


def test_unpicklable_item_is_named_at_its_position(fake_backend: FakeBackend) -> None:
    lock = threading.Lock()
    items: list[Any] = list(range(100))
    items[60] = lock
    with executor(fake_backend) as ex:
        got = []
        with pytest.raises(UnpicklableItemError, match="input item 60 \\(of type lock\\)"):
            for r in ex.map(lambda x: (time.sleep(0.002), x)[1], items):
                got.append(r)
    assert got == list(range(60))


def test_input_error_midway_arrives_after_the_results_before_it(fake_backend: FakeBackend) -> None:
    def gen() -> Iterator[int]:
        yield from range(80)
        raise OSError("input broke")

    with executor(fake_backend) as ex:
        got = []
        with pytest.raises(OSError, match="input broke"):
            for r in ex.map(slow_double, gen()):
                got.append(r)
    assert got == [2 * x for x in range(80)]


@pytest.mark.parametrize(
    "kwargs", [{"isolate": True}, {"initializer": print, "initargs": ("",)}, {"timeout": 30}]
)
def test_fn_never_runs_in_the_caller_when_it_must_not(
    fake_backend: FakeBackend, kwargs: dict[str, Any]
) -> None:
    in_caller: list[int] = []

    def record(x: int) -> int:
        if not fakes.IN_FAKE_WORKER:
            in_caller.append(x)
        return x

    map_kwargs = {"timeout": kwargs.pop("timeout")} if "timeout" in kwargs else {}
    with executor(fake_backend, SERIAL, **kwargs) as ex:
        assert list(ex.map(record, range(40), **map_kwargs)) == list(range(40))
        assert ex.last_plan is not None and ex.last_plan.mode == "parallel"
        assert ex.last_plan.measurements.measured_in_worker
    assert in_caller == []


def test_max_workers_caps_the_plan(fake_backend: FakeBackend) -> None:
    with executor(fake_backend, max_workers=2) as ex:
        list(ex.map(slow_double, range(100)))
        assert ex.last_plan is not None and ex.last_plan.n_workers <= 2


def test_progress_callback_counts_items(fake_backend: FakeBackend) -> None:
    for facts in (PARALLEL, SERIAL):
        counted: list[int] = []
        with executor(fake_backend, facts) as ex:
            assert len(list(ex.map(slow_double, range(97), progress=counted.append))) == 97
        assert sum(counted) == 97


def test_plan_outcome_records_chunks(fake_backend: FakeBackend) -> None:
    with executor(fake_backend) as ex:
        list(ex.map(slow_double, range(120), chunksize=10))
        plan = ex.last_plan
    assert plan is not None and plan.outcome is not None
    assert plan.outcome.n_chunks == len(fake_backend.chunks)
    assert sum(plan.outcome.chunksizes) == 120 - plan.measurements.n_probed
    assert "actual:" in plan.explain()


def test_progress_bar_counts_items_with_and_without_a_length(
    fake_backend: FakeBackend, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("tqdm")
    with executor(fake_backend) as ex:
        assert len(list(ex.map(slow_double, range(97), progress=True, chunksize=10))) == 97
    assert "97/97" in capsys.readouterr().err
    with executor(fake_backend) as ex:
        assert len(list(ex.map(slow_double, (x for x in range(55)), progress=True))) == 55
    err = capsys.readouterr().err
    assert "55item" in err.replace(" ", "") and "/55" not in err


def test_progress_without_tqdm_says_how_to_install(
    fake_backend: FakeBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "tqdm", None)
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    with (
        executor(fake_backend) as ex,
        pytest.raises(ImportError, match=r"amorsize-executor\[progress\]"),
    ):
        ex.map(slow_double, range(5), progress=True)


def test_a_clearly_serial_job_does_not_read_the_machine(fake_backend: FakeBackend) -> None:
    # 2,000 additions: serial even with every core free and the fastest start, so the plan
    # is made on that bound and no cgroup or psutil figure is read.
    with AdaptiveProcessPoolExecutor(backend=fake_backend) as ex:
        assert list(ex.map(abs, range(-2000, 0))) == list(range(2000, 0, -1))
        plan = ex.last_plan
    assert plan is not None and plan.mode == "serial"
    assert plan.facts.worker_start_source == "bound"
    assert "machine: not read (serial wins even with every core free" in plan.explain()


def test_given_facts_are_used_as_given(fake_backend: FakeBackend) -> None:
    with executor(fake_backend, SERIAL) as ex:
        list(ex.map(abs, range(-2000, 0)))
        plan = ex.last_plan
    assert plan is not None and plan.facts == SERIAL


def test_the_last_chunks_of_a_known_length_input_shrink_to_single_items(
    fake_backend: FakeBackend,
) -> None:
    with executor(fake_backend) as ex:
        assert list(ex.map(slow_double, range(400))) == [2 * x for x in range(400)]
        n_workers = ex.last_plan.n_workers  # type: ignore[union-attr]
    sizes = [len(chunk) for chunk in fake_backend.chunks]
    # Guided self-scheduling: each chunk is at most half a worker's share of the items not
    # yet sent (the 2 ms floor is at most one item of ``slow_double``, whose calls sleep
    # 2 ms or more), so the very last items go one by one, whatever sizes feedback chose.
    for k, size in enumerate(sizes):
        n_unsent = sum(sizes[k:])
        assert size <= max(1, math.ceil(n_unsent / (2 * n_workers)))
    assert sizes[-2:] == [1, 1]


def _complete(held: tuple[Any, Any]) -> None:
    future, payload = held
    if future.set_running_or_notify_cancel():
        future.set_result(fakes._run_as_worker(payload))


def test_a_chunk_finishing_behind_the_head_refills_the_window(
    fake_backend: FakeBackend,
) -> None:
    # The consumer waits on the oldest chunk; a later one finishing first must still wake it
    # to send more work (else that worker idles until the oldest chunk is done).
    fake_backend.hold = True
    with executor(fake_backend) as ex:
        results = ex.map(slow_double, range(3000))
        got: list[int] = []
        consumer = threading.Thread(target=lambda: got.extend(results))
        consumer.start()
        # The consumer probes in its thread, then sends the first window and waits on the
        # head; the window's lock is held while it is filled.
        deadline = time.monotonic() + 20
        while len(fake_backend.chunks) < 2 and time.monotonic() < deadline:
            time.sleep(0.001)
        (run,) = list(ex._runs)  # type: ignore[attr-defined]
        with run._window.lock:
            n_first_window = len(fake_backend.chunks)
        assert n_first_window >= 2
        _complete(fake_backend.held.pop(1))  # the second chunk, not the head
        while len(fake_backend.chunks) == n_first_window and time.monotonic() < deadline:
            time.sleep(0.001)
        assert len(fake_backend.chunks) > n_first_window  # sent before the head finished
        assert not fake_backend.held[0][0].done()
        fake_backend.hold = False
        while consumer.is_alive() and time.monotonic() < deadline:
            while fake_backend.held:
                _complete(fake_backend.held.pop(0))
            consumer.join(0.01)
        assert not consumer.is_alive()
    assert got == [2 * x for x in range(3000)]


def test_a_map_unread_at_shutdown_runs_in_the_caller_and_delivers_every_result(
    fake_backend: FakeBackend,
) -> None:
    from amorsize_executor._after_shutdown import SHUTDOWN_REASON

    with executor(fake_backend) as ex:
        results = ex.map(slow_double, range(100))
    # The probe had not begun: the pool is closing, so the plan is serial.
    assert list(results) == [2 * x for x in range(100)]
    assert fake_backend.chunks == []
    assert ex.last_plan is not None and ex.last_plan.mode == "serial"
    assert SHUTDOWN_REASON in ex.last_plan.reasons


def test_a_map_probing_in_workers_at_shutdown_sends_the_rest_before_the_pool_closes(
    fake_backend: FakeBackend,
) -> None:
    fake_backend.hold = True
    with executor(fake_backend, isolate=True) as ex:
        results = ex.map(slow_double, range(100))
        n_probe_chunks = len(fake_backend.chunks)
        ex.shutdown(wait=False)
        # The probe planned on what it had (nothing read yet) and the plan sent the rest.
        assert sum(len(chunk) for chunk in fake_backend.chunks) == 100
        assert len(fake_backend.chunks) > n_probe_chunks
        fake_backend.hold = False
        fake_backend.release()
    assert list(results) == [2 * x for x in range(100)]


def test_the_results_tell_list_how_many_are_coming_when_the_input_has_a_length(
    fake_backend: FakeBackend,
) -> None:
    # list() sizes its list once from the hint instead of growing it as results come.
    with executor(fake_backend, SERIAL) as ex:
        results = ex.map(abs, [-3, -2, -1, 0, 1])
        assert operator.length_hint(results, -1) == 5
        assert list(results) == [3, 2, 1, 0, 1]
        assert operator.length_hint(results, -1) == 0
        unknown = ex.map(abs, (x for x in [-1, 2]))
        assert operator.length_hint(unknown, -1) == -1
        assert list(unknown) == [1, 2]
