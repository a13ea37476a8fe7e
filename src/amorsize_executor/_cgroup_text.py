"""Parsing Linux cgroup and procfs files: pure functions from the text of one file to a
number, or ``None``. No I/O, and malformed text never raises: ``_system_facts`` reads the
files (under a ``root`` that tests point at a fake tree) and hands their text here.

Mechanism layer (the reading half lives in ``_system_facts``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

_V1_UNLIMITED_FLOOR_BYTES = 1 << 60
"""cgroup v1 reports "no memory limit" as the largest page-aligned signed 64-bit number
(9223372036854771712 with 4 KiB pages, a little less with 64 KiB pages). Any limit at or above
1 EiB is treated as unlimited rather than matching one page size."""


@dataclass(frozen=True)
class CgroupMembership:
    """Which cgroups this process belongs to, as listed in ``/proc/self/cgroup``."""

    v2_path: str | None = None
    """Path of the process's cgroup in the unified (v2) hierarchy, from the ``0::/path``
    line; ``None`` when there is no such line."""
    v1_paths: Mapping[str, str] = field(default_factory=dict)
    """cgroup v1 controller name (``"cpu"``, ``"memory"``...) to the process's path in that
    controller's hierarchy."""
    v1_mount_names: Mapping[str, str] = field(default_factory=dict)
    """Controller name to the comma-joined controller list of its hierarchy as the kernel
    prints it (``"cpu,cpuacct"``), which is also the usual mount directory name."""


def parse_proc_self_cgroup(text: str) -> CgroupMembership:
    """Parse the text of ``/proc/self/cgroup``.

    Each line is ``hierarchy-id:controller-list:path``. The v2 line has id ``0`` and an empty
    controller list; v1 lines list their controllers (``4:memory:/x``,
    ``1:cpu,cpuacct:/y``). Named v1 hierarchies such as ``name=systemd`` carry no resource
    limits and are skipped, as are malformed lines.

    Args:
        text: the file's content.

    Returns:
        The v2 path and the v1 controller paths found.
    """
    v2_path: str | None = None
    v1_paths: dict[str, str] = {}
    v1_mount_names: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.strip().split(":", 2)
        if len(parts) != 3:
            continue
        hierarchy_id, controllers, path = parts
        if not path.startswith("/"):
            continue
        if hierarchy_id == "0" and controllers == "":
            v2_path = path
            continue
        for controller in controllers.split(","):
            if controller and not controller.startswith("name="):
                v1_paths[controller] = path
                v1_mount_names[controller] = controllers
    return CgroupMembership(v2_path=v2_path, v1_paths=v1_paths, v1_mount_names=v1_mount_names)


def parse_cgroup_v2_cpu_max_cores(text: str) -> float | None:
    """Parse cgroup v2 ``cpu.max`` (``"$QUOTA $PERIOD"`` in microseconds) into cores.

    ``"max 100000"`` means no quota and gives ``None``; ``"150000 100000"`` gives ``1.5``.
    Garbage, a non-positive quota or period also give ``None``.
    """
    fields = text.split()
    if len(fields) != 2:
        return None
    return _quota_over_period(fields[0], fields[1])


def parse_cgroup_v1_cpu_quota_cores(quota_text: str, period_text: str) -> float | None:
    """Parse cgroup v1 ``cpu.cfs_quota_us`` and ``cpu.cfs_period_us`` into cores.

    A quota of ``-1`` means no quota and gives ``None``, as does malformed text.
    """
    return _quota_over_period(quota_text.strip(), period_text.strip())


def _quota_over_period(quota_text: str, period_text: str) -> float | None:
    try:
        quota_us = int(quota_text)
        period_us = int(period_text)
    except ValueError:
        return None
    if quota_us <= 0 or period_us <= 0:
        return None
    return quota_us / period_us


def parse_cgroup_v2_memory_limit_bytes(text: str) -> int | None:
    """Parse cgroup v2 ``memory.max`` or ``memory.high``: ``"max"`` or garbage give ``None``."""
    return _parse_non_negative_int(text)


def parse_cgroup_v1_memory_limit_bytes(text: str) -> int | None:
    """Parse cgroup v1 ``memory.limit_in_bytes``.

    v1 has no word for "unlimited" and prints a huge number instead
    (``9223372036854771712``); any value of 1 EiB or more gives ``None``, as does garbage.
    """
    value = _parse_non_negative_int(text)
    if value is None or value >= _V1_UNLIMITED_FLOOR_BYTES:
        return None
    return value


def parse_cgroup_memory_usage_bytes(text: str) -> int | None:
    """Parse current usage: v2 ``memory.current`` or v1 ``memory.usage_in_bytes``."""
    return _parse_non_negative_int(text)


def parse_inactive_file_bytes(text: str, key: str) -> int | None:
    """Return the value of ``key`` in a cgroup ``memory.stat`` text, ``None`` if absent.

    The usage files count the page cache, most of which the kernel drops before it reaches a
    cgroup's limit. The inactive part of the file cache is reclaimed first, so subtracting it
    from the usage (as ``docker stats`` and the kubelet do) gives the memory really taken.
    The key is ``"inactive_file"`` in v2 and ``"total_inactive_file"`` in v1 (hierarchical).
    """
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[0] == key:
            return _parse_non_negative_int(fields[1])
    return None


def _parse_non_negative_int(text: str) -> int | None:
    try:
        value = int(text.strip())
    except ValueError:
        return None
    return value if value >= 0 else None
