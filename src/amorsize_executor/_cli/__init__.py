"""The command line: ``python -m amorsize_executor`` and the ``amorsize-executor`` script.

Facade layer, and the only package that prints: ``_parser`` (arguments and help),
``_doctor``, ``_explain`` (one module per command), ``_reports`` (JSON, export, compare),
``_common`` (exit codes, usage errors). It asks the library's pieces
what they see and decide, and formats that for a person (text) or a program (JSON). It
decides nothing itself: the usable cores, the start method and the plan come from
``_cost_model``; the machine's figures from ``_system_facts`` and ``_start_cost_cache``.

    doctor [--measure [METHOD]]             what a new executor sees on this machine
    explain MODULE:FUNCTION INPUT           the plan for a job, from a probe of its first
            [--run]                         items; with --run, the whole job runs and the
                                            plan is shown beside what happened
    --json, --export FILE, --compare-with FILE   (both commands) the report as JSON, saved
                                            to a file, or compared with a saved one

Exit codes (also listed by ``--help``):

    0    success
    1    the function raised (while probing, or during ``--run``; its traceback goes to
         stderr), or ``doctor --measure`` could not start a worker
    2    usage error: bad arguments, a bad MODULE:FUNCTION, a missing, conflicting or
         unreadable input, a report file that cannot be read or written
    130  interrupted (Ctrl-C)
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Sequence

from ._common import EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, __version__, _UsageError
from ._parser import _build_parser

__all__ = ["__version__", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); return the exit code.

    See the module docstring for the commands and the exit codes.
    """
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or argparse's report of a usage error
        return _exit_code_of(exc)
    if args.command is None:
        parser.print_usage(sys.stderr)
        print(
            f"{parser.prog}: error: name a command: doctor or explain (see --help)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except _UsageError as exc:
        print(f"{parser.prog} {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (``| head``): it has what it wanted. Point stdout at devnull
        # so the interpreter's final flush does not raise again.
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _exit_code_of(exc: SystemExit) -> int:
    if exc.code is None:
        return EXIT_OK
    return exc.code if isinstance(exc.code, int) else EXIT_USAGE
