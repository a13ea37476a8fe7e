"""Paired comparison of two or more contenders on one workload: for small differences.

    python -m benchmarks.paired skewed_tail oracle_w2_c16 ours --pairs 40
    python -m benchmarks.paired cpu_5ms_x300 oracle_w2_c19 ours --scale 0.25

Runs the contenders (names of ``run.py``'s contenders or oracle grid points such as
``oracle_w2_c16``) one after another, in a fresh process each, ``--pairs`` times, and prints
each one's median time and the median of its time divided by the first contender's *in the
same round*. On a shared machine whose speed drifts over seconds, a ratio of two runs made
back to back moves less than a ratio of two medians taken minutes apart; the spread of the
paired ratios printed says how far to trust a difference of a few percent.
"""

from __future__ import annotations

import argparse
import statistics

from benchmarks.run import DEFAULT_TIMEOUT_S, run_child


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload")
    parser.add_argument("contenders", nargs="+", help="the first is the reference")
    parser.add_argument("--pairs", type=int, default=20, help="rounds (default 20)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="per child, s")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="times the workload's items (as run.py's)"
    )
    args = parser.parse_args(argv)
    if len(args.contenders) < 2:
        parser.error("name at least two contenders: a reference, then the ones to compare")
    if args.pairs < 1:
        parser.error("--pairs must be at least 1")
    rounds: list[dict[str, float]] = []
    for round_no in range(1, args.pairs + 1):
        times: dict[str, float] = {}
        for name in args.contenders:
            record = run_child(
                ["--workload", args.workload, "--contender", name, "--scale", str(args.scale)],
                args.timeout,
            )
            if record.get("status") != "ok":
                print(f"round {round_no}: {name} failed: {record.get('error')}")
                break
            times[name] = float(record["seconds"])
        else:
            rounds.append(times)
            shown = ", ".join(f"{n} {1e3 * s:.1f} ms" for n, s in times.items())
            print(f"round {round_no}/{args.pairs}: {shown}", flush=True)
    if not rounds:
        print("no complete round")
        return 1
    reference = args.contenders[0]
    print(f"\n{args.workload}: {len(rounds)} complete round(s); ratios to {reference}")
    for name in args.contenders:
        medians_ms = 1e3 * statistics.median(r[name] for r in rounds)
        ratios = sorted(r[name] / r[reference] for r in rounds)
        quartiles = statistics.quantiles(ratios, n=4) if len(ratios) >= 2 else [ratios[0]] * 3
        print(
            f"  {name:16s} median {medians_ms:8.1f} ms   paired ratio: median "
            f"{statistics.median(ratios):.3f}, quartiles {quartiles[0]:.3f}-{quartiles[2]:.3f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
