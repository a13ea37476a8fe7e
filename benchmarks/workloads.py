"""The workloads the suite maps: module-level functions (so every pool can pickle them by
reference) and input factories that build a fresh iterable on each call.

Each workload is sized to take about 0.5–2 s serially on the 2-core reference machine, except
the two whose point is per-call overhead (``trivial_200k`` and ``trivial_20``): there serial is
the right answer and the question is how little a parallel library costs on top of it.

This module must not time anything that is reported: ``python -m benchmarks.workloads``
only prints the serial calibration so the constants below can be re-checked.
"""

from __future__ import annotations

import functools
import importlib.util
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
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


def first_times_second_plus_one(pair: list[int]) -> int:
    """``square_plus_one`` over a small list: an argument that can change, so a serial run
    in the caller copies it, as a worker process would get it (issue 13 item 8)."""
    return pair[0] * pair[1] + 1


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


def _ints(n_items: int) -> list[int]:
    return list(range(n_items))


def _small_lists(n_items: int) -> list[list[int]]:
    return [[i, i] for i in range(n_items)]


def _cpu_5ms(n_items: int) -> list[int]:
    return _spin_items(n_items, 5.0)


def _cpu_50us(n_items: int) -> list[int]:
    return _spin_items(n_items, 0.05)


def _skewed_tail(n_items: int) -> list[int]:
    # 99% of items of 0.2 ms, then 1% of 20 ms (100x slower), all at the end: the probe sees
    # only fast items, and coarse chunks put the whole slow tail on one worker.
    n_slow = max(1, n_items // 100)
    return _spin_items(n_items - n_slow, 0.2) + _spin_items(n_slow, 20.0)


def _late_slow_items(n_items: int) -> list[int]:
    # 90% of items of 0.2 ms; in the last 10%, one item in five takes 50 ms. The probe sees
    # only cheap items and plans serial, rightly for what it saw; the slow stretch comes
    # between the revisits at doubling item counts (issue 14).
    n_early = n_items - max(5, n_items // 10)
    fast = round(0.2 * SPIN_ITERS_PER_MS)
    slow = round(50.0 * SPIN_ITERS_PER_MS)
    return [
        (slow if i >= n_early and (i - n_early) % 5 == 4 else fast) + i % 7 for i in range(n_items)
    ]


def _generator_1ms(n_items: int) -> Iterator[int]:
    base = round(1.0 * SPIN_ITERS_PER_MS)
    for i in range(n_items):
        yield base + i % 7


# Elements of the array `weighted_spin` carries: 25M float64 = 200 MB, the size issue 14
# measured (a model, a lookup table or a DataFrame bound into `fn`).
_BIG_FN_ARRAY_LEN = 25_000_000


def weighted_spin(weights: Any, n_iters: int) -> int:
    """Spin ``n_iters`` steps, then look up one weight: a function that carries big data."""
    return spin(n_iters) + int(weights[n_iters % len(weights)])


def _big_fn() -> Callable[[Any], Any]:
    import numpy as np

    weights = np.arange(_BIG_FN_ARRAY_LEN, dtype=np.float64) % 1000.0
    return functools.partial(weighted_spin, weights)


def _cpu_8ms(n_items: int) -> list[int]:
    return _spin_items(n_items, 8.0)


@dataclass(frozen=True)
class Workload:
    """One benchmark case: ``function()`` mapped over a fresh ``items()``."""

    name: str
    fn: Callable[[Any], Any] | None
    """The function, or ``None`` when ``make_fn`` builds it (a function that carries data)."""
    make_items: Callable[[int], Iterable[Any]]
    """Builds the input from the number of items."""
    n_items: int
    """Number of items ``items()`` yields (known to the oracle even for generators)."""
    note: str
    requires: tuple[str, ...] = ()
    """Importable modules the workload needs; missing ones skip it with a printed note."""
    make_fn: Callable[[], Callable[[Any], Any]] | None = None
    """Builds ``fn`` in the measuring process (outside the timed region)."""

    def items(self) -> Iterable[Any]:
        """A fresh input of ``n_items`` items."""
        return self.make_items(self.n_items)

    def function(self) -> Callable[[Any], Any]:
        """The function to map (built now if the workload makes it)."""
        if self.make_fn is not None:
            return self.make_fn()
        assert self.fn is not None, f"workload {self.name} has neither fn nor make_fn"
        return self.fn

    def missing_requirement(self) -> str | None:
        """The first required module that is not installed, or ``None``."""
        for module in self.requires:
            if importlib.util.find_spec(module) is None:
                return module
        return None

    def scaled(self, factor: float) -> Workload:
        """The same workload with ``factor`` times the items (at least 1): ``--scale 0.25``
        turns the 0.5-2 s jobs into the short jobs of issue 14."""
        if factor == 1.0:
            return self
        return replace(self, n_items=max(1, round(self.n_items * factor)))


WORKLOADS: tuple[Workload, ...] = (
    Workload(
        "trivial_200k",
        square_plus_one,
        _ints,
        200_000,
        "x*x+1 over 200k ints (~20 ms serial): overhead only, serial should win",
    ),
    Workload(
        "trivial_20",
        square_plus_one,
        _ints,
        20,
        "x*x+1 over 20 ints (~µs serial): any pool start is pure loss",
    ),
    Workload(
        "cpu_5ms_x300",
        spin,
        _cpu_5ms,
        300,
        "pure-Python loop, 5 ms CPU per item, 300 items (~1.5 s serial)",
    ),
    Workload(
        "cpu_50us_x30k",
        spin,
        _cpu_50us,
        30_000,
        "pure-Python loop, 50 µs CPU per item, 30k items (~1.5 s serial): chunking matters",
    ),
    Workload(
        "skewed_tail",
        spin,
        _skewed_tail,
        3_000,
        "2970 items of 0.2 ms then 30 items of 20 ms at the end (~1.2 s serial)",
    ),
    Workload(
        "big_results_1mb",
        megabyte_of_noise,
        _ints,
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
        _ints,
        200,
        "time.sleep(0.005) x 200 (~1 s serial, ~0 CPU): waiting, not computing",
    ),
    Workload(
        "numpy_matmul",
        matmul_chain,
        _ints,
        45,
        "3 chained 640x640 matmuls per item, 45 items (~1.5 s serial); BLAS uses every core",
        requires=("numpy",),
    ),
    Workload(
        "late_slow_short",
        spin,
        _late_slow_items,
        300,
        "270 items of 0.2 ms, then 30 where one in five takes 50 ms (~0.36 s serial)",
    ),
    Workload(
        "big_fn_partial",
        None,
        _cpu_8ms,
        200,
        "partial(fn, 200 MB numpy array), 8 ms CPU per item, 200 items (~1.6 s serial)",
        requires=("numpy",),
        make_fn=_big_fn,
    ),
    Workload(
        "cpu_5ms_x80",
        spin,
        _cpu_5ms,
        80,
        "pure-Python loop, 5 ms CPU per item, 80 items (~0.4 s serial): a short job",
    ),
    Workload(
        "trivial_50k",
        square_plus_one,
        _ints,
        50_000,
        "x*x+1 over 50k ints (~5 ms serial): a short job of overhead only",
    ),
    Workload(
        "trivial_lists_200k",
        first_times_second_plus_one,
        _small_lists,
        200_000,
        "x[0]*x[1]+1 over 200k two-int lists (~25 ms serial): what copying fn's arguments "
        "in the caller costs",
    ),
    Workload(
        "generator_1ms_x500",
        spin,
        _generator_1ms,
        500,
        "a real generator (no len) of 500 items, 1 ms CPU each (~0.55 s serial): short",
    ),
)

LONG_NAMES: tuple[str, ...] = (
    "cpu_5ms_x300",
    "cpu_50us_x30k",
    "skewed_tail",
    "big_results_1mb",
    "generator_1ms",
    "sleep_5ms_x200",
    "numpy_matmul",
    "big_fn_partial",
)
"""The 0.5-2 s jobs whose geometric mean ratio to the oracle the issues set targets on."""

SHORT_NAMES: tuple[str, ...] = (
    "late_slow_short",
    "cpu_5ms_x80",
    "trivial_50k",
    "generator_1ms_x500",
)
"""The jobs of 0.2-0.5 s at full size (issue 14's examples of short jobs); ``run.py`` shows
them against the short-job bounds at full size. The overhead probes (``trivial_200k``,
``trivial_20``) and these are in neither suite at a quarter of their sizes."""

BY_NAME: dict[str, Workload] = {w.name: w for w in WORKLOADS}


def get(name: str, scale: float = 1.0) -> Workload:
    """The workload called ``name``, with ``scale`` times its items."""
    return BY_NAME[name].scaled(scale)


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
        items = w.items()
        fn = w.function()
        start = time.perf_counter()
        results = list(map(fn, items))
        elapsed_s = time.perf_counter() - start
        assert len(results) == w.n_items, (w.name, len(results), w.n_items)
        del results  # freeing a big list must not land in the next workload's timing
        print(
            f"{w.name:<18} {w.n_items:>7} {elapsed_s:>8.3f}s "
            f"{elapsed_s / w.n_items * 1e6:>8.1f}µs  {w.note}"
        )


if __name__ == "__main__":
    _calibrate()
