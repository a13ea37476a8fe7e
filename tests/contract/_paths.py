"""The three execution paths every contract test runs on, forced without timing:

- ``serial``: a start cost of 1000 s makes any pool lose, so ``map`` runs in the caller;
- ``parallel``: ``isolate=True`` with free, instant workers: ``map`` runs on the loky pool with
  the chunk size the plan picks;
- ``chunksize``: as ``parallel``, with an explicit ``chunksize=3`` on every ``map`` call.

``submit`` always goes to the pool, on every path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from amorsize_executor import AdaptiveProcessPoolExecutor

from ..conftest import make_facts


@dataclass(frozen=True)
class ExecPath:
    name: str
    executor_kwargs: dict[str, Any] = field(default_factory=dict)
    map_kwargs: dict[str, Any] = field(default_factory=dict)
    runs_in_caller: bool = False
    """Whether ``map`` calls ``fn`` in the test process on this path."""
    mode: str = "parallel"

    def executor(self, **overrides: Any) -> AdaptiveProcessPoolExecutor:
        return AdaptiveProcessPoolExecutor(**{**self.executor_kwargs, **overrides})

    def map(
        self,
        executor: AdaptiveProcessPoolExecutor,
        fn: Callable[..., Any],
        *iterables: Any,
        **kwargs: Any,
    ) -> Iterator[Any]:
        return executor.map(fn, *iterables, **{**self.map_kwargs, **kwargs})


SERIAL = ExecPath(
    "serial",
    {"system_facts": make_facts(worker_start_s=1000.0), "max_workers": 2},
    runs_in_caller=True,
    mode="serial",
)
# Two workers at most: this suite runs on small machines, and the forced facts (free
# workers) would otherwise let a plan start dozens of them.
PARALLEL = ExecPath("parallel", {"system_facts": make_facts(), "isolate": True, "max_workers": 2})
CHUNKSIZE = ExecPath(
    "chunksize",
    {"system_facts": make_facts(), "isolate": True, "max_workers": 2},
    {"chunksize": 3},
)
PATHS = (SERIAL, PARALLEL, CHUNKSIZE)
