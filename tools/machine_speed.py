"""How fast this machine runs Python right now: the reference figure benchmarks print beside theirs.

Role: every benchmark's header (`tools/bench.py` `print_setup`) and the last line of the
cluster benchmarks (`bench kv`, `bench txn`) say how long one step of a fixed pure-Python
workload took then: how fast this CPU ran plain Python with a small working set (its clock,
time stolen by the host, another busy process). Runs whose readings differ were not on the
same machine, as far as Python is concerned: do not compare their figures.

Not sufficient: on 12-06 one tree's `bench txn` transfers went from 716-797 a second (at
readings of 240-282 ns) to 925-926 an hour later (254-273 ns), alternated with another tree
both times: what moved was not the CPU's Python speed (the memory system, the disk, the
kernel's networking and the state after boot are not in this workload). Equal readings
still call for alternated runs, and CPU changes of a few percent for `bench ir`.

Invariants:
- The workload is fixed and uses nothing of chronodb (a change to the code under test never
  changes the reference): calls, attribute reads, dict and list operations and small
  allocations, the mix a serving node's Python spends its time on.
- The reading is the best of several short runs: interference (another process, a
  preemption) only ever slows a run, so the fastest is the closest to the machine itself.
- `measure_ns` costs about `repeats * steps` workload steps (0.1-0.2 s at the defaults).
"""

from __future__ import annotations

import time

REPEATS = 7
STEPS = 50_000


class _Item:
    __slots__ = ("key", "count")

    def __init__(self, key: int) -> None:
        self.key = key
        self.count = 0


def _step(table: dict[int, _Item], log: list[tuple[int, str]], i: int) -> int:
    item = table.get(i & 1023)
    if item is None:
        item = table[i & 1023] = _Item(i & 1023)
    item.count += 1
    log.append((i, "k%d" % item.key))
    if len(log) > 64:
        del log[:32]
    return item.count


def workload(steps: int) -> int:
    """`steps` steps of the fixed workload; returns a checksum (so none of it is dead code)."""
    table: dict[int, _Item] = {}
    log: list[tuple[int, str]] = []
    total = 0
    for i in range(steps):
        total += _step(table, log, i)
    return total


def measure_ns(repeats: int = REPEATS, steps: int = STEPS) -> float:
    """Nanoseconds per workload step: the best of `repeats` runs of `steps` steps."""
    if repeats < 1 or steps < 1:
        raise ValueError(f"repeats and steps must be at least 1, not {repeats} and {steps}")
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter_ns()
        workload(steps)
        best = min(best, (time.perf_counter_ns() - started) / steps)
    return best


def speed_text(ns_per_step: float) -> str:
    """The header's value: the reading and how to read it."""
    return (f"{ns_per_step:.0f} ns per step of a fixed Python workload "
            f"(tools/machine_speed.py, best of {REPEATS}; lower is faster)")
