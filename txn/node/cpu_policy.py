"""The node process's CPU scheduling policy: Linux's SCHED_BATCH unless told otherwise.

Role: `chronodb node --cpu-policy batch|normal` (tools/node.py) calls `apply_cpu_policy` once
at start-up. Under SCHED_BATCH the kernel no longer lets a thread of the node that wakes up
(a frame arrived, a log write finished) preempt whatever is running on its CPU at once: the
woken thread runs at the next scheduling point instead. A node's event loop drains everything
ready in one pass, so a later wake-up finds more frames to read and more replies to write
together; on a CPU-bound box the node then switches context about half as often and spends
less CPU per request. Its share of the CPU is unchanged (same nice value, same weight), and an
idle CPU still runs a woken thread at once, so a lone request's latency does not move.
Measured (ARCHITECTURE.md, "CPU policy"): 64 writers, 3 context switches per write
instead of 6 and node CPU per write about 7% lower; 64 strong readers, 12-20% more reads a
second.

Invariants:
- Every thread of the process when called gets the policy (Linux's policy is per thread; the
  main thread's is what threads started later inherit: the log writer, trio's worker threads).
- Raises only for a name outside `CPU_POLICIES` (the CLI's choices keep those out). Where the
  policy does not exist (not Linux), nothing changes; where the kernel refuses it for a thread,
  it stops there (threads set before keep the new policy, the rest their old one). Either way
  the returned text says why, for the node's log, and the node runs on.
"""

from __future__ import annotations

import os

CPU_POLICIES = ("batch", "normal")
DEFAULT_CPU_POLICY = "batch"


def _policy_number(name: str) -> int | None:
    if name not in CPU_POLICIES:
        raise ValueError(f"unknown CPU policy {name!r} (choose from {', '.join(CPU_POLICIES)})")
    return getattr(os, "SCHED_BATCH" if name == "batch" else "SCHED_OTHER", None)


def process_threads() -> list[int]:
    """This process's thread ids (Linux), or just the process id where /proc has no task list."""
    try:
        return sorted(int(tid) for tid in os.listdir("/proc/self/task"))
    except OSError:
        return [os.getpid()]


def apply_cpu_policy(name: str) -> str | None:
    """Give every thread of this process the policy `name` ("batch" or "normal"). None when done;
    otherwise one line saying why not (module docstring: what is then left as it was)."""
    policy = _policy_number(name)
    setter = getattr(os, "sched_setscheduler", None)
    if policy is None or setter is None:
        return f"CPU policy {name} is not available on this system; the node keeps its policy"
    for tid in process_threads():
        try:
            setter(tid, policy, os.sched_param(0))
        except ProcessLookupError:
            continue  # a thread that ended meanwhile
        except OSError as error:
            return f"CPU policy {name} refused for thread {tid}: {error}; that thread and those after it keep theirs"
    return None
