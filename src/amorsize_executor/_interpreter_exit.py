"""Whether the interpreter has begun to shut down, as the stdlib's executors track it.

Mechanism layer. A hook registered with ``threading._register_atexit`` runs when the
interpreter begins to shut down (before ``atexit`` handlers), as the stdlib's own hook in
``concurrent.futures.process`` does: from then on the executor refuses new work with the
stdlib's message instead of reaching a pool that is being torn down.
"""

from __future__ import annotations

import sys
import threading

_exiting = False
"""Set once the interpreter has begun to shut down (see ``_note_exit``)."""


def _note_exit() -> None:
    global _exiting
    _exiting = True


def check_interpreter_running() -> None:
    """Refuse new work, with the stdlib's message, once the interpreter has begun to shut
    down (or is finalizing)."""
    if _exiting or sys.is_finalizing():
        raise RuntimeError("cannot schedule new futures after interpreter shutdown")


_register_atexit = getattr(threading, "_register_atexit", None)
if _register_atexit is not None:  # CPython 3.9+; elsewhere ``sys.is_finalizing`` only
    _register_atexit(_note_exit)
