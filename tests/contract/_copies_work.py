"""Functions the tests of ``test_arg_copies`` map, importable by workers: each mutates its
arguments, or tells whether it got the caller's very object."""

from __future__ import annotations

import enum
import time
from typing import Any


class Color(enum.Enum):
    RED = 1


class Plain:
    """An instance of a module-level class: a pool's worker gets a copy of it."""


SENTINEL = Plain()

BY_NAME: dict[str, Any] = {"class": Plain, "enum member": Color.RED, "sentinel": SENTINEL}


def append_one(values: list[int]) -> int:
    """Mutates its argument (a fast call: the serial path runs it at C speed)."""
    values.append(1)
    return len(values)


def append_one_slowly(values: list[int]) -> int:
    """``append_one`` taking over 2 µs: the serial path runs it item by item."""
    deadline = time.perf_counter() + 5e-6
    while time.perf_counter() < deadline:
        pass
    return append_one(values)


def append_inside(pair: tuple[int, list[int]]) -> int:
    """Mutates the list inside its tuple argument."""
    pair[1].append(pair[0])
    return len(pair[1])


def append_to_both(first: list[int], second: list[int]) -> int:
    """Mutates both of its arguments (``map`` over two iterables)."""
    first.append(1)
    second.append(2)
    return len(first) + len(second)


def int_or_length(item: int | list[int]) -> int:
    """Ints as they are; a list is mutated and its new length returned."""
    if isinstance(item, int):
        return item
    item.append(1)
    return len(item)


def is_the_named_object(name: str, item: object) -> bool:
    """Whether ``item`` is the very object ``BY_NAME[name]`` of the process ``fn`` runs in."""
    return item is BY_NAME[name]
