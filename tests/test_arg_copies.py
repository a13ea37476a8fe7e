"""``_arg_copies``: which batches need a copy (the C-speed check), how a batch is copied,
where an item that cannot be copied is reported, and ``CallerItems`` over a ``Source``."""

from __future__ import annotations

import threading
import weakref
from itertools import repeat
from typing import Any

import pytest

from amorsize_executor import UnpicklableItemError
from amorsize_executor._arg_copies import (
    COPY_BLOCK_ITEMS,
    MAX_NESTING,
    CallerItems,
    all_immutable,
    copied,
    for_caller,
)
from amorsize_executor._input import Source

from .fakes import FakeBackend


class Number(int):
    """An int subclass: its instances can carry attributes, so they are not immutable."""


@pytest.mark.parametrize(
    "objects",
    [
        [],
        [1, 2.5, 3j, True, None, "s", b"b", range(3)],
        [(1, "a"), frozenset({1, 2}), ((1, (2, (3,))),)],
        [1, (2, frozenset({(3, "x")}))],
        [(1, 2)] * 5,
    ],
    ids=["empty", "atoms", "containers", "mixed", "tuples-only"],
)
def test_immutable_batches_need_no_copy(objects: list[Any]) -> None:
    assert all_immutable(objects)


@pytest.mark.parametrize(
    "objects",
    [
        [1, [2]],
        [(1, [2])],
        [1, (2, (3, {4: 5}))],
        [frozenset({1}), bytearray(b"x")],
        [Number(3)],
        [1, 2, Number(3)],
        [object()],
    ],
    ids=[
        "list",
        "list-in-tuple",
        "dict-deep-in-tuples",
        "bytearray",
        "int-subclass",
        "ints-then-a-subclass",
        "object",
    ],
)
def test_batches_holding_anything_that_can_change_do(objects: list[Any]) -> None:
    assert not all_immutable(objects)


def test_nesting_deeper_than_the_bound_counts_as_needing_a_copy() -> None:
    deep: Any = 1
    for _ in range(MAX_NESTING):
        deep = (deep,)
    assert not all_immutable([deep])
    assert all_immutable([deep[0]])


def test_an_immutable_batch_is_handed_on_as_it_is() -> None:
    items = [1, "a", (2, 3)]
    copies, error = copied(items, 0, bare=True)
    assert copies is items and error is None


def test_a_mutable_batch_is_copied_whole_sharing_kept_within_it() -> None:
    shared = [0]
    items = [shared, shared, (1, shared)]
    copies, error = copied(items, 0, bare=True)
    assert error is None and copies == items
    assert copies[0] is not shared
    # One round trip for the batch: an object twice in it is one copy, as in a pool's chunk.
    assert copies[0] is copies[1] is copies[2][1]


def test_what_pickle_cannot_cloudpickle_copies_as_for_a_pool() -> None:
    def double(x: int) -> int:
        return 2 * x

    (copy,), error = copied([[double]], 0, bare=True)
    assert error is None and copy[0](21) == 42 and copy[0] is not double


def test_an_item_that_cannot_be_copied_is_reported_at_its_position() -> None:
    items: list[Any] = [[0], [1], threading.Lock(), [3]]
    copies, error = copied(items, 40, bare=True)
    assert copies == [[0], [1]] and copies[0] is not items[0]
    assert isinstance(error, UnpicklableItemError)
    assert error.index == 42
    assert "input item 42 (of type lock)" in str(error) and "copy" in str(error)


def test_argument_tuples_name_each_argument_type() -> None:
    _, error = copied([([0], threading.Lock())], 0, bare=False)
    assert error is not None and "(of type (list, lock))" in str(error)


def test_an_input_of_immutable_items_is_read_as_it_is() -> None:
    processes = FakeBackend()
    for iterables in [(range(5),), ("abc",), (b"ab", range(2))]:
        source = Source(iterables)
        assert source.items_immutable and for_caller(source, processes) is source
    source = Source(([1, 2],))
    assert not source.items_immutable
    assert isinstance(for_caller(source, processes), CallerItems)


def test_threads_get_the_callers_objects() -> None:
    threads = FakeBackend()
    threads.runs_in_process = True  # type: ignore[misc]
    source = Source(([[1], [2]],))
    assert for_caller(source, threads) is source


@pytest.mark.parametrize("sequence", [list, tuple], ids=["list", "tuple"])
def test_single_list_slices_a_sequence_and_reads_on_after_it(sequence: type) -> None:
    source = Source((sequence([[i] for i in range(10)]),))
    assert next(source) == ([0],)
    assert source.single_list(4) == [[1], [2], [3], [4]]
    assert source.n_pulled == 5
    assert next(source) == ([5],)
    assert source.single_list(100) == [[6], [7], [8], [9]]
    assert source.exhausted


def test_caller_items_copy_on_every_way_of_reading() -> None:
    originals = [[i] for i in range(10)]
    items = CallerItems(Source((originals,)))
    taken = [next(items)[0]]
    batch = items.single_batch(3)
    assert batch is not None and batch[1] == 3
    taken.extend(batch[0])
    taken.extend(args[0] for args in items.iter_up_to(3))
    taken.extend(args[0] for args in items.batch(10))
    assert items.settle_batch(10) == 3
    assert taken == originals and not any(t is o for t, o in zip(taken, originals, strict=True))


def test_caller_items_keep_an_uncopyable_item_as_the_input_error_of_iter_up_to() -> None:
    values: list[Any] = [[0], threading.Lock(), [2]]
    items = CallerItems(Source((values,)))
    assert [args[0] for args in items.iter_up_to(3)] == [[0]]
    assert isinstance(items.input_error, UnpicklableItemError) and items.exhausted


def test_caller_items_read_no_more_than_buffersize_ahead() -> None:
    pulled = []

    def generator() -> Any:
        for i in range(100):
            pulled.append(i)
            yield [i]

    items = CallerItems(Source((generator(),)), buffersize=5)
    batch = items.batch(50)
    assert next(batch) == ([0],)
    assert len(pulled) == 5


def test_several_inputs_read_in_blocks_raise_an_input_error_at_its_position() -> None:
    def broken() -> Any:
        yield from repeat([1], 3)
        raise LookupError("broke")

    items = CallerItems(Source((broken(), range(10))))
    got = []
    with pytest.raises(LookupError, match="broke"):
        for args in items.batch(10):
            got.append(args)
    assert got == [([1], 0), ([1], 1), ([1], 2)]


def test_a_large_single_batch_raises_at_the_item_that_cannot_be_copied() -> None:
    values: list[Any] = [[i] for i in range(10_000)]
    values[6000] = threading.Lock()
    source = Source((values,))
    items = CallerItems(source)
    taken = items.single_batch(10_000)
    assert taken is not None and taken[1] == 10_000
    batch, _ = taken
    assert next(batch) == [0]
    got = [[0]]
    with pytest.raises(UnpicklableItemError, match="input item 6000 "):
        for item in batch:
            got.append(item)
    assert got == values[:6000] and not any(g is v for g, v in zip(got, values, strict=False))
    assert source.exhausted


class Box:
    """A mutable item that can be referenced weakly (a list cannot)."""

    def __init__(self, value: int) -> None:
        self.value = value


def test_a_large_batch_is_copied_a_block_at_a_time_as_fn_reaches_it() -> None:
    # Each block's copies are made when the first of them is asked for, and let go once
    # handed on: a batch's copies do not all outlive the collector's youngest generation.
    # An item that cannot be copied still raises at its position, after the ones before it.
    n_items = 3 * COPY_BLOCK_ITEMS + 10
    bad_at = 2 * COPY_BLOCK_ITEMS + 5
    items: list[Any] = [Box(i) for i in range(n_items)]
    items[bad_at] = threading.Lock()
    source = Source((items,))
    taken = CallerItems(source).single_batch(n_items)
    assert taken is not None
    copies, n_taken = taken
    assert n_taken == n_items
    first = next(copies)
    assert first.value == 0 and first is not items[0]
    ref = weakref.ref(first)
    del first
    for _ in range(COPY_BLOCK_ITEMS - 1):
        next(copies)
    assert ref() is not None  # its block is still being handed on
    assert next(copies).value == COPY_BLOCK_ITEMS  # the second block's first
    assert ref() is None
    delivered = []
    with pytest.raises(UnpicklableItemError) as info:
        for copy in copies:
            delivered.append(copy.value)
    assert delivered == list(range(COPY_BLOCK_ITEMS + 1, bad_at))
    assert info.value.index == bad_at
    assert source.exhausted
