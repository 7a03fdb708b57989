"""Benchmarks of the library against the bare database drivers (not part of the test suite).

Run them all with ``python -m benchmarks`` (or some: ``python -m benchmarks memory scores``;
``--scale 0.1`` for a quick run). Each ``bench_<topic>.py`` module defines
``main() -> list[dict]`` returning its result rows (:func:`benchmarks.common.throughput_row`,
:func:`~benchmarks.common.latency_row`, :func:`~benchmarks.common.info_row`); ``python -m
benchmarks`` prints the rows of every module in one table at the end, and each module also runs
alone (``python -m benchmarks.bench_memory``). Shared helpers are in :mod:`benchmarks.common`.
"""
