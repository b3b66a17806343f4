"""Mutants the whole-stack simulation must catch: random seeds (txn/sim/sweep.py
`run_seed(seed, mutant=...)`) or a directed scenario (txn/sim/scenarios.py,
`run_scenario(scenario, mutant=...)`).

A mutant is a callable returning a context manager that patches the code
for one run. For the random sweep, each test runs seeds whose plans can
expose the mutation until one fails with the expected symptom, within a
bound; a mutant that survives means the checkers or the plans are blind to
what it breaks.

Caught by random seeds: the state machine without its stale-command skip (a
deposed leader's tail applies: caught by the deposed_tail fault), Paxos
acceptors answering before their log is synced (crashes lose chosen values),
and a 2PC coordinator that does not check its own read set (seed 10207: a
lost update).

Caught by directed scenarios (DIRECTED): reads that see writes before
commit-wait ends (`TabletLeaderCore.HOLD_READS_UNTIL_COMMIT_WAIT = False`,
scenario "read_in_commit_wait": a read-then-write violation) and fencing
without the no-samples rule (`OffsetMonitor.FENCE_WITHOUT_SAMPLES = False`,
scenario "fence_without_samples": an external-consistency violation). The
random sweep misses both: every message carries and absorbs its sender's
HLC, and in its clusters the writing leader has almost always absorbed a
timestamp at least as high as the observed write before a causally later
write reaches it. The scenarios cut every such path by construction
(partial replication, a one-way cut or slow links, an out-of-band hand-off
between clients that carry no HLC); see ARCHITECTURE.md, Simulation. Each
scenario must also pass, and exercise its rule, with the real code.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from typing import Callable, Iterator
from unittest import mock

import attrs
import pytest
import trio

from mvcc.engine import Batch, Engine
from paxos.storage import PaxosStorage
from txn import api
from txn.tablet.transactions import TabletTransactions
from txn.sim import cluster_sim
from txn.sim.plan import SimPlan
from txn.sim.scenarios import SCENARIOS
from txn.sim.sweep import Mutant, run_scenario, run_seed

MUTANT_SEEDS = 60  # seeds tried per mutant (only those whose plan can expose it)

# test name -> (module, class, attribute, mutant value): the class attribute
# each required mutant flips.
MUTATION_POINTS = {
    # a replica applies a command without checking its leader epoch (a deposed leader's tail applies).
    "test_mutant_apply_without_epoch_check": ("txn.tablet.state", "TabletState", "SKIP_STALE_COMMANDS", False),
    # a leader serves a strong read of a write whose commit-wait is still running.
    "test_mutant_reads_before_commit_wait_ends": ("txn.tablet.leader", "TabletLeaderCore", "HOLD_READS_UNTIL_COMMIT_WAIT", False),
    # a node whose probes yield no usable samples keeps serving, whatever its clock does.
    "test_mutant_fencing_without_no_samples_rule": ("hlc.offsets", "OffsetMonitor", "FENCE_WITHOUT_SAMPLES", False),
}
# Required mutants no random seed catches: the directed scenario (txn/sim/scenarios.py) that does.
DIRECTED = {
    "test_mutant_reads_before_commit_wait_ends": "read_in_commit_wait",
    "test_mutant_fencing_without_no_samples_rule": "fence_without_samples",
}


@pytest.fixture(autouse=True)
def quiet_nodes() -> Iterator[None]:
    logging.disable(logging.CRITICAL)
    yield
    logging.disable(logging.NOTSET)


def caught(mutant: Mutant, plan_filter: Callable[[SimPlan], bool], symptoms: tuple[str, ...]) -> int:
    """The first seed (among MUTANT_SEEDS whose plan passes the filter) failing with a symptom."""
    errors = []
    seeds = [s for s in range(10 * MUTANT_SEEDS) if plan_filter(SimPlan.from_seed(s))][:MUTANT_SEEDS]
    for seed in seeds:
        error = run_seed(seed, mutant=mutant).error
        if error is not None and any(symptom in error for symptom in symptoms):
            return seed
        errors.append(error)
    raise AssertionError(f"mutant went unnoticed in seeds {seeds}: {[e for e in errors if e][:3]}")


def mutation_point(name: str) -> Mutant:
    module_name, class_name, attribute, value = MUTATION_POINTS[name]
    cls = getattr(importlib.import_module(module_name), class_name)
    assert hasattr(cls, attribute), f"mutation point {class_name}.{attribute} ({module_name}) is missing"
    return lambda: mock.patch.object(cls, attribute, value)


# ---- mutants built on this branch: prove the harness ----------------------------

def test_mutant_with_unsynced_paxos_log_loses_acknowledged_writes() -> None:
    """Acceptors answering before their log write is synced: crashes lose chosen values."""
    write = PaxosStorage.write

    def unsynced(self: PaxosStorage, persist: object, *, sync: bool = True) -> None:
        write(self, persist, sync=False)

    async def unsynced_off_loop(engine: Engine, batch: Batch) -> None:  # the turns that await their write
        await trio.lowlevel.checkpoint()
        engine.apply(batch, sync=False)

    @contextlib.contextmanager
    def mutant() -> Iterator[None]:
        with mock.patch.object(PaxosStorage, "write", unsynced), \
                mock.patch.object(cluster_sim, "write_synced_after_checkpoint", unsynced_off_loop):
            yield

    caught(mutant, lambda plan: "crash" in plan.faults,
           ("acknowledged write lost", "applied ts", "died", "not live", "committed history says", "after index"))


# The seed a sweep from 10000 under the mutant found it with (replay:
# `chronodb sim cluster --from 13079 --seeds 1 --trace`). It was 10207 until 12-04, when
# transaction priorities stopped asking a node for a timestamp and every seed's run shifted,
# then 10240 until 12-05, when the coordinator's leader began to prepare the other participants
# (a sweep from 10700 under the mutant: the first seed caught, 560 seeds in), then 11259 until
# later on 12-05, when single writes began to start without a task of their own (two sweeps,
# from 11260 and 12500 under the mutant: 13079, 580 seeds into the second).
COORDINATOR_READS_SEED = 13079


def test_mutant_coordinator_that_skips_its_read_set_loses_an_update() -> None:
    """The coordinator does not prepare: its commit request carries its read set, and its leader
    must check it still holds those shared locks. Dropped, a coordinator whose leader changed
    between a transfer's read and its commit writes over a balance it never read (in the seed:
    a bank transfer overwrote a version it did not read). The real code passes the same seed."""
    commit = TabletTransactions.commit

    async def unchecked(self: TabletTransactions, request: api.CommitRequest) -> object:
        return await commit(self, attrs.evolve(request, read_keys=(), read_ranges=()))

    mutant = lambda: mock.patch.object(TabletTransactions, "commit", unchecked)  # noqa: E731
    error = run_seed(COORDINATOR_READS_SEED, mutant=mutant).error
    assert error is not None and "lost update" in error, error
    assert run_seed(COORDINATOR_READS_SEED).error is None


def test_mutant_that_forgets_decisions_before_their_participants_resolved_them_loses_a_write() -> None:
    """A coordinator forgets a commit record once every participant acknowledged its resolution
    (txn/tablet/forgetting.py), 0.2 s later in the simulation. Forgotten 0.2 s after the decision
    instead, a participant whose resolution was lost or not yet logged asks its coordinator,
    which finds no record, presumes abort, and the participant's half of a committed transfer
    vanishes (the bank checkers: a committed transfer's write "is not stored"; the first seeds
    that show it, on 12-05: 18 and 75)."""
    mutant = lambda: mock.patch.object(TabletTransactions, "FORGET_AFTER_ACKS", False)  # noqa: E731
    caught(mutant, lambda plan: plan.workload == "bank", ("is not stored",))


# ---- required mutants: class-attribute mutation points from other branches ------

@pytest.mark.parametrize("name", sorted(MUTATION_POINTS))
def test_required_mutant(name: str) -> None:
    mutant = mutation_point(name)
    if name in DIRECTED:
        scenario = SCENARIOS[DIRECTED[name]]
        assert scenario.mutation_point == MUTATION_POINTS[name], "the scenario checks another rule"
        result = run_scenario(scenario, mutant=mutant)
        assert result.error is not None, f"mutant survived scenario {scenario.name} ({result.plan})"
        assert any(symptom in result.error for symptom in scenario.symptoms), \
            f"scenario {scenario.name} failed, but not with one of {scenario.symptoms}: {result.error}"
        return
    plan_filters: dict[str, Callable[[SimPlan], bool]] = {
        "test_mutant_apply_without_epoch_check": lambda plan: bool({"crash", "isolate_leader", "partition"} & plan.faults),
    }
    caught(mutant, plan_filters[name], ("",))


# ---- directed scenarios: valid with the real code ------------------------------------

@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_directed_scenario_passes_with_the_real_code(name: str) -> None:
    """Every checker passes (liveness after healing included) and the scenario reached the rule it checks:
    the leader held the strong read until commit-wait ended; the node without samples fenced, then rejoined."""
    scenario = SCENARIOS[name]
    result = run_scenario(scenario)
    assert result.error is None, f"scenario {name}: {result.error} ({result.plan})"
    missing = [mark for mark in scenario.marks if not result.marks.get(mark)]
    assert not missing, f"scenario {name} never hit {missing}: {sorted(result.marks.items())}"


def test_every_directed_scenario_checks_a_required_mutant() -> None:
    assert sorted(DIRECTED.values()) == sorted(SCENARIOS)
    for name, scenario_name in DIRECTED.items():
        assert SCENARIOS[scenario_name].mutation_point == MUTATION_POINTS[name]
