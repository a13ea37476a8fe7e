"""The probe in a worker sends its first round to every worker at once: the rule (pure), the
probe over scripted chunks, the window's round (a fake backend), and the wiring in ``map()``.
No timing is asserted."""

from __future__ import annotations

from typing import Any

import pytest

from amorsize_executor import AdaptiveProcessPoolExecutor
from amorsize_executor._chunk_io import ChunkOutcome
from amorsize_executor._chunk_window import ChunkWindow
from amorsize_executor._input import Source
from amorsize_executor._worker_probe import first_probe_round, probe_in_worker

from .conftest import make_facts
from .fakes import FakeBackend, ScriptedClock


def test_the_first_round_is_one_chunk_per_worker_of_the_users_size() -> None:
    assert first_probe_round(None, n_workers=2) == (1, 2)
    assert first_probe_round(8, n_workers=2) == (8, 2)  # tqdm's process_map, chunksize=8
    assert first_probe_round(8, n_workers=3, cap=lambda size: 1) == (1, 3)  # a deadline
    assert first_probe_round(None, n_workers=0) == (1, 1)


class ScriptedChunks:
    """Chunks of items 0.. whose calls take ``per_call_s(index)`` on ``clock``: chunks sent
    ahead by ``send_round`` run side by side (the clock moves by the first one taken, the
    rest are done by then), a chunk sent by ``run_chunk`` runs alone."""

    def __init__(self, per_call_s: Any, n_items: int, clock: ScriptedClock) -> None:
        self.per_call_s, self.n_items, self.clock = per_call_s, n_items, clock
        self.next = 0
        self.ahead: list[ChunkOutcome] = []
        self.sent: list[int] = []
        self.taken: list[int] = []

    def _chunk(self, size: int) -> ChunkOutcome | None:
        first = self.next
        size = min(size, self.n_items - first)
        if size <= 0:
            return None
        compute_s = sum(self.per_call_s(i) for i in range(first, first + size))
        self.next = first + size
        self.sent.append(size)
        return ChunkOutcome(
            list(range(first, first + size)), size, compute_s, compute_s, 10 * size, b"x", 0
        )

    def send_round(self, size: int, n_chunks: int) -> int:
        self.ahead = [o for o in (self._chunk(size) for _ in range(n_chunks)) if o is not None]
        self.clock.advance(max((o.compute_s for o in self.ahead), default=0.0))
        return len(self.ahead)

    def run_chunk(self, size: int) -> ChunkOutcome | None:
        if self.ahead:
            outcome: ChunkOutcome | None = self.ahead.pop(0)
        else:
            outcome = self._chunk(size)
            if outcome is not None:
                self.clock.advance(outcome.compute_s)
        if outcome is not None:
            self.taken.append(outcome.n_results)
        return outcome


def probe_rounds(per_call_s: Any, first_round: tuple[int, int], n_items: int = 100) -> Any:
    clock = ScriptedClock()
    chunks = ScriptedChunks(per_call_s, n_items, clock)
    delivered: list[object] = []
    measurements = probe_in_worker(
        chunks.run_chunk,
        may_go_on=lambda: chunks.next < n_items,
        deliver=delivered.extend,
        wall_clock=clock,
        first_round=first_round,
        send_round=chunks.send_round,
    )
    return measurements, chunks, delivered


def test_a_first_round_of_user_sized_chunks_plans_on_the_first_of_them() -> None:
    m, chunks, delivered = probe_rounds(lambda i: 0.01, (8, 2), n_items=30)
    assert chunks.sent == [8, 8]  # both workers busy from the start
    assert chunks.taken == [8]  # the plan needs no more: the first result comes at once
    assert chunks.ahead and chunks.ahead[0].results == list(range(8, 16))  # left in flight
    assert delivered == list(range(8))
    assert m.n_probed == 8 and m.wall_s_per_item == pytest.approx(0.01)


def test_after_a_first_round_the_probe_goes_on_one_chunk_at_a_time() -> None:
    m, chunks, delivered = probe_rounds(lambda i: 1e-5, (1, 2))
    assert chunks.sent[:4] == [1, 1, 4, 16]
    assert chunks.taken[:4] == [1, 1, 4, 16]  # the round's chunks first, in order
    assert delivered == list(range(len(delivered)))
    assert m.first_call_extra_s == 0.0


def test_the_first_calls_of_several_workers_are_not_judged_cold_by_each_other() -> None:
    # Two first calls, one 5 times the other: each is some worker's first, so neither is
    # left out as cold (one chunk alone followed by one of the same worker would be).
    m, chunks, _ = probe_rounds(lambda i: 1e-3 if i == 0 else 2e-4, (1, 2))
    assert chunks.sent[:2] == [1, 1]
    assert m.first_call_extra_s == 0.0
    m, chunks, _ = probe_rounds(lambda i: 1e-3 if i == 0 else 1e-4, (1, 1))
    assert chunks.sent[:2] == [1, 4]
    assert m.first_call_extra_s > 0.0


def test_the_window_hands_out_a_rounds_chunks_in_order() -> None:
    backend = FakeBackend()
    window = ChunkWindow(abs, Source((range(10),)), backend, budgets=False, deadline_s=None)
    assert window.send_round(3, 2) == 2
    assert backend.chunks == [[(0,), (1,), (2,)], [(3,), (4,), (5,)]]
    first = window.run_alone(100)
    assert first is not None and first.results == [0, 1, 2]
    assert len(window.pending) == 1 and window.in_flight_items == 3  # the other: in flight
    second = window.run_alone(100)  # taken, not sent anew
    assert second is not None and second.results == [3, 4, 5]
    assert len(backend.chunks) == 2 and not window.pending and window.in_flight_items == 0
    third = window.run_alone(100)  # nothing ahead: sent now
    assert third is not None and third.results == [6, 7, 8, 9]


def test_a_failure_in_a_round_drops_the_chunks_after_it() -> None:
    def fails_on_4(x: int) -> int:
        if x == 4:
            raise ValueError(x)
        return x

    backend = FakeBackend()
    window = ChunkWindow(fails_on_4, Source((range(10),)), backend, budgets=False, deadline_s=None)
    assert window.send_round(3, 3) == 3
    assert window.run_alone(3) is not None
    outcome = window.run_alone(3)  # the results before the failure, and the error at 4
    assert outcome is not None and outcome.results == [3]
    assert isinstance(window.error, ValueError) and window.error_index == 4
    assert not window.pending  # the chunk after the failure is dropped


def add_one(x: int) -> int:
    return x + 1


def keep(_: int) -> None:
    """An initializer: ``fn`` then never runs in the caller."""


def test_map_with_an_initializer_sends_its_first_chunks_to_every_worker() -> None:
    backend = FakeBackend()
    with AdaptiveProcessPoolExecutor(
        max_workers=2,
        initializer=keep,
        initargs=(1,),
        backend=backend,
        system_facts=make_facts(n_logical_cores=2),
    ) as ex:
        assert list(ex.map(add_one, range(30), chunksize=8)) == list(range(1, 31))
    sizes = [len(chunk) for chunk in backend.chunks]
    assert sizes[:2] == [8, 8] and sum(sizes) == 30  # one first chunk for each worker
