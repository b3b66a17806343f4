"""`chronodb bench ir`: its workload repeats itself exactly, and the counting around it is right.

Valgrind is not part of what the repository installs, so the end-to-end test
puts a stand-in on PATH: it runs the workload as valgrind would and reports
1,000 instructions per operation plus a start-up cost, so the figures the
bench prints are known exactly."""

from __future__ import annotations

import argparse
import os
import pathlib
import random
import stat
import sys

import pytest

from tools import bench_ir, ir_workload
from tools.errors import CliError

FAKE_VALGRIND = f"""#!{sys.executable}
import subprocess, sys
args = sys.argv[1:]
assert args[0] == "--tool=callgrind", args
while args[0].startswith("--"):
    args.pop(0)
done = subprocess.run(args, capture_output=True, text=True)
sys.stdout.write(done.stdout)
sys.stderr.write(done.stderr)
ops = int(done.stdout.split()[-1])
sys.stderr.write(f"==1== Collected : {{7_000_000 + 1000 * ops}}\\n")
sys.exit(done.returncode)
"""


def test_a_transfer_spans_two_tablets_led_by_two_nodes() -> None:
    # `bench txn`'s transfer is a two-phase commit: its keys must never share a tablet or a leader.
    tablets = ir_workload.plan(4).tablets
    stream = random.Random(1)
    for _ in range(200):
        left, right = ir_workload.transfer_keys(stream)
        (on_left,), (on_right,) = ([t for t in tablets if t.contains(key)] for key in (left, right))
        assert (on_left.id, on_right.id) == ("t1", "t3"), (left, right)
        assert on_left.preferred_leader != on_right.preferred_leader


def test_the_workload_draws_no_unseeded_randomness(monkeypatch: pytest.MonkeyPatch) -> None:
    # A client with an unseeded stream (its transaction ids and retry waits from os.urandom) made
    # two runs of one tree do different transfers: 456 and 458 in 0.5 s, and a 6% difference
    # in instructions between two counts of the same code.
    def refuse(size: int) -> bytes:
        raise AssertionError("the workload read os.urandom: seed its random streams")

    monkeypatch.setattr(os, "urandom", refuse)
    for kind in ir_workload.KINDS:
        assert ir_workload.run(kind, 4, 0.1) > 0, kind


def test_the_workload_does_the_same_operations_every_run() -> None:
    for kind in ir_workload.KINDS:
        first = ir_workload.run(kind, 4, 0.2)
        assert first > 0
        assert ir_workload.run(kind, 4, 0.2) == first, kind
        assert ir_workload.run(kind, 4, 0.4) > first, "more virtual time, more operations"
    with pytest.raises(ValueError, match="kind must be one of"):
        ir_workload.run("scan", 4, 0.2)


def test_instructions_per_operation_cancel_the_start_up_out() -> None:
    assert bench_ir.collected("==42== Events : Ir\n==42== Collected : 123456789\n") == 123456789
    with pytest.raises(CliError, match="no instruction count"):
        bench_ir.collected("valgrind: command not found")
    assert bench_ir.per_operation((5_000 + 10 * 300, 10), (5_000 + 40 * 300, 40)) == 300
    with pytest.raises(CliError, match="raise --seconds"):
        bench_ir.per_operation((100, 10), (200, 10))


def _args(**overrides: object) -> argparse.Namespace:
    values: dict[str, object] = {"against": None, "kinds": "write", "clients": 4, "seconds": 0.4}
    values.update(overrides)
    return argparse.Namespace(**values)


def test_bad_arguments_and_a_missing_valgrind_are_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(CliError, match="--kinds: unknown scan"):
        bench_ir.run(_args(kinds="write,scan"))
    with pytest.raises(CliError, match="--clients must be at least 1"):
        bench_ir.run(_args(clients=0))
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(CliError, match="valgrind is not installed"):
        bench_ir.run(_args())


def test_the_bench_counts_this_tree_and_a_revision(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    fake = tmp_path / "valgrind"
    fake.write_text(FAKE_VALGRIND)
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")  # the stand-in first
    assert bench_ir.run(_args(against="HEAD")) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("write ")]
    assert [row[1:3] for row in rows] == [["this", "tree"], ["HEAD", rows[1][2]]]
    assert [row[-2:] for row in rows] == [["1,000", "1.000"], ["1,000", "1.000"]], rows
    worktrees = bench_ir.subprocess.run(["git", "-C", str(bench_ir.ROOT), "worktree", "list"],
                                        capture_output=True, text=True).stdout
    assert "chronodb-bench-ir-" not in worktrees, "the baseline's worktree is removed"
