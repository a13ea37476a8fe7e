"""Remember, per machine, how long a worker takes to start with each start method.

Mechanism layer. Its one responsibility is to persist measured worker start costs in a small
JSON file in the user's cache directory, so later processes on the same machine start from a
measured figure instead of a prior. It does not measure anything, decide anything or start
processes; and it never lets a cache problem reach the user: an unreadable, corrupt or foreign
file reads as "nothing cached", and a failed write is logged at DEBUG and dropped.

File format (JSON only, never pickle: the file lives in a directory other programs can write
to, and loading it must not run code)::

    {
      "format_version": 1,
      "fingerprint": {"hostname": "...", "platform": "linux-x86_64",
                      "n_logical_cores": 8, "python": "cpython-3.11"},
      "worker_start_s": {"loky": [0.12, 0.11, 0.13], "spawn": [0.06]}
    }

Each start method keeps its last few samples; loading returns their median, so one run on a
busy machine does not dominate. A new pool's sample close to what a full set of samples
already says is not written (``record_worker_start_s``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import platform
import socket
import statistics
import sys
import tempfile
from pathlib import Path
from typing import TypeAlias

import platformdirs

_LOGGER = logging.getLogger("amorsize_executor")

ENV_CACHE_DIR = "AMORSIZE_CACHE_DIR"
"""Environment variable that replaces the cache directory (the file name stays the same)."""

_APP_NAME = "amorsize-executor"
_FILE_NAME = "worker_start.json"

_FORMAT_VERSION = 1
"""Bump when the layout changes: files of another version are ignored and rewritten."""

_N_SAMPLES_KEPT = 5
"""Samples kept per start method. The median of 5 ignores up to two outliers yet follows a
real change (a new Python, a slower disk) within three runs."""

_MAX_FILE_BYTES = 64 * 1024
"""Files larger than this are not ours (ours is a few hundred bytes): ignore, do not parse."""

_Fingerprint: TypeAlias = "dict[str, str | int]"


def default_cache_path() -> Path:
    """Where the start costs are stored.

    ``$AMORSIZE_CACHE_DIR/worker_start.json`` when that variable is set and not blank, else
    ``worker_start.json`` in the platform's user cache directory for ``amorsize-executor``
    (``~/.cache/amorsize-executor`` on Linux).
    """
    override_dir = os.environ.get(ENV_CACHE_DIR, "").strip()
    if override_dir:
        return Path(override_dir).expanduser() / _FILE_NAME
    # appauthor=False: on Windows, avoid a second "amorsize-executor" level for the author.
    return Path(platformdirs.user_cache_dir(_APP_NAME, appauthor=False)) / _FILE_NAME


def _machine_fingerprint() -> _Fingerprint:
    """What must match for a stored start cost to be about this machine and interpreter."""
    return {
        "hostname": socket.gethostname(),
        "platform": f"{sys.platform}-{platform.machine()}",
        "n_logical_cores": os.cpu_count() or 1,
        "python": f"{sys.implementation.name}-{sys.version_info[0]}.{sys.version_info[1]}",
    }


def _is_sample_s(value: object) -> bool:
    # bool is an int subclass; true/false in the file means someone else wrote it.
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


def _samples_from_document(
    document: object, fingerprint: _Fingerprint
) -> dict[str, list[float]] | None:
    """The samples per start method in a decoded file, or ``None`` if the file is not a valid
    cache for this machine (wrong version, other fingerprint, unexpected types)."""
    if not isinstance(document, dict):
        return None
    if document.get("format_version") != _FORMAT_VERSION:
        return None
    if document.get("fingerprint") != fingerprint:
        return None
    entries = document.get("worker_start_s")
    if not isinstance(entries, dict):
        return None
    samples_by_method: dict[str, list[float]] = {}
    for start_method, samples_s in entries.items():
        if not isinstance(samples_s, list):
            return None
        if not all(_is_sample_s(sample_s) for sample_s in samples_s):
            return None
        samples_by_method[start_method] = [float(sample_s) for sample_s in samples_s]
    return samples_by_method


def _load_samples(path: Path) -> dict[str, list[float]]:
    """Every start method's samples in the file; empty if it is missing or not valid."""
    try:
        with open(path, "rb") as handle:
            raw = handle.read(_MAX_FILE_BYTES + 1)
    except OSError as exc:
        if not isinstance(exc, FileNotFoundError):
            _LOGGER.debug("cannot read worker start cache %s: %s", path, exc)
        return {}
    if len(raw) > _MAX_FILE_BYTES:
        _LOGGER.debug("ignoring worker start cache %s: larger than %d bytes", path, len(raw))
        return {}
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        # ValueError covers bad JSON and bad UTF-8; RecursionError deeply nested arrays.
        _LOGGER.debug("ignoring corrupt worker start cache %s: %s", path, exc)
        return {}
    samples_by_method = _samples_from_document(document, _machine_fingerprint())
    if samples_by_method is None:
        _LOGGER.debug("ignoring worker start cache %s: other version or machine", path)
        return {}
    return samples_by_method


def load_worker_start_s(start_method: str, path: Path | None = None) -> float | None:
    """Return the cached worker start cost for ``start_method`` on this machine.

    Args:
        start_method: ``"loky"``, ``"fork"``, ``"forkserver"``, ``"spawn"``...
        path: the cache file; ``None`` means :func:`default_cache_path`.

    Returns:
        The median of the stored samples in seconds, or ``None`` when nothing usable is
        cached (no file, unreadable, corrupt, other machine or format version). Never raises
        for a bad file.
    """
    samples_s = _load_samples(default_cache_path() if path is None else path).get(start_method)
    return None if not samples_s else statistics.median(samples_s[-_N_SAMPLES_KEPT:])


def worker_start_samples_s(start_method: str, path: Path | None = None) -> list[float]:
    """The samples stored for ``start_method``, oldest first (empty when none are usable):
    lets a caller show exactly the figure a measurement stored."""
    samples_by_method = _load_samples(default_cache_path() if path is None else path)
    return list(samples_by_method.get(start_method, []))


def store_worker_start_s(start_method: str, seconds: float, path: Path | None = None) -> None:
    """Add a measured worker start cost for ``start_method`` to the cache.

    The sample joins the last few already stored (see ``_N_SAMPLES_KEPT``); a file that is not
    a valid cache for this machine is replaced. The file is written to a temporary file in
    the same directory and renamed over the old one, so a reader never sees half a file; it
    is readable by its owner only (0o600) and its directory is created 0o700. Two processes
    storing at the same moment may lose one sample, which a cache can afford.

    Args:
        start_method: the start method the measurement is for.
        seconds: the measured seconds from asking for a worker to it running a task.
        path: the cache file; ``None`` means :func:`default_cache_path`.

    Raises:
        ValueError: ``seconds`` is negative or not finite (a bug in the caller). I/O errors
            are never raised: a read-only home directory must not break ``map()``.
    """
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"seconds must be a finite number >= 0, got {seconds}")
    cache_path = default_cache_path() if path is None else path
    samples_by_method = _load_samples(cache_path)
    samples_s = [*samples_by_method.get(start_method, []), float(seconds)]
    samples_by_method[start_method] = samples_s[-_N_SAMPLES_KEPT:]
    document = {
        "format_version": _FORMAT_VERSION,
        "fingerprint": _machine_fingerprint(),
        "worker_start_s": samples_by_method,
    }
    text = json.dumps(document, indent=2, sort_keys=True, allow_nan=False) + "\n"
    try:
        _write_atomically(cache_path, text)
    except OSError as exc:
        _LOGGER.debug("cannot write worker start cache %s: %s", cache_path, exc)


_MEDIAN_TOLERANCE = 0.25
"""A new pool's sample within this fraction of the stored median leaves the estimate as good
as it was: not written (``record_worker_start_s``). 25% of a 13 ms fork start is about 3 ms,
below the run-to-run spread of a start on the 2-core VM (10-17 ms quiet, 2026-12-02)."""


def record_worker_start_s(start_method: str, seconds: float, path: Path | None = None) -> None:
    """``store_worker_start_s``, except for a sample close to what a full set of stored ones
    already says (within their range and ``_MEDIAN_TOLERANCE`` of their median): what every
    new pool calls.

    Such a sample would leave the median about where it is, while the write costs the
    interpreter 0.8-0.9 ms (idle 2-core VM, 2026-12-02) at the moment a fresh pool delivers
    its first results: 30 tiny ``submit()`` calls in a fresh pool finished 1.1 ms later with
    the write than without it (medians of 15, loaded VM). Both conditions are needed: a set
    stored while the machine was loaded (fork starts of 5-44 ms, median 30) spans a quiet
    start of 12 ms, and skipping on the range alone kept that stale median for good; a
    sample far from the median is stored, so the median follows a change within three runs.
    """
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"seconds must be a finite number >= 0, got {seconds}")
    cache_path = default_cache_path() if path is None else path
    samples_s = _load_samples(cache_path).get(start_method, [])[-_N_SAMPLES_KEPT:]
    if len(samples_s) == _N_SAMPLES_KEPT and min(samples_s) <= seconds <= max(samples_s):
        median_s = statistics.median(samples_s)
        if abs(seconds - median_s) <= _MEDIAN_TOLERANCE * median_s:
            return
    store_worker_start_s(start_method, seconds, cache_path)


def _write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one rename; leave no temporary file behind.

    No fsync: after a crash the worst case is an empty or old file, which loads as "nothing
    cached" or as older samples, and an fsync would cost more than the cache saves.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # mkstemp creates the file 0o600 whatever the umask, so it is never readable by others.
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
