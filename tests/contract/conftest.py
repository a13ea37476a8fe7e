"""Fixtures of the contract suite: each test that asks for ``path`` (or ``executor``) runs
once per execution path of ``_paths``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from amorsize_executor import AdaptiveProcessPoolExecutor

from ._paths import PATHS, ExecPath


@pytest.fixture(params=PATHS, ids=[p.name for p in PATHS])
def path(request: pytest.FixtureRequest) -> ExecPath:
    return request.param


@pytest.fixture
def executor(path: ExecPath) -> Iterator[AdaptiveProcessPoolExecutor]:
    """An executor on the path under test, shut down (waiting) after the test."""
    ex = path.executor()
    try:
        yield ex
    finally:
        ex.shutdown(wait=True, cancel_futures=True)
