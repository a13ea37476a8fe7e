"""The command line: ``python -m amorsize_executor`` and the ``amorsize-executor`` script.

Facade layer, and the only module of the package that prints. It asks the library's pieces
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
import difflib
import importlib
import importlib.metadata
import importlib.util
import json
import math
import multiprocessing
import os
import platform
import reprlib
import sys
import textwrap
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing.context import BaseContext
from pathlib import Path
from typing import Any

import psutil

import amorsize_executor

from . import _cost_model, _probe, _start_cost_cache, _start_method, _system_facts
from ._executor import AdaptiveProcessPoolExecutor, start_method_now
from ._input import Source
from ._records import Plan, SystemFacts, format_bytes, format_seconds

__version__ = amorsize_executor.__version__

EXIT_OK = 0
EXIT_FUNCTION_RAISED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

REPORT_FORMAT = 1
"""Version of the ``--export`` layout; ``--compare-with`` reads any version, key by key."""

MEASURE_TIMEOUT_S = 120.0
"""How long ``doctor --measure`` waits for its one worker to answer. Generous: it exists
only to turn a worker that never starts into an error instead of a hang."""

_START_METHOD_ORDER = ("fork", "forkserver", "spawn", "loky")

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


class _UsageError(Exception):
    """The command was called wrongly; the message says what was wrong and how to fix it."""


# -- entry point ---------------------------------------------------------------------------


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


def _prog_name() -> str:
    """What the user typed to run us, for usage lines and messages."""
    if os.path.basename(sys.argv[0] if sys.argv else "") == "__main__.py":
        return "python -m amorsize_executor"
    return "amorsize-executor"


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
    return parser


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


# -- doctor --------------------------------------------------------------------------------


def _run_doctor(args: argparse.Namespace) -> int:
    previous = _load_report(args.compare_with) if args.compare_with is not None else None
    _check_export_path(args.export)
    # Before measuring: the pool's threads take a moment to end after it shuts down, and
    # would make this process look multi-threaded.
    start = _start_method_now()
    measured = None if args.measure is None else _measure_worker_start(args.measure, start)
    report = _make_report("doctor", _machine_report(start, measured), None)
    _emit(args, report, _format_doctor(report["machine"]), previous)
    if measured is not None and measured["error"] is not None:
        print(
            f"{_prog_name()} doctor: error: could not start a worker to measure: "
            f"{measured['error']}",
            file=sys.stderr,
        )
        return EXIT_FUNCTION_RAISED
    return EXIT_OK


def _available_start_methods() -> list[str]:
    """Start methods this platform offers, and loky's own (a fresh interpreter)."""
    methods = [*multiprocessing.get_all_start_methods(), "loky"]
    rank = {method: position for position, method in enumerate(_START_METHOD_ORDER)}
    return sorted(methods, key=lambda method: rank.get(method, len(rank)))


_StartChoice = tuple[str, str, int]
"""``(start method, reason, this process's thread count)``."""


def _start_method_now() -> _StartChoice:
    """The start method a pool created now would use, why, and this process's thread count,
    decided as ``_executor._choose_context`` decides it."""
    method, reason = start_method_now()
    try:
        n_threads = psutil.Process().num_threads()
    except psutil.Error:
        n_threads = threading.active_count() + 1
    return method, reason, n_threads


def _facts_for(start: _StartChoice) -> SystemFacts:
    """The facts a new executor would plan with (no warm workers) using ``start``."""
    method = start[0]
    cached_s = _start_cost_cache.load_worker_start_s(method)
    facts = _system_facts.read_system_facts(
        method,
        worker_start_s=cached_s,
        worker_start_source="measured" if cached_s is not None else "estimate",
    )
    return facts


def _context_for(method: str) -> BaseContext | None:
    if method == "auto":
        return None
    if method == "loky":
        from loky.backend.context import get_context

        context: BaseContext = get_context("loky")
        return context
    return multiprocessing.get_context(method)


def _measure_worker_start(method: str, start: _StartChoice) -> dict[str, Any]:
    """Start a 1-worker pool and time it until a no-op answers. The executor's backend
    stores the figure in the start-cost cache, as it does for every new pool."""
    measured_method = start[0] if method == "auto" else method
    started_s = time.perf_counter()
    try:
        with AdaptiveProcessPoolExecutor(max_workers=1, mp_context=_context_for(method)) as pool:
            pool.submit(int).result(timeout=MEASURE_TIMEOUT_S)
            elapsed_s: float | None = time.perf_counter() - started_s
        error = None
    except Exception as exc:
        elapsed_s, error = None, f"{type(exc).__name__}: {exc}"
    return {"start_method": measured_method, "worker_start_s": elapsed_s, "error": error}


def _machine_report(start: _StartChoice, measured: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a new executor sees, as JSON-ready data (see ``_format_doctor``)."""
    method, reason, n_threads = start
    facts = _facts_for(start)
    n_cpu_bound, cpu_bound_limit = _cost_model.choose_usable_cores(facts, cpu_bound=True)
    n_waiting, waiting_limit = _cost_model.choose_usable_cores(facts, cpu_bound=False)
    # What a program running more threads than this one would get instead.
    busy_method, _ = _cost_model.choose_start_method(
        default_method=_start_method.default_start_method(), n_os_threads=n_threads + 1
    )
    by_method: dict[str, dict[str, Any]] = {}
    for each in _available_start_methods():
        cached_s = _start_cost_cache.load_worker_start_s(each)
        by_method[each] = {
            "worker_start_s": cached_s
            if cached_s is not None
            else _system_facts.estimate_worker_start_s(each),
            "source": "measured" if cached_s is not None else "estimate",
        }
    cache_path = _start_cost_cache.default_cache_path()
    memory = psutil.virtual_memory()
    return {
        "platform": {
            "system": platform.system(),
            "release": platform.release(),
            "machine": platform.machine(),
        },
        "cores": {
            "n_logical": facts.n_logical_cores,
            "n_physical": facts.n_physical_cores,
            "n_affinity": facts.n_affinity_cores,
            "cgroup_quota_cores": facts.cpu_quota_cores,
            "env_core_limit": facts.env_core_limit,
            "n_usable_cpu_bound": n_cpu_bound,
            "cpu_bound_limited_by": cpu_bound_limit,
            "n_usable_waiting": n_waiting,
            "waiting_limited_by": waiting_limit,
        },
        "memory": {
            "available_bytes": facts.available_memory_bytes,
            "os_available_bytes": int(memory.available),
            "os_total_bytes": int(memory.total),
            "cgroup_headroom_bytes": _system_facts.read_cgroup_memory_headroom_bytes(),
        },
        "workers": {
            "start_method": method,
            "start_method_reason": reason,
            "n_threads": n_threads,
            "start_method_with_more_threads": busy_method,
            "start_methods_available": _available_start_methods(),
            "worker_start_s": facts.worker_start_s,
            "worker_start_source": facts.worker_start_source,
            "worker_start_by_method": by_method,
            "cache_path": str(cache_path),
            "cache_exists": cache_path.is_file(),
            "measured_now": measured,
        },
        "versions": _versions(),
        "environment": {
            _system_facts.ENV_MAX_WORKERS: os.environ.get(_system_facts.ENV_MAX_WORKERS),
            _start_cost_cache.ENV_CACHE_DIR: os.environ.get(_start_cost_cache.ENV_CACHE_DIR),
        },
    }


def _versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {
        "python": f"{platform.python_version()} ({platform.python_implementation()})",
        "amorsize-executor": __version__,
    }
    for distribution in ("loky", "cloudpickle", "psutil", "tqdm"):
        try:
            versions[distribution] = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            versions[distribution] = None
    return versions


def _format_doctor(machine: Mapping[str, Any]) -> str:
    cores = _section(machine, "cores")
    memory = _section(machine, "memory")
    workers = _section(machine, "workers")
    env = _section(machine, "environment")
    prog = _prog_name()
    quota = cores.get("cgroup_quota_cores")
    headroom = memory.get("cgroup_headroom_bytes")
    method = workers.get("start_method")
    source = workers.get("worker_start_source")
    if source == "measured":
        start_note = "measured on this machine: the median of the cached samples"
    else:
        start_note = f"estimate: nothing measured here yet; `{prog} doctor --measure` measures"
    lines = [
        f"amorsize-executor {__version__}: what a new executor sees on this machine",
        "",
        "cores",
        _row("logical", f"{cores.get('n_logical')} (os.cpu_count)"),
        _row("physical", f"{_or_unknown(cores.get('n_physical'))} (psutil)"),
        _row("affinity", f"{_or_unknown(cores.get('n_affinity'))} (CPUs this process may use)"),
        _row("cgroup CPU quota", "none" if quota is None else f"{quota:g} cores"),
        _row("environment cap", _env_cap_text(cores.get("env_core_limit"), env)),
        _row(
            "usable",
            f"{cores.get('n_usable_cpu_bound')} for CPU-bound work (limited by "
            f"{cores.get('cpu_bound_limited_by')}); {cores.get('n_usable_waiting')} for "
            f"work that waits (limited by {cores.get('waiting_limited_by')})",
        ),
        "memory",
        _row("available", f"{_bytes_text(memory.get('available_bytes'))} for new workers"),
        _row(
            "OS available",
            f"{_bytes_text(memory.get('os_available_bytes'))} of "
            f"{_bytes_text(memory.get('os_total_bytes'))}",
        ),
        _row(
            "cgroup headroom",
            "no limit" if headroom is None else f"{_bytes_text(headroom)} below the limit",
        ),
        "workers",
        _row("start method now", f"{workers.get('start_method_reason')}"),
        _row("", _threads_note(workers)),
        _row("start methods", ", ".join(workers.get("start_methods_available") or [])),
        _row(
            "worker start cost",
            f"{_seconds_text(workers.get('worker_start_s'))} with {method} ({start_note})",
        ),
    ]
    by_method = workers.get("worker_start_by_method") or {}
    lines.append(
        _row(
            "  by method",
            "; ".join(
                f"{name} {_seconds_text(entry.get('worker_start_s'))} ({entry.get('source')})"
                for name, entry in by_method.items()
            ),
        )
    )
    measured = workers.get("measured_now")
    if measured:
        if measured.get("error"):
            lines.append(_row("measured now", f"failed: {measured.get('error')}"))
        else:
            lines.append(
                _row(
                    "measured now",
                    f"{_seconds_text(measured.get('worker_start_s'))} to start 1 "
                    f"{measured.get('start_method')} worker and run a no-op (stored)",
                )
            )
    cache_state = "exists" if workers.get("cache_exists") else "not written yet"
    lines += [
        _row("cache file", f"{workers.get('cache_path')} ({cache_state})"),
        "versions",
    ]
    for name, version in (machine.get("versions") or {}).items():
        lines.append(_row(name, "not installed" if version is None else str(version)))
    lines.append("environment")
    for name, value in env.items():
        lines.append(_row(name, "unset" if value is None else repr(value)))
    return "\n".join(lines)


def _threads_note(workers: Mapping[str, Any]) -> str:
    n_threads = workers.get("n_threads")
    note = f"(this process runs {n_threads} thread{'' if n_threads == 1 else 's'}"
    other = workers.get("start_method_with_more_threads")
    if other and other != workers.get("start_method"):
        note += f"; a program running more threads gets {other}"
    return note + ")"


def _env_cap_text(limit: object, env: Mapping[str, Any]) -> str:
    raw = env.get(_system_facts.ENV_MAX_WORKERS)
    if raw is None:
        return f"none ({_system_facts.ENV_MAX_WORKERS} unset)"
    if limit is None:
        return f"none ({_system_facts.ENV_MAX_WORKERS}={raw!r} is not a positive int: ignored)"
    return f"{limit} ({_system_facts.ENV_MAX_WORKERS}={raw!r})"


def _row(label: str, value: str) -> str:
    return f"  {label:<20} {value}".rstrip()


def _section(report: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = report.get(key)
    return value if isinstance(value, Mapping) else {}


def _or_unknown(value: object) -> str:
    return "unknown" if value is None else str(value)


def _seconds_text(value: object) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return format_seconds(float(value))
    return "unknown"


def _bytes_text(value: object) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return format_bytes(float(value))
    return "unknown"


# -- explain -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _JobInput:
    items: Sequence[Any]
    spec: str
    """The option that gave it (``"--range"``, ``"--lines"``, ``"--jsonl"``)."""
    argument: str

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.spec, "argument": self.argument, "n_items": len(self.items)}


@dataclass(frozen=True)
class _JobResult:
    plan: Plan | None
    n_results: int
    """Results produced (by the probe alone, without ``--run``) before any error."""
    error: BaseException | None


def _run_explain(args: argparse.Namespace) -> int:
    previous = _load_report(args.compare_with) if args.compare_with is not None else None
    _check_export_path(args.export)
    if args.progress and not args.run:
        raise _UsageError("--progress shows a bar while the job runs: add --run or drop it")
    if args.progress and importlib.util.find_spec("tqdm") is None:
        raise _UsageError(
            "--progress needs the 'tqdm' package: pip install 'amorsize-executor[progress]'"
        )
    spec, argument = _input_spec(args)
    fn = _load_function(args.function)
    job_input = _read_input(spec, argument)
    # After importing fn's module (which may start threads, as in the user's program) and
    # before the job (whose pool leaves threads ending for a moment).
    machine = _machine_report(_start_method_now())
    result = _run_job(fn, job_input, args) if args.run else _plan_job(fn, job_input, args)
    error = result.error
    report = _make_report(
        "explain",
        machine,
        result.plan,
        function=args.function,
        input=job_input.to_dict(),
        options={
            "run": args.run,
            "max_workers": args.max_workers,
            "chunksize": args.chunksize,
            "isolate": args.isolate,
        },
        n_results=result.n_results,
        error=None
        if error is None
        else {
            "type": type(error).__qualname__,
            "message": str(error),
            "item_index": result.n_results,
        },
    )
    _emit(args, report, _format_explain(args, job_input, result), previous)
    if error is not None:
        _print_function_error(args.function, job_input, result.n_results, error)
        return EXIT_FUNCTION_RAISED
    return EXIT_OK


def _load_function(spec: str) -> Callable[..., Any]:
    """Import ``MODULE:FUNCTION``; every way it can fail is a usage error naming the fix."""
    module_name, colon, qualname = spec.partition(":")
    if not colon or not module_name or not qualname:
        raise _UsageError(
            f"give the function as MODULE:FUNCTION, such as mypackage.jobs:process, got {spec!r}"
        )
    if module_name.endswith(".py") or "/" in module_name or "\\" in module_name:
        dotted = module_name.removesuffix(".py").replace("\\", "/").strip("/").replace("/", ".")
        raise _UsageError(
            f"{module_name!r} is a file path: give the module's import name instead, "
            f"such as {dotted}:{qualname} (run from the directory that holds it)"
        )
    if module_name.startswith("."):
        raise _UsageError(f"{module_name!r} is a relative module name: give the full import name")
    _put_cwd_on_path()
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (
            module_name == exc.name or module_name.startswith(exc.name + ".")
        ):
            raise _UsageError(
                f"cannot import module {module_name!r}: {exc}. Run from the directory "
                f"that holds it (the current directory, {os.getcwd()}, is searched), add "
                f"that directory to PYTHONPATH, or install its package"
            ) from None
        raise _UsageError(
            f"importing module {module_name!r} failed: {exc}. Install the missing module "
            f"in this environment ({sys.executable})"
        ) from None
    except Exception as exc:
        traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
        raise _UsageError(
            f"importing module {module_name!r} raised {type(exc).__name__}: {exc} "
            f"(traceback above): fix the module so that it imports"
        ) from None
    target: Any = module
    parts = qualname.split(".")
    for depth, part in enumerate(parts):
        try:
            target = getattr(target, part)
        except AttributeError:
            owner = module_name if depth == 0 else f"{module_name}:{'.'.join(parts[:depth])}"
            raise _UsageError(
                f"{owner!r} has no attribute {part!r}{_did_you_mean(part, target)}: check "
                f"the name; FUNCTION must be defined at the top level of the module (or "
                f"be a path such as Class.method)"
            ) from None
    if not callable(target):
        raise _UsageError(
            f"{spec} is not callable (it is of type {type(target).__qualname__}): name a function"
        )
    fn: Callable[..., Any] = target
    return fn


def _did_you_mean(name: str, owner: object) -> str:
    candidates = [n for n in dir(owner) if not n.startswith("_")]
    close = difflib.get_close_matches(name, candidates, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _put_cwd_on_path() -> None:
    """Let a module in the current directory be named, as ``python -m`` does (the installed
    script's ``sys.path`` starts with its own directory instead)."""
    cwd = os.getcwd()
    for entry in sys.path:
        if isinstance(entry, str) and os.path.abspath(entry or os.curdir) == cwd:
            return
    sys.path.insert(0, cwd)


def _input_spec(args: argparse.Namespace) -> tuple[str, Any]:
    """The one input option given, and its value."""
    given = [
        (spec, value)
        for spec, value in (
            ("--range", args.range_n),
            ("--lines", args.lines),
            ("--jsonl", args.jsonl),
        )
        if value is not None
    ]
    if not given:
        raise _UsageError(
            "no input to map over: give exactly one of --range N, --lines FILE or --jsonl FILE"
        )
    if len(given) > 1:
        raise _UsageError(
            f"{' and '.join(spec for spec, _ in given)} were given together: give exactly one "
            f"input (--range N, --lines FILE or --jsonl FILE)"
        )
    return given[0]


def _read_input(spec: str, value: Any) -> _JobInput:
    """The items, read whole before anything runs: a bad line is reported before any work,
    and the plan knows the item count."""
    if spec == "--range":
        return _JobInput(range(value), spec, str(value))
    if spec == "--lines":
        return _JobInput([text for _, text in _read_lines(value)], spec, value)
    items: list[Any] = []
    for number, text in _read_lines(value):
        if not text.strip():
            continue
        try:
            items.append(json.loads(text))
        except (ValueError, RecursionError) as exc:
            detail = (
                f"{exc.msg} at column {exc.colno}"
                if isinstance(exc, json.JSONDecodeError)
                else str(exc) or type(exc).__name__
            )
            raise _UsageError(
                f"{_file_label(value)} line {number} is not valid JSON ({detail}): "
                f"{reprlib.repr(text)}. Each line must hold one JSON value, such as 42, "
                f'"text", [1, 2] or {{"a": 1}}'
            ) from None
    return _JobInput(items, spec, value)


def _read_lines(path: str) -> Iterator[tuple[int, str]]:
    """``(line number, text without its line ending)`` for each line of ``path`` (UTF-8;
    ``"-"`` is stdin). Lines are decoded one by one, so a decoding error names its line."""
    try:
        with contextlib.ExitStack() as stack:
            stream: Iterable[bytes | str] = (
                getattr(sys.stdin, "buffer", sys.stdin)
                if path == "-"
                else stack.enter_context(open(path, "rb"))
            )
            for number, raw in enumerate(stream, start=1):
                yield number, _strip_line_end(_decode_line(path, number, raw))
    except FileNotFoundError:
        raise _UsageError(
            f"input file {path!r} not found (relative paths start at {os.getcwd()}): "
            f"check the path"
        ) from None
    except IsADirectoryError:
        raise _UsageError(f"input {path!r} is a directory: name a file") from None
    except OSError as exc:
        raise _UsageError(
            f"cannot read input file {path!r}: {exc.strerror or exc}: check its permissions"
        ) from None


def _decode_line(path: str, number: int, raw: bytes | str) -> str:
    if isinstance(raw, str):
        return raw
    try:
        # utf-8-sig on the first line: drop the byte-order mark some editors write.
        return raw.decode("utf-8-sig" if number == 1 else "utf-8")
    except UnicodeDecodeError as exc:
        raise _UsageError(
            f"{_file_label(path)} line {number} is not UTF-8 text ({exc.reason} at byte "
            f"{exc.start} of the line): convert the file to UTF-8"
        ) from None


def _strip_line_end(line: str) -> str:
    if line.endswith("\r\n"):
        return line[:-2]
    return line[:-1] if line.endswith("\n") else line


def _file_label(path: str) -> str:
    return "stdin" if path == "-" else repr(path)


def _plan_job(
    fn: Callable[..., Any], job_input: _JobInput, args: argparse.Namespace
) -> _JobResult:
    """Probe the first items here and plan the rest, as ``map()`` would, without running it."""
    source = Source((job_input.items,))
    outcome = _probe.probe(fn, source)
    if outcome.error is not None:
        return _JobResult(None, len(outcome.results), outcome.error)
    # Like the executor, read the facts after the probe: fn may have started threads.
    facts = _facts_for(_start_method_now())
    plan = _cost_model.plan_map(
        facts,
        outcome.measurements,
        n_items=0 if outcome.exhausted else source.n_remaining,
        n_items_lower_bound=max(1, source.n_pulled),
        max_workers=args.max_workers,
        chunksize=args.chunksize,
        serial_allowed=not args.isolate,
    )
    return _JobResult(plan, len(outcome.results), None)


def _run_job(fn: Callable[..., Any], job_input: _JobInput, args: argparse.Namespace) -> _JobResult:
    """Run the whole job through the executor; count the results, keep none."""
    n_results = 0
    error: BaseException | None = None
    with AdaptiveProcessPoolExecutor(
        max_workers=args.max_workers, isolate=args.isolate, progress=args.progress
    ) as executor:
        results: Iterator[Any] | None = None
        try:
            results = executor.map(fn, job_input.items, chunksize=args.chunksize)
            for _ in results:
                n_results += 1
        except Exception as exc:
            error = exc
        finally:
            # Dropping the stream closes it, which records the outcome on the plan even
            # when the exception (whose traceback holds this frame) is kept.
            results = None
    return _JobResult(executor.last_plan, n_results, error)


def _format_explain(args: argparse.Namespace, job_input: _JobInput, result: _JobResult) -> str:
    n_items = len(job_input.items)
    head = f"{args.function} over {job_input.spec} {job_input.argument} ({n_items} items)"
    lines: list[str] = []
    if args.run:
        if result.error is None:
            lines.append(f"{head}: ran, {result.n_results} results (not kept)")
        else:
            lines.append(
                f"{head}: {result.n_results} results, then the function raised "
                f"{type(result.error).__name__} on item {result.n_results}"
            )
    elif result.error is not None:
        lines.append(
            f"{head}: the function raised {type(result.error).__name__} on item "
            f"{result.n_results} while probing, so there is no plan"
        )
    else:
        lines.append(
            f"{head}: plan only, from a probe of the first {result.n_results} item(s) in "
            f"this process; nothing else ran (add --run to run the whole job)"
        )
        if args.isolate:
            lines.append("  (--isolate: a run probes in a worker instead; this probe ran here)")
    plan = result.plan
    if plan is not None:
        lines.append(plan.explain())
        # After an error the run stopped early: its time is not the predicted job's.
        comparison = None if result.error is not None else _predicted_vs_actual(plan)
        if comparison:
            lines.append(comparison)
    elif args.run:
        lines.append("no plan was made")
    return "\n".join(lines)


def _predicted_vs_actual(plan: Plan) -> str | None:
    """One line setting the prediction beside what happened, once the plan has run."""
    outcome = plan.outcome
    if outcome is None:
        return None
    m = plan.measurements
    predicted_s = plan.predicted_parallel_s if plan.mode == "parallel" else plan.predicted_serial_s
    per_item = ""
    if outcome.n_items and outcome.worker_busy_s > 0:
        per_item = (
            f"; per item {format_seconds(m.wall_s_per_item)} probed, "
            f"{format_seconds(outcome.worker_busy_s / outcome.n_items)} in the run"
        )
    if plan.n_items == 0:
        return (
            f"predicted vs actual: the probe ran every item, so nothing was left to "
            f"predict; actual {format_seconds(outcome.wall_s)}{per_item}"
        )
    if predicted_s is None or not math.isfinite(predicted_s):
        return f"predicted vs actual: no prediction for the {plan.mode} plan{per_item}"
    if outcome.switched_to_parallel:
        return (
            f"predicted vs actual: the run switched to parallel part-way, so the prediction "
            f"({format_seconds(predicted_s)}) covers only the items left then; actual "
            f"{format_seconds(outcome.wall_s)} for all {outcome.n_items}{per_item}"
        )
    probe_s = 0.0 if m.measured_in_worker else m.n_probed * m.wall_s_per_item
    total_s = predicted_s + probe_s
    ratio = f" ({outcome.wall_s / total_s:.2f}x the prediction)" if total_s > 0 else ""
    return (
        f"predicted vs actual: {format_seconds(total_s)} predicted ({plan.mode} "
        f"{format_seconds(predicted_s)} + probe {format_seconds(probe_s)}), "
        f"{format_seconds(outcome.wall_s)} actual{ratio}{per_item}"
    )


def _print_function_error(
    spec: str, job_input: _JobInput, index: int, error: BaseException
) -> None:
    item = (
        f" (input {reprlib.repr(job_input.items[index])})"
        if 0 <= index < len(job_input.items)
        else ""
    )
    print(
        f"{_prog_name()} explain: error: {spec} raised {type(error).__name__} on item "
        f"{index}{item}: {error}",
        file=sys.stderr,
    )
    traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)


# -- reports: JSON, export, compare --------------------------------------------------------


def _make_report(
    kind: str, machine: dict[str, Any], plan: Plan | None, **extra: Any
) -> dict[str, Any]:
    report: dict[str, Any] = {
        "kind": kind,
        "version": __version__,
        "report_format": REPORT_FORMAT,
        "machine": machine,
        "plan": None if plan is None else plan.to_dict(),
    }
    report.update(extra)
    safe: dict[str, Any] = _json_safe(report)
    return safe


def _json_safe(value: Any) -> Any:
    """Plain JSON data: non-finite floats (an unpicklable item's size is infinite) as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    return value


def _dump_json(report: Mapping[str, Any]) -> str:
    return json.dumps(report, indent=2, sort_keys=True, allow_nan=False, default=str)


def _emit(
    args: argparse.Namespace,
    report: dict[str, Any],
    text: str,
    previous: tuple[str, Mapping[str, Any]] | None,
) -> None:
    """Print the report (text or JSON) with the changes since ``previous``, then export it."""
    changes = None if previous is None else _diff_reports(previous[1], report)
    if args.json:
        shown = dict(report)
        if changes is not None:
            shown["changes"] = [_change_to_dict(change) for change in changes]
        print(_dump_json(shown))
    else:
        print(text)
        if previous is not None and changes is not None:
            print()
            print(_format_changes(previous[0], previous[1], changes))
    if args.export is not None:
        try:
            Path(args.export).write_text(_dump_json(report) + "\n", encoding="utf-8")
        except OSError as exc:
            raise _UsageError(
                f"cannot write the report to {args.export!r}: {exc.strerror or exc}: "
                f"choose a writable path"
            ) from None
        print(f"report written to {args.export}", file=sys.stderr)


def _check_export_path(path: str | None) -> None:
    """Fail before any work when the report could obviously not be written."""
    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise _UsageError(f"--export {path!r} is a directory: give a file name")
    parent = target.parent
    if not parent.is_dir():
        raise _UsageError(
            f"cannot write the report to {path!r}: directory {str(parent)!r} does not "
            f"exist: create it or choose another path"
        )


def _load_report(path: str) -> tuple[str, Mapping[str, Any]]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _UsageError(f"report {path!r} not found: pass a file written by --export") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise _UsageError(f"cannot read report {path!r}: {exc}") from None
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise _UsageError(
            f"report {path!r} is not JSON ({exc}): pass a file written by --export"
        ) from None
    if not isinstance(document, dict):
        raise _UsageError(
            f"report {path!r} holds a JSON {type(document).__name__}, not a report object: "
            f"pass a file written by --export"
        )
    return path, document


_MISSING: Any = object()
"""Marks a key one of the two reports does not have."""

_Change = tuple[str, Any, Any]
"""``(dotted key, old value, new value)``; either value may be ``_MISSING``."""

_NOT_COMPARED = frozenset({"changes", "report_format"})


def _diff_reports(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[_Change]:
    """Every leaf value that differs between two reports, by dotted key, in key order.

    Missing keys and sections on either side are changes, never errors; a plan present on
    one side only is a single change rather than one per field.
    """
    flat_old: dict[str, Any] = {}
    flat_new: dict[str, Any] = {}
    changes: list[_Change] = []
    old_plan, new_plan = old.get("plan", _MISSING), new.get("plan", _MISSING)
    if isinstance(old_plan, Mapping) != isinstance(new_plan, Mapping):
        changes.append(("plan", _plan_summary(old_plan), _plan_summary(new_plan)))
        old = {k: v for k, v in old.items() if k != "plan"}
        new = {k: v for k, v in new.items() if k != "plan"}
    for key, value in old.items():
        if key not in _NOT_COMPARED:
            _flatten(value, str(key), flat_old)
    for key, value in new.items():
        if key not in _NOT_COMPARED:
            _flatten(value, str(key), flat_new)
    for key in sorted(flat_old.keys() | flat_new.keys()):
        before, after = flat_old.get(key, _MISSING), flat_new.get(key, _MISSING)
        if before is _MISSING or after is _MISSING or before != after:
            changes.append((key, before, after))
    return changes


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping) and value:
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}", out)
    else:
        out[prefix] = value


def _plan_summary(plan: Any) -> Any:
    if not isinstance(plan, Mapping):
        return plan
    if plan.get("mode") == "parallel":
        return f"parallel: {plan.get('n_workers')} worker(s), chunks of {plan.get('chunksize')}"
    return str(plan.get("mode"))


def _change_to_dict(change: _Change) -> dict[str, Any]:
    key, before, after = change
    entry: dict[str, Any] = {"key": key}
    if before is not _MISSING:
        entry["old"] = before
    if after is not _MISSING:
        entry["new"] = after
    return entry


def _format_changes(path: str, old: Mapping[str, Any], changes: list[_Change]) -> str:
    about = f"a {old.get('kind', 'unknown')} report of amorsize-executor {old.get('version', '?')}"
    if not changes:
        return f"no changes since {path} ({about})"
    lines = [f"changes since {path} ({about}):"]
    for key, before, after in changes:
        if isinstance(before, list) and isinstance(after, list) and key.endswith("reasons"):
            lines.append(f"  {key}:")
            lines.extend(f"    - {reason}" for reason in before if reason not in after)
            lines.extend(f"    + {reason}" for reason in after if reason not in before)
            continue
        lines.append(
            f"  {key}: {_value_text(key, before)} → {_value_text(key, after)}"
            f"{_relative_change(before, after)}"
        )
    return "\n".join(lines)


def _value_text(key: str, value: Any) -> str:
    if value is _MISSING:
        return "(missing)"
    if value is None:
        return "none"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if key.endswith("_bytes"):
            return _bytes_text(value)
        if key.endswith("_s"):
            return _seconds_text(value)
        return f"{value:g}" if isinstance(value, float) else str(value)
    if isinstance(value, str):
        return reprlib.repr(value) if len(value) > 80 else value
    if isinstance(value, list):
        return reprlib.repr(value)
    return json.dumps(value, default=str)


def _relative_change(before: Any, after: Any) -> str:
    numbers = (int, float)
    if (
        isinstance(before, numbers)
        and isinstance(after, numbers)
        and not isinstance(before, bool)
        and not isinstance(after, bool)
        and before != 0
    ):
        return f" ({(after - before) / abs(before):+.0%})"
    return ""
