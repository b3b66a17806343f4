"""Mutants the whole-stack sweep must catch (txn/sim/sweep.py `run_sweep(seeds, mutant=...)`).

A mutant is a callable returning a context manager that patches the code
for one run. Each test runs seeds whose plans can expose the mutation until
one fails with the expected symptom, within a bound; a mutant that survives
means the checkers or the plans are blind to what it breaks.

Required mutants (DESIGN.md contracts 1, 6 and the tablet's epoch rule)
patch class-attribute mutation points being built on other branches; until
those points are merged here, their tests skip and say which point they
need (MUTATION_POINTS). The integrator makes them run by merging the
points; nothing else changes.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from typing import Callable, Iterator
from unittest import mock

import pytest

from hlc import HybridClock
from paxos.storage import PaxosStorage
from txn.sim.plan import SimPlan
from txn.sim.sweep import Mutant, run_seed

MUTANT_SEEDS = 60  # seeds tried per mutant (only those whose plan can expose it)

# test name -> (module, class, attribute, mutant value): the class attribute
# each required mutant flips.
MUTATION_POINTS = {
    # (1) a read at T sees a write at <= T before that write's commit-wait ended.
    "test_mutant_reads_before_commit_wait": ("txn.tablet.tablet_replica", "TabletReplica", "reads_wait_for_commit_wait", False),
    # (2) a replica applies a command without checking its leader epoch (a deposed leader's tail applies).
    "test_mutant_apply_without_epoch_check": ("txn.tablet.state", "TabletState", "check_epoch", False),
    # (3) fencing ignores the no-samples rule (a node that measures nobody keeps serving).
    "test_mutant_fencing_without_no_samples_rule": ("hlc.offsets", "OffsetMonitor", "fence_without_samples", False),
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
    if not hasattr(cls, attribute):
        pytest.skip(f"mutation point {class_name}.{attribute} ({module_name}) is not on this branch yet")
    return lambda: mock.patch.object(cls, attribute, value)


# ---- mutants built on this branch: prove the harness ----------------------------

async def _no_commit_wait(self: HybridClock, ts: object) -> None:
    return None


@contextlib.contextmanager
def _no_commit_wait_no_absorb() -> Iterator[None]:
    with mock.patch.object(HybridClock, "commit_wait", _no_commit_wait), \
            mock.patch.object(HybridClock, "update", lambda self, remote: self.now()):
        yield


def test_mutant_without_commit_wait_or_clock_absorption_breaks_external_consistency() -> None:
    """Acknowledging before physical > ts + max_offset, on clocks that do not
    absorb their peers' timestamps, lets a later write or read on a leader
    whose clock is behind take a smaller timestamp.

    Removing commit-wait alone went unnoticed in 60 seeds: every message
    carries and absorbs the sender's HLC, and nodes and clients talk every
    few ms, so within max_offset a leader's clock has nearly always absorbed
    a timestamp at least as high by the time a causally later request
    arrives. The required mutant (1) below targets what commit-wait
    protects that gossip does not: reads seeing a write early."""
    caught(_no_commit_wait_no_absorb, lambda plan: "clock_offset" in plan.faults and plan.scenario == "bounded",
           ("started after write", "strong read", "had observed version", "committed history says"))


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
        "test_mutant_reads_before_commit_wait": lambda plan: plan.scenario == "bounded",
        "test_mutant_apply_without_epoch_check": lambda plan: bool({"crash", "isolate_leader", "partition"} & plan.faults),
        "test_mutant_fencing_without_no_samples_rule": lambda plan: plan.scenario == "beyond_offset",
    }
    caught(mutant, plan_filters[name], ("",))

