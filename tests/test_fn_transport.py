"""A large ``fn`` travels once per worker: the policy that decides it (injected numbers), the
shared-memory transport in this process, and real workers that count their unpicklings."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from amorsize_executor import AdaptiveProcessPoolExecutor, _fn_cost
from amorsize_executor import _cost_model as cm
from amorsize_executor import _fn_transport as transport
from amorsize_executor._fn_for_workers import FnForWorkers

from .conftest import make_facts, make_measurements


def fn_for_workers(fn: Any, *, share_files: bool) -> FnForWorkers:
    """``fn`` as ``map()`` wires it for a backend whose workers do or do not share files."""
    return FnForWorkers(
        fn,
        once_per_worker=lambda n_bytes: _fn_cost.fn_travels_once_per_worker(
            n_bytes, workers_share_files=share_files
        ),
    )


pytestmark = pytest.mark.timeout(120)

MiB = 1 << 20


# -- policy ------------------------------------------------------------------------------


def test_a_large_fn_travels_once_per_worker_only_where_workers_share_files() -> None:
    big = _fn_cost.FN_ONCE_PER_WORKER_MIN_BYTES
    assert _fn_cost.fn_travels_once_per_worker(big, workers_share_files=True)
    assert not _fn_cost.fn_travels_once_per_worker(big - 1, workers_share_files=True)
    assert not _fn_cost.fn_travels_once_per_worker(big, workers_share_files=False)


def test_fn_shipping_counts_chunks_for_a_small_fn_and_workers_for_a_large_one() -> None:
    facts = make_facts(ipc_bytes_per_s=1e9)
    small = make_measurements(fn_bytes_per_chunk=1e6)
    assert _fn_cost.fn_shipping_s(facts, small, 10, 2) == pytest.approx(10 * 1e-3)
    large = make_measurements(fn_bytes_per_worker=1e6, fn_mapped_bytes=_fn_cost.MAPPED_BYTES_PER_S)
    assert _fn_cost.fn_shipping_s(facts, large, 10, 2) == pytest.approx(2 * (1e-3 + 1.0))


def test_a_fn_sent_with_every_chunk_is_planned_as_a_cost() -> None:
    """200 items of 8 ms: free to ship, a pool of 4 wins with small chunks; the same job
    with a 200 MB fn in every chunk would move 200 MB per chunk, so it stays serial."""
    facts = make_facts(ipc_bytes_per_s=5e8, task_roundtrip_s=2e-4, worker_start_s=0.05)
    work = make_measurements(wall_s_per_item=8e-3, cpu_s_per_item=8e-3)
    free = cm.plan_map(facts, work, n_items=200, n_items_lower_bound=200)
    assert free.mode == "parallel"
    per_chunk = replace_fn(work, fn_bytes_per_chunk=200e6)
    assert cm.plan_map(facts, per_chunk, n_items=200, n_items_lower_bound=200).mode == "serial"
    # Once per worker, through shared memory: a pool still wins.
    per_worker = replace_fn(work, fn_bytes_per_worker=600.0, fn_mapped_bytes=200e6)
    plan = cm.plan_map(facts, per_worker, n_items=200, n_items_lower_bound=200)
    assert plan.mode == "parallel"
    assert plan.predicted_parallel_s is not None and free.predicted_parallel_s is not None
    assert plan.predicted_parallel_s > free.predicted_parallel_s


def test_a_medium_fn_in_every_chunk_makes_chunks_larger() -> None:
    facts = make_facts(ipc_bytes_per_s=5e8, task_roundtrip_s=2e-4, worker_start_s=0.05)
    work = make_measurements(wall_s_per_item=1e-3, cpu_s_per_item=1e-3)
    light = cm.plan_map(facts, work, n_items=2000, n_items_lower_bound=2000)
    heavy = cm.plan_map(
        facts, replace_fn(work, fn_bytes_per_chunk=900e3), n_items=2000, n_items_lower_bound=2000
    )
    assert heavy.mode == light.mode == "parallel"
    assert heavy.chunksize > light.chunksize


def replace_fn(work: Any, **fields: float) -> Any:
    from dataclasses import replace

    return replace(work, **fields)


# -- the transport, in this process --------------------------------------------------------


def weighted(weights: np.ndarray, i: int) -> float:
    return float(weights[i % len(weights)])


@pytest.fixture
def empty_cache() -> Iterator[None]:
    transport._CACHE.clear()
    yield
    transport._CACHE.clear()


def test_large_arrays_leave_the_pickle_and_come_back_mapped(
    empty_cache: None, tmp_path: Path
) -> None:
    weights = np.arange(2 * MiB // 8, dtype=np.float64)
    pickled = transport.pickle_callable(functools.partial(weighted, weights))
    assert len(pickled.buffers) == 1
    assert len(pickled.main) < 4096
    assert pickled.nbytes >= weights.nbytes
    shipped = transport.ShippedFn(pickled, str(tmp_path))
    loads_before = transport.N_LOADS
    fn = transport.load_shipped(shipped.ref)
    assert loads_before + 1 == transport.N_LOADS
    assert fn(7) == 7.0
    loaded = fn.args[0]  # type: ignore[attr-defined]
    assert isinstance(loaded.base, memoryview) or loaded.base is not None
    assert loaded.ctypes.data % transport.BUFFER_ALIGN == 0
    # Writable, copy-on-write: a write stays in this mapping, not in the file.
    loaded[7] = -1.0
    assert transport.load_shipped(shipped.ref) is fn  # cached: not loaded again
    assert loads_before + 1 == transport.N_LOADS
    transport._CACHE.clear()
    assert transport.load_shipped(shipped.ref)(7) == 7.0
    shipped.release()
    assert not os.path.exists(shipped.ref.path)


def test_a_worker_forgets_a_fn_whose_map_ended(empty_cache: None, tmp_path: Path) -> None:
    data = np.ones(MiB // 8)
    shipped = transport.ShippedFn(
        transport.pickle_callable(functools.partial(weighted, data)), str(tmp_path)
    )
    transport.load_shipped(shipped.ref)
    assert transport.cached_keys() == [shipped.ref.key]
    shipped.release()
    transport.forget_ended()
    assert transport.cached_keys() == []
    with pytest.raises(RuntimeError, match="has ended"):
        transport.load_shipped(shipped.ref)


def test_files_of_dead_processes_are_removed_at_the_next_shipping(tmp_path: Path) -> None:
    import subprocess
    import sys

    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead_pid = int(child.stdout)
    orphan = tmp_path / f"{transport.FILE_PREFIX}{dead_pid}-0123.pkl"
    mine = tmp_path / f"{transport.FILE_PREFIX}{os.getpid()}-4567.pkl"
    other = tmp_path / "unrelated.pkl"
    for path in (orphan, mine, other):
        path.write_bytes(b"x")
    shipped = transport.ShippedFn(transport.pickle_callable(abs), str(tmp_path))
    assert not orphan.exists()
    assert mine.exists() and other.exists()
    shipped.release()


def test_the_cache_stays_within_its_memory_bound(
    empty_cache: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transport, "FN_CACHE_MAX_BYTES", 3 * MiB)
    refs = []
    shipped = []
    for k in range(3):
        s = transport.ShippedFn(
            transport.pickle_callable(functools.partial(weighted, np.full(MiB // 8 * 2, k))),
            str(tmp_path),
        )
        shipped.append(s)
        refs.append(s.ref)
        assert transport.load_shipped(s.ref)(0) == k
    # Each is 2 MiB: only the newest fits, and it is kept whatever its size.
    assert transport.cached_keys() == [refs[2].key]
    for s in shipped:
        s.release()


def test_a_small_fn_travels_inline_and_a_large_one_by_reference(empty_cache: None) -> None:
    small = fn_for_workers(functools.partial(weighted, np.ones(10)), share_files=True)
    fn_bytes, ref = small.for_chunk()
    assert ref is None and fn_bytes
    measured = small.with_size(make_measurements())
    assert measured.fn_bytes_per_chunk == len(fn_bytes)
    big = fn_for_workers(functools.partial(weighted, np.ones(MiB)), share_files=True)
    measured = big.with_size(make_measurements())
    assert measured.fn_bytes_per_chunk == 0
    assert measured.fn_mapped_bytes == 8 * MiB
    fn_bytes, ref = big.for_chunk()
    assert fn_bytes == b"" and ref is not None
    assert big.for_chunk()[1] == ref  # written once
    big.release()
    assert not os.path.exists(ref.path)
    # A cluster's workers cannot read this machine's files: the bytes travel.
    remote = fn_for_workers(functools.partial(weighted, np.ones(MiB)), share_files=False)
    fn_bytes, ref = remote.for_chunk()
    assert ref is None and len(fn_bytes) >= 8 * MiB


def test_a_large_fn_goes_inline_when_no_directory_has_room(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import amorsize_executor._fn_for_workers as ffw

    def no_room(self: Any, pickled: Any, directory: str | None = None) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ffw.ShippedFn, "__init__", no_room)
    big = fn_for_workers(functools.partial(weighted, np.ones(MiB)), share_files=True)
    fn_bytes, ref = big.for_chunk()
    assert ref is None and len(fn_bytes) >= 8 * MiB
    assert big.for_chunk() == (fn_bytes, None)


def test_a_failed_write_leaves_no_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    class Full:
        def raw(self) -> memoryview:
            raise OSError(28, "No space left on device")

    pickled = transport.PickledFn(b"main", [Full()])  # type: ignore[list-item]
    with pytest.raises(OSError):
        transport.ShippedFn(pickled, str(tmp_path))
    assert list(tmp_path.iterdir()) == []


# -- real workers ------------------------------------------------------------------------------


class CountedModel:
    """A large callable that appends a line to ``log`` each time it is unpickled."""

    def __init__(self, log: str, scale: int) -> None:
        self.log = log
        self.scale = scale
        self.table = np.zeros(MiB // 4)  # 2 MiB: above the once-per-worker threshold

    def __call__(self, x: int) -> int:
        return x * self.scale

    def __setstate__(self, state: dict[str, Any]) -> None:
        with open(state["log"], "a") as f:
            f.write(f"{os.getpid()}\n")
        self.__dict__.update(state)


def test_a_large_fn_is_unpickled_once_per_worker_and_never_stale(tmp_path: Path) -> None:
    log = tmp_path / "unpickled.log"
    model = CountedModel(str(log), 3)
    facts = make_facts(n_logical_cores=2, n_physical_cores=2, n_affinity_cores=2)
    with AdaptiveProcessPoolExecutor(max_workers=2, system_facts=facts, isolate=True) as ex:
        assert list(ex.map(model, range(40), chunksize=1)) == [3 * x for x in range(40)]
        pids = log.read_text().split()
        assert 1 <= len(pids) <= 2, pids  # once per worker, not once per chunk (40)
        assert len(set(pids)) == len(pids)
        # The caller changes the object: the next map() must see the change.
        model.scale = 5
        assert list(ex.map(model, range(40), chunksize=1)) == [5 * x for x in range(40)]
        assert len(log.read_text().split()) <= 4
    assert not [
        p
        for p in os.listdir(transport.shared_memory_dir())
        if p.startswith(f"amorsize-fn-{os.getpid()}-")
    ]
