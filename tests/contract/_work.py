"""Functions the contract tests hand to the executor.

They live in their own module, importing only the standard library, so that a worker started
with ``spawn`` or ``forkserver`` imports them by reference cheaply (never pytest). Module-level
state (``INIT_VALUE``, ``CALLS``) is per process: what a worker sets is not seen by the test.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

INIT_VALUE: object = None
"""Set by ``store_init_value`` in a worker's initializer."""

CALLS: list[object] = []
"""Arguments of ``record_call`` calls made in *this* process (the caller, on the serial path)."""


def square(x: int) -> int:
    return x * x


def add(a: int, b: int) -> int:
    return a + b


def add3(a: int, b: int, c: int) -> int:
    return a + b + c


def identity(x: object) -> object:
    return x


def pid_of(_: object = None) -> int:
    """The process that ran the call."""
    return os.getpid()


def square_and_pid(x: int) -> tuple[int, int]:
    return x * x, os.getpid()


def fail_on(x: int, bad: frozenset[int]) -> int:
    """``x * 10``, or ``ValueError`` naming ``x`` when ``x`` is in ``bad``."""
    if x in bad:
        raise ValueError(f"bad item {x}")
    return x * 10


def record_call(x: int, bad: int) -> int:
    """Like ``fail_on`` for one bad item; records each call made in this process."""
    CALLS.append(x)
    if x == bad:
        raise ValueError(f"bad item {x}")
    return x


def record_call_not_tiny(x: int, bad: int) -> int:
    """``record_call`` that takes over 2 µs (a few dozen loop steps plus a clock read), the
    speed above which the serial path promises to end the stream at the first exception."""
    deadline = time.perf_counter() + 5e-6
    while time.perf_counter() < deadline:
        pass
    return record_call(x, bad)


def raise_value_error_from_worker(x: int) -> int:
    """Raises on every item: its name must show in the remote traceback."""
    raise ValueError(f"raised for {x}")


def reversed_delay(x: int, n: int) -> int:
    """Later items finish sooner: completion order is the reverse of input order."""
    time.sleep((n - x) * 0.002)
    return x * x


def sleep_for(seconds: float, value: object = None) -> object:
    time.sleep(seconds)
    return value


def wait_for_path(path: str, value: object = None, started: str | None = None) -> object:
    """Block until ``path`` exists (at most a minute: a stuck test must not hang a worker
    forever); touch ``started`` first, so the test knows the call is running."""
    if started is not None:
        Path(started).touch()
    deadline = time.monotonic() + 60
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.005)
    return value


def store_init_value(value: object) -> None:
    global INIT_VALUE
    INIT_VALUE = value


def read_init_value(_: object = None) -> tuple[object, int]:
    return INIT_VALUE, os.getpid()


def failing_initializer() -> None:
    raise RuntimeError("this initializer always fails")


def ms_of_work(x: int) -> int:
    """About two milliseconds per call: with free workers, a pool beats serial."""
    time.sleep(0.002)
    return x * x


def fail_at_position(value: int, index: int, bad_index: int) -> int:
    """``3 * value - index``, or ``ValueError`` naming the position ``bad_index``."""
    if index == bad_index:
        raise ValueError(f"failed at position {index}")
    return 3 * value - index


class Token:
    """A result that can be weakly referenced: tells whether anyone still holds it."""

    def __init__(self, value: int) -> None:
        self.value = value


def make_token(x: int) -> Token:
    return Token(x)


def big_bytes(x: int, n_bytes: int) -> bytes:
    """A result of ``n_bytes`` bytes (distinct per item, so nothing is shared)."""
    return bytes([x % 256]) * n_bytes


class Raiser:
    @classmethod
    def raise_from_classmethod(cls) -> None:
        raise RuntimeError(123)  # the line a worker's traceback must show

    @classmethod
    def raise_at_two(cls, x: int) -> int:
        if x == 2:
            raise RuntimeError(x)  # the line a worker's traceback must show in map()
        return x


def _refuse_to_load() -> None:
    raise ValueError("this object refuses to load")


class FailsToLoad:
    """Pickles anywhere, fails to unpickle (in a worker: the chunk cannot run at all)."""

    def __reduce__(self) -> tuple[object, tuple[()]]:
        return (_refuse_to_load, ())


def append_one(values: list[int]) -> int:
    """Mutates its argument, as a careless ``fn`` may."""
    values.append(1)
    return len(values)


def handshake(x: int, last: int, path: str) -> int:
    """Item ``last`` waits (a few seconds at most) until ``path`` exists, which the consumer
    creates once it has received the result before it."""
    if x == last:
        deadline = time.monotonic() + 5
        while not os.path.exists(path):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{path} never appeared: earlier results were held back")
            time.sleep(0.005)
    return x
