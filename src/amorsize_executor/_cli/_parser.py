"""The argument parser of both commands, with their help texts."""

from __future__ import annotations

import argparse
import textwrap
from typing import Any

from ._common import __version__, _prog_name
from ._doctor import _available_start_methods, _run_doctor
from ._explain import _run_explain

_EXIT_CODES_HELP = """\
exit codes:
  0    success
  1    the function raised (while probing, or during --run; its traceback goes to
       stderr), or doctor --measure could not start a worker
  2    usage error: bad arguments, a bad MODULE:FUNCTION, a missing, conflicting or
       unreadable input, a report file that cannot be read or written
  130  interrupted (Ctrl-C)
"""

_EXAMPLES_HELP = """\
examples:
  {prog} doctor
  {prog} doctor --measure --export machine.json
  {prog} explain mypackage.jobs:process --jsonl items.jsonl
  {prog} explain mymodule:work --range 10000 --run --compare-with before.json
"""


def _build_parser() -> argparse.ArgumentParser:
    prog = _prog_name()
    formatter = argparse.RawDescriptionHelpFormatter
    epilog = _EXIT_CODES_HELP + "\n" + _EXAMPLES_HELP.format(prog=prog)
    parser = argparse.ArgumentParser(
        prog=prog,
        description=_wrap(
            "See what amorsize-executor sees on this machine, and what it would "
            "decide for a job (and why)."
        ),
        epilog=epilog,
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    _add_doctor(commands, formatter)
    _add_explain(commands, formatter)
    return parser


def _add_doctor(commands: Any, formatter: type[argparse.HelpFormatter]) -> None:
    doctor = commands.add_parser(
        "doctor",
        help="what a new executor sees on this machine",
        description=_wrap(
            "Show what a new AdaptiveProcessPoolExecutor sees on this machine: "
            "cores and which limit decides how many are usable, memory, the start method a "
            "new pool would use and what starting a worker costs, library versions and "
            "environment overrides."
        ),
        epilog=_EXIT_CODES_HELP,
        formatter_class=formatter,
    )
    doctor.add_argument(
        "--measure",
        nargs="?",
        const="auto",
        choices=["auto", *_available_start_methods()],
        metavar="METHOD",
        help="start a 1-worker pool to measure what starting a worker costs, and store "
        "the figure in the cache for later runs. METHOD: auto (the default: the method a "
        f"new pool would use now), or one of {', '.join(_available_start_methods())}",
    )
    _add_report_options(doctor)
    doctor.set_defaults(handler=_run_doctor)


def _add_explain(commands: Any, formatter: type[argparse.HelpFormatter]) -> None:
    explain = commands.add_parser(
        "explain",
        help="the plan for a job: serial or how many workers, which chunk size, and why",
        description=_wrap(
            "Probe FUNCTION on the first items of the input and print the plan "
            "the executor would make: serial or parallel, workers, chunk size, predicted "
            "times and the reasons. Only the probed items run, in this process, unless --run "
            "is given: then the whole job runs through AdaptiveProcessPoolExecutor().map "
            "(results are counted, not kept) and the plan is shown with what happened."
        ),
        epilog=_EXIT_CODES_HELP,
        formatter_class=formatter,
    )
    explain.add_argument(
        "function",
        metavar="MODULE:FUNCTION",
        help="the function to map, as an importable module and a name in it, such as "
        "mypackage.jobs:process (the current directory is searched for MODULE, as with "
        "python -m)",
    )
    inputs = explain.add_argument_group(
        "input (exactly one)",
        _wrap(
            "Each item is passed as the one argument of FUNCTION. A file is read whole "
            "before anything runs, so a bad line is reported before any work."
        ),
    )
    inputs.add_argument(
        "--range",
        dest="range_n",
        type=_non_negative_int,
        metavar="N",
        help="the ints 0, 1, ..., N-1",
    )
    inputs.add_argument(
        "--lines",
        metavar="FILE",
        help="each line of FILE as a str, without its line ending ('-' reads stdin)",
    )
    inputs.add_argument(
        "--jsonl",
        metavar="FILE",
        help="each line of FILE parsed as one JSON value; a JSON list is passed as one "
        "list argument, not spread over several; blank lines are skipped ('-' reads stdin)",
    )
    running = explain.add_argument_group("running")
    running.add_argument(
        "--run", action="store_true", help="run the whole job and compare plan and outcome"
    )
    running.add_argument(
        "--max-workers",
        type=_positive_int,
        metavar="N",
        help="the most worker processes to use (max_workers)",
    )
    running.add_argument(
        "--chunksize", type=_positive_int, metavar="N", help="items per task, as given"
    )
    running.add_argument(
        "--isolate",
        action="store_true",
        help="never run FUNCTION in the calling process during the run (no serial plan); "
        "without --run the probe still runs here",
    )
    running.add_argument(
        "--progress",
        action="store_true",
        help="show a progress bar on stderr (with --run; needs tqdm)",
    )
    _add_report_options(explain)
    explain.set_defaults(handler=_run_explain)


def _wrap(text: str) -> str:
    return textwrap.fill(text, width=78)


def _add_report_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("report")
    group.add_argument("--json", action="store_true", help="print the report as JSON")
    group.add_argument(
        "--export",
        metavar="FILE",
        help="also write the report to FILE as JSON, for --compare-with later",
    )
    group.add_argument(
        "--compare-with",
        metavar="FILE",
        help="show what changed since the report saved in FILE (by --export)",
    )


def _positive_int(text: str) -> int:
    value = _int_argument(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive int, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = _int_argument(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an int >= 0, got {value}")
    return value


def _int_argument(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an int, such as 1000, got {text!r}") from None
