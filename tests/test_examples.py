"""Every script in ``examples/`` runs with ``--quick``, exits 0 and prints a plan and what
plain serial code would have taken.

The scripts are found by glob, so a new example is tested without touching this file. Each
runs in a fresh interpreter, as a user would run it. An example that cannot run here (a
missing optional package) prints a line starting with ``skipped:`` and exits 0; the test is
then skipped with that line as the reason. Nothing here measures time: the timeout only
turns a hang into a failure, and it is generous because the machine may be loaded.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES_DIR = ROOT / "examples"
EXAMPLES = sorted(p for p in EXAMPLES_DIR.glob("*.py") if not p.name.startswith("_"))

RUN_TIMEOUT_S = 240
"""Seconds one ``--quick`` run may take before it counts as hung (they take seconds)."""


def test_the_examples_are_found() -> None:
    assert EXAMPLES_DIR / "demo.py" in EXAMPLES
    assert len(EXAMPLES) >= 5


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda path: path.name)
def test_example_has_a_main_guard_and_a_quick_flag(script: Path) -> None:
    source = script.read_text(encoding="utf-8")
    tree = ast.parse(source, filename=str(script))
    guards = [
        node
        for node in tree.body
        if isinstance(node, ast.If)
        and isinstance(node.test, ast.Compare)
        and isinstance(node.test.left, ast.Name)
        and node.test.left.id == "__name__"
        and any(
            isinstance(c, ast.Constant) and c.value == "__main__" for c in node.test.comparators
        )
    ]
    assert guards, f'{script.name} needs an `if __name__ == "__main__":` guard'
    assert '"--quick"' in source, f"{script.name} needs a --quick option"


@pytest.mark.timeout(RUN_TIMEOUT_S + 30)
@pytest.mark.parametrize("script", EXAMPLES, ids=lambda path: path.name)
def test_example_runs_quick_and_prints_its_plan(script: Path) -> None:
    completed = subprocess.run(
        [sys.executable, str(script), "--quick"],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        cwd=ROOT,
        check=False,
    )
    output = f"--- stdout\n{completed.stdout}\n--- stderr\n{completed.stderr}"
    assert completed.returncode == 0, f"{script.name} exited with {completed.returncode}\n{output}"
    skipped = [line for line in completed.stdout.splitlines() if line.startswith("skipped:")]
    if skipped:
        pytest.skip(f"{script.name}: {skipped[0]}")
    assert "plan:" in completed.stdout, f"{script.name} printed no plan\n{output}"
    # The whole truth: what plain serial code would have taken, beside the example's time.
    assert "plain serial code" in completed.stdout or "time: serial" in completed.stdout, (
        f"{script.name} printed no plain serial time\n{output}"
    )
