"""Every argument is checked when the call is made, with the exception type the stdlib uses
for the same mistake and a message that names the argument; a rejected call reads no input,
calls nothing and starts no process."""

from __future__ import annotations

import multiprocessing
import sys
from typing import Any

import pytest

from amorsize_executor import AdaptiveProcessPoolExecutor

from . import _work
from ._helpers import CountingIterable
from ._paths import SERIAL

pytestmark = pytest.mark.timeout(60)

NEEDS_3_11 = pytest.mark.skipif(
    sys.version_info < (3, 11), reason="on 3.10 any max_tasks_per_child is a TypeError"
)


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"max_workers": 0}, ValueError, "^max_workers must be greater than 0$"),
        ({"max_workers": -1}, ValueError, "^max_workers must be greater than 0$"),
        ({"max_workers": 1.5}, TypeError, "max_workers.*1.5"),
        ({"max_workers": "2"}, TypeError, "max_workers.*'2'"),
        ({"initializer": 3}, TypeError, "initializer"),
        ({"initargs": [1]}, TypeError, "initargs"),
        pytest.param(
            {"max_tasks_per_child": 0}, ValueError, "max_tasks_per_child", marks=NEEDS_3_11
        ),
        ({"max_tasks_per_child": "1"}, TypeError, "max_tasks_per_child"),
        pytest.param(
            {"max_tasks_per_child": 2, "mp_context": multiprocessing.get_context("fork")},
            ValueError,
            "fork",
            marks=NEEDS_3_11,
        ),
        ({"mp_context": "spawn"}, TypeError, "mp_context"),
        ({"isolate": "yes"}, TypeError, "isolate.*'yes'"),
        ({"progress": 3}, TypeError, "progress.*3"),
        ({"no_such_option": 1}, TypeError, "no_such_option"),
    ],
    ids=lambda v: repr(v) if not isinstance(v, dict) else ",".join(f"{k}={v[k]!r}" for k in v),
)
def test_constructor_rejects(kwargs: dict[str, Any], error: type, pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        AdaptiveProcessPoolExecutor(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"chunksize": 0}, ValueError, "chunksize"),
        ({"chunksize": -3}, ValueError, "chunksize"),
        ({"chunksize": 1.5}, TypeError, "chunksize"),
        ({"chunksize": "3"}, TypeError, "chunksize"),
        ({"buffersize": 0}, ValueError, "buffersize"),
        ({"buffersize": -1}, ValueError, "buffersize"),
        ({"buffersize": 2.0}, TypeError, "buffersize"),
        ({"timeout": -1}, ValueError, "timeout.*-1"),
        ({"timeout": float("nan")}, ValueError, "timeout"),
        ({"timeout": "1"}, TypeError, "timeout"),
        ({"progress": 3}, TypeError, "progress.*3"),
        ({"no_such_option": 1}, TypeError, "no_such_option"),
    ],
    ids=lambda v: repr(v) if not isinstance(v, dict) else ",".join(f"{k}={v[k]!r}" for k in v),
)
def test_map_rejects_before_reading_input(
    kwargs: dict[str, Any], error: type, pattern: str
) -> None:
    source = CountingIterable(100)
    _work.CALLS.clear()
    with SERIAL.executor() as ex:
        with pytest.raises(error, match=pattern):
            ex.map(_work.record_call, source, [0] * 100, **kwargs)
        assert source.pulled == 0 and not _work.CALLS
        # The executor is unharmed.
        assert list(ex.map(_work.square, range(3))) == [0, 1, 4]


@pytest.mark.parametrize("fn", [None, 3, "square"], ids=repr)
def test_non_callable_fn_is_a_type_error(fn: object) -> None:
    with SERIAL.executor() as ex:
        with pytest.raises(TypeError, match="fn must be callable"):
            ex.map(fn, [1, 2])  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="fn must be callable"):
            ex.submit(fn, 1)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("iterables", "position"),
    [((5,), 2), (([1, 2], None), 3), ((range(3), [1], 1.5), 4)],
    ids=["first", "second", "third"],
)
def test_non_iterable_input_is_a_type_error_naming_the_argument(
    iterables: tuple[object, ...], position: int
) -> None:
    with (
        SERIAL.executor() as ex,
        pytest.raises(TypeError, match=f"argument {position} must be iterable"),
    ):
        ex.map(_work.add3, *iterables)


def test_rejected_arguments_start_no_process() -> None:
    import psutil

    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with AdaptiveProcessPoolExecutor(max_workers=2) as ex:
        for kwargs in ({"chunksize": 0}, {"timeout": -1}, {"buffersize": 0}):
            with pytest.raises(ValueError):
                ex.map(_work.square, [1, 2, 3], **kwargs)
        with pytest.raises(TypeError):
            ex.submit(None)  # type: ignore[arg-type]
        assert ex._backend.worker_pids() == []
    after = {p.pid for p in psutil.Process().children(recursive=True)}
    assert after <= before
