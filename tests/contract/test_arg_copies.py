"""``fn`` gets copies of its arguments on every path, as from a process pool (issue 13 item
8): in the caller (the probe, a serial plan) each batch goes through a pickle round trip
unless nothing in it can change, so ``fn`` mutating an argument never changes the caller's
objects. Real processes on the pool paths; the serial path runs in this process."""

from __future__ import annotations

import pickle
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from amorsize_executor import AdaptiveProcessPoolExecutor, UnpicklableItemError

from . import _copies_work as _work
from ._helpers import drain
from ._paths import PATHS, SERIAL, ExecPath

pytestmark = pytest.mark.timeout(90)

ALL_PATHS = [pytest.param(p, id=p.name) for p in PATHS]
# 50 items stay within the probe; 3000 go on to the serial run's batches (C speed for a
# fast fn, item by item for a slow one); 20,000 to batches copied in several blocks.
SIZES = [
    pytest.param(50, id="probe"),
    pytest.param(3000, id="after-the-probe"),
    pytest.param(20_000, id="large"),
]
SPEEDS = [
    pytest.param(_work.append_one, id="fast"),
    pytest.param(_work.append_one_slowly, id="slow"),
]


@pytest.mark.parametrize("path", ALL_PATHS)
@pytest.mark.parametrize("n_items", SIZES)
@pytest.mark.parametrize("fn", SPEEDS)
def test_fn_mutating_its_argument_never_changes_the_callers_list(
    path: ExecPath, n_items: int, fn: Callable[[list[int]], int]
) -> None:
    items = [[0] for _ in range(n_items)]
    with path.executor() as ex:
        assert list(path.map(ex, fn, items)) == [2] * n_items
    assert items == [[0]] * n_items


@pytest.mark.parametrize("path", ALL_PATHS)
@pytest.mark.parametrize("n_items", SIZES)
def test_a_mutable_object_inside_a_tuple_is_copied(path: ExecPath, n_items: int) -> None:
    items = [(i, [0]) for i in range(n_items)]
    with path.executor() as ex:
        assert list(path.map(ex, _work.append_inside, items)) == [2] * n_items
    assert items == [(i, [0]) for i in range(n_items)]


@pytest.mark.parametrize("path", ALL_PATHS)
@pytest.mark.parametrize("n_items", SIZES)
def test_several_iterables_are_copied(path: ExecPath, n_items: int) -> None:
    firsts = [[0] for _ in range(n_items)]
    seconds = [[0] for _ in range(n_items)]
    with path.executor() as ex:
        assert list(path.map(ex, _work.append_to_both, firsts, seconds)) == [4] * n_items
    assert firsts == [[0]] * n_items and seconds == [[0]] * n_items


@pytest.mark.parametrize("path", ALL_PATHS)
@pytest.mark.parametrize("with_len", [True, False], ids=["list", "generator"])
def test_an_input_switching_from_ints_to_lists_midway(path: ExecPath, with_len: bool) -> None:
    # The ints need no copy, the lists do: the check is made on every batch, not once.
    lists = [[0] for _ in range(3000)]
    items: list[Any] = [*range(3000), *lists]

    def generator() -> Iterator[Any]:
        yield from items

    with path.executor() as ex:
        results = list(path.map(ex, _work.int_or_length, items if with_len else generator()))
    assert results == [*range(3000), *[2] * 3000]
    assert lists == [[0]] * 3000


@pytest.mark.parametrize("path", ALL_PATHS)
@pytest.mark.parametrize("bad_at", [7, 2000], ids=["in-the-probe", "after-the-probe"])
@pytest.mark.parametrize("with_len", [True, False], ids=["list", "generator"])
@pytest.mark.parametrize("fn", SPEEDS)
def test_an_item_that_cannot_be_pickled_raises_at_its_position(
    path: ExecPath, bad_at: int, with_len: bool, fn: Callable[[list[int]], int]
) -> None:
    # A pool cannot send it to a worker, and the caller cannot copy it: the stdlib's result
    # iterator raises the pickling error there, after the results before it.
    items: list[Any] = [[0] for _ in range(3000)]
    items[bad_at] = threading.Lock()

    def generator() -> Iterator[Any]:
        yield from items

    with path.executor() as ex:
        delivered, error = drain(path.map(ex, fn, items if with_len else generator()))
        assert delivered == [2] * bad_at
        assert isinstance(error, UnpicklableItemError)
        assert isinstance(error, pickle.PicklingError)
        assert error.index == bad_at
        assert f"item {bad_at} (of type lock)" in str(error)
        assert list(path.map(ex, fn, [[0], [0, 0]])) == [2, 3]  # the executor still works
    assert items[:bad_at] == [[0]] * bad_at


@pytest.mark.parametrize("path", ALL_PATHS)
def test_objects_pickled_by_reference_keep_their_identity_and_others_are_copies(
    path: ExecPath,
) -> None:
    # What pickle sends by reference (a module-level class, an enum member) reaches fn as
    # the object itself, in the caller as in a worker; an instance arrives as a copy, so
    # fn cannot tell it is the caller's (``is`` on it is False, as in a pool).
    names = ["class", "enum member", "sentinel"]
    with path.executor() as ex:
        got = dict(
            zip(
                names,
                path.map(ex, _work.is_the_named_object, names, [_work.BY_NAME[n] for n in names]),
                strict=True,
            )
        )
    assert got == {"class": True, "enum member": True, "sentinel": False}


@pytest.mark.parametrize("n_items", SIZES)
def test_results_returning_the_argument_are_copies_in_the_caller(n_items: int) -> None:
    items = [[i] for i in range(n_items)]
    with SERIAL.executor() as ex:
        results = list(ex.map(_identity, items))
    assert results == items
    assert not any(r is i for r, i in zip(results, items, strict=True))


def _identity(item: Any) -> Any:
    return item


@pytest.mark.parametrize("n_items", SIZES)
def test_the_threads_backend_passes_the_callers_objects_as_threadpoolexecutor(
    n_items: int,
) -> None:
    # Threads share the caller's memory: nothing is pickled for them, and fn gets the
    # caller's objects on every path of a threads map(), as with ThreadPoolExecutor.
    items = [[0] for _ in range(n_items)]
    lock = threading.Lock()
    with AdaptiveProcessPoolExecutor(backend="threads", max_workers=2) as ex:
        assert list(ex.map(_work.append_one, items)) == [2] * n_items
        assert list(ex.map(lambda held: held is lock, [lock])) == [True]
    assert items == [[0, 1]] * n_items
