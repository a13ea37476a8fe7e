"""Property tests: for random inputs, chunk sizes, look-ahead windows and failure positions,
``map`` delivers exactly what the builtin ``map`` delivers: the same results up to the first
exception, then an exception of the same type and message.

One warm executor per module serves every example (starting pools per example would cost
seconds); it is warmed up before the first test so its workers predate the leak check."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from amorsize_executor import AdaptiveProcessPoolExecutor

from . import _work
from ._helpers import drain
from ._paths import PARALLEL, SERIAL

pytestmark = pytest.mark.timeout(120)

PROPERTY_SETTINGS = settings(
    max_examples=25,
    deadline=None,
    # The autouse leak check is function-scoped; it holds nothing an example could share.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def parallel_executor() -> Iterator[AdaptiveProcessPoolExecutor]:
    ex = PARALLEL.executor()
    # Start the pool at its full size now (max_workers=2): later plans never outgrow it.
    assert list(ex.map(_work.square, range(64))) == [x * x for x in range(64)]
    yield ex
    ex.shutdown(wait=True, cancel_futures=True)


@pytest.fixture(scope="module")
def serial_executor() -> Iterator[AdaptiveProcessPoolExecutor]:
    ex = SERIAL.executor()
    yield ex
    ex.shutdown()


@st.composite
def map_cases(draw: st.DrawFn) -> dict[str, Any]:
    values = draw(st.lists(st.integers(-(10**6), 10**6), max_size=120))
    bad = draw(st.none() | st.integers(0, max(0, len(values) - 1)) if values else st.none())
    return {
        "values": values,
        "bad": -1 if bad is None else bad,
        "chunksize": draw(st.none() | st.integers(1, 12)),
        "buffersize": draw(st.none() | st.integers(1, 40)),
        "as_generator": draw(st.booleans()),
    }


def builtin_outcome(values: list[int], bad: int) -> tuple[list[int], BaseException | None]:
    return drain(map(_work.fail_at_position, values, itertools.count(), itertools.repeat(bad)))


def check_against_builtin(ex: AdaptiveProcessPoolExecutor, case: dict[str, Any]) -> None:
    values, bad = case["values"], case["bad"]
    source = iter(values) if case["as_generator"] else values
    got, error = drain(
        ex.map(
            _work.fail_at_position,
            source,
            itertools.count(),
            itertools.repeat(bad),
            chunksize=case["chunksize"],
            buffersize=case["buffersize"],
        )
    )
    expected, expected_error = builtin_outcome(values, bad)
    assert got == expected
    assert type(error) is type(expected_error)
    assert str(error) == str(expected_error)


@PROPERTY_SETTINGS
@given(case=map_cases())
def test_parallel_map_matches_builtin_map(
    parallel_executor: AdaptiveProcessPoolExecutor, case: dict[str, Any]
) -> None:
    check_against_builtin(parallel_executor, case)


@PROPERTY_SETTINGS
@given(case=map_cases())
def test_serial_map_matches_builtin_map(
    serial_executor: AdaptiveProcessPoolExecutor, case: dict[str, Any]
) -> None:
    check_against_builtin(serial_executor, case)
