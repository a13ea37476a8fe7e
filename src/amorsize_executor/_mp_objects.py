"""Finds ``multiprocessing`` objects that only a forked worker can receive.

Mechanism layer. A lock, semaphore, event, condition, queue or synchronized ``Value``/``Array``
made by a ``fork`` context (the default one on Linux through Python 3.13) holds a semaphore
that was unlinked at birth: a worker gets it only by inheriting it through ``fork``. Passed
in ``initargs`` to workers started otherwise (``forkserver``, ``spawn``, loky's own start),
the pool fails when its first worker starts, with ``RuntimeError: A SemLock created in a fork
context is being shared with a process in a spawn context``, after work was submitted. The
executor looks for such objects when it is created, so the conflict is reported before any
work runs, with what to pass instead.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from multiprocessing.synchronize import SemLock
from typing import Any

_MAX_OBJECTS_VISITED = 10_000
"""Objects looked at in ``initargs`` before giving up: enough for locks nested in a few
containers or attributes, and a bound on a large data structure passed as an initarg
(walking it costs about a microsecond per object)."""

_MAX_DEPTH = 6
"""Containers and attributes followed from ``initargs``: a ``Queue`` keeps its locks two levels
down, an ``Event`` three (event -> condition -> lock)."""


def _is_fork_only(lock: SemLock) -> bool:
    fork_ctx = getattr(lock, "_is_fork_ctx", None)  # Python 3.11+
    if isinstance(fork_ctx, bool):
        return fork_ctx
    # Python 3.10: a fork context unlinks the semaphore at once, leaving it nameless.
    return getattr(getattr(lock, "_semlock", None), "name", "") is None


def _children(value: object) -> Iterator[object]:
    if isinstance(value, (str, bytes, bytearray, int, float, complex, bool)) or value is None:
        return
    if isinstance(value, dict):
        yield from value.keys()
        yield from value.values()
    elif isinstance(value, (list, tuple, set, frozenset)):
        yield from value
    else:
        attributes = getattr(value, "__dict__", None)
        if isinstance(attributes, dict):
            yield from attributes.values()


def find_fork_only_objects(initargs: tuple[Any, ...]) -> list[str]:
    """Describe each object in ``initargs`` (followed through containers and attributes, up
    to ``_MAX_DEPTH`` levels) that holds a semaphore of a ``fork`` context, such as
    ``"initargs[0] (RLock)"``; empty when there is none."""
    found: list[str] = []
    seen: set[int] = set()
    stack: list[tuple[object, str, str, int]] = [
        (value, f"initargs[{i}]", type(value).__name__, 0) for i, value in enumerate(initargs)
    ]
    stack.reverse()
    while stack and len(seen) < _MAX_OBJECTS_VISITED:
        value, where, outer, depth = stack.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, SemLock):
            if _is_fork_only(value):
                label = f"{where} ({outer})"
                if label not in found:
                    found.append(label)
            continue
        if depth < _MAX_DEPTH:
            # At most as many children as may still be visited: a list of a million items
            # passed as an initarg is not copied whole.
            children = list(itertools.islice(_children(value), _MAX_OBJECTS_VISITED))
            stack.extend((child, where, outer, depth + 1) for child in reversed(children))
    return found


def check_initargs_start_method(initargs: tuple[Any, ...], start_method: str) -> None:
    """Raise ``ValueError`` when ``initargs`` holds objects only a forked worker can receive
    and the workers will be started with ``start_method`` (not ``"fork"``)."""
    if start_method == "fork":
        return
    found = find_fork_only_objects(initargs)
    if not found:
        return
    # loky's own start is not a multiprocessing context; spawn's objects reach its workers.
    maker = "spawn" if start_method == "loky" else start_method
    raise ValueError(
        f"{', '.join(found)} was made by a 'fork' multiprocessing context, and only a "
        f"forked worker can receive it, but the workers would start with {start_method!r}: "
        "pass mp_context=multiprocessing.get_context('fork'), or make the object with the "
        f"context the workers use (multiprocessing.get_context({maker!r}).RLock() and so on, "
        "the same context you pass as mp_context)"
    )
