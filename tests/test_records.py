"""Plans read well for people (explain) and serialise for machines (to_dict)."""

from __future__ import annotations

import json
import math

from amorsize_executor import RunOutcome
from amorsize_executor import _cost_model as cm

from .conftest import make_facts, make_measurements


def plan_for(n_items: int = 1000, **facts: object):  # type: ignore[no-untyped-def]
    return cm.plan_map(
        make_facts(**facts), make_measurements(), n_items=n_items, n_items_lower_bound=0
    )


def test_to_dict_is_json_safe_and_complete() -> None:
    plan = plan_for().with_outcome(
        RunOutcome(
            wall_s=0.3,
            n_items=1000,
            n_chunks=16,
            chunksizes=(63,) * 16,
            worker_busy_s=1.0,
            n_workers=4,
        )
    )
    data = json.loads(json.dumps(plan.to_dict(), allow_nan=False))
    assert data["mode"] == "parallel"
    assert data["n_workers"] == 4
    assert data["measurements"]["cpu_share"] == 1.0
    assert data["facts"]["n_logical_cores"] == 4
    assert data["outcome"]["chunksizes"] == [63] * 16
    assert math.isclose(data["outcome"]["utilisation"], 1.0 / (4 * 0.3))


def test_infinite_predictions_become_null() -> None:
    plan = cm.plan_map(
        make_facts(), make_measurements(item_bytes=math.inf), n_items=10, n_items_lower_bound=0
    )
    assert json.loads(json.dumps(plan.to_dict(), allow_nan=False))["predicted_parallel_s"] is None


def test_explain_names_decision_figures_and_reasons() -> None:
    text = plan_for().explain()
    assert text.splitlines()[0] == "plan: parallel: 4 workers, chunks of 63"
    assert "1000 items left; 1.0 ms per item (100% CPU), measured on 8 item(s)" in text
    assert "4 usable core(s), limited by logical" in text
    assert "predicted: serial 1.00 s, parallel 252.3 ms" in text
    assert "- 4 worker(s) are predicted 4.0x faster than serial" in text


def test_explain_says_why_workers_start_as_they_do() -> None:
    reason = "fork: multiprocessing's default start method here"
    assert f"  start method: {reason}" in plan_for(start_method_reason=reason).explain()
    assert "start method:" not in plan_for().explain()


def test_explain_reports_chunk_growth_and_a_run_slower_than_serial() -> None:
    plan = plan_for().with_outcome(
        RunOutcome(
            wall_s=2.0,
            n_items=1000,
            n_chunks=3,
            chunksizes=(10, 20, 40),
            worker_busy_s=1.0,
            n_workers=4,
        )
    )
    text = plan.explain()
    assert "actual: 2.00 s for 1000 items in 3 chunk(s) (sizes 10 first, 10..40)" in text
    assert "took longer than running it serially would have (about 1.00 s" in text


def test_serial_explain_with_unknown_length() -> None:
    plan = cm.plan_map(
        make_facts(worker_start_s=10.0), make_measurements(), n_items=None, n_items_lower_bound=5
    )
    text = plan.explain()
    assert text.startswith("plan: serial: the remaining items run in the calling process")
    assert "unknown length (planned for at least 5)" in text


def test_a_run_judged_against_serial_at_the_speed_seen_during_the_run() -> None:
    # The probe saw 1 ms per call (a cold call, say); the run's calls took 0.1 ms each, so
    # serial would have taken 0.1 s, and 0.3 s on a pool lost to it.
    plan = plan_for().with_outcome(
        RunOutcome(
            wall_s=0.3,
            n_items=1000,
            n_chunks=16,
            chunksizes=(63,) * 16,
            worker_busy_s=0.1,
            n_workers=4,
        )
    )
    text = plan.explain()
    assert "serially would have (about 100.0 ms at the speed seen during the run)" in text


def _placeholder_numbers(facts: dict[str, object]) -> dict[str, object]:
    """Figures no machine reports: nothing usable, everything free, "not chosen"."""
    return {
        k: v
        for k, v in facts.items()
        if v in (0, 1e18, 2**62, "not chosen")
        and k not in ("worker_start_s", "n_warm_workers", "env_core_limit")
    }


def test_facts_not_read_are_none_in_to_dict_and_said_so_in_explain() -> None:
    from amorsize_executor._records import SystemFacts

    nothing = cm.plan_map(
        SystemFacts.not_read("not chosen"), make_measurements(), n_items=0, n_items_lower_bound=0
    )
    facts = nothing.to_dict()["facts"]
    assert facts["worker_start_source"] == "not read"
    assert {k for k, v in facts.items() if v is not None} == {"worker_start_source"}
    assert "machine: not read" in nothing.explain()

    bound = cm.plan_map(
        SystemFacts.most_favourable(4, 0.004),
        make_measurements(),
        n_items=3,
        n_items_lower_bound=0,
    )
    data = bound.to_dict()
    assert bound.mode == "serial"
    assert data["facts"]["n_logical_cores"] == 4  # read
    assert data["facts"]["worker_start_source"] == "bound"
    for name in ("available_memory_bytes", "ipc_bytes_per_s", "start_method", "task_roundtrip_s"):
        assert data["facts"][name] is None, name
    assert not _placeholder_numbers(data["facts"])
    assert data["n_usable_cores"] is None  # every logical core was assumed usable
    assert data["predicted_parallel_s"] is None and data["predicted_speedup"] is None
    assert data["parallel_floor_s"] is not None


def test_threads_report_no_transfer_rate_rather_than_a_stand_in() -> None:
    from amorsize_executor._thread_backend import thread_facts

    facts = thread_facts(make_facts(), gil=True, n_warm_workers=0)
    data = facts.to_dict()
    assert data["ipc_bytes_per_s"] is None
    assert not _placeholder_numbers(data)
    assert data["task_roundtrip_s"] == facts.task_roundtrip_s  # a figure, kept
