"""Read what this machine offers a process pool: cores, CPU quota, memory, worker start cost.

Mechanism layer. Its one responsibility is to report numbers about the machine as a
:class:`~amorsize_executor._records.SystemFacts` record. It must not decide anything (how many
workers to use is the cost model's job), start processes, or measure timings; and it imports
nothing of ours but the data records.

The code is split in two halves so that the Linux cgroup logic can be tested on literal text
and on fake directory trees, without containers or patching ``open``:

* **parsing** -- the ``parse_*`` functions of ``_cgroup_text`` take the text of one file and
  return a number or ``None``; they do no I/O and never raise on malformed text;
* **reading** -- ``read_*`` functions here find the files under a ``root`` directory (``/`` in
  production, a temporary directory in tests), read them and hand the text to the parsers.
  A file that is missing or unreadable means "no limit known", never an exception.

Memory changes from one call to the next, so nothing here caches it; only the core counts
that cannot change while the process lives are cached.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import psutil

from ._cgroup_text import (
    CgroupMembership,
    parse_cgroup_memory_usage_bytes,
    parse_cgroup_v1_cpu_quota_cores,
    parse_cgroup_v1_memory_limit_bytes,
    parse_cgroup_v2_cpu_max_cores,
    parse_cgroup_v2_memory_limit_bytes,
    parse_inactive_file_bytes,
    parse_proc_self_cgroup,
)
from ._records import CoreFacts, SystemFacts

_LOGGER = logging.getLogger("amorsize_executor")

ENV_MAX_WORKERS = "AMORSIZE_MAX_WORKERS"
"""Environment variable an operator sets to cap the number of workers."""

_CGROUP_MOUNT = PurePosixPath("sys/fs/cgroup")
"""Where cgroup hierarchies are mounted, relative to ``root`` (systemd and container runtimes
all use this place; a pure cgroup v2 system mounts the unified hierarchy here directly)."""

_CGROUP_V2_HYBRID_MOUNT = _CGROUP_MOUNT / "unified"
"""Where a hybrid system (v1 controllers plus an empty v2 tree) mounts the v2 hierarchy."""

# Seconds from creating a 1-worker pool to the first result of a no-op task, in a fresh
# interpreter (the first pool of a process also pays one-off costs such as loky's resource
# tracker or the forkserver server, which a user's first map() pays too). Medians of 5 runs,
# measured 2026-11-28 on a 2-core shared VM (Linux 6.18 x86_64, CPython 3.11.7, loky 3.7.0)
# with /tmp scripts: `loky.ProcessPoolExecutor(max_workers=1)` for "loky" and
# `concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=get_context(m))` for the
# others. Cold (first pool) / warm (second pool in the same interpreter):
#   loky 121.4 / 68.0 ms, fork 4.0 / 2.9 ms, forkserver 53.6 / 20.2 ms, spawn 56.9 / 43.4 ms.
# They are priors only: spawn-like methods re-import the user's __main__ module in the worker,
# which can cost far more than the tiny benchmark script, so a measured figure replaces these.
_WORKER_START_S_BY_METHOD: Mapping[str, float] = {
    "loky": 0.121,
    "loky_init_main": 0.121,
    "fork": 0.004,
    "forkserver": 0.054,
    "spawn": 0.057,
}
_UNKNOWN_METHOD_WORKER_START_S = max(_WORKER_START_S_BY_METHOD.values())
"""An unknown start method gets the slowest known figure: overestimating the start cost only
keeps small jobs serial, underestimating it can make them slower than serial."""


# --------------------------------------------------------------------------------------------
# Reading: thin I/O around the parsers. Missing or unreadable files mean "unknown".
# --------------------------------------------------------------------------------------------


_READ_CHUNK_BYTES = 1 << 16


def _read_text(path: Path) -> str | None:
    """The file's text, or ``None`` if it cannot be read for any reason.

    Read with raw system calls: a text-mode ``open`` looks up a codec and builds a buffered
    reader, which made a fresh process's first facts (a dozen small files) cost about twice
    as much (0.9 ms against 0.5 ms on the 2-core VM, 2026-12-02); the first ``submit()`` of a
    fresh executor waits for them."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            parts: list[bytes] = []
            while chunk := os.read(fd, _READ_CHUNK_BYTES):
                parts.append(chunk)
        finally:
            os.close(fd)
        return b"".join(parts).decode("ascii")
    except (OSError, UnicodeDecodeError):
        return None


def _read_membership(root: Path) -> CgroupMembership | None:
    text = _read_text(root / "proc" / "self" / "cgroup")
    return None if text is None else parse_proc_self_cgroup(text)


def _v2_mount_dir(root: Path) -> Path | None:
    """The directory where the unified hierarchy is mounted, or ``None`` if there is none.

    A v2 cgroup directory always holds ``cgroup.controllers``; v1 directories never do.
    """
    for relative in (_CGROUP_MOUNT, _CGROUP_V2_HYBRID_MOUNT):
        mount_dir = root / relative
        if (mount_dir / "cgroup.controllers").is_file():
            return mount_dir
    return None


def _v1_mount_dir(root: Path, membership: CgroupMembership, controller: str) -> Path | None:
    """The mount directory of a v1 controller's hierarchy, or ``None``.

    Distributions mount co-mounted controllers as ``cpu,cpuacct`` and usually add ``cpu`` and
    ``cpuacct`` symlinks; either name is accepted.
    """
    if controller not in membership.v1_paths:
        return None
    names = (membership.v1_mount_names.get(controller, controller), controller)
    for name in names:
        mount_dir = root / _CGROUP_MOUNT / name
        if mount_dir.is_dir():
            return mount_dir
    return None


def _cgroup_dirs_leaf_to_mount(mount_dir: Path, cgroup_path: str) -> list[Path]:
    """The process's cgroup directory and each ancestor up to the mount, leaf first.

    Limits of every ancestor apply to the process, so callers take the tightest. Inside many
    containers the path listed in ``/proc/self/cgroup`` is the host's and does not exist in
    the container's view, where the mount directory itself is the container's cgroup; then
    only the mount directory is returned.
    """
    parts = PurePosixPath(cgroup_path).relative_to("/").parts
    if ".." in parts:
        return [mount_dir]
    leaf_dir = mount_dir.joinpath(*parts)
    if not leaf_dir.is_dir():
        return [mount_dir]
    return [mount_dir.joinpath(*parts[:depth]) for depth in range(len(parts), -1, -1)]


def read_cpu_quota_cores(root: Path = Path("/")) -> float | None:
    """Read this process's cgroup CPU quota, in cores (``quota / period``).

    Follows ``/proc/self/cgroup`` under ``root`` into the v2 hierarchy (``cpu.max``) and the
    v1 ``cpu`` hierarchy (``cpu.cfs_quota_us`` and ``cpu.cfs_period_us``), along the
    process's cgroup and all its ancestors, since a parent's quota bounds its children.

    Args:
        root: the file-system root to read under; tests pass a fake tree.

    Returns:
        The tightest quota found, or ``None`` if there is none or nothing could be read.
    """
    membership = _read_membership(root)
    if membership is None:
        return None
    quotas_cores: list[float] = []
    v2_mount = _v2_mount_dir(root)
    if v2_mount is not None and membership.v2_path is not None:
        for cgroup_dir in _cgroup_dirs_leaf_to_mount(v2_mount, membership.v2_path):
            text = _read_text(cgroup_dir / "cpu.max")
            quota_cores = None if text is None else parse_cgroup_v2_cpu_max_cores(text)
            if quota_cores is not None:
                quotas_cores.append(quota_cores)
    v1_mount = _v1_mount_dir(root, membership, "cpu")
    if v1_mount is not None:
        for cgroup_dir in _cgroup_dirs_leaf_to_mount(v1_mount, membership.v1_paths["cpu"]):
            quota_text = _read_text(cgroup_dir / "cpu.cfs_quota_us")
            period_text = _read_text(cgroup_dir / "cpu.cfs_period_us")
            if quota_text is None or period_text is None:
                continue
            quota_cores = parse_cgroup_v1_cpu_quota_cores(quota_text, period_text)
            if quota_cores is not None:
                quotas_cores.append(quota_cores)
    return min(quotas_cores) if quotas_cores else None


@dataclass(frozen=True)
class _MemoryFiles:
    """File names and parsers of one cgroup version's memory controller."""

    limit_files: tuple[str, ...]
    usage_file: str
    inactive_file_key: str
    parse_limit_bytes: Callable[[str], int | None]


_V2_MEMORY_FILES = _MemoryFiles(
    # memory.high is a throttle rather than a kill, but a pool pushed past it crawls.
    limit_files=("memory.max", "memory.high"),
    usage_file="memory.current",
    inactive_file_key="inactive_file",
    parse_limit_bytes=parse_cgroup_v2_memory_limit_bytes,
)
_V1_MEMORY_FILES = _MemoryFiles(
    limit_files=("memory.limit_in_bytes",),
    usage_file="memory.usage_in_bytes",
    inactive_file_key="total_inactive_file",
    parse_limit_bytes=parse_cgroup_v1_memory_limit_bytes,
)


def _headrooms_bytes(cgroup_dirs: list[Path], files: _MemoryFiles) -> list[int]:
    """Headroom (limit minus usage) at each directory that has a memory limit.

    Usage is only read where there is a limit, to keep the common unlimited case to one read
    per level. A parent's usage includes its children's, so the largest usage read below a
    level is a lower bound for it: it stands in when the level's usage cannot be read, and
    wins when the files, which are not read at one instant, show the parent smaller.
    """
    headrooms_bytes: list[int] = []
    usage_floor_bytes = 0
    for cgroup_dir in cgroup_dirs:
        limits_bytes = []
        for name in files.limit_files:
            text = _read_text(cgroup_dir / name)
            limit_bytes = None if text is None else files.parse_limit_bytes(text)
            if limit_bytes is not None:
                limits_bytes.append(limit_bytes)
        if not limits_bytes:
            continue
        usage_bytes = _read_usage_bytes(cgroup_dir, files)
        if usage_bytes is not None:
            usage_floor_bytes = max(usage_floor_bytes, usage_bytes)
        headrooms_bytes.append(max(0, min(limits_bytes) - usage_floor_bytes))
    return headrooms_bytes


def _read_usage_bytes(cgroup_dir: Path, files: _MemoryFiles) -> int | None:
    text = _read_text(cgroup_dir / files.usage_file)
    usage_bytes = None if text is None else parse_cgroup_memory_usage_bytes(text)
    if usage_bytes is None:
        return None
    stat_text = _read_text(cgroup_dir / "memory.stat")
    inactive_file_bytes = (
        None
        if stat_text is None
        else parse_inactive_file_bytes(stat_text, files.inactive_file_key)
    )
    if inactive_file_bytes is not None:
        usage_bytes = max(0, usage_bytes - inactive_file_bytes)
    return usage_bytes


def read_cgroup_memory_headroom_bytes(root: Path = Path("/")) -> int | None:
    """Read how much more memory this process's cgroups let it use.

    Follows ``/proc/self/cgroup`` under ``root`` into the v2 hierarchy (``memory.max``,
    ``memory.high``, ``memory.current``) and the v1 ``memory`` hierarchy
    (``memory.limit_in_bytes``, ``memory.usage_in_bytes``), along the process's cgroup and its
    ancestors. At each limited level the headroom is the limit minus that level's usage
    (inactive file cache, which the kernel reclaims first, does not count as used).

    Args:
        root: the file-system root to read under; tests pass a fake tree.

    Returns:
        The smallest headroom found, never negative; ``None`` when no limit applies or
        nothing could be read.
    """
    membership = _read_membership(root)
    if membership is None:
        return None
    headrooms_bytes: list[int] = []
    v2_mount = _v2_mount_dir(root)
    if v2_mount is not None and membership.v2_path is not None:
        v2_dirs = _cgroup_dirs_leaf_to_mount(v2_mount, membership.v2_path)
        headrooms_bytes.extend(_headrooms_bytes(v2_dirs, _V2_MEMORY_FILES))
    v1_mount = _v1_mount_dir(root, membership, "memory")
    if v1_mount is not None:
        v1_dirs = _cgroup_dirs_leaf_to_mount(v1_mount, membership.v1_paths["memory"])
        headrooms_bytes.extend(_headrooms_bytes(v1_dirs, _V1_MEMORY_FILES))
    return min(headrooms_bytes) if headrooms_bytes else None


def read_affinity_cores() -> int | None:
    """Read how many CPUs this process may run on, or ``None`` where the OS cannot say.

    Not cached: ``taskset`` or a cpuset change can re-pin a running process. Uses
    ``os.sched_getaffinity`` (Linux and some Unixes), else psutil (Windows, FreeBSD).
    """
    if hasattr(os, "sched_getaffinity"):
        try:
            return len(os.sched_getaffinity(0)) or None
        except OSError:
            return None
    try:
        return len(psutil.Process().cpu_affinity() or []) or None
    except (AttributeError, OSError, NotImplementedError, psutil.Error):
        # AttributeError: psutil has no cpu_affinity() on this platform (macOS).
        return None


_SYSFS_CPUS = PurePosixPath("sys/devices/system/cpu")
"""Where Linux lists the CPUs (``cpuN``), relative to ``root``."""

_SIBLINGS_FILES = ("topology/core_cpus_list", "topology/thread_siblings_list")
"""Per CPU, the CPUs sharing its core, as psutil reads them (the second is the older name
of the first)."""


def count_physical_cores(sibling_lists: Iterable[str]) -> int | None:
    """The number of physical cores from each CPU's list of the CPUs sharing its core
    (``"0-1"`` twice for one core with two hyperthreads): the distinct lists; ``None`` for
    none."""
    distinct = {text.strip() for text in sibling_lists if text.strip()}
    return len(distinct) or None


def read_sysfs_physical_cores(root: Path = Path("/")) -> int | None:
    """The physical core count from ``/sys/devices/system/cpu`` under ``root``, as psutil's
    Linux ``cpu_count(logical=False)`` counts it; ``None`` where the files are missing.

    psutil finds the files with ``glob``, whose first use compiles its pattern: 0.6-1.0 ms
    of the first ``submit()`` or ``map()`` of every process before its pool could fork,
    against 0.03-0.05 ms listing the directory here (2-core VM, 2026-12-02).
    """
    cpus_dir = root / _SYSFS_CPUS
    try:
        names = os.listdir(cpus_dir)
    except OSError:
        return None
    cpus = [name for name in names if name.startswith("cpu") and name[3:].isdigit()]
    for siblings_file in _SIBLINGS_FILES:
        texts = [_read_text(cpus_dir / cpu / siblings_file) for cpu in cpus]
        found = [text for text in texts if text is not None]
        if found and len(found) == len(cpus):
            return count_physical_cores(found)
    return None


@functools.lru_cache(maxsize=1)
def read_physical_cores() -> int | None:
    """Read the machine's physical core count (sysfs on Linux, else psutil), ``None`` when
    unknown.

    Cached: the hardware does not change while the process runs.
    """
    from_sysfs = read_sysfs_physical_cores()
    if from_sysfs is not None:
        return from_sysfs
    try:
        n_cores: int | None = psutil.cpu_count(logical=False)
    except (OSError, NotImplementedError, psutil.Error):
        return None
    return n_cores if n_cores else None


@functools.lru_cache(maxsize=1)
def read_logical_cores() -> int:
    """Read the OS's logical CPU count (``os.cpu_count()``); 1 when the OS cannot say."""
    return os.cpu_count() or 1


@functools.lru_cache(maxsize=16)
def _warn_invalid_env_value(value: str) -> None:
    """Warn once per distinct bad value (up to 16 of them): facts are read on every ``map()``,
    and one typo must not flood the log."""
    _LOGGER.warning(
        "ignoring %s=%r: it must be a positive integer such as 4; unset it or fix it",
        ENV_MAX_WORKERS,
        value,
    )


def read_env_core_limit(environ: Mapping[str, str]) -> int | None:
    """Read the operator's worker cap from ``AMORSIZE_MAX_WORKERS``.

    Args:
        environ: the environment to read, usually ``os.environ``.

    Returns:
        The cap as a positive int; ``None`` when the variable is unset or blank. An invalid
        value (not an integer, zero or negative) is ignored with a logged warning rather than
        raised, so a typo in a deployment does not break every ``map()`` call.
    """
    raw_value = environ.get(ENV_MAX_WORKERS)
    if raw_value is None or not raw_value.strip():
        return None
    try:
        n_workers = int(raw_value.strip())
    except ValueError:
        n_workers = 0
    if n_workers <= 0:
        _warn_invalid_env_value(raw_value)
        return None
    return n_workers


def read_available_memory_bytes(root: Path = Path("/")) -> int:
    """Read the memory a new worker may use: the smaller of the OS's and the cgroup's headroom.

    Args:
        root: the file-system root the cgroup files are read under; psutil always reads the
            real machine.
    """
    available_bytes = int(psutil.virtual_memory().available)
    headroom_bytes = read_cgroup_memory_headroom_bytes(root)
    if headroom_bytes is None:
        return available_bytes
    return min(available_bytes, headroom_bytes)


def estimate_worker_start_s(start_method: str) -> float:
    """A cheap prior for the seconds one worker takes to start and run its first task.

    Measured once per start method on a small VM (see ``_WORKER_START_S_BY_METHOD``); used
    until a measurement on this machine is cached. An unknown method gets the slowest known
    figure.
    """
    return _WORKER_START_S_BY_METHOD.get(start_method, _UNKNOWN_METHOD_WORKER_START_S)


def fastest_start_prior_s() -> float:
    """The smallest start-cost prior over the start methods: a lower bound on what starting a
    worker can cost here (used to rule a pool out without reading the machine)."""
    return min(
        estimate_worker_start_s(method) for method in ("fork", "forkserver", "spawn", "loky")
    )


def read_core_facts(root: Path = Path("/"), environ: Mapping[str, str] | None = None) -> CoreFacts:
    """Read the cores this process may use (the core half of ``read_system_facts``, which
    see for the arguments), without the memory files: cgroup memory and ``/proc/meminfo``
    took 0.3-0.35 ms of the 0.6-0.7 ms of every fact before a fresh process's first
    ``submit()`` could fork its pool (2-core VM, 2026-12-02)."""
    return CoreFacts(
        n_logical_cores=read_logical_cores(),
        n_physical_cores=read_physical_cores(),
        n_affinity_cores=read_affinity_cores(),
        cpu_quota_cores=read_cpu_quota_cores(root),
        env_core_limit=read_env_core_limit(os.environ if environ is None else environ),
    )


def read_system_facts(
    start_method: str,
    *,
    n_warm_workers: int = 0,
    worker_start_s: float | None = None,
    worker_start_source: str = "estimate",
    root: Path = Path("/"),
    environ: Mapping[str, str] | None = None,
) -> SystemFacts:
    """Read everything the cost model needs to know about this machine.

    Cheap enough to call on every ``map()``: core counts are cached, the rest is a few small
    file reads.

    Args:
        start_method: how workers are started (``"loky"``, ``"fork"``, ``"forkserver"``,
            ``"spawn"``).
        n_warm_workers: workers already alive in the caller's pool.
        worker_start_s: a measured start cost, for example from the on-disk cache; ``None``
            uses :func:`estimate_worker_start_s`, and the source is then ``"estimate"``.
        worker_start_source: where ``worker_start_s`` came from, usually ``"measured"``.
        root: the file-system root the cgroup files are read under.
        environ: the environment to read the worker cap from; ``None`` means ``os.environ``.

    Returns:
        The facts, with every limit that could not be read left as ``None``.

    Raises:
        ValueError: ``n_warm_workers`` is negative or ``worker_start_s`` is negative or not
            finite.
    """
    if n_warm_workers < 0:
        raise ValueError(f"n_warm_workers must be >= 0, got {n_warm_workers}")
    if worker_start_s is None:
        worker_start_s = estimate_worker_start_s(start_method)
        worker_start_source = "estimate"
    elif not (math.isfinite(worker_start_s) and worker_start_s >= 0):
        raise ValueError(f"worker_start_s must be a finite number >= 0, got {worker_start_s}")
    return SystemFacts(
        **vars(read_core_facts(root, environ)),
        available_memory_bytes=read_available_memory_bytes(root),
        start_method=start_method,
        worker_start_s=worker_start_s,
        worker_start_source=worker_start_source,
        n_warm_workers=n_warm_workers,
    )
