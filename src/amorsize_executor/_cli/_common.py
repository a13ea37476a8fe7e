"""What every command shares: the exit codes, the usage error, the program's name."""

from __future__ import annotations

import os
import sys

import amorsize_executor

__version__ = amorsize_executor.__version__

EXIT_OK = 0
EXIT_FUNCTION_RAISED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _UsageError(Exception):
    """The command was called wrongly; the message says what was wrong and how to fix it."""


def _prog_name() -> str:
    """What the user typed to run us, for usage lines and messages."""
    if os.path.basename(sys.argv[0] if sys.argv else "") == "__main__.py":
        return "python -m amorsize_executor"
    return "amorsize-executor"
