"""Tests for reading system facts: parsers on literal text, readers on fake trees."""

from __future__ import annotations

import ast
import logging
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from amorsize_executor import _cgroup_text as ct
from amorsize_executor import _system_facts as sf
from amorsize_executor._records import SystemFacts

GiB = 1 << 30
MiB = 1 << 20
V1_UNLIMITED = "9223372036854771712\n"


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    """Core counts and the warn-once helper are cached; tests patch what they read."""
    sf.read_physical_cores.cache_clear()
    sf.read_logical_cores.cache_clear()
    sf._warn_invalid_env_value.cache_clear()
    yield
    sf.read_physical_cores.cache_clear()
    sf.read_logical_cores.cache_clear()
    sf._warn_invalid_env_value.cache_clear()


# --- parsing -------------------------------------------------------------------------------


def test_parse_proc_self_cgroup_v2_only() -> None:
    membership = ct.parse_proc_self_cgroup("0::/user.slice/user-1000.slice/app.scope\n")
    assert membership.v2_path == "/user.slice/user-1000.slice/app.scope"
    assert dict(membership.v1_paths) == {}


def test_parse_proc_self_cgroup_v1_and_hybrid() -> None:
    text = "9:name=systemd:/\n4:memory:/x\n3:cpuset:/\n1:cpu,cpuacct:/y\n0::/\n"
    membership = ct.parse_proc_self_cgroup(text)
    assert membership.v2_path == "/"
    assert dict(membership.v1_paths) == {
        "memory": "/x",
        "cpuset": "/",
        "cpu": "/y",
        "cpuacct": "/y",
    }
    assert membership.v1_mount_names["cpu"] == "cpu,cpuacct"
    assert membership.v1_mount_names["memory"] == "memory"
    assert "name=systemd" not in membership.v1_paths


def test_parse_proc_self_cgroup_v1_only_has_no_v2_path() -> None:
    membership = ct.parse_proc_self_cgroup("4:memory:/docker/abc\n1:cpu:/docker/abc\n")
    assert membership.v2_path is None
    assert dict(membership.v1_paths) == {"memory": "/docker/abc", "cpu": "/docker/abc"}


def test_parse_proc_self_cgroup_path_may_contain_colons() -> None:
    membership = ct.parse_proc_self_cgroup("0::/a:b/c\n")
    assert membership.v2_path == "/a:b/c"


@pytest.mark.parametrize("text", ["", "garbage\n", "1:cpu\n", "0::relative/path\n", "\n\n"])
def test_parse_proc_self_cgroup_ignores_garbage(text: str) -> None:
    membership = ct.parse_proc_self_cgroup(text)
    assert membership.v2_path is None
    assert dict(membership.v1_paths) == {}


@pytest.mark.parametrize(
    ("text", "expected_cores"),
    [
        ("max 100000\n", None),
        ("150000 100000\n", 1.5),
        ("200000 100000", 2.0),
        ("50000 100000\n", 0.5),
        ("max\n", None),
        ("", None),
        ("garbage\n", None),
        ("100000 garbage\n", None),
        ("0 100000\n", None),
        ("100000 0\n", None),
        ("1 2 3\n", None),
    ],
)
def test_parse_cgroup_v2_cpu_max_cores(text: str, expected_cores: float | None) -> None:
    assert ct.parse_cgroup_v2_cpu_max_cores(text) == expected_cores


@pytest.mark.parametrize(
    ("quota_text", "period_text", "expected_cores"),
    [
        ("-1\n", "100000\n", None),
        ("50000\n", "100000\n", 0.5),
        ("300000\n", "100000\n", 3.0),
        ("garbage\n", "100000\n", None),
        ("50000\n", "\n", None),
        ("50000\n", "0\n", None),
    ],
)
def test_parse_cgroup_v1_cpu_quota_cores(
    quota_text: str, period_text: str, expected_cores: float | None
) -> None:
    assert ct.parse_cgroup_v1_cpu_quota_cores(quota_text, period_text) == expected_cores


@pytest.mark.parametrize(
    ("text", "expected_bytes"),
    [("max\n", None), ("1073741824\n", GiB), ("0\n", 0), ("garbage", None), ("-5", None)],
)
def test_parse_cgroup_v2_memory_limit_bytes(text: str, expected_bytes: int | None) -> None:
    assert ct.parse_cgroup_v2_memory_limit_bytes(text) == expected_bytes


@pytest.mark.parametrize(
    ("text", "expected_bytes"),
    [
        (V1_UNLIMITED, None),
        ("9223372036854710272\n", None),  # "unlimited" with 64 KiB pages
        ("536870912\n", 512 * MiB),
        ("", None),
        ("garbage\n", None),
    ],
)
def test_parse_cgroup_v1_memory_limit_bytes(text: str, expected_bytes: int | None) -> None:
    assert ct.parse_cgroup_v1_memory_limit_bytes(text) == expected_bytes


@pytest.mark.parametrize(
    ("text", "expected_bytes"), [("12345\n", 12345), ("garbage", None), ("", None)]
)
def test_parse_cgroup_memory_usage_bytes(text: str, expected_bytes: int | None) -> None:
    assert ct.parse_cgroup_memory_usage_bytes(text) == expected_bytes


def test_parse_inactive_file_bytes_matches_the_exact_key() -> None:
    v1_stat = "cache 500\ninactive_file 100\ntotal_inactive_file 300\nrss 42\n"
    assert ct.parse_inactive_file_bytes(v1_stat, "total_inactive_file") == 300
    assert ct.parse_inactive_file_bytes(v1_stat, "inactive_file") == 100
    assert ct.parse_inactive_file_bytes("anon 5\n", "inactive_file") is None
    assert ct.parse_inactive_file_bytes("inactive_file lots\n", "inactive_file") is None


# --- reading: fake trees -------------------------------------------------------------------


def make_v2_tree(root: Path, cgroup_path: str) -> Path:
    """A pure cgroup v2 layout; returns the mount directory."""
    write(root, "proc/self/cgroup", f"0::{cgroup_path}\n")
    write(root, "sys/fs/cgroup/cgroup.controllers", "cpu memory\n")
    return root / "sys/fs/cgroup"


def test_read_cpu_quota_v2_parent_limit_is_tighter(tmp_path: Path) -> None:
    mount = make_v2_tree(tmp_path, "/parent/child")
    write(mount, "parent/cpu.max", "50000 100000\n")
    write(mount, "parent/child/cpu.max", "max 100000\n")
    assert sf.read_cpu_quota_cores(tmp_path) == 0.5


def test_read_cpu_quota_v2_child_limit_is_tighter(tmp_path: Path) -> None:
    mount = make_v2_tree(tmp_path, "/parent/child")
    write(mount, "parent/cpu.max", "400000 100000\n")
    write(mount, "parent/child/cpu.max", "150000 100000\n")
    assert sf.read_cpu_quota_cores(tmp_path) == 1.5


def test_read_cpu_quota_v2_unlimited(tmp_path: Path) -> None:
    mount = make_v2_tree(tmp_path, "/a")
    write(mount, "a/cpu.max", "max 100000\n")
    assert sf.read_cpu_quota_cores(tmp_path) is None


def test_read_cpu_quota_v2_hidden_path_falls_back_to_mount(tmp_path: Path) -> None:
    # Inside a container the host's path is listed but the mount is the container's cgroup.
    mount = make_v2_tree(tmp_path, "/system.slice/docker-abc.scope")
    write(mount, "cpu.max", "200000 100000\n")
    assert sf.read_cpu_quota_cores(tmp_path) == 2.0


def test_read_cpu_quota_hidden_path_ignores_same_named_dirs(tmp_path: Path) -> None:
    # The listed path is the host's; a same-named directory in the container's view is some
    # other cgroup, so a missing leaf means "use the mount", not "walk what exists".
    mount = make_v2_tree(tmp_path, "/docker/abc")
    write(mount, "docker/cpu.max", "10000 100000\n")
    write(mount, "cpu.max", "200000 100000\n")
    assert sf.read_cpu_quota_cores(tmp_path) == 2.0


def test_read_cpu_quota_refuses_to_leave_the_mount(tmp_path: Path) -> None:
    mount = make_v2_tree(tmp_path, "/../outside")
    write(tmp_path, "sys/fs/outside/cpu.max", "10000 100000\n")
    write(mount, "cpu.max", "300000 100000\n")
    assert sf.read_cpu_quota_cores(tmp_path) == 3.0


def test_read_cpu_quota_v1_co_mounted_dir(tmp_path: Path) -> None:
    write(tmp_path, "proc/self/cgroup", "4:memory:/\n2:cpu,cpuacct:/job\n")
    write(tmp_path, "sys/fs/cgroup/cpu,cpuacct/job/cpu.cfs_quota_us", "250000\n")
    write(tmp_path, "sys/fs/cgroup/cpu,cpuacct/job/cpu.cfs_period_us", "100000\n")
    assert sf.read_cpu_quota_cores(tmp_path) == 2.5


def test_read_cpu_quota_v1_separate_cpu_dir_and_parent_limit(tmp_path: Path) -> None:
    write(tmp_path, "proc/self/cgroup", "1:cpu:/outer/inner\n")
    cpu = "sys/fs/cgroup/cpu"
    write(tmp_path, f"{cpu}/outer/cpu.cfs_quota_us", "75000\n")
    write(tmp_path, f"{cpu}/outer/cpu.cfs_period_us", "100000\n")
    write(tmp_path, f"{cpu}/outer/inner/cpu.cfs_quota_us", "-1\n")
    write(tmp_path, f"{cpu}/outer/inner/cpu.cfs_period_us", "100000\n")
    assert sf.read_cpu_quota_cores(tmp_path) == 0.75


def test_read_cpu_quota_v1_nested_dir_missing_uses_controller_root(tmp_path: Path) -> None:
    write(tmp_path, "proc/self/cgroup", "1:cpu:/docker/abc\n")
    write(tmp_path, "sys/fs/cgroup/cpu/cpu.cfs_quota_us", "100000\n")
    write(tmp_path, "sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000\n")
    assert sf.read_cpu_quota_cores(tmp_path) == 1.0


def test_read_cpu_quota_v1_unlimited(tmp_path: Path) -> None:
    write(tmp_path, "proc/self/cgroup", "1:cpu:/\n")
    write(tmp_path, "sys/fs/cgroup/cpu/cpu.cfs_quota_us", "-1\n")
    write(tmp_path, "sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000\n")
    assert sf.read_cpu_quota_cores(tmp_path) is None


def test_read_cpu_quota_hybrid_unified_mount_is_found(tmp_path: Path) -> None:
    write(tmp_path, "proc/self/cgroup", "1:cpu:/\n0::/svc\n")
    write(tmp_path, "sys/fs/cgroup/unified/cgroup.controllers", "")
    write(tmp_path, "sys/fs/cgroup/unified/svc/cpu.max", "120000 100000\n")
    write(tmp_path, "sys/fs/cgroup/cpu/cpu.cfs_quota_us", "-1\n")
    write(tmp_path, "sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000\n")
    assert sf.read_cpu_quota_cores(tmp_path) == 1.2


def test_read_cpu_quota_takes_the_min_of_v1_and_v2(tmp_path: Path) -> None:
    write(tmp_path, "proc/self/cgroup", "1:cpu:/\n0::/\n")
    write(tmp_path, "sys/fs/cgroup/unified/cgroup.controllers", "")
    write(tmp_path, "sys/fs/cgroup/unified/cpu.max", "300000 100000\n")
    write(tmp_path, "sys/fs/cgroup/cpu/cpu.cfs_quota_us", "150000\n")
    write(tmp_path, "sys/fs/cgroup/cpu/cpu.cfs_period_us", "100000\n")
    assert sf.read_cpu_quota_cores(tmp_path) == 1.5


def test_readers_without_proc_self_cgroup_give_none(tmp_path: Path) -> None:
    write(tmp_path, "sys/fs/cgroup/cgroup.controllers", "")
    write(tmp_path, "sys/fs/cgroup/cpu.max", "100000 100000\n")
    write(tmp_path, "sys/fs/cgroup/memory.max", f"{GiB}\n")
    assert sf.read_cpu_quota_cores(tmp_path) is None
    assert sf.read_cgroup_memory_headroom_bytes(tmp_path) is None


def test_readers_without_cgroup_mounts_give_none(tmp_path: Path) -> None:
    write(tmp_path, "proc/self/cgroup", "4:memory:/x\n1:cpu:/y\n0::/z\n")
    assert sf.read_cpu_quota_cores(tmp_path) is None
    assert sf.read_cgroup_memory_headroom_bytes(tmp_path) is None


def test_readers_treat_unreadable_files_as_missing(tmp_path: Path) -> None:
    # A directory where a file should be fails to read with IsADirectoryError, even as root.
    mount = make_v2_tree(tmp_path, "/a")
    (mount / "a/cpu.max").mkdir(parents=True)
    (mount / "a/memory.max").mkdir(parents=True)
    write(mount, "cpu.max", "100000 100000\n")
    assert sf.read_cpu_quota_cores(tmp_path) == 1.0
    assert sf.read_cgroup_memory_headroom_bytes(tmp_path) is None


def test_readers_treat_binary_garbage_as_missing(tmp_path: Path) -> None:
    mount = make_v2_tree(tmp_path, "/")
    (mount / "cpu.max").write_bytes(b"\xff\xfe\x00")
    (mount / "memory.max").write_bytes(b"\xff\xfe\x00")
    assert sf.read_cpu_quota_cores(tmp_path) is None
    assert sf.read_cgroup_memory_headroom_bytes(tmp_path) is None


def test_memory_headroom_v2_nested_parent_is_tighter(tmp_path: Path) -> None:
    mount = make_v2_tree(tmp_path, "/parent/child")
    write(mount, "parent/memory.max", f"{GiB}\n")
    write(mount, "parent/memory.current", f"{600 * MiB}\n")
    write(mount, "parent/child/memory.max", f"{2 * GiB}\n")
    write(mount, "parent/child/memory.current", f"{100 * MiB}\n")
    assert sf.read_cgroup_memory_headroom_bytes(tmp_path) == GiB - 600 * MiB


def test_memory_headroom_v2_child_is_tighter(tmp_path: Path) -> None:
    mount = make_v2_tree(tmp_path, "/parent/child")
    write(mount, "parent/memory.max", f"{4 * GiB}\n")
    write(mount, "parent/memory.current", f"{GiB}\n")
    write(mount, "parent/child/memory.max", f"{GiB}\n")
    write(mount, "parent/child/memory.current", f"{256 * MiB}\n")
    assert sf.read_cgroup_memory_headroom_bytes(tmp_path) == GiB - 256 * MiB


def test_memory_headroom_v2_memory_high_counts(tmp_path: Path) -> None:
    mount = make_v2_tree(tmp_path, "/a")
    write(mount, "a/memory.max", "max\n")
    write(mount, "a/memory.high", f"{512 * MiB}\n")
    write(mount, "a/memory.current", f"{12 * MiB}\n")
    assert sf.read_cgroup_memory_headroom_bytes(tmp_path) == 500 * MiB


def test_memory_headroom_v2_unlimited(tmp_path: Path) -> None:
    mount = make_v2_tree(tmp_path, "/a")
    write(mount, "a/memory.max", "max\n")
    write(mount, "a/memory.high", "max\n")
    write(mount, "a/memory.current", f"{GiB}\n")
    assert sf.read_cgroup_memory_headroom_bytes(tmp_path) is None


def test_memory_headroom_is_never_negative(tmp_path: Path) -> None:
    mount = make_v2_tree(tmp_path, "/a")
    write(mount, "a/memory.max", f"{100 * MiB}\n")
    write(mount, "a/memory.current", f"{150 * MiB}\n")
    assert sf.read_cgroup_memory_headroom_bytes(tmp_path) == 0


def test_memory_headroom_without_usage_file_is_the_limit(tmp_path: Path) -> None:
    mount = make_v2_tree(tmp_path, "/a")
    write(mount, "a/memory.max", f"{GiB}\n")
    assert sf.read_cgroup_memory_headroom_bytes(tmp_path) == GiB


def test_memory_headroom_parent_usage_missing_uses_child_usage(tmp_path: Path) -> None:
    mount = make_v2_tree(tmp_path, "/parent/child")
    write(mount, "parent/memory.max", f"{GiB}\n")
    write(mount, "parent/child/memory.max", f"{2 * GiB}\n")
    write(mount, "parent/child/memory.current", f"{300 * MiB}\n")
    assert sf.read_cgroup_memory_headroom_bytes(tmp_path) == GiB - 300 * MiB


def test_memory_headroom_parent_usage_read_below_child_usage(tmp_path: Path) -> None:
    # The files are not read at one instant: a parent can appear to use less than its child.
    mount = make_v2_tree(tmp_path, "/parent/child")
    write(mount, "parent/memory.max", f"{GiB}\n")
    write(mount, "parent/memory.current", f"{200 * MiB}\n")
    write(mount, "parent/child/memory.max", f"{2 * GiB}\n")
    write(mount, "parent/child/memory.current", f"{300 * MiB}\n")
    assert sf.read_cgroup_memory_headroom_bytes(tmp_path) == GiB - 300 * MiB


def test_memory_headroom_does_not_count_inactive_file_cache(tmp_path: Path) -> None:
    mount = make_v2_tree(tmp_path, "/a")
    write(mount, "a/memory.max", f"{GiB}\n")
    write(mount, "a/memory.current", f"{900 * MiB}\n")
    write(mount, "a/memory.stat", f"anon {100 * MiB}\ninactive_file {700 * MiB}\n")
    assert sf.read_cgroup_memory_headroom_bytes(tmp_path) == GiB - 200 * MiB


def test_memory_headroom_v1_leaf_limit(tmp_path: Path) -> None:
    write(tmp_path, "proc/self/cgroup", "4:memory:/job\n")
    memory = "sys/fs/cgroup/memory"
    write(tmp_path, f"{memory}/memory.limit_in_bytes", V1_UNLIMITED)
    write(tmp_path, f"{memory}/job/memory.limit_in_bytes", f"{GiB}\n")
    write(tmp_path, f"{memory}/job/memory.usage_in_bytes", f"{400 * MiB}\n")
    write(
        tmp_path,
        f"{memory}/job/memory.stat",
        f"inactive_file {GiB}\ntotal_inactive_file {100 * MiB}\n",
    )
    assert sf.read_cgroup_memory_headroom_bytes(tmp_path) == GiB - 300 * MiB


def test_memory_headroom_v1_nested_dir_missing_uses_controller_root(tmp_path: Path) -> None:
    write(tmp_path, "proc/self/cgroup", "4:memory:/docker/abc\n")
    write(tmp_path, "sys/fs/cgroup/memory/memory.limit_in_bytes", f"{2 * GiB}\n")
    write(tmp_path, "sys/fs/cgroup/memory/memory.usage_in_bytes", f"{GiB}\n")
    assert sf.read_cgroup_memory_headroom_bytes(tmp_path) == GiB


def test_memory_headroom_v1_unlimited(tmp_path: Path) -> None:
    write(tmp_path, "proc/self/cgroup", "4:memory:/\n")
    write(tmp_path, "sys/fs/cgroup/memory/memory.limit_in_bytes", V1_UNLIMITED)
    write(tmp_path, "sys/fs/cgroup/memory/memory.usage_in_bytes", f"{GiB}\n")
    assert sf.read_cgroup_memory_headroom_bytes(tmp_path) is None


def test_memory_headroom_takes_the_min_of_v1_and_v2(tmp_path: Path) -> None:
    write(tmp_path, "proc/self/cgroup", "4:memory:/\n0::/\n")
    write(tmp_path, "sys/fs/cgroup/unified/cgroup.controllers", "")
    write(tmp_path, "sys/fs/cgroup/unified/memory.max", f"{3 * GiB}\n")
    write(tmp_path, "sys/fs/cgroup/memory/memory.limit_in_bytes", f"{2 * GiB}\n")
    write(tmp_path, "sys/fs/cgroup/memory/memory.usage_in_bytes", f"{GiB}\n")
    assert sf.read_cgroup_memory_headroom_bytes(tmp_path) == GiB


# --- cores, environment, memory, start cost ------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="needs sched_getaffinity")
def test_read_affinity_cores_counts_the_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5})
    assert sf.read_affinity_cores() == 3


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="needs sched_getaffinity")
def test_read_affinity_cores_error_gives_none(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(pid: int) -> set[int]:
        raise OSError("not supported")

    monkeypatch.setattr(os, "sched_getaffinity", fail)
    assert sf.read_affinity_cores() is None


def test_read_affinity_cores_falls_back_to_psutil(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(psutil, "Process", lambda: SimpleNamespace(cpu_affinity=lambda: [1, 2]))
    assert sf.read_affinity_cores() == 2


def test_read_affinity_cores_none_where_psutil_cannot_tell(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(psutil, "Process", lambda: SimpleNamespace())  # macOS: no cpu_affinity
    assert sf.read_affinity_cores() is None


@pytest.mark.parametrize(("psutil_count", "expected"), [(4, 4), (None, None), (0, None)])
def test_read_physical_cores_asks_psutil_without_sysfs(
    monkeypatch: pytest.MonkeyPatch, psutil_count: int | None, expected: int | None
) -> None:
    monkeypatch.setattr(sf, "read_sysfs_physical_cores", lambda root=None: None)
    monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: psutil_count)
    assert sf.read_physical_cores() == expected


def test_read_physical_cores_prefers_sysfs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sf, "read_sysfs_physical_cores", lambda root=None: 3)
    monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: 99)
    assert sf.read_physical_cores() == 3


@pytest.mark.parametrize(
    ("lists", "expected"),
    [(["0-1\n", "0-1\n", "2-3\n", "2-3\n"], 2), (["0\n", "1\n"], 2), ([], None), (["\n"], None)],
)
def test_count_physical_cores_counts_distinct_sibling_lists(
    lists: list[str], expected: int | None
) -> None:
    assert sf.count_physical_cores(lists) == expected


def test_read_sysfs_physical_cores_hyperthreaded(tmp_path: Path) -> None:
    # 4 CPUs, 2 cores of 2 threads; cpufreq and cpuidle are not CPUs.
    for cpu, siblings in (("cpu0", "0,2"), ("cpu1", "1,3"), ("cpu2", "0,2"), ("cpu3", "1,3")):
        write(tmp_path, f"sys/devices/system/cpu/{cpu}/topology/core_cpus_list", siblings + "\n")
    (tmp_path / "sys/devices/system/cpu/cpufreq").mkdir()
    (tmp_path / "sys/devices/system/cpu/cpuidle").mkdir()
    assert sf.read_sysfs_physical_cores(tmp_path) == 2


def test_read_sysfs_physical_cores_older_kernel_file(tmp_path: Path) -> None:
    for cpu in ("cpu0", "cpu1"):
        write(tmp_path, f"sys/devices/system/cpu/{cpu}/topology/thread_siblings_list", "0-1\n")
    assert sf.read_sysfs_physical_cores(tmp_path) == 1


def test_read_sysfs_physical_cores_none_without_the_files(tmp_path: Path) -> None:
    assert sf.read_sysfs_physical_cores(tmp_path) is None
    (tmp_path / "sys/devices/system/cpu/cpu0").mkdir(parents=True)
    assert sf.read_sysfs_physical_cores(tmp_path) is None


@pytest.mark.skipif(not os.path.isdir("/sys/devices/system/cpu"), reason="Linux sysfs")
def test_read_sysfs_physical_cores_agrees_with_psutil() -> None:
    assert sf.read_sysfs_physical_cores() == psutil.cpu_count(logical=False)


def test_read_logical_cores_defaults_to_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert sf.read_logical_cores() == 1


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"AMORSIZE_MAX_WORKERS": "3"}, 3),
        ({"AMORSIZE_MAX_WORKERS": " 4\n"}, 4),
        ({}, None),
        ({"AMORSIZE_MAX_WORKERS": ""}, None),
        ({"OTHER": "2"}, None),
    ],
)
def test_read_env_core_limit(environ: dict[str, str], expected: int | None) -> None:
    assert sf.read_env_core_limit(environ) == expected


@pytest.mark.parametrize("value", ["0", "-2", "abc", "2.5", "1e3"])
def test_read_env_core_limit_invalid_is_ignored_with_a_warning(
    value: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="amorsize_executor"):
        assert sf.read_env_core_limit({"AMORSIZE_MAX_WORKERS": value}) is None
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 1
    assert "AMORSIZE_MAX_WORKERS" in messages[0]
    assert repr(value) in messages[0]
    assert caplog.records[0].name == "amorsize_executor"


def test_read_env_core_limit_warns_once_per_value(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="amorsize_executor"):
        for _ in range(3):
            sf.read_env_core_limit({"AMORSIZE_MAX_WORKERS": "many"})
        sf.read_env_core_limit({"AMORSIZE_MAX_WORKERS": "none"})
    assert len(caplog.records) == 2


def fake_virtual_memory(monkeypatch: pytest.MonkeyPatch, available_bytes: int) -> None:
    monkeypatch.setattr(
        psutil, "virtual_memory", lambda: SimpleNamespace(available=available_bytes)
    )


def test_available_memory_takes_the_cgroup_headroom(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake_virtual_memory(monkeypatch, 8 * GiB)
    mount = make_v2_tree(tmp_path, "/a")
    write(mount, "a/memory.max", f"{2 * GiB}\n")
    write(mount, "a/memory.current", f"{GiB}\n")
    assert sf.read_available_memory_bytes(tmp_path) == GiB


def test_available_memory_takes_the_os_figure_when_smaller(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake_virtual_memory(monkeypatch, 512 * MiB)
    mount = make_v2_tree(tmp_path, "/a")
    write(mount, "a/memory.max", f"{2 * GiB}\n")
    assert sf.read_available_memory_bytes(tmp_path) == 512 * MiB


def test_available_memory_without_cgroup_is_the_os_figure(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake_virtual_memory(monkeypatch, 3 * GiB)
    assert sf.read_available_memory_bytes(tmp_path) == 3 * GiB


def test_estimate_worker_start_s_orders_the_known_methods() -> None:
    estimates_s = {
        method: sf.estimate_worker_start_s(method)
        for method in ("loky", "fork", "forkserver", "spawn")
    }
    assert all(math.isfinite(s) and s > 0 for s in estimates_s.values())
    # fork copies the parent; every other method starts a new interpreter.
    assert estimates_s["fork"] == min(estimates_s.values())
    assert estimates_s["fork"] < estimates_s["spawn"]


def test_estimate_worker_start_s_unknown_method_is_the_slowest_known() -> None:
    known_s = [sf.estimate_worker_start_s(m) for m in ("loky", "fork", "forkserver", "spawn")]
    assert sf.estimate_worker_start_s("teleport") == max(known_s)


# --- assembling ----------------------------------------------------------------------------


@pytest.fixture
def fake_machine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A 16-thread, 8-core machine pinned to 6 CPUs in a 2.5-core, 1 GiB-headroom cgroup."""
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: 16 if logical else 8)
    monkeypatch.setattr(sf, "read_sysfs_physical_cores", lambda root=None: None)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(6)), raising=False)
    fake_virtual_memory(monkeypatch, 32 * GiB)
    mount = make_v2_tree(tmp_path, "/job")
    write(mount, "job/cpu.max", "250000 100000\n")
    write(mount, "job/memory.max", f"{3 * GiB}\n")
    write(mount, "job/memory.current", f"{2 * GiB}\n")
    return tmp_path


def test_read_system_facts_assembles_everything(fake_machine: Path) -> None:
    facts = sf.read_system_facts(
        "spawn",
        n_warm_workers=2,
        worker_start_s=0.25,
        worker_start_source="measured",
        root=fake_machine,
        environ={"AMORSIZE_MAX_WORKERS": "5"},
    )
    assert facts == SystemFacts(
        n_logical_cores=16,
        n_physical_cores=8,
        n_affinity_cores=6,
        cpu_quota_cores=2.5,
        available_memory_bytes=GiB,
        start_method="spawn",
        worker_start_s=0.25,
        worker_start_source="measured",
        n_warm_workers=2,
        env_core_limit=5,
    )


def test_read_system_facts_uses_the_estimate_when_not_measured(fake_machine: Path) -> None:
    facts = sf.read_system_facts(
        "forkserver", worker_start_source="measured", root=fake_machine, environ={}
    )
    assert facts.worker_start_s == sf.estimate_worker_start_s("forkserver")
    assert facts.worker_start_source == "estimate"
    assert facts.env_core_limit is None


def test_read_system_facts_reads_os_environ_by_default(
    fake_machine: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AMORSIZE_MAX_WORKERS", "7")
    assert sf.read_system_facts("loky", root=fake_machine).env_core_limit == 7


def test_read_system_facts_reads_memory_afresh(fake_machine: Path) -> None:
    first = sf.read_system_facts("loky", root=fake_machine, environ={})
    write(fake_machine, "sys/fs/cgroup/job/memory.current", f"{2 * GiB + 512 * MiB}\n")
    second = sf.read_system_facts("loky", root=fake_machine, environ={})
    assert first.available_memory_bytes == GiB
    assert second.available_memory_bytes == 512 * MiB


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_warm_workers": -1}, "n_warm_workers must be >= 0, got -1"),
        ({"worker_start_s": -0.5}, "worker_start_s must be a finite number >= 0, got -0.5"),
        ({"worker_start_s": math.nan}, "worker_start_s must be a finite number >= 0, got nan"),
    ],
)
def test_read_system_facts_rejects_bad_arguments(
    fake_machine: Path, kwargs: dict[str, float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        sf.read_system_facts("loky", root=fake_machine, environ={}, **kwargs)  # type: ignore[arg-type]


def test_read_system_facts_on_this_machine_is_sane() -> None:
    facts = sf.read_system_facts("loky", environ={})
    assert facts.n_logical_cores >= 1
    assert facts.available_memory_bytes > 0
    assert facts.n_affinity_cores is None or 1 <= facts.n_affinity_cores <= facts.n_logical_cores
    assert facts.cpu_quota_cores is None or facts.cpu_quota_cores > 0


# --- layering ------------------------------------------------------------------------------


def imports_of(path: str) -> set[str]:
    tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                imported.add("." + (node.module or ""))
            else:
                imported.add((node.module or "").split(".")[0])
    return imported


def test_imports_only_stdlib_psutil_and_records() -> None:
    imported = imports_of(sf.__file__)
    allowed = set(sys.stdlib_module_names) | {"psutil", "._records", "._cgroup_text"}
    assert imported - allowed == set()
    assert "._records" in imported
    # The parsers need nothing but the standard library.
    assert imports_of(ct.__file__) - set(sys.stdlib_module_names) == set()
