"""Benchmark suite for ``amorsize_executor``: workloads, contenders, an oracle and the runner.

Timings live here and never in ``tests/``. Run ``python benchmarks/run.py --quick``; see
``benchmarks/README.md``.
"""
