"""The main job: real work mapped four ways, each timed against plain serial code and the
stdlib ProcessPoolExecutor, with the executor's decision printed.

    python3 examples/demo.py [--quick]
"""

from __future__ import annotations

import argparse
import hashlib
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from amorsize_executor import AdaptiveProcessPoolExecutor


def cheap(x: int) -> int:
    """A few arithmetic operations: far too little work to ship to another process."""
    return (x * x + 7) % 1_000_003


def expensive(seed: int) -> str:
    """About 5 ms of hashing on this machine: worth a pool."""
    digest = str(seed).encode()
    for _ in range(4000):
        digest = hashlib.sha256(digest).digest()
    return digest.hex()[:12]


def numbers(n: int) -> Iterator[int]:
    """A generator: no length is known in advance."""
    yield from range(n)


def timed(run: Callable[[], list[Any]]) -> tuple[float, list[Any]]:
    start = time.perf_counter()
    results = run()
    return time.perf_counter() - start, results


def compare(
    label: str, fn: Callable[[int], Any], make_input: Callable[[], Iterable[int]]
) -> None:
    serial_s, expected = timed(lambda: list(map(fn, make_input())))

    def stdlib() -> list[Any]:
        with ProcessPoolExecutor() as pool:
            return list(pool.map(fn, make_input()))

    def ours() -> list[Any]:
        with AdaptiveProcessPoolExecutor() as pool:
            results = list(pool.map(fn, make_input()))
            plan = pool.last_plan
        assert plan is not None
        print(plan.explain())
        return results

    print(f"\n== {label}")
    stdlib_s, stdlib_results = timed(stdlib)
    ours_s, our_results = timed(ours)
    assert our_results == expected == stdlib_results, "results differ from serial"
    print(
        f"time: serial {serial_s * 1e3:8.1f} ms | stdlib ProcessPoolExecutor "
        f"{stdlib_s * 1e3:8.1f} ms | amorsize {ours_s * 1e3:8.1f} ms "
        f"(time {ours_s / serial_s:.2f}x serial's, {ours_s / stdlib_s:.2f}x stdlib's)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller inputs (for tests)")
    args = parser.parse_args()
    n_cheap, n_expensive = (2_000, 20) if args.quick else (50_000, 300)
    compare(f"cheap function, list of {n_cheap:,}", cheap, lambda: list(range(n_cheap)))
    compare(f"cheap function, generator of {n_cheap:,}", cheap, lambda: numbers(n_cheap))
    compare(f"expensive function, list of {n_expensive}", expensive,
            lambda: list(range(n_expensive)))
    compare(f"expensive function, generator of {n_expensive}", expensive,
            lambda: numbers(n_expensive))


if __name__ == "__main__":
    main()
