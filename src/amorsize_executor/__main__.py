"""``python -m amorsize_executor`` and the ``amorsize-executor`` script: the command line.

The commands live in ``_cli``; see its docstring or ``--help``. Exit codes: 0 success; 1 the
function raised (or ``doctor --measure`` could not start a worker); 2 usage error (bad
arguments, function path, input spec or file, or report file); 130 interrupted.
"""

from __future__ import annotations

import sys

from ._cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
