"""Measure the two transport figures the cost model uses for the local pool, on this machine.

``SystemFacts.task_roundtrip_s`` (what one chunk costs the parent and how long before its
result is back) and ``SystemFacts.ipc_bytes_per_s`` (how fast the parent takes in pickled
results) are defaults in ``_records.py``; this script is where those defaults come from.
It drives the library's own ``PoolBackend`` with a fork context (the start method the
executor picks on Linux), one warm worker, and prints medians of several repetitions:

- round trip: one 1-item chunk of a no-op submitted and awaited, one after another;
- pipelined: 1000 such chunks submitted at once, wall time per chunk until all are back;
- transfer: 64 chunks each returning 1 MiB, the parent's CPU seconds (all its threads, the
  pool's result reader included) per byte received, and the wall time per MiB.

Run: ``python benchmarks/calibrate.py [--reps 5]``. Timings live here, never in tests/.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time
from collections.abc import Callable
from typing import Any

import cloudpickle

from amorsize_executor._chunk_worker import ChunkPayload, dumps_callable
from amorsize_executor._pool_backend import PoolBackend

MIB = 1 << 20


def noop(x: int) -> int:
    return x


def one_mib(x: int) -> bytes:
    return bytes(MIB - 64) + x.to_bytes(8, "little")


def _payload(fn: Callable[[int], Any], value: int) -> ChunkPayload:
    return ChunkPayload(dumps_callable(fn), cloudpickle.dumps([(value,)]))


def _backend() -> PoolBackend:
    backend = PoolBackend(
        max_workers=1,
        mp_context=multiprocessing.get_context("fork"),
        initializer=None,
        initargs=(),
        max_tasks_per_child=None,
        default_workers=lambda: 1,
    )
    backend.prepare(1)
    backend.submit_chunk(_payload(noop, 0)).result()  # the worker is up
    return backend


def round_trip_s(backend: PoolBackend, n: int = 200) -> float:
    payload = _payload(noop, 1)
    start = time.perf_counter()
    for _ in range(n):
        backend.submit_chunk(payload).result()
    return (time.perf_counter() - start) / n


def pipelined_s(backend: PoolBackend, n: int = 1000) -> float:
    payload = _payload(noop, 1)
    start = time.perf_counter()
    futures = [backend.submit_chunk(payload) for _ in range(n)]
    for future in futures:
        future.result()
    return (time.perf_counter() - start) / n


def transfer(backend: PoolBackend, n: int = 64) -> tuple[float, float]:
    """Bytes per CPU second of the parent, and wall seconds per MiB."""
    payloads = [_payload(one_mib, i) for i in range(n)]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    futures = [backend.submit_chunk(p) for p in payloads]
    received = 0
    for future in futures:
        result = future.result()
        received += len(cloudpickle.loads(result.results_bytes)[0])
    cpu_s, wall_s = time.process_time() - cpu0, time.perf_counter() - wall0
    return received / cpu_s, wall_s / (received / MIB)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    trips, pipes, rates, walls = [], [], [], []
    for _ in range(args.reps):
        backend = _backend()
        try:
            trips.append(round_trip_s(backend))
            pipes.append(pipelined_s(backend))
            rate, wall = transfer(backend)
            rates.append(rate)
            walls.append(wall)
        finally:
            backend.shutdown()
    print(f"median of {args.reps} runs, fork pool of 1 warm worker")
    print(f"  round trip of a 1-item chunk     {statistics.median(trips) * 1e6:8.0f} µs")
    print(f"  pipelined, per chunk             {statistics.median(pipes) * 1e6:8.0f} µs")
    print(f"  parent takes in results at       {statistics.median(rates) / 1e6:8.0f} MB/s (CPU)")
    print(f"  wall per MiB of results          {statistics.median(walls) * 1e3:8.2f} ms")


if __name__ == "__main__":
    main()
