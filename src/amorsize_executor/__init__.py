"""amorsize-executor: process parallelism that is safe to switch on.

Replace ``from concurrent.futures import ProcessPoolExecutor`` with
``from amorsize_executor import AdaptiveProcessPoolExecutor as ProcessPoolExecutor``: each
``map()`` measures its work and either runs serially in the caller or on a right-sized
loky pool with a computed chunk size.

The public names are loaded on first use, so that a worker process, which only needs the
small module that runs chunks, does not pay for importing the executor.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._cost_model import plan_map
    from ._dask_backend import DaskBackend
    from ._errors import (
        RemoteTraceback,
        UnpicklableExceptionError,
        UnpicklableItemError,
        UnpicklableResultError,
        WorkerCrashedError,
    )
    from ._executor import AdaptiveProcessPoolExecutor
    from ._records import Plan, RunOutcome, SystemFacts, WorkMeasurements

__all__ = [
    "AdaptiveProcessPoolExecutor",
    "DaskBackend",
    "Plan",
    "RemoteTraceback",
    "RunOutcome",
    "SystemFacts",
    "UnpicklableExceptionError",
    "UnpicklableItemError",
    "UnpicklableResultError",
    "WorkMeasurements",
    "WorkerCrashedError",
    "plan_map",
]

__version__ = "0.1.0"

_HOMES = {
    "AdaptiveProcessPoolExecutor": "._executor",
    "DaskBackend": "._dask_backend",
    "Plan": "._records",
    "RemoteTraceback": "._errors",
    "RunOutcome": "._records",
    "SystemFacts": "._records",
    "UnpicklableExceptionError": "._errors",
    "UnpicklableItemError": "._errors",
    "UnpicklableResultError": "._errors",
    "WorkMeasurements": "._records",
    "WorkerCrashedError": "._errors",
    "plan_map": "._cost_model",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'amorsize_executor' has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
