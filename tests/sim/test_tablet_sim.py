"""Seeded simulations of a tablet on three nodes under crashes, partitions,
drops and clock offsets: the client-visible history must satisfy the contract
(txn/checkers.py): durability, nothing invented, external consistency, and
snapshot reads. A failure prints SEED=<n>; `pytest tests/sim --seed <n>` replays it."""

from __future__ import annotations

import pytest

from hlc import Timestamp
from txn.sim.cluster_sim import run_seed
from txn.sim.checkers import OK, Committed, Op, check_history

CI_SEEDS = range(8)


def check_seed(seed: int) -> dict[str, int]:
    history, committed, counters = run_seed(seed)
    problems = check_history(history, committed)
    assert not problems, f"SEED={seed}: " + "\n".join(problems[:10])
    writes = sum(1 for op in history if op.kind == "write" and op.outcome == OK)
    reads = sum(1 for op in history if op.kind == "read")
    assert writes > 20 and reads > 20, f"SEED={seed}: too little happened ({writes} writes, {reads} reads)"
    assert counters["acked_after_heal"] > 0, f"SEED={seed}: no progress after healing"
    return counters


@pytest.mark.parametrize("seed", CI_SEEDS)
def test_tablet_history_is_consistent(seed: int, replay_seed: int | None) -> None:
    if replay_seed is not None:
        seed = replay_seed
    check_seed(seed)


def test_faults_happen_in_the_sweep() -> None:
    totals = {"crashes": 0, "partitions": 0}
    for seed in (100, 101):
        counters = check_seed(seed)
        for name in totals:
            totals[name] += counters[name]
    assert totals["crashes"] > 0 and totals["partitions"] > 0, totals


def test_same_seed_same_history() -> None:
    first, _, _ = run_seed(7)
    second, _, _ = run_seed(7)
    assert first == second


# ---- the checkers themselves catch violations --------------------------------

def ts(wall: int) -> Timestamp:
    return Timestamp(wall, 0)


def test_checker_catches_a_lost_write() -> None:
    history = [Op("write", b"k", b"v", 0, 10, OK, ts(5))]
    assert any("lost" in p for p in check_history(history, {}))


def test_checker_catches_a_stale_strong_read() -> None:
    history = [
        Op("write", b"k", b"v", 0, 10, OK, ts(5)),
        Op("read", b"k", None, 20, 30, OK, ts(4), None, strong=True),
    ]
    committed = {b"k": Committed(b"k", [(ts(5), b"v")])}
    problems = check_history(history, committed)
    assert any("strong read" in p for p in problems)


def test_checker_catches_timestamp_inversion_and_wrong_snapshot() -> None:
    history = [
        Op("write", b"k", b"1", 0, 10, OK, ts(50)),
        Op("write", b"k", b"2", 20, 30, OK, ts(40)),
        Op("read", b"k", b"2", 40, 50, OK, ts(45), ts(40)),
    ]
    committed = {b"k": Committed(b"k", [(ts(40), b"2"), (ts(50), b"1")])}
    problems = check_history(history, committed)
    assert any("started after write" in p for p in problems)
    history[2] = Op("read", b"k", b"1", 40, 50, OK, ts(45), ts(50))
    assert any("committed history says" in p for p in check_history(history, committed))


def test_checker_catches_an_invented_version() -> None:
    committed = {b"k": Committed(b"k", [(ts(5), b"ghost")])}
    assert any("never written" in p for p in check_history([], committed))
