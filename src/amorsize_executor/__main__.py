"""``python -m amorsize_executor``: the command line (see ``_cli`` for the commands).

Exit codes: 0 success; 1 the function raised (or ``doctor --measure`` could not start a
worker); 2 usage error (bad arguments, function path, input spec or file); 130 interrupted.

Kept tiny: a worker process started with a spawn-like method may import the parent's main
module, and the command line's imports must not be paid there.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    from ._cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
