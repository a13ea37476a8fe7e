"""CPython 3.13's own ``test.test_concurrent_futures``, public-contract part, with
``AdaptiveProcessPoolExecutor`` substituted for ``ProcessPoolExecutor`` (see ``run.py``).

Each mode (start method, with and without ``isolate=True``) runs in its own interpreter (the
suites start forkservers, managers and module clean-ups that must not leak into this one);
the six run at once, since their tests mostly wait, and each test below reads one summary.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .run import IN_CALLER_CRASHES, MODES, SUMMARY_MARK

ONLY_ON_313 = [
    pytest.mark.skipif(
        sys.version_info[:2] != (3, 13),
        reason="the yardstick is CPython 3.13's test.test_concurrent_futures; other versions' "
        "suites test other contracts (this runs in CI's 3.13 venv)",
    ),
    pytest.mark.skipif(
        importlib.util.find_spec("test.test_concurrent_futures") is None,
        reason="this interpreter was installed without its test suite (the 'test' package)",
    ),
    pytest.mark.timeout(900),
]

ROOT = Path(__file__).resolve().parents[2]

RUNS = [(mode, isolate) for mode in MODES for isolate in (False, True)]

RUN_DEADLINE_S = 600.0
"""Turns a hung suite into a failure; a mode takes well under a minute."""


def _label(mode: str, isolate: bool) -> str:
    return f"{mode}-isolate" if isolate else mode


@pytest.fixture(scope="module")
def summaries() -> Iterator[dict[tuple[str, bool], dict[str, Any]]]:
    env = dict(os.environ)
    # The child imports the package this test imports (a checkout on PYTHONPATH, or the
    # installed one), and CPython's suite from the interpreter's stdlib.
    package_root = str(Path(__import__("amorsize_executor").__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (package_root, str(ROOT), env.get("PYTHONPATH")) if p
    )
    procs = {
        run: subprocess.Popen(
            [sys.executable, "-m", "tests.cpython_contract.run", run[0]]
            + (["--isolate"] if run[1] else []),
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for run in RUNS
    }
    out: dict[tuple[str, bool], dict[str, Any]] = {}
    try:
        for run, proc in procs.items():
            stdout, stderr = proc.communicate(timeout=RUN_DEADLINE_S)
            lines = [line for line in stdout.splitlines() if line.startswith(SUMMARY_MARK)]
            if not lines:
                out[run] = {"crashed": f"exit code {proc.returncode}\n{stderr[-4000:]}"}
            else:
                out[run] = json.loads(lines[-1][len(SUMMARY_MARK) :])
                out[run]["stderr_tail"] = stderr[-4000:]
        yield out
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_each_test_skipped_for_an_in_caller_crash_is_named_in_the_differences() -> None:
    text = (ROOT / "docs" / "differences.md").read_text()
    for name in IN_CALLER_CRASHES:
        assert f"`{name}`" in text, f"docs/differences.md does not name {name}"


@pytest.mark.parametrize(("mode", "isolate"), RUNS, ids=[_label(*r) for r in RUNS])
@ONLY_ON_313[0]
@ONLY_ON_313[1]
@ONLY_ON_313[2]
def test_cpython_process_pool_contract(
    summaries: dict[tuple[str, bool], dict[str, Any]], mode: str, isolate: bool
) -> None:
    summary = summaries[(mode, isolate)]
    assert "crashed" not in summary, f"the {_label(mode, isolate)} suite died: {summary}"
    # The substitution happened: every test's executor was ours.
    expected_type = (
        "IsolatedAdaptiveProcessPoolExecutor" if isolate else "AdaptiveProcessPoolExecutor"
    )
    assert summary["executor_types"] == [expected_type]
    assert summary["n_run"] > 30, summary
    assert not summary["unexpected_failures"], (
        f"CPython contract tests failed ({_label(mode, isolate)}):\n"
        + "\n".join(f"{name}: {why}" for name, why in summary["failed"].items())
        + "\n"
        + summary["stderr_tail"]
    )
    assert not summary["unexpected_passes"], (
        "these tests now pass: remove them from run.expected_failures: "
        f"{summary['unexpected_passes']}"
    )
