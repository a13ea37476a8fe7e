"""``fn``'s arguments on the in-caller path as a process pool passes them: copies.

Mechanism layer. A worker gets each item pickled and loaded again, so ``fn`` changing its
argument never changes the caller's object. When ``fn`` runs in the calling process (the
probe, a serial plan), ``CallerItems`` hands the probe and ``SerialRun`` the input the same
way: each batch is copied by pickle round trips (of up to ``COPY_BLOCK_ITEMS``), which a
pool would pay anyway. Items of immutable built-in types (``IMMUTABLE_ATOMS``, and tuples and
frozensets of them) need no copy: a whole batch is checked at C speed (``map(type, batch)``,
counted, or collected in a set), looking inside tuples and frozensets only when the batch
holds some, and handed on as it is when nothing in it can change. An item that cannot be
pickled raises ``UnpicklableItemError`` at its position, the items before it having run, as a
pool's result iterator raises it.

No copies for a backend whose workers are threads of this process (``for_caller``): ``fn``
gets the caller's objects on every path of such a ``map()``, as in ``ThreadPoolExecutor``.

The check costs about 10 ns an item (the 2-core reference VM, CPython 3.11, batches of ints
inside a serial run: ``countOf(map(type, batch), int)`` 10.1 ns, ``set(map(type, batch))``
13.3 ns). No cheaper exact test exists in pure Python: each is a pass over the items with a
C call per item (``map(type, ...)`` alone is 7-8 ns), and the C loops that look at types
without a call per item (``sum``, ``array.array``, ``marshal``) call user code or accept
subclasses (``marshal`` with a stride test of its output would be exact for ints, at 7 ns,
but it calls an item's ``__buffer__`` on 3.12 and walks nested containers whole). So a job
of trivial calls over a list of numbers pays about 15% of its serial time more than it would
without copies (benchmarks, ``trivial_200k``: about 2 ms of 12-14 ms); an input known
immutable before it is read (``range``, ``str``, ``bytes``) pays nothing.

What it must not do: copy for threads, or read an item the run did not ask for (beyond the
block it is copying).
"""

from __future__ import annotations

import gc
import pickle
from collections.abc import Iterator
from itertools import chain
from operator import countOf
from typing import Any, TypeVar

import cloudpickle

from ._backend import Backend
from ._errors import UnpicklableItemError
from ._input import Source

T = TypeVar("T")

IMMUTABLE_ATOMS: frozenset[type] = frozenset(
    {int, float, complex, bool, type(None), str, bytes, range}
)
"""Built-in types whose objects cannot change and hold no object that can: ``fn`` may get
the caller's own. Exact types: a subclass may add attributes that can."""

IMMUTABLE_CONTAINERS: frozenset[type] = frozenset({tuple, frozenset})
"""Built-in types that cannot change but may hold objects that can: looked inside."""

_IMMUTABLE_OR_CONTAINER = IMMUTABLE_ATOMS | IMMUTABLE_CONTAINERS

MAX_NESTING = 8
"""Levels of tuples inside tuples looked into; a batch nested deeper is copied (a cheap bound
on a check that must not cost more than the copy it saves)."""

BLOCK_ITEMS = 1024
"""Items of an input without ``len()`` (or of several inputs) read, checked and copied
together in a serial run's fast path (``batch``): the Python code of a block then costs
about 1 ns an item, and the read-ahead stays small."""

LAZY_BLOCK_ITEMS = 64
"""The same for the item-by-item path (``iter_up_to``: slow calls, timed groups): the
checks run at C speed over a block, not one call per item, and at most this many items are
read before ``fn`` has their first (the probe's largest group, ``_probe.MAX_BATCH_ITEMS``)."""

COPY_BLOCK_ITEMS = 1024
"""Items copied by one pickle round trip. Measured on the 2-core reference VM (CPython 3.11,
200k two-int lists, under load): blocks of 1000 items cost half as much per item as blocks
of 14,000 (330 against 700 ns), the pickler's memo and the garbage collector's young
generation staying small; an object twice in one block is one copy, as in a pool's chunk."""

COPY_TO = "pass fn a copy of it, as a worker process would get it"
"""Why an item is pickled in the caller, for ``UnpicklableItemError``'s message."""


def all_immutable(objects: list[Any]) -> bool:
    """Whether none of ``objects`` can change: each is of an ``IMMUTABLE_ATOMS`` type, or a
    tuple or frozenset of such objects (recursively). C speed per object, a Python pass over
    a level only where it holds tuples among other types."""
    level = objects
    for _ in range(MAX_NESTING):
        if not level:
            return True
        first = type(level[0])
        if first in IMMUTABLE_ATOMS and countOf(map(type, level), first) == len(level):
            # One immutable type throughout, the common case: counting it costs about 4 ns
            # an object less than collecting the types into a set (10.5 against 14.5 ns in
            # a serial run's batches of ints, reference VM, CPython 3.11). Listing the types
            # first and counting the list is no faster in a run: the list of a batch's types
            # is a fresh 128 KiB allocation for each batch of 16k items (its page faults
            # made 12 batches of ints 3.2-3.5 ms against 2.8-3.0 in a fresh process).
            return True
        types = set(map(type, level))
        if types <= IMMUTABLE_ATOMS:
            return True
        if not types <= _IMMUTABLE_OR_CONTAINER:
            return False
        nested = level if types <= IMMUTABLE_CONTAINERS else _containers(level)
        level = list(chain.from_iterable(nested))
    return False


def _containers(objects: list[Any]) -> list[Any]:
    return [o for o in objects if type(o) in IMMUTABLE_CONTAINERS]


def copied(
    items: list[T], first_index: int, *, bare: bool
) -> tuple[list[T], UnpicklableItemError | None]:
    """``items`` (the input from ``first_index`` on) as ``fn`` may get them: the list itself
    when nothing in it can change, else copies made by pickle round trips of up to
    ``COPY_BLOCK_ITEMS`` (cloudpickle where pickle cannot, as for the pool's chunks). When an
    item cannot be copied: copies of the items before it, and the error at its position.

    Args:
        items: bare items (``bare``) or tuples of arguments.
        first_index: the input position of ``items[0]``, for the error.
        bare: whether ``items`` are bare items (one input) rather than argument tuples.
    """
    if all_immutable(items):
        return items, None
    return copies_of(items, first_index, bare=bare)


def copies_of(
    items: list[T], first_index: int, *, bare: bool
) -> tuple[list[T], UnpicklableItemError | None]:
    """``copied`` without the check: copies of every one of ``items``."""
    try:
        if len(items) <= COPY_BLOCK_ITEMS:
            return _round_trip(items), None
        return list(
            chain.from_iterable(
                _round_trip(items[i : i + COPY_BLOCK_ITEMS])
                for i in range(0, len(items), COPY_BLOCK_ITEMS)
            )
        ), None
    except Exception:
        pass
    for offset, item in enumerate(items):
        try:
            _round_trip(item)
        except Exception as exc:
            error = UnpicklableItemError(
                first_index + offset, _type_name(item, bare=bare), str(exc), to=COPY_TO
            )
            return (_round_trip(items[:offset]) if offset else []), error
    raise AssertionError("a batch failed to pickle but each item pickles alone")


def _round_trip(obj: T) -> T:
    try:
        data = pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)
    except Exception:
        # What a worker would get: the pool's chunks go through cloudpickle (lambdas,
        # classes defined in __main__ or in a function).
        data = cloudpickle.dumps(obj, pickle.HIGHEST_PROTOCOL)
    if not gc.isenabled():
        copy: T = pickle.loads(data)
        return copy
    # Every object loaded stays alive until fn has it: a collection triggered halfway finds
    # nothing to free. Measured (200k two-int lists, blocks of 1024, the copies kept): half
    # the time with the collector paused, 490 against 980 ns an item on the loaded VM.
    gc.disable()
    try:
        copy = pickle.loads(data)
    finally:
        gc.enable()
    return copy


def _type_name(item: Any, *, bare: bool) -> str:
    if bare or not isinstance(item, tuple):
        return type(item).__qualname__
    names = [type(a).__qualname__ for a in item]
    return names[0] if len(names) == 1 else "(" + ", ".join(names) + ")"


def _raising(error: BaseException) -> Iterator[Any]:
    raise error
    yield  # pragma: no cover - makes this a generator: it raises when first asked


class CallerItems:
    """The input as the in-caller path reads it: the part of ``_input.Source`` the probe and
    ``SerialRun`` use, handing out copies (see the module docstring).

    An item that cannot be copied ends the input there, as an input error does: the methods
    that hand out items lazily raise it at its position, and ``iter_up_to`` keeps it in
    ``input_error``.
    """

    def __init__(self, source: Source, *, buffersize: int | None = None) -> None:
        self._source = source
        self._max_block_items = buffersize or BLOCK_ITEMS
        """Blocks never hold more than the user's ``buffersize``: it bounds the read-ahead."""
        self._error: UnpicklableItemError | None = None
        self._n_batch = 0

    @property
    def exhausted(self) -> bool:
        return self._source.exhausted

    @property
    def n_pulled(self) -> int:
        return self._source.n_pulled

    @property
    def n_total(self) -> int | None:
        return self._source.n_total

    @property
    def input_error(self) -> BaseException | None:
        """An item that could not be copied (from ``iter_up_to``), or the input's error."""
        return self._error if self._error is not None else self._source.input_error

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return self

    def __next__(self) -> tuple[Any, ...]:
        """The next argument tuple, copied; an item that cannot be copied raises (the probe
        delivers it at its position, as an input error)."""
        args = next(self._source)
        if len(args) == 1:  # one input: its item looked at alone, without a ``map``
            if type(args[0]) in IMMUTABLE_ATOMS:
                return args
        elif IMMUTABLE_ATOMS.issuperset(map(type, args)):
            return args
        copies, error = copied([args], self._source.n_pulled - 1, bare=False)
        if error is not None:
            self._source.close()
            raise error
        return copies[0]

    def iter_up_to(self, n_items: int) -> Iterator[tuple[Any, ...]]:
        """As ``Source.iter_up_to``, copied in blocks of up to ``LAZY_BLOCK_ITEMS``; an item
        that cannot be copied ends it, kept in ``input_error`` (as an input error is)."""
        source = self._source
        for block in self._blocks(n_items, LAZY_BLOCK_ITEMS):
            ended = source.exhausted  # the input ended, or failed, with this block
            for args in block:
                if source.exhausted and not ended:
                    return  # closed meanwhile (the consumer closed the results)
                yield args

    def single_batch(self, n_items: int) -> tuple[Iterator[Any], int] | None:
        """As ``Source.single_batch``: up to ``n_items`` bare items of the one input with a
        ``len()``, copied as one batch; an item that cannot be copied raises at its position
        and ends the input."""
        items = self._source.single_list(n_items)
        if items is None:
            return None
        n_taken = len(items)
        return self._handed_out(items, self._source.n_pulled - n_taken, bare=True), n_taken

    def bare_batch(self, n_items: int) -> Iterator[Any] | None:
        """``None``: an input without ``len()`` is read in blocks by ``batch``."""
        return None

    def batch(self, n_items: int) -> Iterator[tuple[Any, ...]]:
        """As ``Source.batch``: up to ``n_items`` argument tuples, read and copied in blocks
        of ``BLOCK_ITEMS`` (Python code per block, none per item). Errors of the input, and an
        item that cannot be copied, raise at their position. ``settle_batch`` then counts."""
        self._n_batch = 0
        return chain.from_iterable(self._raising_blocks(n_items))

    def _raising_blocks(self, n_items: int) -> Iterator[list[tuple[Any, ...]]]:
        for block in self._blocks(n_items, BLOCK_ITEMS):
            self._n_batch += len(block)
            yield block
        if self.input_error is not None:
            raise self.input_error

    def _blocks(self, n_items: int, block_items: int) -> Iterator[list[tuple[Any, ...]]]:
        """Up to ``n_items`` argument tuples, copied, in lists of up to ``block_items``. An
        item that cannot be copied ends them and the input (kept in ``_error``); an input
        error ends them (``Source.take`` keeps it)."""
        source = self._source
        while n_items > 0 and not source.exhausted:
            first_index = source.n_pulled
            items, _ = source.take(min(n_items, block_items, self._max_block_items))
            n_items -= len(items)
            copies, error = copied(items, first_index, bare=False)
            if copies:
                yield copies
            if error is not None:
                self._error = error
                source.close()
                return

    def settle_batch(self, n_requested: int) -> int:
        """What the last ``batch`` handed out (its blocks counted their pulls as they went)."""
        return self._n_batch

    def _handed_out(self, items: list[Any], first_index: int, *, bare: bool) -> Iterator[Any]:
        if all_immutable(items):
            return iter(items)
        if len(items) <= COPY_BLOCK_ITEMS:
            copies, error = copies_of(items, first_index, bare=bare)
            if error is None:
                return iter(copies)
            self._source.close()
            return chain(copies, _raising(error))
        # Copied a block at a time as fn reaches it: each block's copies are freed once fn
        # has had them, while young, instead of a whole batch of them (16k lists in
        # trivial_lists_200k) outliving the collector's youngest generation: 72 -> 57 ms
        # there, most of it collections (173 young, 15 middle, one full one of 12 ms,
        # against 22-44 young and 2 middle; the 2-core VM, loaded).
        return chain.from_iterable(self._copied_blocks(items, first_index, bare=bare))

    def _copied_blocks(
        self, items: list[Any], first_index: int, *, bare: bool
    ) -> Iterator[list[Any]]:
        for start in range(0, len(items), COPY_BLOCK_ITEMS):
            block = items[start : start + COPY_BLOCK_ITEMS]
            copies, error = copied(block, first_index + start, bare=bare)
            yield copies
            if error is not None:
                self._source.close()
                raise error


def for_caller(
    source: Source, backend: Backend, buffersize: int | None = None
) -> Source | CallerItems:
    """What the in-caller path of a ``map()`` on ``backend`` reads: ``CallerItems`` over
    ``source`` (reading at most ``buffersize`` items at a time when given), or ``source``
    itself when ``backend``'s workers are threads of this process (``fn`` gets the caller's
    objects there, as with ``ThreadPoolExecutor``: nothing is pickled for them) or every item
    is known to be immutable before any is read (``Source.items_immutable``: a ``range``)."""
    if backend.runs_in_process or source.items_immutable:
        return source
    return CallerItems(source, buffersize=buffersize)
