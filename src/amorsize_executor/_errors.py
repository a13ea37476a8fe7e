"""Exceptions of our own. Each subclasses the stdlib exception a user would already catch
for the same failure, so existing ``except`` clauses keep working.

Data layer: no logic beyond building messages.
"""

from __future__ import annotations

import pickle
from concurrent.futures.process import BrokenProcessPool
from concurrent.futures.process import _RemoteTraceback as _StdlibRemoteTraceback

RemoteTraceback = _StdlibRemoteTraceback
"""Carries the traceback text (``.tb``) of an exception raised in a worker; set as
``__cause__`` of the re-raised exception, as the stdlib does, so both tracebacks are printed.
It is the stdlib's own class (``concurrent.futures.process._RemoteTraceback``), so code
written for ``ProcessPoolExecutor`` (``cause.tb``, ``type(cause)``) keeps working."""


def remote_traceback(tb_text: str) -> RemoteTraceback:
    """A ``RemoteTraceback`` carrying ``tb_text`` (the stdlib's class stores the text; its
    type stubs claim a traceback object)."""
    return RemoteTraceback(tb_text)  # type: ignore[arg-type]


class UnpicklableItemError(pickle.PicklingError):
    """An input item could not be pickled to send it to a worker (or, in the caller, to give
    ``fn`` a copy of it, as a worker would get it)."""

    def __init__(
        self, index: int, type_name: str, detail: str, *, to: str = "send it to a worker process"
    ) -> None:
        super().__init__(
            f"input item {index} (of type {type_name}) cannot be pickled to {to}: {detail}. "
            f"Pass picklable arguments (module-level classes, no open files, locks or "
            f"sockets), or build the object inside fn."
        )
        self.index = index


class UnpicklableResultError(pickle.PicklingError):
    """A result of ``fn`` could not be pickled to send it back from a worker."""

    def __init__(self, index: int, type_name: str, detail: str) -> None:
        super().__init__(
            f"the result of item {index} (of type {type_name}) cannot be pickled to send it "
            f"back from the worker process: {detail}. Return plain data from fn."
        )
        self.index = index


class UnpicklableExceptionError(Exception):
    """``fn`` raised an exception in a worker that could not be pickled back; this stands in
    for it with its type, message and traceback."""

    def __init__(self, index: int | None, type_name: str, message: str) -> None:
        where = "" if index is None else f"item {index}: "
        super().__init__(
            f"{where}fn raised {type_name}({message}), which cannot be pickled back "
            f"from the worker process (its traceback is attached as __cause__)"
        )
        self.index = index
        """The item's position in ``map()``'s input; ``None`` for a ``submit()``ted call."""
        self.type_name = type_name
        self.message = message

    def __reduce__(self) -> tuple[type[UnpicklableExceptionError], tuple[int | None, str, str]]:
        # Sent from the worker for a submit()ted call: rebuilt from its three parts.
        return (type(self), (self.index, self.type_name, self.message))


class WorkerCrashedError(BrokenProcessPool):
    """A worker died (a crash, ``os._exit``, a signal, or the OS killing it for memory) and
    took ``map()`` items from ``first_index`` on with it: the first chunk, in input order,
    that was running or queued when the pool broke. The culprit is among those items or
    later ones in flight; earlier results were delivered. ``except BrokenProcessPool``
    catches it."""

    def __init__(self, first_index: int, last_index: int, detail: str) -> None:
        super().__init__(
            f"a worker process died, and items {first_index}..{last_index} were lost with "
            f"the pool (they were running or queued when it broke; the item that killed it "
            f"is among them or later ones in flight: {detail}). The executor replaces its "
            f"pool on the next call; if this repeats, look for a crash or excessive memory "
            f"use in fn from those items on."
        )
        self.first_index = first_index
        self.last_index = last_index
