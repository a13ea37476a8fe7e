"""The Python snippets in ``README.md`` and ``docs/`` run, and print what the docs show.

Each ``python`` block runs in a fresh interpreter, as a reader would paste it. Many blocks use
the reader's own names (``work``, ``items``, ``pool``...); ``PRELUDE`` gives those small
concrete values, so a block runs as written, never edited. A block that cannot run here (a
remote cluster, TLS files) is listed in ``NOT_RUNNABLE`` with the reason, and a new block
that is not runnable fails this test until it is listed. Where a doc shows a block's output,
the output's shape (its fixed lines: ``plan:``, ``work:``, ``machine:``...) must match what the
block prints now, so a sample whose lines the code no longer prints fails here; the figures in
them are not compared (they differ from run to run). No time is asserted.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

PRELUDE = textwrap.dedent(
    """
    from amorsize_executor import AdaptiveProcessPoolExecutor as ProcessPoolExecutor


    def work(x):
        return x * x


    def score(x):
        return x + 1


    def fetch(url):
        return len(url)


    def solve_one(system):
        return sum(system)


    items = list(range(100))
    other_items = list(range(10))
    batches = [list(range(20)), list(range(20))]
    systems = [[1.0, 2.0], [3.0, 4.0]]
    urls = ["data:,one", "data:,two"]
    with ProcessPoolExecutor() as pool:
        list(pool.map(work, items))
    """
)
"""The reader's names the snippets use, with small values: a finished ``pool`` included."""

NOT_RUNNABLE = {
    ("docs/dask.md", 'client = Client("tcp://10.0.0.5:8786")'): "needs a remote cluster",
    ("docs/dask.md", 'client = Client("tls://10.0.0.5:8786"'): "needs TLS files and a cluster",
    ("docs/dask.md", 'backend="dask", client=client) as ex:\n    results'): "needs a client",
    ("docs/dask.md", "DaskBackend(client, wait_for_workers_s=60)"): "needs a client",
}
"""``(doc, a line of the block)``: blocks that need what a test machine does not have."""

SNIPPET_TIMEOUT_S = 180
"""Only turns a hang into a failure; the snippets take seconds."""


def _blocks(doc: Path) -> list[tuple[int, str, str]]:
    """``(line, language, text)`` of every fenced block in ``doc``."""
    text = doc.read_text(encoding="utf-8")
    return [
        (text[: m.start()].count("\n") + 1, m.group(1), m.group(2))
        for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.S | re.M)
    ]


SHOWN_OUTPUT = {
    ("docs/user-guide.md", "def checksum(seed):"): "the drop-in switch",
    ("docs/cost-model.md", "print(plan_map("): "prints:",
    ("docs/dask.md", "LocalCluster(n_workers=2"): "shared with other jobs",
}
"""``(doc, a line of the block)``: the block whose output the doc shows, and the text just
before that output (the next plain block after it is the output)."""


def _shown_output(doc: Path, code: str) -> str | None:
    name = doc.relative_to(ROOT).as_posix()
    lead = next((v for (d, line), v in SHOWN_OUTPUT.items() if d == name and line in code), None)
    if lead is None:
        return None
    text = doc.read_text(encoding="utf-8")
    after = text[text.index(lead) :]
    match = re.search(r"^```\n(.*?)^```", after, re.S | re.M)
    assert match is not None, f"{name}: no output block after {lead!r}"
    return match.group(1)


def _snippets() -> list[tuple[str, int, str, str | None]]:
    """``(doc, line, code, the output the doc shows for it or None)``."""
    return [
        (doc.relative_to(ROOT).as_posix(), line, code, _shown_output(doc, code))
        for doc in DOCS
        for line, language, code in _blocks(doc)
        if language == "python"
    ]


SNIPPETS = _snippets()


def _why_not_runnable(doc: str, code: str) -> str | None:
    return next(
        (why for (d, line), why in NOT_RUNNABLE.items() if d == doc and line in code), None
    )


PLAN_LABELS = ("plan:", "work:", "data:", "machine:", "predicted:", "actual:")
"""Lines every report of its kind has; reasons and notes depend on the run (a loaded
machine may switch a pool to serial part-way), so their count is not compared."""


def _shape(output: str) -> list[str]:
    """The labels of an ``explain()`` report's fixed lines, in order."""
    labels = []
    for line in output.splitlines():
        match = re.match(r"\s*([a-z_ ]+:)", line)
        if match and match.group(1).strip() in PLAN_LABELS:
            labels.append(match.group(1).strip())
    return labels


def test_the_docs_have_snippets_and_the_quick_start_is_among_them() -> None:
    assert len(SNIPPETS) >= 15
    assert sum(shown is not None for _, _, _, shown in SNIPPETS) == len(SHOWN_OUTPUT)
    assert any("pool.last_plan.explain()" in code for doc, _, code, _ in SNIPPETS)


@pytest.mark.timeout(SNIPPET_TIMEOUT_S + 30)
@pytest.mark.parametrize(
    ("doc", "line", "code", "shown"),
    SNIPPETS,
    ids=[f"{doc}:{line}" for doc, line, _, _ in SNIPPETS],
)
def test_snippet_runs_and_prints_what_the_doc_shows(
    doc: str, line: int, code: str, shown: str | None, tmp_path: Path
) -> None:
    why = _why_not_runnable(doc, code)
    if why is not None:
        pytest.skip(why)
    script = tmp_path / "snippet.py"
    script.write_text(PRELUDE + "\n" + code, encoding="utf-8")
    completed = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=SNIPPET_TIMEOUT_S,
        cwd=tmp_path,
        check=False,
    )
    assert completed.returncode == 0, f"{doc}:{line} failed:\n{completed.stderr[-3000:]}"
    if shown is not None:
        printed = completed.stdout + completed.stderr
        assert _shape(printed) == _shape(shown), (
            f"{doc}:{line} prints, now:\n{printed}\nthe doc shows:\n{shown}"
        )
