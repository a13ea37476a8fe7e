"""The input layer: lazy, counted, nothing lost, nothing twice."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from amorsize_executor._input import Source, known_length


class Counting:
    """An iterator that counts how many items were pulled from it."""

    def __init__(self, n: int | None = None) -> None:
        self.pulled = 0
        self.n = n

    def __iter__(self) -> Iterator[int]:
        return self

    def __next__(self) -> int:
        if self.n is not None and self.pulled >= self.n:
            raise StopIteration
        self.pulled += 1
        return self.pulled - 1


def test_length_from_len_and_hints_without_consuming() -> None:
    assert known_length(([1, 2, 3], range(10))) == (3, True)
    it = iter([1, 2, 3, 4])
    assert known_length((it,)) == (4, False)
    assert next(it) == 1
    assert known_length((Counting(),)) == (None, False)


def test_take_pulls_exactly_what_it_returns() -> None:
    counting = Counting(10)
    source = Source((counting,))
    items, error = source.take(4)
    assert items == [(0,), (1,), (2,), (3,)]
    assert error is None
    assert counting.pulled == 4 == source.n_pulled
    rest, _ = source.take(100)
    assert [a for (a,) in rest] == list(range(4, 10))
    assert source.exhausted


def test_input_error_comes_after_the_items_before_it() -> None:
    def gen() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("bad line")

    source = Source((gen(),))
    items, error = source.take(10)
    assert items == [(1,), (2,)]
    assert isinstance(error, ValueError)
    assert source.exhausted


def test_batch_is_counted_when_settled() -> None:
    source = Source((range(5),))
    assert list(source.batch(3)) == [(0,), (1,), (2,)]
    assert source.settle_batch(3) == 3
    assert list(source.batch(3)) == [(3,), (4,)]
    assert source.settle_batch(3) == 2
    assert source.exhausted


def test_bare_batch_hands_out_the_one_iterables_items_and_counts_them() -> None:
    source = Source((iter(range(5)),))  # no length: counted as the batch is read
    assert next(source) == (0,)  # pulls through the zipped tuples and bare batches mix
    assert list(source.bare_batch(3)) == [1, 2, 3]
    assert source.settle_batch(3) == 3
    assert source.n_pulled == 4
    assert list(source.bare_batch(3)) == [4]
    assert source.settle_batch(3) == 1
    assert source.exhausted
    assert source.bare_batch(3) is None  # closed
    assert Source(([1, 2], "ab")).bare_batch(2) is None  # two iterables: tuples it is


def test_zip_semantics_stop_at_the_shortest() -> None:
    source = Source(([1, 2, 3], "ab"))
    assert source.n_total == 2
    assert list(source) == [(1, "a"), (2, "b")]


def test_non_iterable_names_the_argument() -> None:
    with pytest.raises(TypeError, match="argument 3 must be iterable, got 'int'"):
        Source(([1], 5))


def test_infinite_input_is_never_materialised() -> None:
    counting = Counting()
    source = Source((counting, itertools.count()))
    source.take(7)
    assert counting.pulled == 7
