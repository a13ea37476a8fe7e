"""Progress of a ``map()``: the ``progress`` option checked, and turned into a callback
counting finished items (a tqdm bar on stderr for ``progress=True``) and what closes it.

Mechanism layer: it reports counts; when and how often is the run's business.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

ProgressOption = bool | Callable[[int], None]
"""``True`` (a tqdm bar), ``False`` (none) or a callable taking an item count."""


def check_progress(progress: object) -> None:
    if not isinstance(progress, bool) and not callable(progress):
        raise TypeError(
            f"progress must be True, False or a callable taking an item count, got {progress!r}"
        )


def make_progress(
    progress: ProgressOption, n_total: int | None
) -> tuple[Callable[[int], None] | None, Callable[[], None]]:
    """A callback counting finished items, and what closes it (a tqdm bar, if asked for)."""
    if progress is False:
        return None, lambda: None
    if progress is True:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            raise ImportError(
                "progress=True needs the 'tqdm' package: pip install 'amorsize-executor[progress]'"
            ) from None
        bars: list[Any] = []

        def advance(n_items: int) -> None:
            # Opened on the first results, not before: a bar starts a monitor thread, and a
            # pool started while it runs could not use the fast fork start.
            if not bars:
                bars.append(tqdm(total=n_total, unit="item", file=sys.stderr))
            bars[0].update(n_items)

        def close() -> None:
            if bars:
                bars[0].close()

        return advance, close
    return progress, lambda: None
