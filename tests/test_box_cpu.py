"""The whole machine's CPU over a benchmark figure (tools/box_cpu.py): /proc/stat's aggregate cpu
line and context switches parsed, and the note's shares and per-operation switches computed from
two readings."""

from __future__ import annotations

import pathlib

import pytest

from tools.box_cpu import BoxStat, box_note, parse_proc_stat, read_box

PROC_STAT = """cpu  1000 20 300 5000 40 5 15 7 0 0
cpu0 500 10 150 2500 20 3 7 4 0 0
cpu1 500 10 150 2500 20 2 8 3 0 0
intr 123 0 0
ctxt 98765
btime 1700000000
processes 4321
"""


def test_the_aggregate_cpu_line_and_the_context_switches_are_read() -> None:
    stat = parse_proc_stat(PROC_STAT)
    # user + nice, system + irq + softirq, idle + iowait, steal: the per-core lines are ignored.
    assert stat == BoxStat(user=1020, system=320, idle=5040, other=7, context_switches=98765)
    assert stat.total == 1020 + 320 + 5040 + 7


def test_the_note_gives_busy_shares_of_the_window_and_switches_per_operation() -> None:
    before = BoxStat(user=1000, system=300, idle=5000, other=0, context_switches=10_000)
    after = BoxStat(user=1750, system=490, idle=5050, other=10, context_switches=73_000)  # 1,000 jiffies later
    assert box_note(before, after, 10_000) == "box 94% busy (75% user, 19% system), 6.3 context switches/op"


@pytest.mark.parametrize("before, after, operations", [
    (None, BoxStat(1, 1, 1, 0, 1), 10),  # no /proc
    (BoxStat(1, 1, 1, 0, 1), BoxStat(1, 1, 1, 0, 1), 10),  # an empty window
    (BoxStat(1, 1, 1, 0, 1), BoxStat(2, 2, 2, 0, 2), 0),  # no operations
])
def test_no_note_without_two_readings_a_window_and_operations(before, after, operations) -> None:
    assert box_note(before, after, operations) == ""


def test_text_without_the_lines_is_refused() -> None:
    with pytest.raises(ValueError):
        parse_proc_stat("intr 1 2 3\n")


def test_this_machine_reads_if_it_has_proc_stat() -> None:
    stat = read_box()
    if not pathlib.Path("/proc/stat").exists():
        assert stat is None
        return
    assert stat is not None and stat.total > 0 and stat.context_switches > 0
