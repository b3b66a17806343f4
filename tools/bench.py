"""`chronodb bench ...`: benchmarks that print their figures and exact setup.

Each benchmark module in `BENCHMARK_MODULES` has `register(subparsers)`.
Benchmarks compare against a baseline measured in the same run (raw plyvel,
bare sockets, `time.time_ns()`) and print the ratio, so figures from
different machines can still be compared; every header also says how fast
the machine ran a fixed Python workload just then (`speed:`,
tools/machine_speed.py): runs whose readings differ are not compared.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import platform
import sys
from typing import Callable, NoReturn

from hlc import parse_duration_ns
from tools.errors import EXIT_USAGE
from tools.machine_speed import measure_ns, speed_text
from txn.node.config import MAX_TABLETS

BENCHMARK_MODULES: tuple[str, ...] = (
    "tools.bench_hlc",
    "tools.bench_rpc",
    "tools.bench_tls",
    "tools.bench_mvcc",
    "tools.bench_paxos",
    "tools.bench_kv",
    "tools.bench_txn",
    "tools.bench_space",
    "tools.bench_compaction",
    "tools.bench_probes",
    "tools.bench_idle",
    "tools.bench_ir",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="run a benchmark and print its figures",
        description="Run a benchmark; each prints its setup, its figures and a ratio to a baseline measured in the same run.",
    )
    benchmarks = parser.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    for module_name in BENCHMARK_MODULES:
        importlib.import_module(module_name).register(benchmarks)
    for benchmark in benchmarks.choices.values():
        benchmark.error = _one_line_error(benchmark)  # type: ignore[method-assign]


def _one_line_error(parser: argparse.ArgumentParser) -> Callable[[str], NoReturn]:
    """A benchmark's usage error as one line (which argument, why), exit 2, without the usage text."""
    def error(message: str) -> NoReturn:
        parser.exit(EXIT_USAGE, f"{parser.prog}: {message}\n")
    return error


def print_setup(name: str, **settings: object) -> None:
    """The header every benchmark prints: what ran, where, how fast the machine ran Python just
    then (tools/machine_speed.py), with which settings."""
    print(f"benchmark: {name}")
    print(f"machine:   {platform.machine()}, python {platform.python_version()}, {platform.system()}")
    print(f"speed:     {speed_text(measure_ns())}")
    for key, value in settings.items():
        print(f"{key + ':':<10} {value}")
    sys.stdout.flush()


def print_speed_at_end() -> None:
    """The machine's speed again once a long benchmark's cluster has stopped: with the header's
    reading it brackets the run (a drift between the two says the figures straddle it)."""
    print(f"speed at the end: {measure_ns():.0f} ns per step (the header's `speed:` again)", flush=True)


def positive_seconds(text: str) -> float:
    """An argparse type: a measuring time in seconds, a finite number above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, not {text}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: a count of at least 1."""
    return _count_from(text, 1)


def count_or_zero(text: str) -> int:
    """An argparse type: a count of at least 0 (0: skip that part)."""
    return _count_from(text, 0)


def _count_from(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"must be at least {least}, not {text}")
    return value


def client_counts(text: str) -> str:
    """An argparse type: `--concurrency`, comma-separated counts of at least 1 (kept as text)."""
    for item in text.split(","):
        positive_int(item.strip())
    return text


def duration_text(text: str) -> str:
    """An argparse type: a duration such as 10ms, not negative (kept as text, parsed where used)."""
    try:
        ns = parse_duration_ns(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if ns < 0:
        raise argparse.ArgumentTypeError(f"must not be negative, not {text}")
    return text


def tablet_count(text: str) -> int:
    """An argparse type: tablets for a fresh local cluster, 1 to MAX_TABLETS."""
    value = positive_int(text)
    if value > MAX_TABLETS:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_TABLETS}, not {text}")
    return value


def existing_directory(text: str) -> str:
    """An argparse type: a directory that exists (for --tmp)."""
    if not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text} is not an existing directory")
    return text
