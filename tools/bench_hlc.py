"""`chronodb bench hlc`: HybridClock now()/update() rate beside time.time_ns().

Measures, in one process and one run: calls per second of `time.time_ns()`
(the baseline every HLC reading pays for), `HybridClock.now()`, and
`HybridClock.update(remote)` with a remote slightly ahead; prints each and the
ratio to the baseline.
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

from hlc import HybridClock, Timestamp
from hlc.physical import SystemClock
from tools.bench import positive_seconds, print_setup


def calls_per_second(call: Callable[[], object], seconds: float) -> float:
    count = 0
    batch = 1000
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(batch):
            call()
        count += batch
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


def run(args: argparse.Namespace) -> int:
    print_setup("hlc", duration=f"{args.seconds}s per figure", max_offset="10ms", clock="SystemClock")
    clock = HybridClock(SystemClock(), max_offset_ns=10_000_000)
    baseline = calls_per_second(time.time_ns, args.seconds)
    now_rate = calls_per_second(clock.now, args.seconds)

    def update() -> Timestamp:
        return clock.update(Timestamp(time.time_ns() + 1_000, 0))

    update_rate = calls_per_second(update, args.seconds)
    print(f"{'time.time_ns()':<28} {baseline:>14,.0f} calls/s  (baseline)")
    print(f"{'HybridClock.now()':<28} {now_rate:>14,.0f} calls/s  ratio {now_rate / baseline:.2f}")
    print(f"{'HybridClock.update(remote)':<28} {update_rate:>14,.0f} calls/s  ratio {update_rate / baseline:.2f}"
          "  (includes building the remote from time.time_ns())")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("hlc", help="HLC now()/update() calls per second beside time.time_ns()")
    parser.add_argument("--seconds", type=positive_seconds, default=1.0, help="measuring time per figure (default 1.0)")
    parser.set_defaults(func=run)
