"""A worker's crash reports when the caller's ``sys.stderr`` is not a file.

Mechanism layer, imported inside workers, so it stays small and imports nothing heavy.

A worker forked from a caller whose ``sys.stderr`` is an in-memory stream (click's
``CliRunner``, ``contextlib.redirect_stderr(io.StringIO())``, pytest's ``capsys``) inherits
that stream, which has no file descriptor. loky enables ``faulthandler`` in every worker
after the initializer ran, with no file: ``faulthandler.enable()`` then asks
``sys.stderr.fileno()``, fails, and the worker exits with status 1 before running anything.
The stdlib's workers never enable it, so they run. Enabling it here first, on a stream that
has a descriptor, keeps loky's crash tracebacks (a segmentation fault in ``fn``) and lets the
worker run; ``fn``'s own prints still go to the inherited ``sys.stdout``/``sys.stderr``, as
in a stdlib worker started the same way (in-memory copies under ``fork``, lost with the
worker; the process's descriptors 1 and 2 under ``forkserver`` and ``spawn``).
"""

from __future__ import annotations

import faulthandler
import io
import os
import sys
from typing import IO, Any

_LOKY_SKIPS_WHEN_SET = "PYTHONFAULTHANDLER"
"""loky leaves ``faulthandler`` alone when this variable is set (``process_executor.py``,
``_enable_faulthandler_if_needed``), as Python itself reads it."""

_STDERR_FD = 2


def _has_fileno(stream: IO[Any] | None) -> bool:
    if stream is None:
        return False
    try:
        return stream.fileno() >= 0
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return False


def enable_crash_reports() -> None:
    """Turn ``faulthandler`` on before loky tries to, on ``sys.stderr`` if it has a file
    descriptor, else on the process's standard error (descriptor 2), where a worker started
    as a fresh interpreter would write. Does nothing when it is already on or configured by
    ``PYTHONFAULTHANDLER`` (loky respects both)."""
    if faulthandler.is_enabled() or _LOKY_SKIPS_WHEN_SET in os.environ:
        return
    if _has_fileno(sys.stderr):
        return  # loky's own faulthandler.enable() works
    try:
        faulthandler.enable(file=_STDERR_FD)
    except (OSError, ValueError, RuntimeError):
        # No usable descriptor 2 either: tell loky not to try (an empty value leaves
        # faulthandler off, as Python reads it), rather than let the worker die.
        os.environ[_LOKY_SKIPS_WHEN_SET] = ""
