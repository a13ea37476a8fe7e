"""How one ``map()``'s ``fn`` goes to its workers: pickled once, then either inside every
chunk (small) or written once to shared memory and loaded once per worker (large).

Mechanism layer: it drives ``_fn_transport``, which does the moving, and is handed the
rule that says which way a ``fn`` of a given pickled size travels
(``_fn_cost.fn_travels_once_per_worker``, bound by ``_map_run`` to the backend's declared
``workers_share_files``). One object per ``map()``, shared by the planner (which counts
``fn``'s size), the chunk window (whose chunks carry it) and the run (which releases it).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ._fn_transport import FnRef, PickledFn, ShippedFn, pickle_callable, shared_memory_dir
from ._records import WorkMeasurements

logger = logging.getLogger("amorsize_executor")


class FnForWorkers:
    """``fn`` as the chunks of one ``map()`` carry it. Pickled at most once (``ensure``);
    a large one's file is written at the first chunk that needs it and removed by
    ``release()``, when the ``map()`` ends."""

    def __init__(
        self, fn: Callable[..., Any], *, once_per_worker: Callable[[int], bool] = lambda _: False
    ) -> None:
        """``once_per_worker(n_bytes)``: whether a ``fn`` pickled to ``n_bytes`` goes once
        to each worker through a file (the default: never, it travels in every chunk)."""
        self._fn = fn
        self._once_per_worker = once_per_worker
        self._pickled: PickledFn | None = None
        self._inline: bytes | None = None
        self._shipped: ShippedFn | None = None

    def ensure(self) -> None:
        """Pickle ``fn`` unless done already; raises what pickling raises."""
        if self._inline is not None or self._pickled is not None:
            return
        pickled = pickle_callable(self._fn)
        if self._once_per_worker(pickled.nbytes):
            self._pickled = pickled
        else:
            self._inline = pickled.inline_bytes()

    def with_size(self, measurements: WorkMeasurements) -> WorkMeasurements:
        """``measurements`` with the bytes ``fn`` adds per chunk or per worker; unchanged if
        ``fn`` cannot be pickled (the plan then finds that out and stays in the caller)."""
        try:
            self.ensure()
        except Exception:
            return measurements
        if self._pickled is not None:
            mapped = sum(b.raw().nbytes for b in self._pickled.buffers)
            return replace(
                measurements,
                fn_bytes_per_chunk=0.0,
                fn_bytes_per_worker=float(len(self._pickled.main)),
                fn_mapped_bytes=float(mapped),
            )
        assert self._inline is not None
        return replace(measurements, fn_bytes_per_chunk=float(len(self._inline)))

    def for_chunk(self) -> tuple[bytes, FnRef | None]:
        """What a chunk carries: ``fn``'s bytes, or empty bytes and where to load it from."""
        self.ensure()
        if self._inline is not None:
            return self._inline, None
        if self._shipped is None:
            assert self._pickled is not None
            shipped = self._write(self._pickled)
            if shipped is None:
                # No room anywhere: the bytes travel with every chunk, as before.
                self._inline, self._pickled = self._pickled.inline_bytes(), None
                return self._inline, None
            self._shipped = shipped
            # The file holds the data now: the parent need not keep references to it.
            self._pickled = PickledFn(b"", [])
        return b"", self._shipped.ref

    @staticmethod
    def _write(pickled: PickledFn) -> ShippedFn | None:
        """The file in shared memory, else in the temporary directory (a small or full
        ``/dev/shm``), else ``None``."""
        for directory in dict.fromkeys((shared_memory_dir(), tempfile.gettempdir())):
            try:
                return ShippedFn(pickled, directory)
            except OSError as exc:
                logger.debug("cannot write fn to %s (%s)", directory, exc)
        return None

    def release(self) -> None:
        """Remove a large ``fn``'s file (the ``map()`` has ended)."""
        if self._shipped is not None:
            self._shipped.release()
