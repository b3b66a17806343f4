"""`chronodb sim scenario NAME [--mutant]`: exit 0 when the real code passes (its marks hit) or the
mutant is caught; 1 when the mutant survives."""

from __future__ import annotations

import logging
from typing import Iterator

import pytest

from tools.cli import main
from txn.sim import sweep


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    yield
    logging.disable(logging.NOTSET)  # the command silences the nodes' logs


def test_the_real_code_passes_and_the_mutant_is_caught(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "scenario", "read_in_commit_wait"]) == 0
    out = capsys.readouterr().out
    assert "scenario read_in_commit_wait seed=1 (real code): ok" in out and "tablet.read_waited_for_commit=1" in out
    assert main(["sim", "scenario", "read_in_commit_wait", "--mutant", "--seed", "2"]) == 0
    out = capsys.readouterr().out
    assert "mutant TabletLeaderCore.HOLD_READS_UNTIL_COMMIT_WAIT = False" in out
    assert "started after a read of b'd'" in out and "mutant caught" in out


def test_a_surviving_mutant_exits_one(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def survives(scenario: object, *, seed: int, mutant: object) -> sweep.SeedResult:
        return sweep.SeedResult(seed, None, {}, "", 0.1, "plan")

    monkeypatch.setattr(sweep, "run_scenario", survives)
    assert main(["sim", "scenario", "fence_without_samples", "--mutant"]) == 1
    assert "MUTANT SURVIVED" in capsys.readouterr().out
