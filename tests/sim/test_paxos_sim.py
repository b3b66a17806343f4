"""The Paxos seed sweep on the pure-core simulation (paxos/simulation.py).

CI runs SEEDS seeds (3 and 5 replicas; drops, duplicates, delays, partitions,
crash/restarts losing unsynced writes; then healing and liveness probes) and
fails on any checker failure or if a required coverage mark (catch-up,
snapshot install, recovered accepted value, refused pre-vote, ...) never
occurred. A failing
seed prints `SEED=<n>`; `pytest tests/sim --seed <n>` replays it with its trace.
Mutated cores (phase 1 forgetting accepted values, followers ignoring their
lease promises) must be caught, so the checkers can fail.
"""

from __future__ import annotations

import pytest

from paxos.messages import Accept, Prepare, PreVote, Promise
from paxos.replica import Replica
from paxos.simulation import missing_marks, run_seed, sweep

SEEDS = 300
MUTANT_SEEDS = 120  # with pre-vote, elections are rarer: the forgetful core is first caught at seed 60


def test_paxos_seed_sweep(replay_seed: int | None) -> None:
    if replay_seed is not None:
        result = run_seed(replay_seed, trace=True)
        print("\n".join(result.trace[-400:]))
        assert result.error is None, f"SEED={replay_seed}: {result.error}"
        return
    failures, marks = sweep(range(SEEDS))
    for failure in failures:
        print(f"SEED={failure.seed}: {failure.error}")
    assert not failures, f"{len(failures)} failing seeds, first SEED={failures[0].seed}: {failures[0].error}"
    assert not missing_marks(marks), f"coverage marks never hit in {SEEDS} seeds: {missing_marks(marks)}"
    print(sorted(marks.items()))


def test_same_seed_same_trace() -> None:
    first, second = run_seed(7), run_seed(7)
    assert first.digest == second.digest and first.marks == second.marks
    assert run_seed(8).digest != first.digest


class ForgetfulReplica(Replica):
    """Phase 1 that ignores the values other acceptors report: must break agreement."""

    def handle_promise(self, src: str, msg: Promise, now: int) -> None:
        super().handle_promise(src, Promise(msg.ballot, msg.from_index, (), msg.chosen_index, msg.snapshot_index), now)


class LeaseBreakingReplica(Replica):
    """An acceptor that forgets its lease promise: must allow two lease holders."""

    def handle_prepare(self, src: str, msg: Prepare, now: int) -> None:
        self.lease_granted_until_ns = 0
        super().handle_prepare(src, msg, now)

    def handle_pre_vote(self, src: str, msg: PreVote, now: int) -> None:
        self.lease_granted_until_ns = 0
        super().handle_pre_vote(src, msg, now)

    def campaign(self, now: int) -> None:
        self.lease_granted_until_ns = 0
        super().campaign(now)

    def handle_accept(self, src: str, msg: Accept, now: int) -> None:
        super().handle_accept(src, msg, now)
        # Nor does it wait for the lease to end before timing out (it no longer knows of it).
        self.election_deadline_ns = now + self._election_timeout()


@pytest.mark.parametrize(("mutant", "symptom"), [(ForgetfulReplica, "chosen twice"), (LeaseBreakingReplica, "lease holders")])
def test_checkers_catch_a_broken_core(mutant: type[Replica], symptom: str) -> None:
    errors = []
    for seed in range(MUTANT_SEEDS):
        error = run_seed(seed, replica_class=mutant).error
        if error is not None and symptom in error:
            return
        errors.append(error)
    raise AssertionError(f"{mutant.__name__} went unnoticed in {MUTANT_SEEDS} seeds: {errors}")
