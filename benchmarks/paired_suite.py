"""The issue-14 suite targets measured in pairs: ours against the oracle's best configurations,
back to back in every round, for a machine too noisy for two medians taken minutes apart.

    python -m benchmarks.paired_suite --from benchmarks/results/latest.json --rounds 10
    python -m benchmarks.paired_suite --from benchmarks/results/quarter.json --rounds 10

For each workload of ``workloads.LONG_NAMES`` (or ``--workloads``) found in the reports of
``run.py`` given (``--from``, one or more of the same ``--scale``, which is used), the
candidates are serial and the ``--top`` grid points with the best medians in each report (a
report from a loaded machine may rank odd points first: give a quieter one beside it).
Every round runs the candidates and ours once each, in a shuffled order, each in a fresh
process (the child ``run.py`` uses); the round's oracle is the fastest candidate of that
round, and the round's ratio is ours over it.
Taking the fastest of several noisy candidates per round favours the oracle, so the ratios
lean against ours. Printed: per workload the median ratio and its quartiles, then the
geometric mean of the medians and the worst median against the issue's bounds for the
report's scale (``run.LONG_*`` at full size, ``run.SHORT_*`` below it).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
from pathlib import Path
from typing import Any

from benchmarks import workloads
from benchmarks.run import (
    DEFAULT_TIMEOUT_S,
    LONG_GEOMEAN,
    LONG_WORST,
    SHORT_GEOMEAN,
    SHORT_WORST,
    STATUS_OK,
    run_child,
)


def candidates(workload: dict[str, Any], top: int) -> list[str]:
    """Serial and the ``top`` grid points with the lowest medians in a ``run.py`` report."""
    grid = (workload.get("oracle") or {}).get("grid", {})
    ranked = sorted(
        (point["median_s"], name)
        for name, point in grid.items()
        if point["status"] == STATUS_OK and point["median_s"] is not None
    )
    return ["serial", *(name for _, name in ranked[:top])]


def pair_rounds(
    name: str, names: list[str], rounds: int, scale: float, rng: random.Random
) -> tuple[list[float], list[str]]:
    """Per complete round, ours' time over the fastest candidate's; and the problems seen."""
    ratios: list[float] = []
    problems: list[str] = []
    for round_no in range(rounds):
        order = [*names, "ours"]
        rng.shuffle(order)
        times: dict[str, float] = {}
        for contender in order:
            record = run_child(
                ["--workload", name, "--contender", contender, "--scale", str(scale)],
                DEFAULT_TIMEOUT_S,
            )
            if record.get("status") != STATUS_OK:
                problems.append(f"round {round_no + 1}: {contender}: {record.get('error')}")
                break
            times[contender] = float(record["seconds"])
        else:
            ratios.append(times["ours"] / min(times[c] for c in names))
    return ratios, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--from", dest="reports", type=Path, nargs="+", required=True, help="run.py JSON(s)"
    )
    parser.add_argument("--rounds", type=int, default=10, help="rounds per workload")
    parser.add_argument("--top", type=int, default=2, help="grid points per workload")
    parser.add_argument("--workloads", help="comma-separated (default: workloads.LONG_NAMES)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.top < 0:
        parser.error("--rounds must be at least 1 and --top at least 0")
    reports = [json.loads(path.read_text()) for path in args.reports]
    scales = {float(report["config"].get("scale") or 1.0) for report in reports}
    if len(scales) != 1:
        parser.error(f"the reports were run at different scales: {sorted(scales)}")
    scale = scales.pop()
    wanted = args.workloads.split(",") if args.workloads else list(workloads.LONG_NAMES)
    by_name: dict[str, list[dict[str, Any]]] = {}
    for report in reports:
        for w in report["workloads"]:
            if not w["skipped"]:
                by_name.setdefault(w["name"], []).append(w)
    rng = random.Random(args.seed)
    load = f", load {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    print(f"paired suite at scale {scale:g}, {args.rounds} rounds{load}")
    medians: dict[str, float] = {}
    for name in wanted:
        if name not in by_name:
            print(f"{name:18s} not in the report")
            continue
        names = list(dict.fromkeys(c for w in by_name[name] for c in candidates(w, args.top)))
        ratios, problems = pair_rounds(name, names, args.rounds, scale, rng)
        for problem in problems:
            print(f"  {name}: {problem}")
        if not ratios:
            print(f"{name:18s} no complete round")
            continue
        ratios.sort()
        low, high = (
            statistics.quantiles(ratios, n=4)[::2] if len(ratios) >= 2 else (ratios[0],) * 2
        )
        medians[name] = statistics.median(ratios)
        print(
            f"{name:18s} ours / fastest of {','.join(names)}: median {medians[name]:.3f}, "
            f"quartiles {low:.3f}-{high:.3f} ({len(ratios)} rounds)",
            flush=True,
        )
    if not medians:
        return 1
    short = scale < 1.0
    goal_mean, goal_worst = (SHORT_GEOMEAN, SHORT_WORST) if short else (LONG_GEOMEAN, LONG_WORST)
    geomean = math.exp(statistics.fmean(math.log(r) for r in medians.values()))
    worst_name = max(medians, key=lambda n: medians[n])
    kind = "short" if short else "long"
    print(
        f"{len(medians)} {kind} jobs: geomean {geomean:.3f} (target <= {goal_mean}: "
        f"{'MET' if geomean <= goal_mean else 'MISSED'}), worst {medians[worst_name]:.3f} "
        f"{worst_name} (target <= {goal_worst}: "
        f"{'MET' if medians[worst_name] <= goal_worst else 'MISSED'})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
