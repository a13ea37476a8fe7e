"""Our executor on the dask backend against dask's own ways to map, on one local cluster.

    python -m benchmarks.dask_bench               # from the repository root; ~1-2 min
    python -m benchmarks.dask_bench --reps 5 --small-n 2000 --large-n 150

One ``LocalCluster`` (2 worker processes x 1 thread, 127.0.0.1 only) serves every contender;
its facts are measured once, outside the timed region, as a long-lived executor would.
Contenders, each timed end to end (executor creation, the map, results into a list,
shutdown; the cluster and client stay up):

- ``serial``: ``list(map(fn, items))`` in this process, the reference for the result check;
- ``ours``: ``AdaptiveProcessPoolExecutor(backend=DaskBackend(client))``, planning freely;
- ``ours isolate``: the same with ``isolate=True``, so the work always goes to the cluster
  (chunked);
- ``executor.map``: ``client.get_executor(pure=False).map`` (one task per item);
- ``client.map``: ``client.gather(client.map(fn, items, pure=False))`` (one task per item).

``pure=False`` everywhere, so no repetition can reuse an earlier one's results from the
cluster's memory. Items are sized so the per-item dask contenders take ~1-3 s here: dask pays
milliseconds per task, so the small workload has few items and ours runs it serially.
Median of ``--reps`` repetitions, contenders in a different order each repetition. Results
must equal serial's; a mismatch prints FAIL and makes the exit status 1.

What this module must not do: run in the test suite (it times things), or bind anything but
127.0.0.1.
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make `benchmarks` importable (workers too)
    sys.path.insert(0, str(ROOT))

from benchmarks.workloads import SPIN_ITERS_PER_MS, spin  # noqa: E402

SMALL_ITERS = SPIN_ITERS_PER_MS // 20
"""About 50 µs of pure-Python CPU per item on the reference machine."""

LARGE_ITERS = SPIN_ITERS_PER_MS * 20
"""About 20 ms of pure-Python CPU per item on the reference machine."""


def small_item(x: int) -> int:
    """~50 µs of CPU; the result depends on the item, so order mistakes show."""
    return spin(SMALL_ITERS + x % 8) ^ x


def large_item(x: int) -> int:
    """~20 ms of CPU."""
    return spin(LARGE_ITERS + x % 8) ^ x


Fn = Callable[[int], int]
Runner = Callable[[Fn, list[int]], list[int]]


@dataclass
class Row:
    workload: str
    n_items: int
    contender: str
    times_s: list[float] = field(default_factory=list)
    plan: str = ""
    ok: bool = True

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s) if self.times_s else float("nan")


def make_runners(client: Any, facts: Any) -> dict[str, tuple[Runner, dict[str, str]]]:
    """Each contender's runner; the dict receives our plan, to print beside the time."""
    from amorsize_executor import AdaptiveProcessPoolExecutor
    from amorsize_executor._dask_backend import DaskBackend

    def serial(fn: Fn, items: list[int]) -> list[int]:
        return list(map(fn, items))

    def ours_with(info: dict[str, str], **options: Any) -> Runner:
        def run(fn: Fn, items: list[int]) -> list[int]:
            with AdaptiveProcessPoolExecutor(
                backend=DaskBackend(client), system_facts=facts, **options
            ) as ex:
                results = list(ex.map(fn, items))
                plan = ex.last_plan
            if plan is not None:
                info["plan"] = (
                    "serial"
                    if plan.mode == "serial"
                    else f"{plan.n_workers} workers, chunks {plan.chunksize}"
                    + (f" ({plan.outcome.n_chunks} sent)" if plan.outcome else "")
                )
            return results

        return run

    def executor_map(fn: Fn, items: list[int]) -> list[int]:
        ex = client.get_executor(pure=False)
        try:
            return list(ex.map(fn, items))
        finally:
            ex.shutdown()

    def client_map(fn: Fn, items: list[int]) -> list[int]:
        futures = client.map(fn, items, pure=False)
        results: list[int] = client.gather(futures)
        return results

    ours_info: dict[str, str] = {}
    isolate_info: dict[str, str] = {}
    return {
        "serial": (serial, {}),
        "ours": (ours_with(ours_info), ours_info),
        "ours isolate": (ours_with(isolate_info, isolate=True), isolate_info),
        "executor.map": (executor_map, {}),
        "client.map": (client_map, {}),
    }


def run(reps: int, sizes: dict[str, int]) -> list[Row]:
    dd: Any = importlib.import_module("distributed")  # optional; its API is untyped

    # Workers import the workload functions by reference, as they would a user's installed
    # module: take them from the importable module, not from __main__.
    module = importlib.import_module("benchmarks.dask_bench")
    workloads: dict[str, Fn] = {"small_50us": module.small_item, "large_20ms": module.large_item}

    from amorsize_executor._dask_backend import read_cluster_facts

    with (
        dd.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"},
        ) as cluster,
        dd.Client(cluster, set_as_default=False) as client,
    ):
        facts = read_cluster_facts(client)
        print(
            f"cluster: {facts.n_logical_cores} worker threads, task round trip "
            f"{facts.task_roundtrip_s * 1e3:.1f} ms, "
            f"transfer {facts.ipc_bytes_per_s / 1e6:.0f} MB/s",
            flush=True,
        )
        runners = make_runners(client, facts)
        rows: list[Row] = []
        for name, fn in workloads.items():
            n_items = sizes[name]
            items = list(range(n_items))
            expected = list(map(fn, items))  # warms this process's caches too
            fn(0)
            client.gather(client.map(fn, range(4), pure=False))  # workers import fn once
            by_name = {c: Row(name, n_items, c) for c in runners}
            for rep in range(reps):
                order = list(runners)
                shift = rep % len(order)
                for contender in order[shift:] + order[:shift]:
                    runner, info = runners[contender]
                    start_s = time.perf_counter()
                    results = runner(fn, items)
                    elapsed_s = time.perf_counter() - start_s
                    row = by_name[contender]
                    row.times_s.append(elapsed_s)
                    row.plan = info.get("plan", row.plan)
                    row.ok = row.ok and results == expected
                    print(f"  {name} rep {rep + 1} {contender}: {elapsed_s:.3f} s", flush=True)
            rows.extend(by_name.values())
        return rows


def format_table(rows: list[Row]) -> str:
    ours = {r.workload: r.median_s for r in rows if r.contender == "ours"}
    head = (
        f"{'workload':<12} {'items':>6}  {'contender':<13} {'median s':>9} "
        f"{'x ours':>7}  {'check':<5} plan"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        ratio = r.median_s / ours[r.workload] if ours.get(r.workload) else float("nan")
        lines.append(
            f"{r.workload:<12} {r.n_items:>6}  {r.contender:<13} {r.median_s:>9.3f} "
            f"{ratio:>7.2f}  {'ok' if r.ok else 'FAIL':<5} {r.plan}"
        )
    lines.append("x ours: median time over ours (above 1: ours is faster)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--small-n", type=int, default=1000, help="items of ~50 µs")
    parser.add_argument("--large-n", type=int, default=100, help="items of ~20 ms")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    rows = run(args.reps, {"small_50us": args.small_n, "large_20ms": args.large_n})
    print()
    print(format_table(rows))
    # Other jobs on the machine slow every contender, the cluster's workers most.
    print(f"load average: {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
