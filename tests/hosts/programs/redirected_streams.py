"""``map()`` and ``submit()`` under ``contextlib.redirect_stdout``/``redirect_stderr`` to
``io.StringIO``; ``fn`` prints to both streams."""

import contextlib
import io
import sys

from _host import MAX_WORKERS, N_ITEMS, Clock, pool_class, report, spin


def chatty(x: int) -> int:
    print("item", x)
    print("to stderr", x, file=sys.stderr)
    return spin(x)


if __name__ == "__main__":
    clock = Clock()
    with (
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
        pool_class()(max_workers=MAX_WORKERS) as pool,
    ):
        mapped = list(pool.map(chatty, range(N_ITEMS)))
        submitted = [pool.submit(chatty, x).result() for x in range(3)]
    report(elapsed_s=clock(), mapped=mapped, submitted=submitted)
