"""Waiting without wall-clock assertions: poll a condition until it holds; the deadline only
turns a hang into a failure and is far longer than the condition ever needs."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import psutil

HANG_S = 30.0
"""Deadline for anything that should take well under a second."""


def wait_until(condition: Callable[[], object], what: str, deadline_s: float = HANG_S) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {deadline_s:.0f} s waiting for {what}")
        time.sleep(0.005)


def wait_for_file(path: Path, deadline_s: float = HANG_S) -> None:
    wait_until(path.exists, f"{path} to be created", deadline_s)


def alive(pids: Iterable[int]) -> list[int]:
    """The pids among ``pids`` that are running processes (zombies count as gone)."""
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def wait_gone(pids: Iterable[int], deadline_s: float = HANG_S) -> None:
    pids = list(pids)
    wait_until(lambda: not alive(pids), f"processes {pids} to exit", deadline_s)


class CountingIterable:
    """An iterable over ``range(n)`` (``n=None``: endless) that counts the items pulled."""

    def __init__(self, n: int | None = None, fail_at: int | None = None) -> None:
        self.n = n
        self.fail_at = fail_at
        self.pulled = 0

    def __iter__(self) -> Iterator[int]:
        while self.n is None or self.pulled < self.n:
            if self.fail_at is not None and self.pulled == self.fail_at:
                raise LookupError(f"the input broke at item {self.pulled}")
            self.pulled += 1
            yield self.pulled - 1


def drain(iterator: Iterator[Any]) -> tuple[list[Any], BaseException | None]:
    """The results an iterator delivers, then the exception that ended it (or ``None``)."""
    results: list[Any] = []
    try:
        for value in iterator:
            results.append(value)
    except Exception as exc:
        return results, exc
    return results, None
