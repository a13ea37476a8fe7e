"""How a large ``fn`` reaches the workers of one ``map()``: once per worker, not per chunk.

Mechanism layer. The parent side (``pickle_callable``, ``ShippedFn``) runs in the caller;
the worker side (``load_shipped``) is imported inside workers, so this module imports only
the standard library.

A small ``fn`` travels inside every chunk, as before (``ChunkPayload.fn_bytes``). A large
one (``_fn_cost.fn_travels_once_per_worker``: a ``partial`` or closure over a model, a
lookup table, a numpy array) is pickled once with protocol 5, its large buffers (numpy
arrays' data) out of band, and written once to a file in shared memory (``/dev/shm`` where
there is one). Chunks then carry a small ``FnRef``. A worker loads the file the first time
it sees the ref's key and keeps the loaded ``fn`` for every later chunk of that ``map()``:

- the buffers are memory-mapped copy-on-write, and numpy builds its arrays on them without
  copying; the pages of a tmpfs file are the same physical pages in every worker, so a
  200 MB array exists once in RAM however many workers read it (the joblib approach of
  memory-mapping large arrays, but for the arrays inside ``fn``, and writable: a worker
  that writes to the array gets private copies of the pages it writes, as a copy would);
- the rest of the pickle is unpickled once per worker.

Staleness: the key is a fresh token per ``map()`` (and per re-pickling within one), never a
content hash. A caller that changes the object between two ``map()`` calls gets the new
content, because the second map writes a new file under a new key; hashing 200 MB to
recognise an unchanged object would cost about as much as loading the file again, which a
memory mapping makes nearly free. The parent removes the file when its ``map()`` ends; a
worker drops a cached ``fn`` whose file is gone at its next chunk, and never holds more than
``FN_CACHE_MAX_BYTES`` of them.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import pickle
import tempfile
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

OUT_OF_BAND_MIN_BYTES = 64 * 1024
"""Buffers at least this large (16 pages) are memory-mapped rather than pickled in band: a
mapping costs a page-table entry per page; smaller buffers are cheaper to copy."""

FN_CACHE_MAX_BYTES = 1 << 30
"""A worker keeps shipped functions whose files total at most this much (1 GiB), the newest
first; the one a chunk needs now is kept whatever its size. The files' pages are shared with
the other workers, so this bounds what a worker could come to own by writing to them."""

BUFFER_ALIGN = 64
"""Each out-of-band buffer starts at a multiple of this offset in the file, so arrays built
on it are aligned for every numpy dtype (and SIMD loads)."""

FILE_PREFIX = "amorsize-fn-"
"""Files are named ``amorsize-fn-<pid of the parent>-<key>.pkl``: the pid tells an orphan."""

_SHM_DIR = "/dev/shm"
"""Linux's shared-memory tmpfs: a file there lives in RAM, its pages shared by every mapping."""


@dataclass(frozen=True)
class FnRef:
    """What a chunk carries instead of a large ``fn``: where the pickled ``fn`` is."""

    key: str
    """Unique per shipping (a ``map()`` or a re-pickling within one): the cache key."""
    path: str
    main_nbytes: int
    """The in-band pickle: the file's first ``main_nbytes`` bytes."""
    buffer_spans: tuple[tuple[int, int], ...]
    """``(start, stop)`` in the file of each out-of-band buffer, in pickling order."""
    file_nbytes: int


@dataclass
class PickledFn:
    """``fn`` pickled once in the parent; its large buffers still point at ``fn``'s data."""

    main: bytes
    buffers: list[pickle.PickleBuffer]

    @property
    def nbytes(self) -> int:
        """The size ``fn`` has when it travels: in-band pickle plus every buffer."""
        return len(self.main) + sum(b.raw().nbytes for b in self.buffers)

    def inline_bytes(self) -> bytes:
        """The whole pickle in one piece, for a chunk to carry (buffers back in band)."""
        if not self.buffers:
            return self.main
        return _dumps_in_band(pickle.loads(self.main, buffers=self.buffers))


def pickle_callable(fn: Callable[..., Any]) -> PickledFn:
    """Pickle ``fn`` for a worker, as ``_chunk_worker.dumps_callable`` does (by reference
    when the worker can import it by name, else by value through cloudpickle) but without
    copying large buffers: they stay out of band, referring to ``fn``'s own data.

    Raises whatever pickling raises when ``fn`` cannot be pickled."""
    import cloudpickle

    buffers: list[pickle.PickleBuffer] = []

    def keep_out_of_band(buffer: pickle.PickleBuffer) -> bool:
        if buffer.raw().nbytes < OUT_OF_BAND_MIN_BYTES:
            return True  # pickled in band
        buffers.append(buffer)
        return False

    if importable(fn):
        try:
            data = pickle.dumps(fn, protocol=5, buffer_callback=keep_out_of_band)
            if not buffers and loads_back_as_itself(data, fn):
                return PickledFn(data, [])
        except Exception:
            pass
        buffers.clear()
    main = cloudpickle.dumps(fn, protocol=5, buffer_callback=keep_out_of_band)
    return PickledFn(bytes(main), buffers)


def importable(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` names a module a worker can import, so it may travel by reference."""
    import sys

    module = sys.modules.get(getattr(fn, "__module__", None) or "")
    return module is not None and (
        module.__name__ != "__main__" or getattr(module, "__file__", None) is not None
    )


def loads_back_as_itself(data: bytes, fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` pickled by reference (``data``) loads back as ``fn``. A method is a new
    object at each access: the same function bound to the same object (a classmethod's
    class) is equal. By value, cloudpickle would drop the source lines from the worker's
    traceback, so a method that passes travels by reference."""
    import types

    loaded = pickle.loads(data)
    return loaded is fn or (isinstance(fn, types.MethodType) and loaded == fn)


def _dumps_in_band(obj: Any) -> bytes:
    import cloudpickle

    return bytes(cloudpickle.dumps(obj))


class ShippedFn:
    """The parent's side of one large ``fn`` written to a shared-memory file, removed by
    ``release()`` (or when this object is collected, or at exit). Raises ``OSError`` if the
    file cannot be written (no space): nothing of it is left then."""

    def __init__(self, pickled: PickledFn, directory: str | None = None) -> None:
        directory = directory or shared_memory_dir()
        remove_orphans(directory)
        key = uuid.uuid4().hex
        path = os.path.join(directory, f"{FILE_PREFIX}{os.getpid()}-{key}.pkl")
        spans: list[tuple[int, int]] = []
        offset = len(pickled.main)
        self._finalizer = weakref.finalize(self, _remove, path, os.getpid())
        try:
            with open(path, "wb") as f:
                f.write(pickled.main)
                for buffer in pickled.buffers:
                    start = -(-offset // BUFFER_ALIGN) * BUFFER_ALIGN
                    f.write(b"\0" * (start - offset))
                    raw = buffer.raw()
                    f.write(raw)
                    offset = start + raw.nbytes
                    spans.append((start, offset))
        except BaseException:
            # A full /dev/shm (64 MiB in a default Docker container) must not keep a part.
            self._finalizer()
            raise
        self.ref = FnRef(key, path, len(pickled.main), tuple(spans), offset)

    def release(self) -> None:
        """Remove the file: workers that mapped it keep their mapping until they drop it."""
        self._finalizer()


def shared_memory_dir() -> str:
    """Where shipped functions are written: ``/dev/shm`` (RAM) where it is writable, else
    the temporary directory (on disk, still read through the page cache)."""
    if os.path.isdir(_SHM_DIR) and os.access(_SHM_DIR, os.W_OK):
        return _SHM_DIR
    return tempfile.gettempdir()


def remove_orphans(directory: str) -> None:
    """Remove the files of processes that died without removing theirs (killed, or ended by
    ``os._exit``): in ``/dev/shm`` each one holds its size in RAM until someone does."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        if not name.startswith(FILE_PREFIX):
            continue
        pid_text = name[len(FILE_PREFIX) :].split("-", 1)[0]
        if pid_text.isdigit() and not _alive(int(pid_text)):
            _remove(os.path.join(directory, name), os.getpid())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def _remove(path: str, owner_pid: int) -> None:
    """Remove the file, in the process that wrote it only: a forked child (a worker, or the
    user's own ``os.fork()``) holds a copy of the finalizer, and the file is still in use."""
    if os.getpid() != owner_pid:
        return
    with contextlib.suppress(OSError):
        os.unlink(path)


# -- worker side ---------------------------------------------------------------------------


@dataclass
class _Entry:
    fn: Callable[..., Any]
    path: str
    nbytes: int


_CACHE: OrderedDict[str, _Entry] = OrderedDict()
"""This worker's loaded functions by key, least recently used first."""

N_LOADS = 0
"""Files this process has loaded (tests and diagnostics)."""


def load_shipped(ref: FnRef) -> Callable[..., Any]:
    """The ``fn`` that ``ref`` names: from this worker's cache, or loaded from its file
    once (buffers mapped copy-on-write, the rest unpickled) and cached."""
    global N_LOADS
    _forget_ended()
    entry = _CACHE.get(ref.key)
    if entry is not None:
        _CACHE.move_to_end(ref.key)
        return entry.fn
    try:
        with open(ref.path, "rb") as f:
            mapping = mmap.mmap(f.fileno(), ref.file_nbytes, access=mmap.ACCESS_COPY)
    except FileNotFoundError:
        raise RuntimeError(
            f"the function of this map() is gone ({ref.path} was removed): the map() it "
            "belongs to has ended, so this chunk's results would not be read"
        ) from None
    view = memoryview(mapping)
    buffers = [view[start:stop] for start, stop in ref.buffer_spans]
    fn: Callable[..., Any] = pickle.loads(view[: ref.main_nbytes], buffers=buffers)
    N_LOADS += 1
    _CACHE[ref.key] = _Entry(fn, ref.path, ref.file_nbytes)
    _evict(keep=ref.key)
    return fn


def forget_ended() -> None:
    """Drop cached functions whose ``map()`` has ended (their file is gone): called per
    chunk while the cache holds anything, one ``stat`` per entry."""
    if _CACHE:
        _forget_ended()


def _forget_ended() -> None:
    for key in [k for k, e in _CACHE.items() if not os.path.exists(e.path)]:
        del _CACHE[key]


def _evict(*, keep: str) -> None:
    """Drop the least recently used entries until the cache fits ``FN_CACHE_MAX_BYTES``."""
    total = sum(e.nbytes for e in _CACHE.values())
    for key in list(_CACHE):
        if total <= FN_CACHE_MAX_BYTES:
            break
        if key != keep:
            total -= _CACHE.pop(key).nbytes


def cached_keys() -> list[str]:
    """Keys of the functions this worker holds, least recently used first."""
    return list(_CACHE)
