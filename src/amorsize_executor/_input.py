"""The input layer: the user's iterables as one lazy stream of argument tuples.

Mechanism layer. It zips the iterables (``zip`` semantics, as the builtin ``map``), knows
the length when it can be known without consuming anything, counts what it has handed out,
and turns an exception raised by the user's iterator into a value the caller delivers at its
position. It never materialises the input and never hands out an item twice.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator
from itertools import count, islice
from operator import itemgetter
from typing import Any

IMMUTABLE_ITEM_ITERABLES: tuple[type, ...] = (range, str, bytes)
"""Iterables whose items are immutable built-ins whatever they hold (ints, one-character
strings): an in-caller run over them need not copy or check an item (``_arg_copies``)."""


def known_length(iterables: tuple[Iterable[Any], ...]) -> tuple[int | None, bool]:
    """The number of items ``zip(*iterables)`` will produce, without consuming anything.

    Returns ``(length, exact)``: exact when every iterable has ``len()``; otherwise a
    ``__length_hint__`` may still give an estimate (``exact`` False), and with none
    the length is ``None``.
    """
    lengths: list[int] = []
    exact = True
    for iterable in iterables:
        try:
            lengths.append(len(iterable))  # type: ignore[arg-type]
            continue
        except TypeError:
            exact = False
        hint = operator.length_hint(iterable, -1)
        if hint < 0:
            return None, False
        lengths.append(hint)
    return (min(lengths) if lengths else 0), exact


class Source:
    """Hands out the argument tuples of a ``map()`` call, one pull at a time, and counts them."""

    def __init__(self, iterables: tuple[Iterable[Any], ...]) -> None:
        if not iterables:
            raise TypeError("map() must have at least one iterable")
        self.n_total, self.has_len = known_length(iterables)
        self.items_immutable = all(type(it) in IMMUTABLE_ITEM_ITERABLES for it in iterables)
        """Every item is known immutable before any is read (see ``IMMUTABLE_ITEM_ITERABLES``)."""
        iterators = []
        for position, iterable in enumerate(iterables):
            try:
                iterators.append(iter(iterable))
            except TypeError:
                raise TypeError(
                    f"map() argument {position + 2} must be iterable, got "
                    f"{type(iterable).__qualname__!r}: pass a list, a generator or any "
                    f"other iterable"
                ) from None
        self._iterator: Iterator[tuple[Any, ...]] | None = zip(*iterators)  # noqa: B905 - map() stops at the shortest
        # One iterable can be read directly, at C speed (see bare_batch), and without
        # counting when its length is known (see single_batch).
        self._bare = iterators[0] if len(iterators) == 1 else None
        self._single = self._bare if self.has_len else None
        # A list or tuple is sliced (one C copy of its pointers) when a batch must be a list.
        first = iterables[0]
        self._sequence: list[Any] | tuple[Any, ...] | None = (
            first
            if self._single is not None
            and isinstance(first, (list, tuple))
            and type(first) in (list, tuple)  # a subclass may iterate otherwise
            else None
        )
        self.n_pulled = 0
        self.exhausted = False
        self.input_error: BaseException | None = None
        self._batch_counter = count()

    @property
    def n_remaining(self) -> int | None:
        """Items still to come, if the length is known (exactly or by hint)."""
        if self.exhausted:
            return 0
        if self.n_total is None:
            return None
        return max(0, self.n_total - self.n_pulled)

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return self

    def __next__(self) -> tuple[Any, ...]:
        """The next item; errors of the user's iterator propagate (the probe catches them)."""
        if self._iterator is None:
            raise StopIteration
        try:
            args = next(self._iterator)
        except StopIteration:
            self.close()
            raise
        except BaseException:
            self.close()
            raise
        self.n_pulled += 1
        return args

    def take(self, n_items: int) -> tuple[list[tuple[Any, ...]], BaseException | None]:
        """Up to ``n_items`` items, and the exception the input raised after them, if any."""
        if self._iterator is None:
            return [], None
        items: list[tuple[Any, ...]] = []
        try:
            items.extend(islice(self._iterator, n_items))
        except Exception as exc:
            self.n_pulled += len(items)
            self.input_error = exc
            self.close()
            return items, exc
        self.n_pulled += len(items)
        if len(items) < n_items:
            self.close()
        return items, None

    def iter_up_to(self, n_items: int) -> Iterator[tuple[Any, ...]]:
        """Yield up to ``n_items`` items; an input error is stored in ``input_error``."""
        for _ in range(n_items):
            iterator = self._iterator
            if iterator is None:  # closed meanwhile (the consumer closed the results)
                return
            try:
                args = next(iterator)
            except StopIteration:
                self.close()
                return
            except Exception as exc:
                self.input_error = exc
                self.close()
                return
            self.n_pulled += 1
            yield args

    def batch(self, n_items: int) -> Iterator[tuple[Any, ...]]:
        """Up to ``n_items`` items as a C-level iterator (no Python code per item).

        Errors of the user's iterator propagate from it. Call ``settle_batch`` once it is
        exhausted to bring the counts up to date.
        """
        if self._iterator is None:
            return iter(())
        self._batch_counter = count()
        return map(itemgetter(0), zip(islice(self._iterator, n_items), self._batch_counter))  # noqa: B905

    def bare_batch(self, n_items: int) -> Iterator[Any] | None:
        """Like ``batch``, but the bare items of the one input iterable (not 1-tuples, so
        ``map`` can take them, one layer less per item than ``starmap``), or ``None`` when
        there are several iterables. Call ``settle_batch`` once it is exhausted."""
        if self._bare is None or self._iterator is None:
            return None
        self._batch_counter = count()
        return map(itemgetter(0), zip(islice(self._bare, n_items), self._batch_counter))  # noqa: B905

    def single_batch(self, n_items: int) -> tuple[Iterator[Any], int] | None:
        """Up to ``n_items`` bare items (not tuples) straight from the one input iterable, and
        how many, or
        ``None`` unless there is exactly one iterable with a ``len()``: only then are the
        counts known without counting, so nothing runs per item but the call itself."""
        if self._single is None or self._iterator is None or self.n_total is None:
            return None
        n_taken = min(n_items, max(0, self.n_total - self.n_pulled))
        self.n_pulled += n_taken
        if self.n_pulled >= self.n_total:
            self.exhausted = True
        return islice(self._single, n_taken), n_taken

    def single_list(self, n_items: int) -> list[Any] | None:
        """As ``single_batch``, the items as a list (a slice of a list or tuple input, its
        iterator moved past them), for a caller that looks at them before ``fn`` does."""
        taken = self.single_batch(n_items)
        if taken is None:
            return None
        items, n_taken = taken
        if self._sequence is None:
            return list(items)
        start = self.n_pulled - n_taken
        # A list or tuple iterator's position is its pickled state: set it past the slice.
        self._bare.__setstate__(self.n_pulled)  # type: ignore[union-attr]
        part = self._sequence[start : self.n_pulled]
        return part if type(part) is list else list(part)

    def settle_batch(self, n_requested: int) -> int:
        """Count what the last ``batch`` produced; returns that number."""
        n_done = next(self._batch_counter)
        self.n_pulled += n_done
        if n_done < n_requested:
            self.close()
        return n_done

    def close(self) -> None:
        """Stop reading: nothing more is pulled from the user's iterables."""
        self._iterator = None
        self._single = None
        self._bare = None
        self.exhausted = True
