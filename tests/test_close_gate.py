"""The gate that defers a backend's close while map() runs may still resend items."""

from __future__ import annotations

from amorsize_executor._close_gate import CloseGate


def make() -> tuple[CloseGate, list[tuple[bool, bool]]]:
    closed: list[tuple[bool, bool]] = []
    return CloseGate(lambda wait, cancel: closed.append((wait, cancel))), closed


def test_shutdown_without_wait_is_deferred_to_the_last_release() -> None:
    gate, closed = make()
    gate.keep_open()
    gate.keep_open()
    gate.shutdown(False, False)
    assert closed == [] and gate.deferred
    gate.allow_close()
    assert closed == []
    gate.allow_close()
    assert closed == [(False, False)] and not gate.deferred


def test_waiting_or_cancelling_shutdown_closes_at_once() -> None:
    for wait, cancel in ((True, False), (False, True)):
        gate, closed = make()
        gate.keep_open()
        gate.shutdown(wait, cancel)
        assert closed == [(wait, cancel)]
        gate.allow_close()
        assert closed == [(wait, cancel)]  # no second close


def test_release_without_a_shutdown_closes_nothing() -> None:
    gate, closed = make()
    gate.keep_open()
    gate.allow_close()
    assert closed == [] and gate.n_keeping_open == 0
