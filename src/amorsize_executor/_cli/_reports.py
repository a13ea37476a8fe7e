"""The reports of both commands: JSON, ``--export`` to a file, ``--compare-with`` a saved one."""

from __future__ import annotations

import argparse
import json
import math
import reprlib
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._records import Plan, format_bytes, format_seconds
from ._common import __version__, _UsageError

REPORT_FORMAT = 1
"""Version of the ``--export`` layout; ``--compare-with`` reads any version, key by key."""


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
    """Every leaf value that differs between two reports, by dotted key, in key order;
    a value that is unknown (``None``) on either side is no change.

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
        if before is None or after is None:
            continue  # unknown on one side (not read, not measured): not a change
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
        if key.endswith("_bytes_per_s"):
            return f"{_bytes_text(value)}/s"
        if key.endswith("_per_s"):
            return f"{value:g}/s"
        if key.endswith("_s") or "_s_per_" in key:  # seconds, or seconds per item
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


def _seconds_text(value: object) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return format_seconds(float(value))
    return "unknown"


def _bytes_text(value: object) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return format_bytes(float(value))
    return "unknown"
