"""`chronodb sim paxos`: exit 0 on a clean sweep, 1 and `SEED=<n>` for a failing seed."""

from __future__ import annotations

import pytest

import tools.sim
from paxos.simulation import SeedResult
from tools.cli import main


def test_clean_sweep_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "paxos", "--seeds", "2", "--from", "5"]) == 0
    assert "2 seeds from 5: 0 failed" in capsys.readouterr().out


def test_a_failing_seed_is_printed_and_exits_one(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def fake(seed: int, *, trace: bool = False) -> SeedResult:
        return SeedResult(seed, "slot 3 chosen twice" if seed == 8 else None, {}, "", ("t1", "t2"))

    monkeypatch.setattr(tools.sim, "run_seed", fake)
    assert main(["sim", "paxos", "--seeds", "3", "--from", "7", "--trace"]) == 1
    out = capsys.readouterr().out
    assert "SEED=8: slot 3 chosen twice" in out and "SEED=7" not in out and "t2" in out
