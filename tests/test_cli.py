"""The command line, called in-process through ``main(argv)`` (one real subprocess run).

The functions at the top are the targets the tests name as ``tests.test_cli:NAME``. Nothing
here asserts a duration: only exit codes, messages and the shape of the reports.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from amorsize_executor import _cli
from amorsize_executor.__main__ import main
from amorsize_executor._cli import _reports

# -- targets, named on the command line as tests.test_cli:NAME ----------------------------


def square(x: int) -> int:
    return x * x


def busy_1ms(x: int) -> int:
    """About a millisecond of pure-Python arithmetic on a small VM."""
    total = 0
    for i in range(15_000):
        total += (i * i) ^ x
    return total


def fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError(f"three is not allowed, got {x}")
    return x


def line_length(line: str) -> int:
    if line.endswith(("\n", "\r")) or "\ufeff" in line:
        raise AssertionError(f"the line ending or byte-order mark was not stripped: {line!r}")
    return len(line)


def one_json_argument(value: Any) -> str:
    """Takes exactly one argument: a JSON list spread over several would raise TypeError."""
    return type(value).__name__


NOT_CALLABLE = 42


# -- helpers -------------------------------------------------------------------------------


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


# -- doctor --------------------------------------------------------------------------------


def test_doctor_text_shows_what_the_executor_sees(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "doctor")
    assert code == 0, err
    for expected in (
        "logical",
        "physical",
        "affinity",
        "cgroup CPU quota",
        "usable",
        "limited by",
        "cgroup headroom",
        "start method now",
        "start methods",
        "worker start cost",
        "cache file",
        "loky",
        "cloudpickle",
        "psutil",
        "AMORSIZE_MAX_WORKERS",
    ):
        assert expected in out


def test_doctor_json_is_a_report_with_the_machine_facts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run_cli(capsys, "doctor", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["kind"] == "doctor"
    assert report["plan"] is None
    machine = report["machine"]
    assert set(machine) >= {"cores", "memory", "workers", "versions", "environment"}
    cores = machine["cores"]
    assert cores["n_logical"] >= 1
    assert 1 <= cores["n_usable_cpu_bound"] <= cores["n_logical"]
    assert cores["cpu_bound_limited_by"] in {
        "logical",
        "physical",
        "affinity",
        "cgroup quota",
        "environment",
    }
    workers = machine["workers"]
    assert workers["start_method"] in workers["start_methods_available"]
    assert workers["worker_start_source"] in {"measured", "estimate"}
    assert workers["worker_start_s"] > 0
    assert set(machine["versions"]) >= {
        "python",
        "amorsize-executor",
        "loky",
        "cloudpickle",
        "psutil",
    }


def test_doctor_reports_the_environment_cap(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AMORSIZE_MAX_WORKERS", "1")
    code, out, _ = run_cli(capsys, "doctor", "--json")
    assert code == 0
    machine = json.loads(out)["machine"]
    assert machine["cores"]["env_core_limit"] == 1
    assert machine["cores"]["n_usable_cpu_bound"] == 1
    assert machine["environment"]["AMORSIZE_MAX_WORKERS"] == "1"
    code, out, _ = run_cli(capsys, "doctor")
    assert "AMORSIZE_MAX_WORKERS='1'" in out


def test_doctor_measure_starts_a_worker_and_stores_the_figure(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from amorsize_executor import _start_cost_cache

    monkeypatch.setenv("AMORSIZE_CACHE_DIR", str(tmp_path))
    record = _start_cost_cache.record_worker_start_s

    def slow_record(start_method: str, seconds: float) -> None:
        time.sleep(0.3)  # the pool's record is written after its shutdown: doctor waits
        record(start_method, seconds)

    monkeypatch.setattr(_start_cost_cache, "record_worker_start_s", slow_record)
    code, out, err = run_cli(capsys, "doctor", "--measure", "--json")
    assert code == 0, err
    workers = json.loads(out)["machine"]["workers"]
    measured = workers["measured_now"]
    assert measured["error"] is None
    assert measured["worker_start_s"] > 0
    method = measured["start_method"]
    assert workers["worker_start_by_method"][method]["source"] == "measured"
    # The figure shown is the one stored (the only sample in a fresh cache).
    assert measured["stored"] is True
    by_method = workers["worker_start_by_method"]
    assert by_method[method]["worker_start_s"] == measured["worker_start_s"]
    assert workers["cache_exists"] is True
    assert (tmp_path / "worker_start.json").is_file()


def test_doctor_measure_says_why_a_figure_the_samples_say_is_not_stored(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from amorsize_executor import _start_cost_cache

    monkeypatch.setenv("AMORSIZE_CACHE_DIR", str(tmp_path))
    method = json.loads(run_cli(capsys, "doctor", "--json")[1])["machine"]["workers"][
        "start_method"
    ]
    for seconds in (0.0, 1e-3, 1e-3, 1e-3, 600.0):  # a full set that spans any measurement
        _start_cost_cache.store_worker_start_s(method, seconds)
    # ... and whose median any measurement is near: the sample says nothing new.
    monkeypatch.setattr(_start_cost_cache, "_MEDIAN_TOLERANCE", math.inf)
    code, out, err = run_cli(capsys, "doctor", "--measure")
    assert code == 0, err
    assert "not stored: the cached samples already say as much" in out
    assert _start_cost_cache.worker_start_samples_s(method) == [0.0, 1e-3, 1e-3, 1e-3, 600.0]


def test_doctor_runs_as_a_real_module() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "amorsize_executor", "doctor", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    assert report["kind"] == "doctor"
    assert report["machine"]["cores"]["n_logical"] >= 1


# -- explain -------------------------------------------------------------------------------


def test_explain_prints_the_plan_without_running_the_job(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run_cli(capsys, "explain", "tests.test_cli:square", "--range", "100000")
    assert code == 0, err
    assert "plan only" in out
    assert "plan: " in out
    assert "100000 items" in out
    assert "predicted:" in out
    assert "actual:" not in out


def test_explain_json_holds_the_plan_and_the_input(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(
        capsys, "explain", "tests.test_cli:square", "--range", "5000", "--max-workers", "1"
    )
    assert code == 0
    code, out, _ = run_cli(
        capsys,
        "explain",
        "tests.test_cli:square",
        "--range",
        "5000",
        "--max-workers",
        "1",
        "--json",
    )
    assert code == 0
    report = json.loads(out)
    assert report["kind"] == "explain"
    assert report["function"] == "tests.test_cli:square"
    assert report["input"] == {"spec": "--range", "argument": "5000", "n_items": 5000}
    plan = report["plan"]
    assert plan["n_workers"] == 1
    assert plan["outcome"] is None
    assert plan["n_items"] + plan["measurements"]["n_probed"] == 5000
    assert report["error"] is None


def test_explain_isolate_plans_a_pool(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(
        capsys, "explain", "tests.test_cli:square", "--range", "1000", "--isolate", "--json"
    )
    assert code == 0
    plan = json.loads(out)["plan"]
    assert plan["mode"] == "parallel"
    assert plan["predicted_serial_s"] is None


def test_explain_run_shows_predicted_and_actual(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(
        capsys, "explain", "tests.test_cli:square", "--range", "3000", "--run"
    )
    assert code == 0, err
    assert "ran, 3000 results" in out
    assert "  actual: " in out
    assert "predicted vs actual:" in out


def test_explain_run_in_workers_reports_the_outcome(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(
        capsys,
        "explain",
        "tests.test_cli:square",
        "--range",
        "40",
        "--run",
        "--isolate",
        "--max-workers",
        "1",
        "--chunksize",
        "10",
        "--json",
    )
    assert code == 0, err
    report = json.loads(out)
    plan = report["plan"]
    assert plan["mode"] == "parallel"
    assert plan["n_workers"] == 1
    assert plan["chunksize"] == 10
    assert plan["outcome"]["n_items"] == 40
    assert report["n_results"] == 40


def test_explain_lines_passes_each_line_without_its_ending(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = write(tmp_path / "items.txt", "\ufeffalpha\nbeta\r\n\ngamma")
    code, out, err = run_cli(
        capsys, "explain", "tests.test_cli:line_length", "--lines", path, "--run", "--json"
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["input"]["n_items"] == 4
    assert report["n_results"] == 4


def test_explain_jsonl_passes_each_value_as_one_argument(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = write(tmp_path / "items.jsonl", '{"a": 1}\n[1, 2, 3]\n\n"text"\n42\n')
    code, out, err = run_cli(
        capsys, "explain", "tests.test_cli:one_json_argument", "--jsonl", path, "--run", "--json"
    )
    assert code == 0, err
    report = json.loads(out)
    assert report["input"]["n_items"] == 4
    assert report["n_results"] == 4


def test_explain_reads_lines_from_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO("a\nbb\n"))
    code, out, _ = run_cli(
        capsys, "explain", "tests.test_cli:line_length", "--lines", "-", "--json"
    )
    assert code == 0
    assert json.loads(out)["input"]["n_items"] == 2


def test_explain_finds_a_module_in_the_current_directory(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    name = f"cli_local_{uuid.uuid4().hex}"
    write(tmp_path / f"{name}.py", "def double(x):\n    return 2 * x\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    try:
        code, out, err = run_cli(capsys, "explain", f"{name}:double", "--range", "10")
    finally:
        sys.modules.pop(name, None)
    assert code == 0, err
    assert "plan: " in out


# -- export and compare --------------------------------------------------------------------


def test_export_and_compare_round_trip(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    saved = tmp_path / "explain.json"
    argv = ["explain", "tests.test_cli:square", "--range", "2000", "--max-workers", "1"]
    code, out, err = run_cli(capsys, *argv, "--export", str(saved))
    assert code == 0
    assert "report written to" in err
    report = json.loads(saved.read_text(encoding="utf-8"))
    assert report["kind"] == "explain"
    assert report["version"] == _cli.__version__
    assert set(report["machine"]) >= {"cores", "memory", "workers"}
    assert report["plan"]["mode"] in {"serial", "parallel"}

    # Change a machine fact and a plan field, drop a section: all show up as old → new.
    report["machine"]["cores"]["n_logical"] = 999
    report["plan"]["chunksize"] = 123456
    report["plan"]["reasons"] = ["an old reason"]
    del report["machine"]["memory"]
    edited = write(tmp_path / "edited.json", json.dumps(report))
    code, out, _ = run_cli(capsys, *argv, "--compare-with", edited)
    assert code == 0
    assert f"changes since {edited}" in out
    assert "machine.cores.n_logical: 999 →" in out
    assert "plan.chunksize: 123456 →" in out
    assert "    - an old reason" in out
    assert "machine.memory.available_bytes: (missing) →" in out

    code, out, _ = run_cli(capsys, *argv, "--compare-with", edited, "--json")
    assert code == 0
    changes = {change["key"]: change for change in json.loads(out)["changes"]}
    assert changes["machine.cores.n_logical"]["old"] == 999
    assert "old" not in changes["machine.memory.available_bytes"]


def test_compare_with_a_sparse_report_is_robust(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    sparse = write(tmp_path / "sparse.json", '{"kind": "doctor", "machine": {"cores": 3}}')
    argv = ["explain", "tests.test_cli:square", "--range", "50", "--compare-with", sparse]
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert "plan: (missing) → serial" in out
    assert "machine.cores: 3 → (missing)" in out
    assert "machine.cores.n_logical: (missing) → " in out


def test_unknown_figures_are_no_change_and_rates_are_rates() -> None:
    old = {"plan": {"facts": {"available_memory_bytes": None, "ipc_bytes_per_s": 5e8}}}
    new = {"plan": {"facts": {"available_memory_bytes": 2**30, "ipc_bytes_per_s": 6e8}}}
    changes = _reports._diff_reports(old, new)
    assert [key for key, _, _ in changes] == ["plan.facts.ipc_bytes_per_s"]
    text = _reports._format_changes("old.json", old, changes)
    assert "plan.facts.ipc_bytes_per_s: 476.8 MiB/s → 572.2 MiB/s (+20%)" in text
    per_item = [("plan.measurements.wall_s_per_item", 1.2e-7, 1.5e-7)]
    assert "0.1 µs → 0.1 µs (+25%)" in _reports._format_changes("old.json", old, per_item)


def test_identical_reports_have_no_changes() -> None:
    report = {"kind": "doctor", "machine": {"cores": {"n_logical": 2}}, "plan": None}
    assert _reports._diff_reports(report, report) == []
    assert _reports._format_changes("old.json", report, []).startswith("no changes since old.json")


# -- errors and exit codes -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("function", "message"),
    [
        ("tests.test_cli", "give the function as MODULE:FUNCTION"),
        (":square", "give the function as MODULE:FUNCTION"),
        ("tests.test_cli:", "give the function as MODULE:FUNCTION"),
        ("tests/test_cli.py:square", "such as tests.test_cli:square"),
        ("no_such_module_for_cli_tests:f", "cannot import module 'no_such_module_for_cli_tests'"),
        ("tests.test_cli:squar", "has no attribute 'squar' (did you mean 'square'?)"),
        ("tests.test_cli:square.nope", "'tests.test_cli:square' has no attribute 'nope'"),
        ("tests.test_cli:NOT_CALLABLE", "is not callable (it is of type int)"),
    ],
)
def test_a_bad_function_path_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], function: str, message: str
) -> None:
    code, out, err = run_cli(capsys, "explain", function, "--range", "3")
    assert code == 2
    assert message in err
    assert out == ""


def test_a_module_that_fails_to_import_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    name = f"cli_broken_{uuid.uuid4().hex}"
    write(tmp_path / f"{name}.py", "raise RuntimeError('broken at import')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    try:
        code, _, err = run_cli(capsys, "explain", f"{name}:f", "--range", "3")
    finally:
        sys.modules.pop(name, None)
    assert code == 2
    assert f"importing module '{name}' raised RuntimeError: broken at import" in err
    assert "Traceback" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "no input to map over: give exactly one of --range N"),
        (["--range", "3", "--lines", "x.txt"], "--range and --lines were given together"),
        (["--lines", "does-not-exist.txt"], "input file 'does-not-exist.txt' not found"),
        (["--range", "-1"], "argument --range: must be an int >= 0, got -1"),
        (["--range", "ten"], "argument --range: must be an int, such as 1000, got 'ten'"),
        (["--range", "3", "--max-workers", "0"], "must be a positive int, got 0"),
        (["--range", "3", "--progress"], "--progress shows a bar while the job runs: add --run"),
        (["--range", "3", "--compare-with", "missing.json"], "report 'missing.json' not found"),
        (["--range", "3", "--export", "no/such/dir/r.json"], "directory 'no/such/dir' does not"),
    ],
)
def test_a_bad_input_spec_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run_cli(capsys, "explain", "tests.test_cli:square", *argv)
    assert code == 2
    assert message in err
    assert out == ""


def test_invalid_json_names_its_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = write(tmp_path / "bad.jsonl", '1\n"ok"\n{not json}\n')
    code, _, err = run_cli(capsys, "explain", "tests.test_cli:square", "--jsonl", path)
    assert code == 2
    assert f"'{path}' line 3 is not valid JSON" in err
    assert "Each line must hold one JSON value" in err


def test_a_file_that_is_not_utf8_names_its_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"fine\ncaf\xe9\n")
    code, _, err = run_cli(capsys, "explain", "tests.test_cli:line_length", "--lines", str(path))
    assert code == 2
    assert f"'{path}' line 2 is not UTF-8 text" in err


def test_a_report_that_is_not_json_is_a_usage_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    for name, text, message in (
        ("garbage.json", "not json", "is not JSON"),
        ("list.json", "[1, 2]", "holds a JSON list, not a report object"),
    ):
        path = write(tmp_path / name, text)
        code, _, err = run_cli(capsys, "doctor", "--compare-with", path)
        assert code == 2
        assert message in err


def test_a_function_that_raises_while_probing_exits_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run_cli(capsys, "explain", "tests.test_cli:fail_on_three", "--range", "10")
    assert code == 1
    assert "raised ValueError on item 3 while probing" in out
    assert "tests.test_cli:fail_on_three raised ValueError on item 3 (input 3)" in err
    assert "three is not allowed" in err
    assert "Traceback" in err


def test_a_function_that_raises_during_the_run_exits_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run_cli(
        capsys, "explain", "tests.test_cli:fail_on_three", "--range", "10", "--run", "--json"
    )
    assert code == 1
    report = json.loads(out)
    assert report["n_results"] == 3
    assert report["error"] == {
        "type": "ValueError",
        "message": "three is not allowed, got 3",
        "item_index": 3,
    }
    assert "raised ValueError on item 3" in err


def test_usage_errors_of_the_parser_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys)
    assert code == 2
    assert "name a command: doctor or explain" in err
    code, _, err = run_cli(capsys, "frobnicate")
    assert code == 2
    assert "invalid choice" in err
    code, _, err = run_cli(capsys, "doctor", "--measure", "telepathy")
    assert code == 2
    assert "invalid choice" in err


def test_help_documents_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in ([], ["doctor"], ["explain"]):
        code, out, _ = run_cli(capsys, *argv, "--help")
        assert code == 0
        assert "exit codes:" in out
        assert "2    usage error" in out
    code, out, _ = run_cli(capsys, "--version")
    assert code == 0
    assert _cli.__version__ in out
