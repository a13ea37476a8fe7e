"""What plain serial code would have taken: ``list(map(fn, *iterables))``, timed in a fresh
interpreter, so that its first call is as cold as the executor's was (a first call pays for
imports and caches warming; timed in this process after the executor ran, plain serial code
would get that for free, and timed before, the executor would).

Each example prints this figure beside its own time, so its output tells the whole truth:
when the executor lost to a plain loop, the numbers say so.

    from _serial_baseline import plain_serial_s, serial_comparison
    serial_s = plain_serial_s(__file__, "work", items)                # iterables, pickled
    serial_s = plain_serial_s(__file__, "work", input_from=("read_lines", path))
    print(serial_comparison(elapsed_s, serial_s))
"""

from __future__ import annotations

import importlib.util
import pickle
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def plain_serial_s(
    script: str,
    fn_name: str,
    *iterables: Iterable[Any],
    input_from: tuple[str, ...] | None = None,
) -> float:
    """Seconds ``list(map(fn, *iterables))`` takes in a fresh interpreter, ``fn`` being
    ``fn_name`` of ``script`` (imported, not run). With ``input_from=(name, *args)`` the
    input is ``script``'s ``name(*args)`` there instead, and reading it is timed too."""
    payload = pickle.dumps(
        (str(Path(script).resolve()), fn_name, [list(it) for it in iterables], input_from)
    )
    completed = subprocess.run(
        [sys.executable, str(Path(__file__).resolve())],
        input=payload,
        capture_output=True,
        check=True,
    )
    return float(completed.stdout.decode().strip().splitlines()[-1])


def serial_comparison(elapsed_s: float, serial_s: float) -> str:
    """One line: this run's time against plain serial code's."""
    ratio = elapsed_s / serial_s if serial_s > 0 else float("inf")
    return (
        f"plain serial code (list(map(...)) in a fresh process): {serial_s:.2f} s; "
        f"this run: {elapsed_s:.2f} s, {ratio:.2f}x the serial time"
    )


def _time_in_this_process() -> None:
    script, fn_name, iterables, input_from = pickle.loads(sys.stdin.buffer.read())
    spec = importlib.util.spec_from_file_location("_timed_example", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # the example's imports, not its main()
    fn = getattr(module, fn_name)
    started = time.perf_counter()
    if input_from is not None:
        name, *args = input_from
        list(map(fn, getattr(module, name)(*args)))
    else:
        list(map(fn, *iterables))
    print(time.perf_counter() - started)


if __name__ == "__main__":
    _time_in_this_process()
