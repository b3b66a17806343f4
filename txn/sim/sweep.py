"""Run and judge seeds of the whole-stack simulation (txn/sim/cluster_sim.py).

Role: `run_seed(seed, mutant=None)` plays `SimPlan.from_seed(seed)` once in
its own `trio.run` on a `MockClock(autojump_threshold=0)` and returns a
`SeedResult`: the first problems found by the checkers (txn/sim/checkers.py)
or the harness, the coverage marks, the trace and its digest, and the real
seconds it took. `run_sweep(seeds, mutant=None)` runs many and sums marks.
A mutant is a callable returning a context manager that patches the code
for the run (e.g. `lambda: unittest.mock.patch.object(...)`): mutants must
make some seed fail, or the checkers are blind to what they break.

`run_scenario(scenario, seed=..., mutant=...)` runs a directed scenario
(txn/sim/scenarios.py: a hand-built plan and a scripted sequence of faults
and clients, for what HLC gossip hides from random seeds) and judges it the
same way; it draws nothing from `SimPlan.from_seed`.

REQUIRED_MARKS must each occur in a sweep of REQUIRED_MARKS_SEEDS seeds.
PENDING_MARKS would list marks whose code has not landed yet (none now).
"""

from __future__ import annotations

import contextlib
import time
from typing import Awaitable, Callable, ContextManager, Iterable

import attrs
import trio
import trio.testing

from txn.sim.bank_checkers import check_bank, check_quiescent
from txn.sim.bank_workload import ACCOUNTS, TOTAL
from txn.sim.checkers import check_applied, check_history, check_lease_samples
from txn.sim.cluster_sim import QUIESCE_BOUND_S, SimOutcome, seed_trio_scheduler, simulate
from txn.sim.plan import SimPlan
from txn.sim.scenarios import DEFAULT_SEED, Scenario, simulate_scenario

REQUIRED_MARKS = (
    "paxos.became_leader",
    "paxos.catch_up",
    "paxos.retransmit",
    "paxos.prevote_refused",
    "paxos.lease_refused_prepare",
    "paxos.snapshot_installed",
    "paxos.recovered_accepted_value",
    "paxos.entry_read_back",
    "node.fenced",
    "node.unfenced",
    "sim.failover_under_load",
    "sim.crash_during_install",
    "sim.fenced_and_rejoined",
    # A deposed leader's log tail chosen after a newer leader's barrier, skipped at apply.
    "tablet.stale_command_skipped",
    # The bank workload (txn/sim/bank_workload.py): a crash at every step of 2PC (txn/sim/txn_faults.py),
    # the tablet's wound-wait, prepare and recovery paths, and a transfer committing after healing.
    "sim.crash_before_prepare",
    "sim.crash_after_prepare",
    "sim.crash_after_decide",
    "sim.crash_during_resolve",
    "sim.bank_transfer_after_heal",
    "txn.prepared",
    "txn.wounded",
    "txn.waited",
    "txn.presumed_abort",
    "txn.recovered",
    # A coordinator's own part (it does not prepare) failed before its decision: its leader's
    # locks lost, a leader change, a decision skipped or unconfirmed.
    "txn.coordinator_part_failed",
    # A participant the coordinator's leader prepares (node to node) voted no or gave no vote in time.
    "txn.participant_refused",
    # A node crashed while one of its replicas' turns awaited its synced log write
    # (paxos/driver.py `write_synced`): the write lost, nothing that depended on it sent.
    "sim.crash_during_log_write",
    # Chosen slots an earlier write holds, applied before the turn's own write returned.
    "paxos.applied_ahead_of_write",
    # Single writes started without a task (txn/tablet/started_writes.py), and such writes answered
    # with a failure: leadership lost, a deadline passed, the replica stopped.
    "tablet.write_started",
    "tablet.started_write_failed",
    # Commit records forgotten once every participant resolved them (txn/tablet/forgetting.py), and
    # old ones the leader's tracking missed, found by the sweep and resolved again first.
    "txn.decisions_forgotten",
    "txn.decisions_swept",
)
PENDING_MARKS: tuple[str, ...] = ()
REQUIRED_MARKS_SEEDS = 200

Mutant = Callable[[], ContextManager[object]]


@attrs.frozen
class SeedResult:
    seed: int
    error: str | None
    marks: dict[str, int]
    digest: str
    seconds: float
    plan: str
    trace: tuple[str, ...] = ()
    stats: dict[str, int] = attrs.Factory(dict)


def judge(outcome: SimOutcome) -> list[str]:
    problems = list(outcome.errors)
    problems += check_history(outcome.history, outcome.committed)
    problems += check_lease_samples(outcome.lease_violations)
    problems += check_applied(outcome.applied)
    problems += check_quiescent(outcome.leftovers, QUIESCE_BOUND_S)
    if outcome.bank is not None:
        problems += check_bank(outcome.bank.transfers, outcome.bank.reads, outcome.account_versions, ACCOUNTS, TOTAL)
    return problems


def run_seed(seed: int, *, mutant: Mutant | None = None) -> SeedResult:
    plan = SimPlan.from_seed(seed)
    return _run(plan, mutant, simulate, plan)


def run_scenario(scenario: Scenario, *, seed: int = DEFAULT_SEED, mutant: Mutant | None = None) -> SeedResult:
    """One run of a directed scenario (txn/sim/scenarios.py), judged like a seed; `scenario.mutant` is its mutant."""
    plan = scenario.plan(seed)
    return _run(plan, mutant, simulate_scenario, scenario, plan)


def _run(plan: SimPlan, mutant: Mutant | None, main: Callable[..., Awaitable[SimOutcome]], *args: object) -> SeedResult:
    """`trio.run(main, *args)` on a mock clock, the scheduler seeded with the plan's seed; judged."""
    seed = plan.seed
    started = time.perf_counter()
    with mutant() if mutant is not None else contextlib.nullcontext():
        seed_trio_scheduler(seed)
        try:
            outcome = trio.run(main, *args, clock=trio.testing.MockClock(autojump_threshold=0))
        except Exception as error:  # the harness or an unhandled node/client error: a failing seed
            return SeedResult(seed, f"harness: {error!r}", {}, "", time.perf_counter() - started, plan.describe())
    problems = judge(outcome)
    error = None
    if problems:
        more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
        error = "; ".join(problems[:5]) + more
    ops = outcome.history
    stats = dict(outcome.counters)
    stats["writes_ok"] = sum(1 for op in ops if op.kind == "write" and op.outcome == "ok")
    stats["reads_ok"] = sum(1 for op in ops if op.kind == "read")
    if outcome.bank is not None:
        for transfer in outcome.bank.transfers:
            stats[f"bank_{transfer.outcome}"] = stats.get(f"bank_{transfer.outcome}", 0) + 1
        stats["bank_snapshots"] = len(outcome.bank.reads)
    return SeedResult(seed, error, dict(outcome.marks), outcome.digest, time.perf_counter() - started,
                      plan.describe(), tuple(outcome.trace), stats)


def run_sweep(seeds: Iterable[int], *, mutant: Mutant | None = None, stop_on_failure: bool = False,
              on_result: Callable[[SeedResult], None] = lambda result: None) -> tuple[list[SeedResult], dict[str, int]]:
    """Run every seed; returns the failing results and the marks summed over all seeds."""
    failures: list[SeedResult] = []
    marks: dict[str, int] = {}
    for seed in seeds:
        result = run_seed(seed, mutant=mutant)
        on_result(result)
        for name, count in result.marks.items():
            marks[name] = marks.get(name, 0) + count
        if result.error is not None:
            failures.append(result)
            if stop_on_failure:
                break
    return failures, marks


def missing_marks(marks: dict[str, int]) -> list[str]:
    return [name for name in REQUIRED_MARKS if not marks.get(name)]
