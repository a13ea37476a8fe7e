"""The words of the reasons a plan gives when serial wins: figures in, text out.

Policy layer (pure). ``_cost_model`` decides; this says why, so that each reason names the
rule that decided it and says whether its figure is a prediction or a bound: the fastest
any pool could be (``_cost_model.parallel_floor_s``), or the best pool planned on the most
favourable figures because the machine's facts were not read.
"""

from __future__ import annotations


def ratio_text(numerator: float, denominator: float) -> str:
    """``numerator`` as a share of ``denominator`` (``"n/a"`` when that is not positive)."""
    if denominator <= 0:
        return "n/a"
    return f"{numerator / denominator:.0%}"


def floor_reason(
    floor_s: float, serial_s: float, *, pays_start: bool, pays_cold_first_call: bool
) -> str:
    """Why no pool can win: even its floor, ``floor_s``, loses to serial. Names only the
    parts of the floor that cost something (no start with warm workers or on a cluster, no
    cold first call where workers inherit the caller's warm state)."""
    parts = []
    if pays_start:
        parts.append("a worker's start")
    if pays_cold_first_call:
        parts.append("its cold first call")
    parts.append("a round trip")
    return (
        "serial is predicted fastest: any pool would take at least "
        f"{ratio_text(floor_s, serial_s)} of the serial time ({', '.join(parts)}, and the "
        "parent's pickling and sending of every item and result)"
    )


def best_pool_reason(
    n_workers: int,
    chunksize: int,
    parallel_s: float,
    serial_s: float,
    is_bound: bool,
    margin: float,
) -> str:
    """Why serial won against the best pool ``(n_workers, chunksize)`` the search found,
    predicted at ``parallel_s``; with ``is_bound`` (planned on the most favourable figures)
    that time is a lower bound of any real pool's, not a prediction, and the reason says so.
    A pool faster than serial lost on the ``margin`` it must win by."""
    margin_text = (
        f", and a pool must be predicted at least {margin:.0%} faster"
        if parallel_s < serial_s
        else ""
    )
    if is_bound:
        return (
            "serial is predicted fastest: even with every core free, the fastest start and "
            f"free transfers, the best pool ({n_workers} worker(s), chunks of {chunksize}) "
            f"would take at least {ratio_text(parallel_s, serial_s)} of the serial time"
            f"{margin_text}"
        )
    return (
        "serial is predicted fastest: the best pool "
        f"({n_workers} worker(s), chunks of {chunksize}) would take "
        f"{ratio_text(parallel_s, serial_s)} of the serial time{margin_text}"
    )


def with_unknown_length(why: list[str], n_items: int | None) -> list[str]:
    """``why``, and a note that the plan is revisited when the input's length is unknown."""
    if n_items is None:
        return [*why, "the input's length is unknown: this is revisited as more items arrive"]
    return why
