"""Functions that misbehave in worker processes: they die, raise exceptions or return objects
that cannot travel back, or never finish.

Each crash takes the pid of the test process and does nothing there, so a path that runs
``fn`` in the caller can never take pytest down.
"""

from __future__ import annotations

import os
import signal
import threading
import time


def double(x: int) -> int:
    return 2 * x


def _in_worker(parent_pid: int) -> bool:
    return os.getpid() != parent_pid


def exit_at(x: int, crash_at: int, parent_pid: int) -> int:
    if x == crash_at and _in_worker(parent_pid):
        os._exit(3)
    return 2 * x


def sigkill_at(x: int, crash_at: int, parent_pid: int) -> int:
    if x == crash_at and _in_worker(parent_pid):
        os.kill(os.getpid(), signal.SIGKILL)
    return 2 * x


def segfault_at(x: int, crash_at: int, parent_pid: int) -> int:
    if x == crash_at and _in_worker(parent_pid):
        import ctypes

        ctypes.string_at(0)
    return 2 * x


def exit_now(parent_pid: int) -> None:
    if _in_worker(parent_pid):
        os._exit(3)


class LockHoldingError(Exception):
    """Cannot be pickled: it holds a lock."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.lock = threading.Lock()


class TwoArgumentError(Exception):
    """Pickles, but cannot be unpickled: ``__init__`` needs two arguments and ``args`` holds
    one. The explicit ``__reduce__`` (the default one's result) keeps it so where tblib's
    exception pickling is installed too (``distributed`` installs it on import), which would
    otherwise rebuild it without calling ``__init__``."""

    def __init__(self, what: str, where: int) -> None:
        super().__init__(f"{what} at {where}")

    def __reduce__(self) -> tuple[type[TwoArgumentError], tuple[object, ...]]:
        return (type(self), self.args)


def raise_lock_holding_at(x: int, bad: int) -> int:
    if x == bad:
        raise LockHoldingError(f"locked at {x}")
    return 2 * x


def raise_two_argument_at(x: int, bad: int) -> int:
    if x == bad:
        raise TwoArgumentError("broken", x)
    return 2 * x


def return_lock_at(x: int, bad: int) -> object:
    return threading.Lock() if x == bad else 2 * x


def return_unloadable_at(x: int, bad: int) -> object:
    """At ``bad``, a result that pickles in the worker but fails to load in the parent."""
    return TwoArgumentError("result", x) if x == bad else 2 * x


def sleep_then(seconds: float, value: object = None) -> object:
    time.sleep(seconds)
    return value


def square(x: int) -> int:
    return x * x


def payload_len(item: bytes) -> int:
    return len(item)


def payload_or_type(item: object) -> object:
    """Ints come back as they are; anything else as its type's name."""
    return item if isinstance(item, int) else type(item).__name__
