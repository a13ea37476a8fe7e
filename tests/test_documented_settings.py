"""Settings as the docs describe them, end to end (the other documented settings are tested
beside the code they configure: ``keep_warm`` in test_shared_pool, ``isolate`` and
``buffersize`` in contract/test_documented_differences, ``progress`` in test_map_dispatch,
``backend="threads"`` in test_thread_backend, ``AMORSIZE_CACHE_DIR`` in
test_start_cost_cache).

Real processes; no durations asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from amorsize_executor import AdaptiveProcessPoolExecutor

from .contract import _work

ROOT = Path(__file__).resolve().parents[1]

WAITING_JOB = textwrap.dedent(
    """
    import json, time
    from amorsize_executor import AdaptiveProcessPoolExecutor

    def wait(x):
        time.sleep(0.005)
        return x

    if __name__ == "__main__":
        with AdaptiveProcessPoolExecutor() as pool:
            assert list(pool.map(wait, range(400))) == list(range(400))
            plan = pool.last_plan
        print(json.dumps({"mode": plan.mode, "n_workers": plan.n_workers,
                          "reasons": list(plan.reasons)}))
    """
)


def run_waiting_job(tmp_path: Path, **env: str) -> dict[str, object]:
    script = tmp_path / "job.py"
    script.write_text(WAITING_JOB, encoding="utf-8")
    environ = {**os.environ, **env}
    completed = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env=environ,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    result: dict[str, object] = json.loads(completed.stdout.splitlines()[-1])
    return result


@pytest.mark.timeout(300)
def test_amorsize_max_workers_caps_the_pool_even_for_work_that_waits(tmp_path: Path) -> None:
    # Documented (README, user guide, troubleshooting): the cap is on worker processes, so
    # work that waits, which could use several workers per core, gets no more than it.
    plan = run_waiting_job(tmp_path, AMORSIZE_MAX_WORKERS="2")
    assert plan["mode"] == "parallel"
    assert plan["n_workers"] == 2
    assert "AMORSIZE_MAX_WORKERS=2 caps the pool" in plan["reasons"]  # type: ignore[operator]


def test_reading_after_shutdown_with_buffersize_names_buffersize() -> None:
    with AdaptiveProcessPoolExecutor(max_workers=1, isolate=True) as ex:
        results = ex.map(_work.square, list(range(5_000)), buffersize=16)
    with pytest.raises(RuntimeError) as raised:
        list(results)
    message = str(raised.value)
    assert message.startswith("cannot schedule new futures after shutdown")
    assert "buffersize=16" in message
    assert "unknown length" not in message
