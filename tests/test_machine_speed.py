"""tools/machine_speed.py: the reference reading every benchmark header carries.

The reading must measure the workload it names (a run of more steps takes longer, a slower
machine reads higher) and never depend on chronodb's code. No figure is compared with a speed."""

from __future__ import annotations

import ast
import pathlib
import re
import time

import pytest

from tools import machine_speed
from tools.bench import print_setup, print_speed_at_end


def test_the_workload_is_fixed_and_does_its_work() -> None:
    # A checksum that depends on every step: a workload cut short (or optimized away) changes it.
    assert machine_speed.workload(3000) == machine_speed.workload(3000)
    assert machine_speed.workload(3000) != machine_speed.workload(2999)
    assert machine_speed.workload(1) == 1


def test_a_slower_machine_reads_higher(monkeypatch: pytest.MonkeyPatch) -> None:
    fast = machine_speed.measure_ns(repeats=5, steps=2000)  # best of 5: a loaded box only slows some runs
    assert fast > 0
    original = machine_speed._step

    def slowed(table, log, i):  # the same work on a machine 50 us slower per step
        until = time.perf_counter_ns() + 50_000
        while time.perf_counter_ns() < until:
            pass
        return original(table, log, i)

    monkeypatch.setattr(machine_speed, "_step", slowed)
    assert machine_speed.measure_ns(repeats=3, steps=200) >= 50_000 > fast


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        machine_speed.measure_ns(repeats=0)
    with pytest.raises(ValueError, match="at least 1"):
        machine_speed.measure_ns(steps=0)


def test_the_reference_uses_nothing_of_chronodb() -> None:
    # A change to the code under test must never move the reference.
    tree = ast.parse(pathlib.Path(machine_speed.__file__).read_text())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= {"__future__", "time"}, imported


def test_every_benchmark_header_says_the_speed(capsys: pytest.CaptureFixture[str]) -> None:
    print_setup("example", duration="1s")
    print_speed_at_end()
    out = capsys.readouterr().out
    header = re.search(r"^speed: +(\d+) ns per step of a fixed Python workload \(tools/machine_speed.py, best of 7; "
                       r"lower is faster\)$", out, re.MULTILINE)
    end = re.search(r"^speed at the end: (\d+) ns per step", out, re.MULTILINE)
    assert header and end and int(header[1]) > 0 and int(end[1]) > 0, out
    assert out.index("machine:") < out.index("speed:") < out.index("duration:"), out
