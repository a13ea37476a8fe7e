"""Run CPython 3.13's own ``test.test_concurrent_futures`` against this executor.

The public-contract tests of ``ProcessPoolExecutor`` (the tests the stdlib generates for its
process-pool mixins) are imported from the running interpreter's stdlib (never copied here),
and each generated test class of the mode gets ``executor_type`` set to
``AdaptiveProcessPoolExecutor`` (or, with ``--isolate``, to a subclass that passes
``isolate=True``). The scripts some tests run in a child interpreter import the executor by
name from ``concurrent.futures``; a prelude puts it there.

    PYENV_VERSION=3.13.0 python3.13 -m tests.cpython_contract.run fork [--isolate] [-v]

Prints one JSON line (counts, failures, the executor types the tests saw) and exits 0 when
the failures are exactly the ones ``expected_failures`` names for that mode, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import unittest
from collections.abc import Iterator
from typing import Any

import amorsize_executor
from amorsize_executor import AdaptiveProcessPoolExecutor

MODES = ("fork", "forkserver", "spawn")

SUMMARY_MARK = "cpython-contract-summary: "
"""Starts the stdout line with the JSON summary (tests print too)."""

MODULES = (
    "test_process_pool",
    "test_shutdown",
    "test_wait",
    "test_as_completed",
    "test_deadlock",
    "test_init",
)
"""The modules of ``test.test_concurrent_futures`` with tests for the process-pool mixins
(``test_future`` and ``test_thread_pool`` test no process pool)."""

MIXIN_OF_MODE = {
    "fork": "ProcessPoolForkMixin",
    "forkserver": "ProcessPoolForkserverMixin",
    "spawn": "ProcessPoolSpawnMixin",
}

EXCLUDED: dict[str, str] = {
    # Tests of the stdlib pool's private internals, not of the public contract.
    "test_killed_child": "reads executor._processes (the stdlib pool's private worker table)",
    "test_saturation": "reads executor._processes and executor._max_workers",
    "test_idle_process_reuse_one": "reads executor._processes",
    "test_idle_process_reuse_multiple": "reads executor._processes",
    "test_max_tasks_per_child": "reads executor._processes",
    "test_max_tasks_per_child_defaults_to_spawn_context": "reads executor._mp_context",
    "test_python_finalization_error": (
        "patches threading._start_joinable_thread to fail the stdlib pool's second thread "
        "start: it tests how the stdlib's own threads are created"
    ),
    "test_processes_terminate": "reads executor._processes",
    "test_shutdown_deadlock_pickle": "reads executor._executor_manager_thread",
    "test_gh105829_should_not_deadlock_if_wakeup_pipe_full": (
        "patches the stdlib's private _ExecutorManagerThread and _ThreadWakeup"
    ),
    "FailingInitializerMixin.test_initializer": (
        "polls executor._broken (the stdlib pool's private flag) until it is set"
    ),
    # Tests that never use the substituted class.
    "test_context_manager_shutdown": (
        "builds futures.ProcessPoolExecutor itself (not executor_type) and reads _processes"
    ),
    "test_del_shutdown": (
        "builds futures.ProcessPoolExecutor itself and reads _executor_manager_thread, "
        "_processes, _call_queue"
    ),
    "test_shutdown_no_wait": (
        "builds futures.ProcessPoolExecutor itself and reads _executor_manager_thread, "
        "_processes, _call_queue"
    ),
    "test_max_workers_too_large": "Windows only, and builds futures.ProcessPoolExecutor",
    # Broken for every process pool: skipped for the stdlib's.
    "test_hang_gh83386": (
        "skipped for the stdlib's ProcessPoolExecutor (cpython#83386); for any other process "
        "pool class its script calls multiprocessing.set_start_method without importing "
        "multiprocessing, a NameError"
    ),
}
"""Test name (or ``Mixin.test`` name) -> why it is not part of the contract we hold to."""

IN_CALLER_CRASHES: dict[str, str] = {
    "test_crash_big_data": (
        "map(fn) where fn segfaults: on the in-caller path the probe runs fn in the calling "
        "process, which dies (docs/differences.md; isolate=True removes it)"
    ),
}
"""Tests where ``fn`` kills the calling process by design when it runs there: not run
without ``isolate=True`` (they would kill this runner)."""


def expected_failures(mode: str, *, isolate: bool) -> dict[str, str]:
    """Tests known to fail in this mode, with the cause; the run fails if one passes."""
    return dict(KNOWN_FAILURES)


KNOWN_FAILURES: dict[str, str] = {}
"""Contract tests that fail today in every mode, with the cause (none, when done)."""


class IsolatedAdaptiveProcessPoolExecutor(AdaptiveProcessPoolExecutor):
    """``AdaptiveProcessPoolExecutor`` with ``isolate=True`` unless told otherwise."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("isolate", True)
        super().__init__(*args, **kwargs)


_PRELUDE = """\
import concurrent.futures as _cf
import amorsize_executor as _ae
class IsolatedAdaptiveProcessPoolExecutor(_ae.AdaptiveProcessPoolExecutor):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("isolate", True)
        super().__init__(*args, **kwargs)
_cf.AdaptiveProcessPoolExecutor = _ae.AdaptiveProcessPoolExecutor
_cf.IsolatedAdaptiveProcessPoolExecutor = IsolatedAdaptiveProcessPoolExecutor
"""
"""Put the executor classes where the child scripts import them from (by class name)."""


def _with_prelude(assert_python: Any) -> Any:
    def run(*args: str, **env: Any) -> Any:
        if len(args) >= 2 and args[0] == "-c":
            args = ("-c", _PRELUDE + args[1], *args[2:])
        # Neither -I nor -E: the child must import the package this runner imports.
        env.setdefault("__isolated", False)
        if "PYTHONPATH" in os.environ:
            env.setdefault("PYTHONPATH", os.environ["PYTHONPATH"])
        return assert_python(*args, **env)

    return run


def _test_name(test: unittest.TestCase) -> str:
    return f"{type(test).__name__}.{test._testMethodName}"


def _excluded_reason(test: unittest.TestCase, mixin_names: set[str], isolate: bool) -> str | None:
    method = test._testMethodName
    for name in (method, *(f"{m}.{method}" for m in mixin_names)):
        if name in EXCLUDED:
            return EXCLUDED[name]
        if not isolate and name in IN_CALLER_CRASHES:
            return IN_CALLER_CRASHES[name]
    return None


def build_suite(
    mode: str, *, isolate: bool, seen: list[type]
) -> tuple[unittest.TestSuite, dict[str, str]]:
    """The substituted tests of ``mode``, and the excluded ones with why."""
    import importlib

    executor_type = IsolatedAdaptiveProcessPoolExecutor if isolate else AdaptiveProcessPoolExecutor
    util = importlib.import_module("test.test_concurrent_futures.util")
    mixin = getattr(util, MIXIN_OF_MODE[mode])
    loader = unittest.TestLoader()
    suite = unittest.TestSuite()
    excluded: dict[str, str] = {}
    for module_name in MODULES:
        module = importlib.import_module(f"test.test_concurrent_futures.{module_name}")
        if hasattr(module, "assert_python_ok"):
            module.assert_python_ok = _with_prelude(module.assert_python_ok)
        for cls in list(vars(module).values()):
            if not (isinstance(cls, type) and issubclass(cls, mixin)):
                continue
            if not issubclass(cls, unittest.TestCase):
                continue
            original_setup = cls.setUp

            def set_up(self: Any, _setup: Any = original_setup) -> None:
                _setup(self)
                seen.append(type(self.executor))

            # Changed in place (this process runs one mode only), not subclassed: the
            # generated class stays importable by its name, so its methods that tests
            # submit pickle by reference, as with the stdlib.
            cls.executor_type = executor_type
            cls.setUp = set_up
            mixin_names = {base.__name__ for base in cls.__mro__}
            for test in loader.loadTestsFromTestCase(cls):
                reason = _excluded_reason(test, mixin_names, isolate)
                if reason is None:
                    suite.addTest(test)
                else:
                    excluded[_test_name(test)] = reason
    return suite, excluded


def _flatten(suite: unittest.TestSuite) -> Iterator[unittest.TestCase]:
    for test in suite:
        if isinstance(test, unittest.TestSuite):
            yield from _flatten(test)
        else:
            yield test


def run(mode: str, *, isolate: bool, verbosity: int = 0) -> dict[str, Any]:
    """Run the suite of ``mode``; the summary the pytest wrapper reads."""
    seen: list[type] = []
    suite, excluded = build_suite(mode, isolate=isolate, seen=seen)
    util = __import__("test.test_concurrent_futures.util", fromlist=["setup_module"])
    util.setup_module()
    stream = sys.stderr if verbosity else open("/dev/null", "w")  # noqa: SIM115
    result = unittest.TextTestRunner(stream=stream, verbosity=verbosity).run(suite)
    unittest.case.doModuleCleanups()
    failed = {_test_name(t): text.strip().splitlines()[-1] for t, text in result.failures}
    failed.update({_test_name(t): text.strip().splitlines()[-1] for t, text in result.errors})
    for test in result.unexpectedSuccesses:
        failed[_test_name(test)] = "unexpected success"
    expected = expected_failures(mode, isolate=isolate)
    failed_names = {name.split(".", 1)[1] for name in failed}
    return {
        "mode": mode,
        "isolate": isolate,
        "package": amorsize_executor.__file__,
        "n_run": result.testsRun,
        "n_failed": len(failed),
        "n_skipped": len(result.skipped),
        "n_passed": result.testsRun - len(failed) - len(result.skipped),
        "failed": failed,
        "skipped": {_test_name(t): why for t, why in result.skipped},
        "excluded": excluded,
        "executor_types": sorted({t.__name__ for t in seen}),
        "unexpected_failures": sorted(failed_names - set(expected)),
        "unexpected_passes": sorted(set(expected) - failed_names),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=MODES)
    parser.add_argument("--isolate", action="store_true")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    args = parser.parse_args(argv)
    summary = run(args.mode, isolate=args.isolate, verbosity=args.verbose)
    print("\n" + SUMMARY_MARK + json.dumps(summary), flush=True)
    ok = not summary["unexpected_failures"] and not summary["unexpected_passes"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
