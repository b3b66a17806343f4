"""The Paxos trio driver + simulated network sweep (fewer seeds: the pure-core sweep does the bulk).

A failing seed prints `SEED=<n>`; `pytest tests/sim --seed <n>` replays it.
"""

from __future__ import annotations

from paxos.checkers import CheckFailure
from tests.sim.paxos_trio_sim import simulate

TRIO_SEEDS = 10


def run(seed: int) -> tuple[str | None, dict[str, int], str]:
    try:
        sim = simulate(seed)
    except CheckFailure as failure:
        return str(failure), {}, ""
    except BaseExceptionGroup as group:  # a checker failing inside a trio task
        return f"{group!r}", {}, ""
    return None, sim.marks, sim.net.trace_digest()


def test_paxos_driver_sweep_on_the_simulated_network(replay_seed: int | None) -> None:
    seeds = [replay_seed] if replay_seed is not None else list(range(TRIO_SEEDS))
    marks: dict[str, int] = {}
    failures = []
    for seed in seeds:
        error, seed_marks, _ = run(seed)
        for name, count in seed_marks.items():
            marks[name] = marks.get(name, 0) + count
        if error is not None:
            print(f"SEED={seed}: {error}")
            failures.append(seed)
    assert not failures, f"failing seeds: {failures}"
    if replay_seed is None:
        assert marks.get("paxos.catch_up") and marks.get("paxos.snapshot_installed"), marks


def test_trio_simulation_replays_exactly() -> None:
    assert run(3)[2] == run(3)[2] != ""
