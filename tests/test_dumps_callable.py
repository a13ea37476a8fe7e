"""``submit()``'s function pickled for a worker: by reference when the worker loads it back by
name, and the bytes of the last one reused only while its name still leads to it."""

from __future__ import annotations

import pickle
import sys
import types
from collections.abc import Iterator

import pytest

from amorsize_executor import _chunk_worker


def _twice(x: int) -> int:
    return 2 * x


def _thrice(x: int) -> int:
    return 3 * x


@pytest.fixture
def module() -> Iterator[types.ModuleType]:
    """A module a worker could import, holding ``twice``; removed afterwards."""
    module = types.ModuleType("amorsize_test_dumps_module")
    module.__file__ = __file__

    def twice(x: int) -> int:
        return 2 * x

    twice.__module__ = module.__name__
    twice.__qualname__ = "twice"
    module.twice = twice  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    try:
        yield module
    finally:
        del sys.modules[module.__name__]


def test_the_same_function_is_pickled_once(monkeypatch: pytest.MonkeyPatch) -> None:
    checks: list[object] = []
    check = _chunk_worker.loads_back_as_itself

    def counting_check(data: bytes, fn: object) -> bool:
        checks.append(fn)
        return check(data, fn)  # type: ignore[arg-type]

    monkeypatch.setattr(_chunk_worker, "loads_back_as_itself", counting_check)
    first = _chunk_worker.dumps_callable(_twice)
    assert _chunk_worker.dumps_callable(_twice) == first
    assert checks == [_twice]
    assert pickle.loads(first) is _twice
    assert pickle.loads(_chunk_worker.dumps_callable(_thrice)) is _thrice  # another one
    assert pickle.loads(_chunk_worker.dumps_callable(_twice)) is _twice


def test_a_function_whose_name_now_leads_elsewhere_travels_by_value(
    module: types.ModuleType,
) -> None:
    twice = module.twice
    by_reference = _chunk_worker.dumps_callable(twice)
    assert pickle.loads(by_reference) is twice
    module.twice = _thrice  # type: ignore[attr-defined]  # the program rebinds the name
    loaded = pickle.loads(_chunk_worker.dumps_callable(twice))
    assert loaded is not _thrice
    assert loaded(5) == 10
