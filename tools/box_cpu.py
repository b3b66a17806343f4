"""The whole machine's CPU over a benchmark figure, from /proc/stat: was the box CPU-bound?

Role: `chronodb bench kv` and `bench txn` read `read_box()` before and after each figure and print
`box_note()` beside the processes' own CPU per operation: how busy all cores were (user and
system time of every process on the machine, the kernel's interrupt work included, so a
figure taken while something else ran shows it) and the context switches per operation
(each message between the processes wakes one; on a 2-core box running four busy processes
they are a cost of their own). Parsing and the note are pure; `read_box` is the only I/O.

Invariants: shares are of all cores' time over the window (jiffies), so 100% means every
core was busy; `box_note` is "" when either reading is missing (no /proc) or the window
is empty, never a division by zero.
"""

from __future__ import annotations

import pathlib

import attrs


@attrs.frozen
class BoxStat:
    """Cumulative counters of /proc/stat: all cores' time in jiffies, and context switches."""

    user: int  # user + nice
    system: int  # system + irq + softirq
    idle: int  # idle + iowait
    other: int  # steal and whatever else the cpu line counts
    context_switches: int

    @property
    def total(self) -> int:
        return self.user + self.system + self.idle + self.other


def parse_proc_stat(text: str) -> BoxStat:
    """The aggregate `cpu` line and the `ctxt` line of /proc/stat's text (ValueError if absent)."""
    cpu: list[int] | None = None
    switches: int | None = None
    for line in text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            cpu = [int(x) for x in fields[1:]]
        elif fields and fields[0] == "ctxt":
            switches = int(fields[1])
    if cpu is None or switches is None or len(cpu) < 7:
        raise ValueError("no aggregate cpu line or ctxt line in /proc/stat")
    user, nice, system, idle, iowait, irq, softirq = cpu[:7]
    # guest time (fields 9 and 10) is already inside user and nice.
    steal = cpu[7] if len(cpu) > 7 else 0
    return BoxStat(user + nice, system + irq + softirq, idle + iowait, steal, switches)


def read_box() -> BoxStat | None:
    """The machine's counters now; None without a readable /proc/stat (not Linux)."""
    try:
        return parse_proc_stat(pathlib.Path("/proc/stat").read_text())
    except (OSError, ValueError):
        return None


def box_note(before: BoxStat | None, after: BoxStat | None, operations: int) -> str:
    """`box 94% busy (75% user, 19% system), 6.3 context switches/op` over the window."""
    if before is None or after is None:
        return ""
    total = after.total - before.total
    if total <= 0 or operations <= 0:
        return ""
    user = (after.user - before.user) / total
    system = (after.system - before.system) / total
    switches = (after.context_switches - before.context_switches) / operations
    return f"box {user + system:.0%} busy ({user:.0%} user, {system:.0%} system), {switches:.1f} context switches/op"
