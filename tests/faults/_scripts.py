"""Run a small program in its own process group, read the lines it reports, signal it, and
make sure that it and every process it started are gone afterwards, whatever happened.

Scenarios that can hang or deadlock (Ctrl-C, killing stuck workers) run this way, so that a
bug in the library fails one test instead of wedging the test process.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from types import TracebackType

import psutil

from ..contract._helpers import alive

PRELUDE = textwrap.dedent(
    """
    import faulthandler, os, signal, sys, time
    from amorsize_executor import AdaptiveProcessPoolExecutor

    # A program that hangs is asked for every thread's stack (see Script.exited_within).
    faulthandler.register(signal.SIGUSR1, all_threads=True)

    def report(*words):
        # One write per line: lines from several processes never interleave.
        os.write(1, (" ".join(str(w) for w in words) + "\\n").encode())
    """
)


class Script:
    """A Python program (``PRELUDE`` + ``body``) running in a new session."""

    def __init__(self, body: str, directory: Path) -> None:
        path = directory / "scenario.py"
        path.write_text(PRELUDE + textwrap.dedent(body))
        self.process = subprocess.Popen(
            [sys.executable, str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=directory,
            start_new_session=True,
        )
        self.lines: list[list[str]] = []
        self._queue: queue.Queue[list[str] | None] = queue.Queue()
        self._stderr: list[bytes] = []
        self.pids: set[int] = set()
        """Every pid the program reported or was seen to have as a descendant."""
        threading.Thread(target=self._read_stdout, daemon=True).start()
        self._stderr_reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._stderr_reader.start()

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            self._queue.put(raw.decode(errors="replace").split())
        self._queue.put(None)

    def _read_stderr(self) -> None:
        # In pieces as they come, so a program that hangs has shown what it wrote so far.
        assert self.process.stderr is not None
        fd = self.process.stderr.fileno()
        for piece in iter(lambda: os.read(fd, 65536), b""):
            self._stderr.append(piece)

    @property
    def stderr(self) -> str:
        """What the program wrote to stderr so far (all of it, once it has exited)."""
        if self.process.poll() is not None:
            # Descendants may hold the pipe open: do not wait for them for long.
            self._stderr_reader.join(timeout=5)
        return b"".join(self._stderr).decode(errors="replace")

    def wait_for(self, first_word: str, deadline_s: float = 60) -> list[str]:
        """The next line starting with ``first_word`` (earlier lines are kept in ``lines``);
        the numbers on reported lines are collected as pids."""
        deadline = time.monotonic() + deadline_s
        for line in self.lines:
            if line and line[0] == first_word:
                return line
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"no {first_word!r} line within {deadline_s:.0f} s; got {self.lines}, "
                    f"stderr: {self.stderr[-2000:]}"
                )
            try:
                line = self._queue.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(
                    f"the program ended without a {first_word!r} line; got {self.lines}, "
                    f"stderr: {self.stderr[-2000:]}"
                )
            self.lines.append(line)
            if line[0] in ("pid", "pids", "running", "workers"):
                self.pids.update(int(word) for word in line[1:] if word.isdigit())
            if line[0] == first_word:
                return line

    def snapshot_descendants(self) -> None:
        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return
        self.pids.update(child.pid for child in children)

    def interrupt(self, *, whole_group: bool) -> None:
        """Ctrl-C: to the whole process group, as a terminal does, or the main process only."""
        self.snapshot_descendants()
        if whole_group:
            os.killpg(self.process.pid, signal.SIGINT)
        else:
            self.process.send_signal(signal.SIGINT)

    def exited_within(self, deadline_s: float) -> bool:
        """Whether the program exited in time; if not, its threads' stacks are put on its
        stderr (faulthandler, registered by ``PRELUDE``) for the failure message."""
        try:
            self.process.wait(timeout=deadline_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGUSR1)
            time.sleep(2)
            return False
        return True

    def kill_everything(self) -> None:
        """Leave nothing behind, whatever state the program is in."""
        self.snapshot_descendants()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        for pid in alive(self.pids):
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()
        self.process.wait()

    def __enter__(self) -> Script:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.kill_everything()
