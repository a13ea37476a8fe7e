"""Parse a large web-server log line by line and aggregate it, in bounded memory.

The log is written to a temporary directory first (deterministic, with a few malformed
lines). The input of ``map()`` is a generator that reads the file one line at a time, so the
file is never held in memory: ``map()`` reads its input lazily, as results are consumed, and
the loop below folds each parsed line into running totals instead of keeping a list.

Parsing one line takes microseconds, about what sending it to another process costs. With
``--quick`` expect a serial plan (the job stays in the calling process) and the reason. The
generator has no length, so the executor re-checks that decision each time the number of
lines read doubles; on the full-size file it may switch to a pool part-way, and the plan then
says so.

    python examples/log_parsing.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import random
import re
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from _serial_baseline import plain_serial_s, serial_comparison

from amorsize_executor import AdaptiveProcessPoolExecutor as ProcessPoolExecutor

LINE = re.compile(
    r"(?P<ip>\d{1,3}(?:\.\d{1,3}){3}) - - \[(?P<time>[^\]]+)\] "
    r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/1\.[01]" (?P<status>\d{3}) (?P<bytes>\d+) '
    r"(?P<ms>\d+(?:\.\d+)?)ms"
)
NUMBER_IN_PATH = re.compile(r"/\d+(?=/|$)")

Parsed = tuple[str, str, int, int, float]
"""``(method, route, status, bytes, milliseconds)``."""


def write_log(path: Path, n_lines: int, seed: int = 7) -> None:
    """Write ``n_lines`` of access log, about one in a thousand of them malformed."""
    rng = random.Random(seed)
    routes = [
        "/",
        "/login",
        "/api/users/{}",
        "/api/orders/{}",
        "/api/orders/{}/items",
        "/static/app.js",
        "/search",
    ]
    with open(path, "w", encoding="utf-8") as log:
        for i in range(n_lines):
            if rng.random() < 0.001:
                log.write(f"garbled line {i} ###\n")
                continue
            route = rng.choice(routes).format(rng.randrange(1, 5000))
            method = "POST" if route == "/login" else rng.choice(["GET", "GET", "GET", "PUT"])
            status = rng.choices([200, 201, 304, 404, 500], weights=[80, 5, 8, 5, 2])[0]
            ip = f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
            log.write(
                f"{ip} - - [28/Nov/2026:16:{i // 60000 % 60:02d}:{i // 1000 % 60:02d} +0000] "
                f'"{method} {route} HTTP/1.1" {status} {rng.randrange(200, 90000)} '
                f"{rng.lognormvariate(2.5, 0.8):.1f}ms\n"
            )


def read_lines(path: Path) -> Iterator[str]:
    """The file's lines, one at a time (a generator: ``map()`` sees no length)."""
    with open(path, encoding="utf-8") as log:
        yield from log


def parse_line(line: str) -> Parsed | None:
    """One access-log line as ``(method, route, status, bytes, ms)``; ``None`` if malformed.

    Numeric path segments become ``{id}`` so that requests aggregate per route.
    """
    match = LINE.match(line)
    if match is None:
        return None
    route = NUMBER_IN_PATH.sub("/{id}", match["path"])
    return match["method"], route, int(match["status"]), int(match["bytes"]), float(match["ms"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="small input: a few seconds")
    args = parser.parse_args()
    n_lines = 20_000 if args.quick else 1_000_000

    with tempfile.TemporaryDirectory(prefix="amorsize-log-example-") as tmp:
        path = Path(tmp) / "access.log"
        started = time.perf_counter()
        write_log(path, n_lines)
        write_s = time.perf_counter() - started
        size_mib = os.path.getsize(path) / 2**20
        print(f"wrote {n_lines:,} lines ({size_mib:.1f} MiB) in {write_s:.2f} s")

        requests: Counter[str] = Counter()
        statuses: Counter[int] = Counter()
        total_ms: Counter[str] = Counter()
        n_bytes = n_malformed = 0
        started = time.perf_counter()
        with ProcessPoolExecutor() as pool:
            for parsed in pool.map(parse_line, read_lines(path)):
                if parsed is None:
                    n_malformed += 1
                    continue
                method, route, status, size, ms = parsed
                key = f"{method} {route}"
                requests[key] += 1
                total_ms[key] += ms
                statuses[status] += 1
                n_bytes += size
            elapsed = time.perf_counter() - started
            plan = pool.last_plan
            assert plan is not None
            print(plan.explain())
        serial_s = plain_serial_s(__file__, "parse_line", input_from=("read_lines", str(path)))

    n_parsed = sum(requests.values())
    print(
        f"parsed {n_parsed:,} requests ({n_malformed} malformed lines) in {elapsed:.2f} s; "
        f"{n_bytes / 2**30:.2f} GiB served"
    )
    print(serial_comparison(elapsed, serial_s))
    print("status codes: " + ", ".join(f"{s}: {n:,}" for s, n in sorted(statuses.items())))
    print("busiest routes:")
    for key, count in requests.most_common(5):
        print(f"  {key:<28} {count:>9,} requests, {total_ms[key] / count:6.1f} ms on average")


if __name__ == "__main__":
    main()
