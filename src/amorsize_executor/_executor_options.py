"""The checks of ``AdaptiveProcessPoolExecutor``'s constructor arguments: the stdlib's
exception types and messages for the stdlib's arguments, and for our own options a message
that says what was wrong and what to pass instead.

Facade layer (it asks ``_start_choice`` which start method a pool would get, to refuse
``multiprocessing`` objects a non-forked worker cannot receive); it changes nothing.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from multiprocessing.context import BaseContext
from typing import Any

from . import _mp_objects
from ._progress import check_progress
from ._start_choice import start_method_now


def check_constructor_arguments(
    *,
    max_workers: int | None,
    mp_context: BaseContext | None,
    initializer: Callable[..., object] | None,
    initargs: tuple[Any, ...],
    max_tasks_per_child: int | None,
    isolate: bool,
    progress: object,
    backend: object,
    keep_warm: float | None,
) -> None:
    """Raise as the stdlib pool would for its own arguments, and with what to do instead
    for ours and for combinations the chosen backend cannot honour."""
    check_positive_int("max_workers", max_workers, message="max_workers must be greater than 0")
    if initializer is not None and not callable(initializer):
        raise TypeError("initializer must be a callable")
    if not isinstance(initargs, tuple):
        raise TypeError(f"initargs must be a tuple, got {type(initargs).__qualname__}")
    if max_tasks_per_child is not None:
        if sys.version_info < (3, 11):
            raise TypeError(
                "max_tasks_per_child needs Python 3.11 or newer (the stdlib pool that "
                "implements it gained the option in 3.11)"
            )
        if isinstance(max_tasks_per_child, bool) or not isinstance(max_tasks_per_child, int):
            raise TypeError("max_tasks_per_child must be an integer")
        if max_tasks_per_child <= 0:
            raise ValueError("max_tasks_per_child must be >= 1")
        if mp_context is not None and mp_context.get_start_method() == "fork":
            raise ValueError(
                "max_tasks_per_child is incompatible with the 'fork' multiprocessing "
                "start method; supply a different mp_context."
            )
    if mp_context is not None and not hasattr(mp_context, "get_start_method"):
        raise TypeError(
            "mp_context must be a multiprocessing context such as "
            "multiprocessing.get_context('spawn'), got "
            f"{type(mp_context).__qualname__}"
        )
    if not isinstance(isolate, bool):
        raise TypeError(f"isolate must be True or False, got {isolate!r}")
    check_progress(progress)
    _check_keep_warm(keep_warm, max_tasks_per_child=max_tasks_per_child, backend=backend)
    _check_backend_options(
        backend,
        mp_context=mp_context,
        initializer=initializer,
        initargs=initargs,
        max_tasks_per_child=max_tasks_per_child,
        isolate=isolate,
    )


def check_positive_int(name: str, value: object, *, message: str | None = None) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(
            f"{name} must be a positive int or None, got {value!r} ({type(value).__qualname__})"
        )
    if value < 1:
        raise ValueError(message or f"{name} must be a positive int, got {value}")


def _check_keep_warm(
    keep_warm: object, *, max_tasks_per_child: int | None, backend: object
) -> None:
    if keep_warm is None:
        return
    if isinstance(keep_warm, bool) or not isinstance(keep_warm, (int, float)):
        raise TypeError(
            "keep_warm must be a number of seconds or None, got "
            f"{keep_warm!r} ({type(keep_warm).__qualname__})"
        )
    if not math.isfinite(keep_warm) or keep_warm <= 0:
        raise ValueError(
            "keep_warm must be a positive, finite number of seconds (how long shared workers "
            f"stay alive without work), got {keep_warm}"
        )
    if max_tasks_per_child is not None:
        raise ValueError(
            "keep_warm cannot be combined with max_tasks_per_child: a shared warm pool is a "
            "loky pool, and max_tasks_per_child needs the stdlib pool (drop one of the two)"
        )
    if not (backend is None or (isinstance(backend, str) and backend == "loky")):
        raise ValueError(
            f"keep_warm applies to the local process pool only; it cannot be used with "
            f"backend={backend!r} (drop keep_warm, or leave backend= out)"
        )


def _check_backend_options(
    backend: object,
    *,
    mp_context: BaseContext | None,
    initializer: Callable[..., object] | None,
    initargs: tuple[Any, ...],
    max_tasks_per_child: int | None,
    isolate: bool,
) -> None:
    """Refuse the options the chosen backend cannot honour, with what to do instead."""
    if backend == "threads":
        # Threads run in this process: no start method, nothing to replace per task,
        # and no isolation. An initializer runs once per thread.
        process_options: tuple[tuple[str, object], ...] = (
            ("mp_context", mp_context),
            ("max_tasks_per_child", max_tasks_per_child),
        )
        for option, given in process_options:
            if given is not None:
                raise ValueError(
                    f"{option} applies to worker processes only; it cannot be used with "
                    "backend='threads' (drop it, or leave backend= out for processes)"
                )
        if isolate:
            raise ValueError(
                "isolate=True needs worker processes: with backend='threads', fn runs "
                "in this process anyway (leave backend= out for processes)"
            )
    elif isinstance(backend, str) and backend != "loky":
        for name, value in (
            ("mp_context", mp_context),
            ("initializer", initializer),
            ("max_tasks_per_child", max_tasks_per_child),
        ):
            if value is not None:
                raise ValueError(
                    f"{name} applies to the local process pool only; it cannot be used "
                    f"with backend={backend!r} (configure the cluster's workers instead)"
                )
    if initargs and backend in (None, "loky"):
        # Before any work runs: objects only a forked worker can receive, in initargs of a
        # pool that will not fork.
        _mp_objects.check_initargs_start_method(
            initargs, start_method_now(mp_context, max_tasks_per_child)[0]
        )
