"""Objects of a ``fork`` context in ``initargs`` are found, and a pool whose workers could not
receive them is refused when the executor is created, before any work runs."""

from __future__ import annotations

import multiprocessing
import sys
from typing import Any

import pytest

from amorsize_executor import AdaptiveProcessPoolExecutor
from amorsize_executor._mp_objects import check_initargs_start_method, find_fork_only_objects

fork = multiprocessing.get_context("fork")
spawn = multiprocessing.get_context("spawn")


class Holder:
    def __init__(self, inner: Any) -> None:
        self.inner = inner


def test_finds_fork_locks_through_containers_attributes_and_composite_objects() -> None:
    found = find_fork_only_objects(
        (1, "text", [fork.Lock()], {"e": fork.Event()}, Holder(fork.Queue()), fork.Value("i"))
    )
    assert found == [
        "initargs[2] (list)",
        "initargs[3] (dict)",
        "initargs[4] (Holder)",
        "initargs[5] (Synchronized)",
    ]


def test_objects_of_other_contexts_and_plain_values_are_not_reported() -> None:
    assert find_fork_only_objects((spawn.RLock(), spawn.Queue(), [1, 2], {"a": b"x"})) == []


def test_a_self_referencing_structure_is_walked_once() -> None:
    loop: list[Any] = []
    loop.append(loop)
    assert find_fork_only_objects((loop,)) == []


def test_fork_objects_are_fine_for_forked_workers_only() -> None:
    check_initargs_start_method((fork.RLock(),), "fork")
    for method in ("forkserver", "spawn", "loky"):
        with pytest.raises(ValueError, match=r"initargs\[0\] \(RLock\).*'fork'"):
            check_initargs_start_method((fork.RLock(),), method)


def test_the_executor_refuses_the_conflict_when_created_and_names_the_remedy() -> None:
    with pytest.raises(ValueError) as caught:
        AdaptiveProcessPoolExecutor(
            2, mp_context=spawn, initializer=print, initargs=(fork.RLock(),)
        )
    message = str(caught.value)
    assert "initargs[0] (RLock)" in message
    assert "'spawn'" in message
    assert "mp_context=multiprocessing.get_context('fork')" in message
    if sys.version_info >= (3, 11):  # max_tasks_per_child: the stdlib pool uses spawn
        with pytest.raises(ValueError, match="RLock"):
            AdaptiveProcessPoolExecutor(2, max_tasks_per_child=3, initargs=(fork.RLock(),))


def test_a_fork_context_with_fork_objects_is_accepted() -> None:
    with AdaptiveProcessPoolExecutor(2, mp_context=fork, initargs=(fork.RLock(),)):
        pass


def test_a_large_initarg_is_looked_at_only_in_part() -> None:
    # The lock sits after more objects than are ever visited: not found, and not slow.
    assert find_fork_only_objects(([0] * 1_000_000 + [fork.Lock()],)) == []
    assert find_fork_only_objects(([fork.Lock()] + [0] * 1_000_000,)) == ["initargs[0] (list)"]
