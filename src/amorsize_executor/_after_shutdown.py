"""What a ``map()`` still alive when its executor shuts down may do, and what it says when it
cannot go on.

Policy layer: a plan in, a plan out; a setting in, a message out. The stdlib submits every
item at ``map()``, so its results stay readable after ``shutdown()``; a run here that had not
planned yet (its probe runs inside the result stream) plans serial, so the rest runs in the
calling process rather than on a pool that is closing, and a run that would need to submit
more of an input it could not submit in full says why it stops.
"""

from __future__ import annotations

from dataclasses import replace

from ._records import Plan

SHUTDOWN_REASON = (
    "the executor was shut down before this map() had planned: the rest runs in the calling "
    "process"
)


def serial_after_shutdown(plan: Plan) -> Plan:
    """``plan`` made serial, with the reason: the pool it would use is closing."""
    return replace(
        plan,
        mode="serial",
        n_workers=1,
        chunksize=1,
        window_items=0,
        reasons=(*plan.reasons, SHUTDOWN_REASON),
    )


def after_shutdown_message(buffersize: int | None) -> str:
    """Why a ``map()`` cannot go on after ``shutdown()``, and what to do: with
    ``buffersize=`` at most that many items were submitted ahead (as Python 3.14's
    ``buffersize`` does), else the input had no length to submit in full."""
    if buffersize is not None:
        why = (
            f"this map() was given buffersize={buffersize}, so only that many items were "
            "submitted ahead of the results read. Consume the results before leaving the "
            "'with' block, or leave out buffersize="
        )
    else:
        why = (
            "this map() still had input of unknown length to read. Consume the results "
            "before leaving the 'with' block, or pass a list"
        )
    return f"cannot schedule new futures after shutdown: the executor was shut down while {why}."
