"""The record of a new pool's start cost: how long its first worker took to answer, written
to the on-disk cache (``_start_cost_cache``, through the ``record`` callable the facade hands
the backend) off the pool's threads and after the pool's start is over.

Mechanism layer, used by ``_pool_backend``. It decides nothing about the figure (the cache
decides what to keep); it only keeps the write away from the moment the workers start, when
the caller's CPU is what the two starting workers need, and makes sure a record waiting for
that moment to pass is still written at ``shutdown()`` or at the interpreter's exit.
"""

from __future__ import annotations

import _thread
import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

logger = logging.getLogger("amorsize_executor")

RECORD_DELAY_S = 1.0
"""How long after a new pool's first answer its start-cost record waits before writing,
unless the pool stops first (it then writes at once, without holding up ``shutdown()``). The
first answer comes while the workers are starting and the first results flow: a record there
took 0.5-1 ms of the caller's CPU (reading and writing the on-disk cache, and a thread),
which on the 2-core VM the two starting workers needed (a fresh pool's first result in a
program with a thread: 8.2 against 7.1 ms of the caller's CPU, medians of 11 interleaved runs
under load 4, 2026-12-02). Written during ``shutdown(wait=True)`` instead, while the workers
exit, it made that call 1.7 ms slower (4.3 against 2.6 ms, medians of 15, load 5). A second
covers the start of every host program of ``benchmarks/hosts.py``; a pool that runs longer
writes then."""

EXIT_RECORD_WAIT_S = 0.5
"""Longest the interpreter's exit waits for one start-cost record (a write takes
milliseconds): a program that never shut its executor down still stores its sample, and a
hung cache directory delays its exit by at most this much per pool."""

RECORD_JOIN_TIMEOUT_S = 10.0
"""Longest ``finish_pending_records`` waits for one start-cost record by default (``doctor``
reads the sample its pool stored): the write takes milliseconds (4-12 ms on the loaded
2-core VM); the bound only keeps a hung file system (a stale network home directory) from
hanging the caller."""


class StartRecorder:
    """Records a new pool's start cost (``record(start_method, seconds)``) from a thread of
    its own, started by the first answer's done-callback without waiting for it to run; the
    thread writes ``RECORD_DELAY_S`` later, or as soon as the pool has stopped
    (``write_now``).

    That callback runs on the pool's thread that delivers results: a record that wrote the
    on-disk start-cost cache there (4-12 ms on the loaded 2-core VM, 2026-12-02) held back
    the first result of every fresh pool by as much. A ``threading.Thread`` started there was
    still on that path, since ``start()`` waits until the new thread runs: 0.5-1.5 ms once the
    new workers held the cores (30 tiny ``submit()`` calls in a fresh pool finished 1.4 ms
    later than with no record at all, medians of 15), and up to 3 ms when started before the
    fork on the loaded VM instead. ``_thread.start_new_thread`` returns at once.

    Such a thread is a daemon: a cache directory that hangs (a stale network home) must not
    hang the exit. At interpreter shutdown, when no thread can start, nothing is recorded (a
    cache can afford it); the interpreter's exit waits for a record not written yet
    (``write_start_records_at_exit``), and so does ``finish_pending_records``.
    """

    def __init__(
        self, record: Callable[[str, float], None], start_method: str, started_s: float
    ) -> None:
        self._record = record
        self._start_method = start_method
        self._started_s = started_s
        self._recording = False
        self._recorded = threading.Event()
        self._write_now = threading.Event()

    def on_answer(self, future: Future[Any]) -> None:
        """The first answer's done-callback: start the record of how long it took."""
        if future.cancelled() or future.exception() is not None:
            return
        seconds = time.perf_counter() - self._started_s
        self._recording = True
        with _pending_records_lock:
            _pending_records.add(self)
        try:
            _thread.start_new_thread(self._run, (seconds,))
        except RuntimeError:  # the interpreter is shutting down
            self._recording = False
            with _pending_records_lock:
                _pending_records.discard(self)
            logger.debug(
                "start cost of a %s pool not recorded: interpreter shutting down",
                self._start_method,
            )

    def write_now(self) -> None:
        """Let a record waiting for ``RECORD_DELAY_S`` write at once (the pool has stopped)."""
        self._write_now.set()

    def close(self, timeout_s: float = RECORD_JOIN_TIMEOUT_S) -> None:
        """Write a waiting record at once and wait for it, at most ``timeout_s`` (the pool
        has stopped: its callback ran, or never will)."""
        self._write_now.set()
        if self._recording:
            self._recorded.wait(timeout_s)

    def _run(self, seconds: float) -> None:
        self._write_now.wait(RECORD_DELAY_S)
        try:
            self._record(self._start_method, seconds)
        except Exception as exc:  # a cache must never reach the user
            logger.debug("start cost of a %s pool not recorded: %r", self._start_method, exc)
        finally:
            with _pending_records_lock:
                _pending_records.discard(self)
            self._recorded.set()


_pending_records: set[StartRecorder] = set()
"""Start-cost records whose thread has not written yet (see ``write_start_records_at_exit``)."""
_pending_records_lock = threading.Lock()


def _forget_pending_records_in_child() -> None:
    """A forked child has none of its parent's record threads: its exit must not wait for
    them (and the lock may have been held by one of its parent's threads at the fork)."""
    global _pending_records_lock
    _pending_records_lock = threading.Lock()
    _pending_records.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pending_records_in_child)


def finish_pending_records(timeout_s: float = RECORD_JOIN_TIMEOUT_S) -> None:
    """Write every start-cost record of this process not written yet (``StartRecorder``)
    now, and wait for each at most ``timeout_s``: for a caller that reads the sample its
    pool stored (``doctor --measure``)."""
    with _pending_records_lock:
        pending = list(_pending_records)
    for recorder in pending:
        recorder.close(timeout_s=timeout_s)


def write_start_records_at_exit() -> None:
    """At interpreter exit, write the start-cost records still waiting for their pool's
    first second to pass, waiting at most ``EXIT_RECORD_WAIT_S`` for each: a program that
    exits sooner keeps its sample."""
    finish_pending_records(EXIT_RECORD_WAIT_S)
