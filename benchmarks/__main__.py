"""``python -m benchmarks [--scale X] [topic ...]``: run every ``bench_*.py`` module (or the named
ones) and print all their results in one table at the end."""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
import time
from typing import Any

import benchmarks
from benchmarks.common import print_results, scale


#: Topics in report order (the README's order of the domains); any other module runs after them.
ORDER = ("memory", "workflows", "scores", "observability", "observability-vnext", "signals", "datasets", "experiments", "prune",
         "move")


def discover() -> list[str]:
    """Topics of the benchmark modules found in this package (``bench_scores`` → ``scores``,
    ``bench_observability_vnext`` → ``observability-vnext``)."""
    found = {info.name[len("bench_"):].replace("_", "-") for info in pkgutil.iter_modules(benchmarks.__path__)
             if info.name.startswith("bench_")}
    return [topic for topic in ORDER if topic in found] + sorted(found - set(ORDER))


def main(argv: list[str] | None = None) -> int:
    """Run the chosen benchmark modules' ``main()`` in turn, then print the combined results."""
    topics = discover()
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("topics", nargs="*", metavar="topic",
                        help=f"benchmarks to run (default: all of {', '.join(topics) or 'none found'})")
    parser.add_argument("--scale", type=float, metavar="X",
                        help="multiply every size by X (0.1: a quick run); sets COMPOSITE_STORE_BENCH_SCALE")
    arguments = parser.parse_args(argv)
    unknown = [topic for topic in arguments.topics if topic not in topics]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(topics)}")
    if arguments.scale is not None:
        if arguments.scale <= 0:
            parser.error("--scale must be positive")
        os.environ["COMPOSITE_STORE_BENCH_SCALE"] = str(arguments.scale)
    results: list[dict[str, Any]] = []
    started = time.perf_counter()
    for topic in arguments.topics or topics:
        print(f"=== {topic} ===", flush=True)
        rows = importlib.import_module(f"benchmarks.bench_{topic.replace('-', '_')}").main()
        # A module whose main() returns nothing has printed its own tables.
        results.extend(rows or [])
    minutes = (time.perf_counter() - started) / 60
    print_results(results, title=f"library against the raw driver, scale {scale():g} ({minutes:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
