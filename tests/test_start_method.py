"""A pool with no ``mp_context`` starts its workers as the stdlib pool would: with
``multiprocessing``'s default context, read without fixing it."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import textwrap

from amorsize_executor import AdaptiveProcessPoolExecutor
from amorsize_executor._start_method import default_start_method


def test_the_default_is_multiprocessing_s() -> None:
    assert default_start_method() == multiprocessing.get_context().get_start_method()


def test_reading_the_default_leaves_set_start_method_possible() -> None:
    # A fresh interpreter: this one's default context may already be fixed.
    code = textwrap.dedent(
        """
        import multiprocessing
        from amorsize_executor._start_method import default_start_method
        from amorsize_executor._start_choice import start_method_now
        default_start_method(); start_method_now()
        multiprocessing.set_start_method("spawn")
        print(default_start_method(), start_method_now()[0])
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert out == ["spawn", "loky"]


def test_explain_says_why_the_pool_starts_its_workers_as_it_does() -> None:
    spawn = multiprocessing.get_context("spawn")
    with AdaptiveProcessPoolExecutor(2, mp_context=spawn) as ex:
        assert ex._read_facts(ex._backend).start_method_reason == "spawn: the mp_context given"
    with AdaptiveProcessPoolExecutor(2) as ex:
        reason = ex._read_facts(ex._backend).start_method_reason
    assert reason.startswith(ex._backend.start_method + ":")
    assert "default" in reason
