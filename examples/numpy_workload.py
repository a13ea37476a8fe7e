"""Numpy matrix work per item: build a random symmetric system, solve it, take its spectrum.

numpy's linear algebra runs in a native BLAS library that starts its own threads, one per
core by default. Two things follow, and the output shows both:

* importing numpy makes this process multi-threaded, so new pools are started with
  ``forkserver`` rather than ``fork`` (see ``explain()``'s machine line);
* each worker's BLAS is limited to its share of the cores (cores // workers threads), so
  that workers x threads does not oversubscribe the machine; the threads each call saw are
  printed at the end (in the calling process, where the probe runs, BLAS keeps its own count).

If numpy is not installed the example says so and exits with status 0.

    python examples/numpy_workload.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter

try:
    import numpy as np
except ImportError:  # reported in main(), so that the example still exits cleanly
    np = None  # type: ignore[assignment]

from _serial_baseline import plain_serial_s, serial_comparison

from amorsize_executor import AdaptiveProcessPoolExecutor as ProcessPoolExecutor


def blas_threads() -> int | None:
    """Threads the BLAS library loaded in this process may use, or ``None`` if unknown."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    counts = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
    return max(counts) if counts else None


def analyse(seed: int, size: int) -> tuple[float, float, int | None]:
    """Solve a random symmetric positive-definite system and find its extreme eigenvalues.

    Returns the residual of the solution, the condition number, and the BLAS thread count
    this call ran with.
    """
    assert np is not None
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((size, size))
    spd = a @ a.T + size * np.eye(size)
    b = rng.standard_normal(size)
    x = np.linalg.solve(spd, b)
    residual = float(np.linalg.norm(spd @ x - b))
    eigenvalues = np.linalg.eigvalsh(spd)
    return residual, float(eigenvalues[-1] / eigenvalues[0]), blas_threads()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small input: a few seconds")
    args = parser.parse_args()
    if np is None:
        print("skipped: numpy is not installed; `pip install numpy` to run this example")
        return 0
    n_items, size = (24, 200) if args.quick else (200, 400)
    print(f"numpy {np.__version__}; {n_items} systems of {size}x{size}")

    started = time.perf_counter()
    with ProcessPoolExecutor() as pool:
        results = list(pool.map(analyse, range(n_items), [size] * n_items))
        elapsed = time.perf_counter() - started
        plan = pool.last_plan
        assert plan is not None
        print(plan.explain())

    worst_residual = max(residual for residual, _, _ in results)
    conditions = [condition for _, condition, _ in results]
    threads = Counter(threads for _, _, threads in results)
    print(
        f"solved {len(results)} systems in {elapsed:.2f} s; largest residual "
        f"{worst_residual:.1e}; condition numbers {min(conditions):.2f} to {max(conditions):.2f}"
    )
    serial_s = plain_serial_s(__file__, "analyse", range(n_items), [size] * n_items)
    print(serial_comparison(elapsed, serial_s))
    print(
        "BLAS threads per call (threads: calls): "
        + ", ".join(f"{n}: {count}" for n, count in sorted(threads.items(), key=str))
        + f"; this process: {blas_threads()}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
