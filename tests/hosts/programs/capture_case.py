"""A pytest test file (copied out and run by ``pytest_capture.py``): the pool used inside
tests that capture output with ``capsys`` and ``capfd``."""

import os
import sys

sys.path.insert(0, os.environ["HOST_PROGRAMS"])

from _host import MAX_WORKERS, N_ITEMS, pool_class, spin


def test_under_capsys(capsys) -> None:
    with pool_class()(max_workers=MAX_WORKERS) as pool:
        assert list(pool.map(spin, range(N_ITEMS))) == [x * x for x in range(N_ITEMS)]
    print("done")
    assert capsys.readouterr().out.endswith("done\n")


def test_under_capfd(capfd) -> None:
    with pool_class()(max_workers=MAX_WORKERS) as pool:
        assert pool.submit(spin, 3).result() == 9
    print("done")
    assert capfd.readouterr().out.endswith("done\n")
