"""Tests for the on-disk worker start cost cache."""

from __future__ import annotations

import json
import logging
import os
import stat
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from amorsize_executor import _start_cost_cache as cache


@pytest.fixture(autouse=True)
def _no_real_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may touch the user's real cache, even one that forgets to pass a path."""
    monkeypatch.setenv("AMORSIZE_CACHE_DIR", str(tmp_path / "default-cache"))


@pytest.fixture
def cache_path(tmp_path: Path) -> Path:
    return tmp_path / "cache" / "worker_start.json"


def read_document(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def our_document(worker_start_s: object) -> dict[str, object]:
    """A file as this machine would write it, with the given entries."""
    return {
        "format_version": 1,
        "fingerprint": cache._machine_fingerprint(),
        "worker_start_s": worker_start_s,
    }


def write_document(path: Path, document: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document), encoding="utf-8")


def test_missing_file_loads_none(cache_path: Path) -> None:
    assert cache.load_worker_start_s("loky", cache_path) is None


def test_round_trip(cache_path: Path) -> None:
    cache.store_worker_start_s("loky", 0.125, cache_path)
    assert cache.load_worker_start_s("loky", cache_path) == 0.125
    assert cache.load_worker_start_s("spawn", cache_path) is None


def test_start_methods_are_kept_apart(cache_path: Path) -> None:
    cache.store_worker_start_s("loky", 0.12, cache_path)
    cache.store_worker_start_s("fork", 0.004, cache_path)
    assert cache.load_worker_start_s("loky", cache_path) == 0.12
    assert cache.load_worker_start_s("fork", cache_path) == 0.004


def test_one_noisy_sample_does_not_dominate(cache_path: Path) -> None:
    for seconds in (0.10, 0.11, 5.0):
        cache.store_worker_start_s("spawn", seconds, cache_path)
    assert cache.load_worker_start_s("spawn", cache_path) == 0.11


def test_only_the_last_five_samples_are_kept(cache_path: Path) -> None:
    for seconds in (9.0, 9.0, 9.0, 0.1, 0.2, 0.3, 0.4, 0.5):
        cache.store_worker_start_s("loky", seconds, cache_path)
    assert read_document(cache_path)["worker_start_s"]["loky"] == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert cache.load_worker_start_s("loky", cache_path) == 0.3


def test_a_new_pool_records_a_sample_unless_a_full_set_already_says_as_much(
    cache_path: Path,
) -> None:
    for seconds in (0.01, 0.02, 0.03):
        cache.record_worker_start_s("fork", seconds, cache_path)
    assert read_document(cache_path)["worker_start_s"]["fork"] == [0.01, 0.02, 0.03]
    for seconds in (0.015, 0.025):  # fewer than five stored: recorded
        cache.record_worker_start_s("fork", seconds, cache_path)
    full = [0.01, 0.02, 0.03, 0.015, 0.025]
    assert read_document(cache_path)["worker_start_s"]["fork"] == full
    cache.record_worker_start_s("fork", 0.022, cache_path)  # near the median 0.02: not written
    assert read_document(cache_path)["worker_start_s"]["fork"] == full
    cache.record_worker_start_s("fork", 0.05, cache_path)  # outside: a change, recorded
    assert read_document(cache_path)["worker_start_s"]["fork"] == [*full[1:], 0.05]
    with pytest.raises(ValueError, match="got -1"):
        cache.record_worker_start_s("fork", -1.0, cache_path)


def test_quiet_starts_replace_samples_stored_while_the_machine_was_loaded(
    cache_path: Path,
) -> None:
    # Measured on the 2-core VM: five starts under load (5-44 ms, median 30 ms) span every
    # quiet start (about 12 ms); skipped on the range alone, the median stayed at 30 ms.
    for seconds in (0.015, 0.030, 0.038, 0.044, 0.0055):
        cache.store_worker_start_s("fork", seconds, cache_path)
    for _ in range(3):
        cache.record_worker_start_s("fork", 0.012, cache_path)
    assert cache.load_worker_start_s("fork", cache_path) == 0.012


def test_file_is_versioned_fingerprinted_json(cache_path: Path) -> None:
    cache.store_worker_start_s("forkserver", 0.05, cache_path)
    document = read_document(cache_path)
    assert document["format_version"] == 1
    fingerprint = document["fingerprint"]
    assert set(fingerprint) == {"hostname", "platform", "n_logical_cores", "python"}
    assert fingerprint["n_logical_cores"] == (os.cpu_count() or 1)
    assert fingerprint["python"].endswith(f"-{sys.version_info[0]}.{sys.version_info[1]}")
    assert document["worker_start_s"] == {"forkserver": [0.05]}


@pytest.mark.parametrize(
    "text",
    ["{not json", "", "\x00\x01", '{"format_version": 1', "[" * 60_000, "\udcff"],
)
def test_corrupt_file_loads_none_and_is_rewritten(cache_path: Path, text: str) -> None:
    cache_path.parent.mkdir(parents=True)
    cache_path.write_bytes(text.encode("utf-8", "surrogateescape"))
    assert cache.load_worker_start_s("loky", cache_path) is None
    cache.store_worker_start_s("loky", 0.2, cache_path)
    assert cache.load_worker_start_s("loky", cache_path) == 0.2


def test_oversized_file_is_ignored(cache_path: Path) -> None:
    document = our_document({"loky": [0.1]})
    document["padding"] = "x" * (128 * 1024)
    write_document(cache_path, document)
    assert cache.load_worker_start_s("loky", cache_path) is None


def test_oversized_file_is_ignored_even_if_its_start_is_valid(cache_path: Path) -> None:
    write_document(cache_path, our_document({"loky": [0.1]}))
    with open(cache_path, "a", encoding="utf-8") as handle:
        handle.write(" " * (128 * 1024))
    assert cache.load_worker_start_s("loky", cache_path) is None


def test_foreign_fingerprint_is_ignored_and_replaced(cache_path: Path) -> None:
    document = our_document({"loky": [0.9, 0.9, 0.9]})
    document["fingerprint"] = {**cache._machine_fingerprint(), "hostname": "elsewhere"}
    write_document(cache_path, document)
    assert cache.load_worker_start_s("loky", cache_path) is None
    cache.store_worker_start_s("loky", 0.1, cache_path)
    rewritten = read_document(cache_path)
    assert rewritten["fingerprint"] == cache._machine_fingerprint()
    assert rewritten["worker_start_s"] == {"loky": [0.1]}


def test_other_core_count_is_another_machine(
    cache_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache.store_worker_start_s("loky", 0.1, cache_path)
    n_cores = os.cpu_count() or 1
    monkeypatch.setattr(os, "cpu_count", lambda: n_cores + 1)
    assert cache.load_worker_start_s("loky", cache_path) is None


def test_other_format_version_is_ignored(cache_path: Path) -> None:
    document = our_document({"loky": [0.1]})
    document["format_version"] = 2
    write_document(cache_path, document)
    assert cache.load_worker_start_s("loky", cache_path) is None


@pytest.mark.parametrize(
    "document",
    [
        [],
        "a string",
        our_document([0.1]),
        our_document({"loky": 0.1}),
        our_document({"loky": ["fast"]}),
        our_document({"loky": [True]}),
        our_document({"loky": [-0.1]}),
        our_document({"loky": [None]}),
        our_document({"loky": [0.1], "spawn": "slow"}),
    ],
)
def test_wrong_types_are_ignored_and_rewritten(cache_path: Path, document: object) -> None:
    write_document(cache_path, document)
    assert cache.load_worker_start_s("loky", cache_path) is None
    cache.store_worker_start_s("loky", 0.3, cache_path)
    assert read_document(cache_path)["worker_start_s"] == {"loky": [0.3]}


@pytest.mark.parametrize("sample", [float("nan"), float("inf")])
def test_non_finite_sample_in_file_is_ignored(cache_path: Path, sample: float) -> None:
    # Python's json writes and reads NaN and Infinity unless told not to; ours never holds them.
    write_document(cache_path, our_document({"loky": [0.1], "spawn": [sample]}))
    assert cache.load_worker_start_s("loky", cache_path) is None


def test_empty_sample_list_loads_none(cache_path: Path) -> None:
    write_document(cache_path, our_document({"loky": []}))
    assert cache.load_worker_start_s("loky", cache_path) is None
    cache.store_worker_start_s("loky", 0.4, cache_path)
    assert cache.load_worker_start_s("loky", cache_path) == 0.4


def test_integer_samples_are_accepted(cache_path: Path) -> None:
    write_document(cache_path, our_document({"spawn": [1, 2, 3]}))
    assert cache.load_worker_start_s("spawn", cache_path) == 2.0


@pytest.mark.parametrize("seconds", [-0.001, float("nan"), float("inf")])
def test_store_rejects_impossible_seconds(cache_path: Path, seconds: float) -> None:
    with pytest.raises(ValueError, match="seconds must be a finite number >= 0"):
        cache.store_worker_start_s("loky", seconds, cache_path)
    assert not cache_path.exists()


def test_file_mode_is_0o600_and_new_directory_0o700(tmp_path: Path) -> None:
    path = tmp_path / "new" / "worker_start.json"
    cache.store_worker_start_s("loky", 0.1, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_a_looser_existing_file_becomes_0o600(cache_path: Path) -> None:
    write_document(cache_path, our_document({"loky": [0.1]}))
    cache_path.chmod(0o644)
    cache.store_worker_start_s("loky", 0.1, cache_path)
    assert stat.S_IMODE(cache_path.stat().st_mode) == 0o600


def test_store_leaves_no_temporary_file(cache_path: Path) -> None:
    for seconds in (0.1, 0.2, 0.3):
        cache.store_worker_start_s("loky", seconds, cache_path)
    assert [p.name for p in cache_path.parent.iterdir()] == ["worker_start.json"]


def test_failed_rename_keeps_the_old_file_and_cleans_up(
    cache_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache.store_worker_start_s("loky", 0.1, cache_path)

    def fail_replace(src: str, dst: str) -> None:
        raise PermissionError(13, "Permission denied", dst)

    monkeypatch.setattr(os, "replace", fail_replace)
    cache.store_worker_start_s("loky", 0.7, cache_path)  # must not raise
    monkeypatch.undo()
    assert [p.name for p in cache_path.parent.iterdir()] == ["worker_start.json"]
    assert cache.load_worker_start_s("loky", cache_path) == 0.1


def test_read_only_directory_does_not_raise(
    cache_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Simulated, because root (as in CI) may write to a chmod 0o500 directory.
    def refuse(*args: object, **kwargs: object) -> tuple[int, str]:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with caplog.at_level(logging.DEBUG, logger="amorsize_executor"):
        cache.store_worker_start_s("loky", 0.1, cache_path)
    assert not cache_path.exists()
    assert any("cannot write worker start cache" in r.getMessage() for r in caplog.records)


def test_directory_that_cannot_be_created_does_not_raise(tmp_path: Path) -> None:
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the cache directory should be")
    path = blocker / "sub" / "worker_start.json"
    cache.store_worker_start_s("loky", 0.1, path)
    assert cache.load_worker_start_s("loky", path) is None
    assert blocker.read_text() == "a file where the cache directory should be"


def test_cache_path_that_is_a_directory_does_not_raise(tmp_path: Path) -> None:
    path = tmp_path / "worker_start.json"
    path.mkdir()
    cache.store_worker_start_s("loky", 0.1, path)
    assert cache.load_worker_start_s("loky", path) is None
    assert list(path.iterdir()) == []
    assert [p.name for p in tmp_path.iterdir()] == ["worker_start.json"]


def test_default_cache_path_honours_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AMORSIZE_CACHE_DIR", str(tmp_path / "custom"))
    assert cache.default_cache_path() == tmp_path / "custom" / "worker_start.json"
    cache.store_worker_start_s("spawn", 0.06)
    assert (tmp_path / "custom" / "worker_start.json").is_file()
    assert cache.load_worker_start_s("spawn") == 0.06


def test_default_cache_path_is_the_user_cache_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMORSIZE_CACHE_DIR", "  ")
    path = cache.default_cache_path()
    assert path.name == "worker_start.json"
    assert "amorsize-executor" in path.parts
    assert path.parts.count("amorsize-executor") == 1
