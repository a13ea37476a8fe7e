"""A chunk's way in and out: its items pickled for a worker, its results loaded back, and
each failure turned into the exception the result stream raises at the item's position.

Mechanism layer, no state: the chunk window calls these and records what they return.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cloudpickle

from ._chunk_worker import ChunkResult
from ._errors import (
    RemoteTraceback,
    UnpicklableExceptionError,
    UnpicklableItemError,
    UnpicklableResultError,
)


@dataclass(frozen=True)
class ChunkOutcome:
    """A chunk's results, loaded, and what its worker measured."""

    results: list[Any]
    n_results: int
    compute_s: float
    cpu_s: float
    items_bytes: int
    results_bytes: bytes
    voluntary_switches: int | None


def pickle_items(
    first_index: int, items: list[tuple[Any, ...]]
) -> tuple[list[tuple[Any, ...]], bytes, UnpicklableItemError | None]:
    """``items`` (the input from ``first_index`` on) pickled for a worker. When one cannot
    be pickled: the items before it, pickled, and the error at its position."""
    try:
        return items, cloudpickle.dumps(items), None
    except Exception:
        offset, exc = _first_unpicklable(items)
        error = UnpicklableItemError(first_index + offset, _type_names(items[offset]), str(exc))
        items = items[:offset]
        return items, (cloudpickle.dumps(items) if items else b""), error


def load_outcome(
    result: ChunkResult, first_index: int
) -> tuple[ChunkOutcome | None, BaseException | None, int]:
    """A finished chunk's results loaded, and the error inside it with its position:
    ``(outcome, error, index)``. No outcome when the results cannot be loaded (the error
    is then at the chunk's first item)."""
    try:
        results: list[Any] = (
            result.results
            if result.results is not None
            else cloudpickle.loads(result.results_bytes)
        )
    except Exception as exc:
        error = UnpicklableResultError(first_index, "result", f"cannot be loaded: {exc}")
        return None, error, first_index
    outcome = ChunkOutcome(
        results=results,
        n_results=result.n_results,
        compute_s=result.compute_s,
        cpu_s=result.cpu_s,
        items_bytes=result.items_bytes,
        results_bytes=result.results_bytes,
        voluntary_switches=result.voluntary_switches,
    )
    if result.failure is None:
        return outcome, None, -1
    return outcome, _failure_exception(result, first_index), first_index + result.failure.offset


def _failure_exception(result: ChunkResult, first_index: int) -> BaseException:
    failure = result.failure
    assert failure is not None
    index = first_index + failure.offset
    error: BaseException
    if failure.kind == "result":
        error = UnpicklableResultError(index, failure.type_name, str(failure.error))
    elif failure.kind == "exception":
        error = UnpicklableExceptionError(index, failure.type_name, str(failure.error))
    else:
        error = failure.error
    error.__cause__ = RemoteTraceback(failure.tb_text)
    return error


def _first_unpicklable(items: list[tuple[Any, ...]]) -> tuple[int, Exception]:
    for offset, args in enumerate(items):
        try:
            cloudpickle.dumps(args)
        except Exception as exc:
            return offset, exc
    raise AssertionError("a chunk failed to pickle but each item pickles alone")


def _type_names(args: tuple[Any, ...]) -> str:
    names = [type(a).__qualname__ for a in args]
    return names[0] if len(names) == 1 else "(" + ", ".join(names) + ")"
