"""What cannot travel between processes, and inputs that fail: each is reported at its
position, after every result before it, naming the index and the type; the executor keeps
working afterwards."""

from __future__ import annotations

import itertools
import pickle
import threading

import pytest

import amorsize_executor
from amorsize_executor import (
    AdaptiveProcessPoolExecutor,
    UnpicklableExceptionError,
    UnpicklableItemError,
    UnpicklableResultError,
)

from ..contract._helpers import CountingIterable, drain
from ..contract._paths import CHUNKSIZE, PARALLEL, PATHS, ExecPath
from . import _work

pytestmark = pytest.mark.timeout(90)

WORKER_PATHS = [pytest.param(PARALLEL, id="parallel"), pytest.param(CHUNKSIZE, id="chunksize")]
ALL_PATHS = [pytest.param(p, id=p.name) for p in PATHS]

BAD = 7


def still_works(path: ExecPath, ex: AdaptiveProcessPoolExecutor) -> None:
    assert list(path.map(ex, _work.square, range(20))) == [x * x for x in range(20)]
    assert ex.submit(_work.square, 5).result(timeout=30) == 25


@pytest.mark.parametrize("path", WORKER_PATHS)
@pytest.mark.parametrize(
    ("fn", "type_name"),
    [
        (_work.raise_lock_holding_at, "LockHoldingError"),
        (_work.raise_two_argument_at, "TwoArgumentError"),
    ],
    ids=["holds-a-lock", "init-needs-two-args"],
)
def test_an_exception_that_cannot_be_pickled_back(
    path: ExecPath, fn: object, type_name: str
) -> None:
    with path.executor() as ex:
        delivered, error = drain(path.map(ex, fn, range(40), itertools.repeat(BAD)))
        assert delivered == [2 * x for x in range(BAD)]
        assert isinstance(error, UnpicklableExceptionError)
        assert error.index == BAD
        assert error.type_name == type_name
        assert f"item {BAD}" in str(error) and type_name in str(error)
        # The message is the exception's own, as submit()'s stand-in has it.
        assert str(error).count(type_name) == 1, str(error)
        assert error.message.endswith(f"at {BAD}"), error.message
        # The worker's traceback still arrives, naming the function that raised.
        assert isinstance(error.__cause__, amorsize_executor.RemoteTraceback)
        assert fn.__name__ in str(error.__cause__)  # type: ignore[attr-defined]
        still_works(path, ex)


def test_on_the_serial_path_such_exceptions_are_raised_as_they_are() -> None:
    serial = PATHS[0]
    with serial.executor() as ex:
        delivered, error = drain(
            ex.map(_work.raise_lock_holding_at, range(40), itertools.repeat(BAD))
        )
    assert delivered == [2 * x for x in range(BAD)]
    assert isinstance(error, _work.LockHoldingError)


def test_submit_with_an_exception_that_cannot_be_pickled_back_does_not_hang() -> None:
    with PARALLEL.executor() as ex:
        future = ex.submit(_work.raise_lock_holding_at, 1, 1)
        with pytest.raises(Exception):  # noqa: B017 - the type is the pool's business
            future.result(timeout=60)


@pytest.mark.parametrize(
    "fn", [_work.raise_lock_holding_at, _work.raise_two_argument_at], ids=["lock", "two-args"]
)
def test_after_submit_raised_an_unpicklable_exception_map_still_works(fn: object) -> None:
    with PARALLEL.executor() as ex:
        with pytest.raises(Exception):  # noqa: B017
            ex.submit(fn, 1, 1).result(timeout=60)
        assert list(ex.map(_work.square, range(10))) == [x * x for x in range(10)]


@pytest.mark.parametrize("path", WORKER_PATHS)
def test_a_result_that_cannot_be_pickled(path: ExecPath) -> None:
    with path.executor() as ex:
        delivered, error = drain(
            path.map(ex, _work.return_lock_at, range(40), itertools.repeat(BAD))
        )
        assert delivered == [2 * x for x in range(BAD)]
        assert isinstance(error, UnpicklableResultError)
        assert isinstance(error, pickle.PicklingError)
        assert error.index == BAD
        assert f"item {BAD}" in str(error) and "lock" in str(error)
        still_works(path, ex)


@pytest.mark.parametrize("path", WORKER_PATHS)
def test_a_result_that_cannot_be_unpickled_in_the_parent(path: ExecPath) -> None:
    with path.executor() as ex:
        delivered, error = drain(
            path.map(ex, _work.return_unloadable_at, range(40), itertools.repeat(BAD))
        )
        assert isinstance(error, UnpicklableResultError)
        assert error.index == BAD
        assert delivered == [2 * x for x in range(BAD)]
        # Whatever the chunk layout (which depends on timing), the message must name the
        # result's type, as it does for a result that fails to pickle in the worker.
        assert "(of type TwoArgumentError)" in str(error), str(error)


@pytest.mark.parametrize("path", ALL_PATHS)
def test_an_input_item_that_cannot_be_pickled(path: ExecPath) -> None:
    items: list[object] = list(range(40))
    lock = threading.Lock()
    items[BAD] = lock
    with path.executor() as ex:
        delivered, error = drain(path.map(ex, _work.payload_or_type, items))
        # On the serial path too: fn gets a copy of each item, as from a pool, and a lock
        # has none.
        assert delivered == list(range(BAD))
        assert isinstance(error, UnpicklableItemError)
        assert isinstance(error, pickle.PicklingError)
        assert error.index == BAD
        assert f"item {BAD}" in str(error) and "lock" in str(error)
        still_works(path, ex)


@pytest.mark.parametrize("path", ALL_PATHS)
@pytest.mark.parametrize("fail_at", [BAD, 600], ids=["early", "after-the-probe"])
def test_the_input_raising_midway(path: ExecPath, fail_at: int) -> None:
    source = CountingIterable(10_000, fail_at=fail_at)
    with path.executor() as ex:
        delivered, error = drain(path.map(ex, _work.square, source))
        assert delivered == [x * x for x in range(fail_at)]
        assert isinstance(error, LookupError)
        assert str(error) == f"the input broke at item {fail_at}"
        # Nothing is read after the input failed.
        assert source.pulled == fail_at
        still_works(path, ex)
