"""The workloads the suite maps: module-level functions (so every pool can pickle them by
reference) and input factories that build a fresh iterable on each call.

Each workload is sized to take about 0.5–2 s serially on the 2-core reference machine, except
the two whose point is per-call overhead (``trivial_200k`` and ``trivial_20``): there serial is
the right answer and the question is how little a parallel library costs on top of it.

This module must not time anything that is reported: ``python -m benchmarks.workloads``
only prints the serial calibration so the constants below can be re-checked.
"""

from __future__ import annotations

import importlib.util
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

# Pure-Python loop iterations of `spin` per millisecond of CPU. Measured on the reference
# machine (2 cores, Python 3.11.7, 2026-11-28): 100_000 iterations took 8.9 ms, so
# ~11_300 per ms. On a faster or slower machine every CPU workload scales together, which keeps
# the ratios meaningful; `python -m benchmarks.workloads` shows the actual per-item times.
SPIN_ITERS_PER_MS = 11_300

_MASK_32 = 0xFFFFFFFF


def spin(n_iters: int) -> int:
    """Burn CPU in a pure-Python loop of ``n_iters`` steps (holds the GIL; no sleep)."""
    acc = n_iters
    for i in range(n_iters):
        acc = (acc * 1103515245 + i) & _MASK_32
    return acc


def square_plus_one(x: int) -> int:
    """The cheapest useful function: one multiply and one add."""
    return x * x + 1


def megabyte_of_noise(seed: int) -> bytes:
    """1 MiB of seeded Mersenne-Twister output (~3 ms CPU): a large result to send back."""
    return random.Random(seed).randbytes(1 << 20)


def wait_5ms(x: int) -> int:
    """I/O-like waiting: the call sleeps and uses almost no CPU."""
    time.sleep(0.005)
    return x


# Matrix size for `matmul_chain`. 640x640 float64 matmul took 11.7 ms on 1 OpenBLAS thread and
# 6.4 ms on 2 on the reference machine: BLAS already uses both cores.
_MATMUL_N = 640
# Entries are integers in [0, 10), so every product below is an exact float64 integer
# (largest entry about 640**2 * 9**3 < 2**53) and the result does not depend on how many BLAS
# threads summed it: results can be compared across contenders by hash.
_MATMUL_MODULUS = 1_000_003


def matmul_chain(seed: int) -> int:
    """Three chained 640x640 matmuls (~20 ms with 2 BLAS threads), reduced to one exact int."""
    import numpy as np

    rng = np.random.default_rng(seed)
    a = rng.integers(0, 10, size=(_MATMUL_N, _MATMUL_N)).astype(np.float64)
    b = rng.integers(0, 10, size=(_MATMUL_N, _MATMUL_N)).astype(np.float64)
    c = ((a @ b) @ a) @ b
    return int(np.mod(c, _MATMUL_MODULUS).sum())


def _spin_items(n_items: int, ms_per_item: float) -> list[int]:
    # `+ i % 7` makes neighbouring results differ, so an ordering bug changes the hash.
    base = round(ms_per_item * SPIN_ITERS_PER_MS)
    return [base + i % 7 for i in range(n_items)]


def _trivial_200k() -> list[int]:
    return list(range(200_000))


def _trivial_20() -> list[int]:
    return list(range(20))


def _cpu_5ms_x300() -> list[int]:
    return _spin_items(300, 5.0)


def _cpu_50us_x30k() -> list[int]:
    return _spin_items(30_000, 0.05)


_SKEW_N_ITEMS = 3_000
_SKEW_N_SLOW = 30


def _skewed_tail() -> list[int]:
    # 2_970 items of 0.2 ms, then 30 items of 20 ms (100x slower), all at the end: the probe
    # sees only fast items, and coarse chunks put the whole slow tail on one worker.
    fast = _spin_items(_SKEW_N_ITEMS - _SKEW_N_SLOW, 0.2)
    slow = _spin_items(_SKEW_N_SLOW, 20.0)
    return fast + slow


def _seeds_250() -> list[int]:
    return list(range(250))


def _generator_1ms() -> Iterator[int]:
    base = round(1.0 * SPIN_ITERS_PER_MS)
    for i in range(1_000):
        yield base + i % 7


def _sleep_items() -> list[int]:
    return list(range(200))


def _matmul_seeds() -> list[int]:
    return list(range(45))


@dataclass(frozen=True)
class Workload:
    """One benchmark case: ``fn`` mapped over a fresh ``make_items()``."""

    name: str
    fn: Callable[[Any], Any]
    make_items: Callable[[], Iterable[Any]]
    n_items: int
    """Number of items ``make_items()`` yields (known to the oracle even for generators)."""
    note: str
    requires: tuple[str, ...] = ()
    """Importable modules the workload needs; missing ones skip it with a printed note."""

    def missing_requirement(self) -> str | None:
        """The first required module that is not installed, or ``None``."""
        for module in self.requires:
            if importlib.util.find_spec(module) is None:
                return module
        return None


WORKLOADS: tuple[Workload, ...] = (
    Workload(
        "trivial_200k",
        square_plus_one,
        _trivial_200k,
        200_000,
        "x*x+1 over 200k ints (~20 ms serial): overhead only, serial should win",
    ),
    Workload(
        "trivial_20",
        square_plus_one,
        _trivial_20,
        20,
        "x*x+1 over 20 ints (~µs serial): any pool start is pure loss",
    ),
    Workload(
        "cpu_5ms_x300",
        spin,
        _cpu_5ms_x300,
        300,
        "pure-Python loop, 5 ms CPU per item, 300 items (~1.5 s serial)",
    ),
    Workload(
        "cpu_50us_x30k",
        spin,
        _cpu_50us_x30k,
        30_000,
        "pure-Python loop, 50 µs CPU per item, 30k items (~1.5 s serial): chunking matters",
    ),
    Workload(
        "skewed_tail",
        spin,
        _skewed_tail,
        _SKEW_N_ITEMS,
        "2970 items of 0.2 ms then 30 items of 20 ms at the end (~1.2 s serial)",
    ),
    Workload(
        "big_results_1mb",
        megabyte_of_noise,
        _seeds_250,
        250,
        "1 MiB bytes result per item (~3 ms CPU each), 250 items: IPC-bound",
    ),
    Workload(
        "generator_1ms",
        spin,
        _generator_1ms,
        1_000,
        "a real generator (no len) of 1000 items, 1 ms CPU each (~1.1 s serial)",
    ),
    Workload(
        "sleep_5ms_x200",
        wait_5ms,
        _sleep_items,
        200,
        "time.sleep(0.005) x 200 (~1 s serial, ~0 CPU): waiting, not computing",
    ),
    Workload(
        "numpy_matmul",
        matmul_chain,
        _matmul_seeds,
        45,
        "3 chained 640x640 matmuls per item, 45 items (~1.5 s serial); BLAS uses every core",
        requires=("numpy",),
    ),
)

BY_NAME: dict[str, Workload] = {w.name: w for w in WORKLOADS}

# The subset `--quick` runs: the four cases the issue sets explicit targets for, plus the
# generator (the input layer's hardest case).
QUICK_NAMES: tuple[str, ...] = (
    "trivial_200k",
    "trivial_20",
    "cpu_5ms_x300",
    "cpu_50us_x30k",
    "generator_1ms",
)


def _calibrate() -> None:
    """Print each workload's serial time and per-item time in this process."""
    print(f"{'workload':<18} {'items':>7} {'serial':>9} {'per item':>10}  note")
    for w in WORKLOADS:
        missing = w.missing_requirement()
        if missing is not None:
            print(f"{w.name:<18} skipped: {missing} is not installed")
            continue
        items = w.make_items()
        start = time.perf_counter()
        results = list(map(w.fn, items))
        elapsed_s = time.perf_counter() - start
        assert len(results) == w.n_items, (w.name, len(results), w.n_items)
        del results  # freeing a big list must not land in the next workload's timing
        print(
            f"{w.name:<18} {w.n_items:>7} {elapsed_s:>8.3f}s "
            f"{elapsed_s / w.n_items * 1e6:>8.1f}µs  {w.note}"
        )


if __name__ == "__main__":
    _calibrate()
