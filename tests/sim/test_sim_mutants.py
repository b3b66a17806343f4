"""Mutants the whole-stack sweep must catch (txn/sim/sweep.py `run_sweep(seeds, mutant=...)`).

A mutant is a callable returning a context manager that patches the code
for one run. Each test runs seeds whose plans can expose the mutation until
one fails with the expected symptom, within a bound; a mutant that survives
means the checkers or the plans are blind to what it breaks.

Mutants caught here: the state machine without its stale-command skip (a
deposed leader's tail applies: caught by the deposed_tail fault), and Paxos
acceptors answering before their log is synced (crashes lose chosen values).

NOT caught by the random sweep (and so not tested here; see ARCHITECTURE.md,
Simulation): reads that see writes before commit-wait ends
(`TabletLeaderCore.HOLD_READS_UNTIL_COMMIT_WAIT = False`) and fencing
without the no-samples rule (`OffsetMonitor.FENCE_WITHOUT_SAMPLES = False`).
Every message carries and absorbs its sender's HLC, and in the sim's
clusters the writing leader has almost always absorbed a timestamp at least
as high as the observed write before a causally later write reaches it;
catching them needs directed scenarios (partial replication, an
out-of-band hand-off between clients, probes too slow to measure). Both
rules are unit-tested against their mutants (tests/txn/test_leader_core.py,
tests/hlc/test_offsets.py).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from typing import Callable, Iterator
from unittest import mock

import pytest

from paxos.storage import PaxosStorage
from txn.sim.plan import SimPlan
from txn.sim.sweep import Mutant, run_seed

MUTANT_SEEDS = 60  # seeds tried per mutant (only those whose plan can expose it)

# test name -> (module, class, attribute, mutant value): the class attribute
# each required mutant flips.
MUTATION_POINTS = {
    # a replica applies a command without checking its leader epoch (a deposed leader's tail applies).
    "test_mutant_apply_without_epoch_check": ("txn.tablet.state", "TabletState", "SKIP_STALE_COMMANDS", False),
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

    mutant = lambda: mock.patch.object(PaxosStorage, "write", unsynced)  # noqa: E731
    caught(mutant, lambda plan: "crash" in plan.faults,
           ("acknowledged write lost", "applied ts", "died", "not live", "committed history says", "after index"))


# ---- required mutants: class-attribute mutation points from other branches ------

@pytest.mark.parametrize("name", sorted(MUTATION_POINTS))
def test_required_mutant(name: str) -> None:
    mutant = mutation_point(name)
    plan_filters: dict[str, Callable[[SimPlan], bool]] = {
        "test_mutant_apply_without_epoch_check": lambda plan: bool({"crash", "isolate_leader", "partition"} & plan.faults),
    }
    caught(mutant, plan_filters[name], ("",))

