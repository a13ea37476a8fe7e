"""Two versions of the library, side by side: is a change faster, slower, or the same?

    python -m benchmarks.versions 0fb1d92 HEAD --rounds 5
    python -m benchmarks.versions main WORKTREE --workloads skewed_tail,generator_1ms

Each argument is a git revision (checked out into a temporary worktree) or the word
``WORKTREE`` (this checkout's ``src`` as it is now). For every workload, each round runs
``ours`` once from each version, back to back in alternating order, each in a fresh process
(``benchmarks/_one.py``, the same child the main suite uses). It prints each version's median
and the median and quartiles of the per-round ratio (second version / first): on a shared
machine a ratio of two runs made seconds apart moves much less than two medians taken minutes
apart, and the quartiles say how far a difference of a few percent can be trusted.

Used for refactors and contract fixes that should change no timing: "unchanged within the
noise" means the paired quartiles straddle 1.0.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from benchmarks import workloads
from benchmarks.run import DEFAULT_TIMEOUT_S, REPO_ROOT, run_child

WORKTREE = "WORKTREE"


@contextlib.contextmanager
def _source_of(version: str) -> Iterator[Path]:
    """The ``src`` folder of ``version``: this checkout's, or a temporary worktree's."""
    if version == WORKTREE:
        yield REPO_ROOT / "src"
        return
    with tempfile.TemporaryDirectory(prefix="amorsize-version-") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(
            ["git", "-C", str(REPO_ROOT), "worktree", "add", "-q", "--detach", str(tree), version],
            check=True,
        )
        try:
            yield tree / "src"
        finally:
            subprocess.run(
                ["git", "-C", str(REPO_ROOT), "worktree", "remove", "--force", str(tree)],
                check=False,
            )


def _quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


def compare(
    names: list[str],
    sources: tuple[Path, Path],
    labels: tuple[str, str],
    rounds: int,
    timeout_s: float,
    scale: float = 1.0,
) -> list[str]:
    """Run the rounds; return the table's lines."""
    lines = [
        f"{'workload':16s} {labels[0][:12]:>12s} {labels[1][:12]:>12s}   ratio (2nd/1st): median"
        "  quartiles      plans (2nd)"
    ]
    for name in names:
        times: tuple[list[float], list[float]] = ([], [])
        plans: set[str] = set()
        for round_no in range(rounds):
            order = (0, 1) if round_no % 2 == 0 else (1, 0)
            record_of: dict[int, dict[str, object]] = {}
            for side in order:
                record_of[side] = run_child(
                    ["--workload", name, "--contender", "ours", "--scale", str(scale)],
                    timeout_s,
                    source_dir=sources[side],
                )
            if any(r.get("status") != "ok" for r in record_of.values()):
                errors = [
                    str(r.get("error")) for r in record_of.values() if r.get("status") != "ok"
                ]
                print(f"{name} round {round_no + 1}: failed: {errors}", flush=True)
                continue
            if record_of[0].get("hash") != record_of[1].get("hash"):
                print(f"{name} round {round_no + 1}: FAIL, the two versions' results differ")
                continue
            for side in (0, 1):
                times[side].append(float(record_of[side]["seconds"]))  # type: ignore[arg-type]
            plan = record_of[1].get("plan")
            if isinstance(plan, dict):
                plans.add(f"{plan.get('mode')}/{plan.get('n_workers')}/{plan.get('chunksize')}")
            print(
                f"{name} round {round_no + 1}/{rounds}: "
                f"{1e3 * times[0][-1]:.1f} ms vs {1e3 * times[1][-1]:.1f} ms",
                flush=True,
            )
        if not times[0]:
            lines.append(f"{name:16s} no complete round")
            continue
        ratios = sorted(b / a for a, b in zip(*times, strict=True))
        low, high = _quartiles(ratios)
        lines.append(
            f"{name:16s} {1e3 * statistics.median(times[0]):10.1f}ms "
            f"{1e3 * statistics.median(times[1]):10.1f}ms   "
            f"{statistics.median(ratios):6.3f}  {low:.3f}-{high:.3f}   {','.join(sorted(plans))}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", help=f"a git revision, or {WORKTREE}")
    parser.add_argument("second", help=f"a git revision, or {WORKTREE}")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per workload (default 5)")
    parser.add_argument(
        "--workloads",
        default=",".join(w.name for w in workloads.WORKLOADS),
        help="comma-separated workload names (default: all)",
    )
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="per child, s")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="times every workload's items (as run.py's)"
    )
    args = parser.parse_args(argv)
    names = [n for n in args.workloads.split(",") if n]
    unknown = [n for n in names if n not in workloads.BY_NAME]
    if unknown:
        parser.error(f"unknown workloads {unknown}; known: {sorted(workloads.BY_NAME)}")
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    with _source_of(args.first) as first, _source_of(args.second) as second:
        lines = compare(
            names,
            (first, second),
            (args.first, args.second),
            args.rounds,
            args.timeout,
            args.scale,
        )
    print()
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
