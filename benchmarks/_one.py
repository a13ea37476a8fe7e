"""One measurement in a fresh process: map one workload with one contender (or one oracle grid
point), time the end-to-end call with ``perf_counter``, hash the results, print one JSON line.

Run by ``run.py`` as ``python -m benchmarks._one --workload W --contender C``. Interpreter
start, imports and building the input are outside the timed region, and so is the garbage
collector's debt they leave (``COLLECT_BEFORE_TIMING``); hashing is after the region.
A contender that raises is reported in the JSON (``"status": "error"``), never as a crash.

``--warmup`` runs every available contender once on a tiny workload and reports nothing: it
fills the OS page cache for the imports (and any on-disk cache a library keeps), so the first
recorded repetition is not the only one that pays for a cold disk.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import pickle
import sys
import time
import traceback
from collections.abc import Iterable
from typing import Any

from benchmarks import contenders, oracle, workloads

RESULT_MARKER = "@@BENCH-RESULT@@ "

COLLECT_BEFORE_TIMING = True
"""A full collection runs just before the clock starts. Importing the library leaves about
12k young objects (152 modules) and the collector's middle generation due: the first few
hundred objects any run allocates then set off a collection of all of them, 0.6 ms on the
quiet VM, up to 3 ms under load, inside the timed region of whichever contender imported a
library (never ``serial``'s). Whether it lands there depended on a few dozen allocations:
three small classes added to a module moved it in, and ``trivial_50k`` read 25% slower with
the code they serve switched off (medians of 7 alternating runs, 5.3 against 6.6 ms, 2-core
VM under load); with the collection first, the change itself read 5% faster. Building a
workload's input (200k lists) leaves such debt too."""


def hash_results(results: Iterable[Any]) -> tuple[str, int]:
    """A digest of the results in order, and their count."""
    digest = hashlib.blake2b(digest_size=16)
    n_results = 0
    for result in results:
        payload = pickle.dumps(result, protocol=4)
        digest.update(len(payload).to_bytes(8, "little"))
        digest.update(payload)
        n_results += 1
    return digest.hexdigest(), n_results


def _plan_fields(info: dict[str, Any]) -> dict[str, Any]:
    """Turn ours' plan object (kept in ``info`` by the runner) into JSON-safe fields."""
    if "plan_object" not in info:
        return {}
    plan = info.pop("plan_object")
    if plan is None:
        return {"plan": None, "plan_error": "executor.last_plan is None or missing"}
    fields: dict[str, Any] = {}
    try:
        fields["plan"] = plan.to_dict()
    except Exception as exc:
        fields["plan_error"] = f"last_plan.to_dict() raised {type(exc).__name__}: {exc}"
    try:
        fields["plan_explain"] = plan.explain()
    except Exception as exc:
        fields.setdefault("plan_error", f"last_plan.explain() raised {type(exc).__name__}: {exc}")
    return fields


def measure(workload_name: str, runner_name: str, scale: float = 1.0) -> dict[str, Any]:
    """Time one end-to-end map; every failure becomes an ``error`` record."""
    workload = workloads.get(workload_name, scale)
    try:
        if runner_name.startswith("oracle_"):
            runner = oracle.prepare(oracle.GridPoint.parse(runner_name))
        else:
            runner = contenders.BY_NAME[runner_name].prepare()
        items = workload.items()
        fn = workload.function()
        info: dict[str, Any] = {}
        if COLLECT_BEFORE_TIMING:
            gc.collect()
        start = time.perf_counter()
        results = runner(fn, items, info)
        elapsed_s = time.perf_counter() - start
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        return {
            "status": "error",
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(limit=8),
        }
    record: dict[str, Any] = {"status": "ok", "seconds": elapsed_s}
    record.update(_plan_fields(info))
    if info:
        record["info"] = info
    record["hash"], record["n_results"] = hash_results(results)
    return record


def warm_up() -> dict[str, Any]:
    errors = []
    for contender in contenders.CONTENDERS:
        if contender.missing_requirement() is None:
            record = measure("trivial_20", contender.name)
            if record["status"] != "ok":
                errors.append(f"{contender.name}: {record['error']}")
    return {"status": "ok", "errors": errors}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload")
    parser.add_argument("--contender", help="a contender name or an oracle grid point name")
    parser.add_argument("--scale", type=float, default=1.0, help="times the workload's items")
    parser.add_argument("--warmup", action="store_true")
    args = parser.parse_args(argv)
    if args.warmup:
        record = warm_up()
    elif args.workload is None or args.contender is None:
        parser.error("--workload and --contender are required (or --warmup)")
    else:
        record = measure(args.workload, args.contender, args.scale)
    sys.stdout.write(RESULT_MARKER + json.dumps(record) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
