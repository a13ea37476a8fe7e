"""``explain``: the plan for a job, from a probe of its first items (planned by the same
``_planning.Planner`` as a ``map()``), or with ``--run`` the whole job beside its plan."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import importlib
import importlib.metadata
import importlib.util
import json
import math
import os
import reprlib
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .. import _fn_cost, _probe, _system_facts
from .._executor import AdaptiveProcessPoolExecutor
from .._fn_for_workers import FnForWorkers
from .._input import Source
from .._planning import PlanLimits, Planner
from .._records import Plan, format_seconds
from ._common import EXIT_FUNCTION_RAISED, EXIT_OK, _prog_name, _UsageError
from ._doctor import _facts_for, _machine_report, _start_method_now
from ._reports import _check_export_path, _emit, _load_report, _make_report


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
    """Probe the first items here and plan the rest with the planner ``map()`` uses (the
    same shortcut for a job that is serial on any machine, the same pickle check of
    ``fn``), without running it."""
    source = Source((job_input.items,))
    outcome = _probe.probe(fn, source)
    if outcome.error is not None:
        return _JobResult(None, len(outcome.results), outcome.error)
    # A new executor's pool is processes on this machine: a large fn would go once to each.
    fn_for_workers = FnForWorkers(
        fn,
        once_per_worker=lambda n_bytes: _fn_cost.fn_travels_once_per_worker(
            n_bytes, workers_share_files=True
        ),
    )
    planner = Planner(
        fn_for_workers,
        source,
        PlanLimits(
            max_workers=args.max_workers,
            chunksize=args.chunksize,
            buffersize=None,
            serial_allowed=not args.isolate,
            local_machine=True,
        ),
        # Like the executor, read the facts after the probe: fn may have started threads.
        read_facts=lambda: _facts_for(_start_method_now()),
        in_process=False,
        # A new executor's pool: no warm worker, the fastest process start there is.
        fastest_start_s=_system_facts.fastest_start_prior_s,
    )
    try:
        plan = planner.first_plan(outcome.measurements, exhausted=outcome.exhausted, failed=False)
    except Exception as exc:  # fn cannot be pickled and must not run here (--isolate)
        return _JobResult(None, len(outcome.results), exc)
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
