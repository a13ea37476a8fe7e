"""pytest run on a test file whose tests use the pool under ``capsys`` and ``capfd``."""

import os
import shutil
import sys
import tempfile

import pytest
from _host import Clock, report

if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    os.environ["HOST_PROGRAMS"] = here
    directory = tempfile.mkdtemp(prefix="host-pytest-")
    case = shutil.copy(
        os.path.join(here, "capture_case.py"), os.path.join(directory, "test_case.py")
    )
    sys.argv = [sys.argv[0], sys.argv[1]]
    clock = Clock()
    code = pytest.main(
        [
            case,
            "-q",
            "-p",
            "no:cacheprovider",
            "--noconftest",
            "-o",
            "addopts=",
            "--rootdir",
            directory,
        ]
    )
    elapsed_s = clock()
    shutil.rmtree(directory, ignore_errors=True)
    report(elapsed_s=elapsed_s, exit_code=int(code))
