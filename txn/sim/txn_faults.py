"""Crashes at every step of two-phase commit, triggered by what the replicas apply.

Role: `TxnCrashTrigger.on_applied(tablet_id, node_id, command)` is called by
the simulation (txn/sim/cluster_sim.py) after every command a replica
applies (the chained `TabletState.on_applied`). When the command is a step
of a bank transfer (txn/sim/bank_workload.py registers which tablets each
transaction writes), it may crash, at that very moment (inside the apply:
the batch just applied is unsynced and dies with the process), a tablet
leader:
- `before_prepare`: a participant's Prepare applied somewhere, another
  participant's leader that has not logged its own Prepare yet is crashed,
  or the coordinator's leader, which never prepares, before its decision is
  logged: the locks of its part, held in that leader's memory only, are
  lost (mark `sim.crash_before_prepare`);
- `after_prepare`: the participant leader that just applied its Prepare,
  before it answers (`sim.crash_after_prepare`);
- `after_decide`: the coordinator's leader that just applied Decide(commit),
  before commit-wait ends and before it resolves any participant, or a
  participant's leader at that moment (`sim.crash_after_decide`);
- `during_resolve`: the first Resolve(commit) of a transaction applied at a
  participant: that participant's leader, or the coordinator's leader while
  it is resolving the others (`sim.crash_during_resolve`).
The victim restarts after 0.1-0.5 s (or at healing).

Invariant: it crashes only while armed (the fault phase), while no other
fault is in force and nobody is down (so at most a minority is down), never
the node whose clock the "beyond_offset" scenario pushes, and at most
BUDGET times per seed. Randomness: `random.Random(f"{seed}/txn_faults")`.
"""

from __future__ import annotations

import random

import trio

from txn.tablet.commands import Decide, Prepare, Resolve

POINTS = ("before_prepare", "after_prepare", "after_decide", "during_resolve")
BUDGET = 3
FIRE_PROBABILITY = 0.35


class TxnCrashTrigger:
    def __init__(self, cluster, driver, nursery: trio.Nursery, txn_tablets: dict[str, tuple[str, ...]]) -> None:
        self.cluster = cluster  # txn.sim.cluster_sim.SimCluster
        self.driver = driver  # txn.sim.faults.FaultDriver: its `active` says another fault is in force
        self.nursery = nursery
        self.txn_tablets = txn_tablets
        self.rng = random.Random(f"{cluster.plan.seed}/txn_faults")
        self.points = [p for p in POINTS if self.rng.random() < 0.75] or [self.rng.choice(POINTS)]
        self.armed = False
        self.fired = 0
        self.seen: set[tuple[str, str, str]] = set()  # (kind, txn id, tablet): react to the first apply only

    def on_applied(self, tablet_id: str, node_id: str, command: object) -> None:
        if not self.armed or self.fired >= BUDGET or not isinstance(command, (Prepare, Decide, Resolve)):
            return
        if isinstance(command, Resolve):
            self._on_resolve(tablet_id, command)
            return
        key = (type(command).__name__, command.txn_id, tablet_id)
        if key in self.seen:
            return
        self.seen.add(key)
        tablets = self.txn_tablets.get(command.txn_id)
        if not tablets or len(tablets) < 2:
            return
        if isinstance(command, Prepare):
            point = self.rng.choice(("before_prepare", "after_prepare"))
            if point == "before_prepare":
                unprepared = [t for t in tablets if t != tablet_id and not self._prepared_at_leader(t, command.txn_id)]
                victim = self._leader(self.rng.choice(unprepared)) if unprepared else None
            else:
                victim = node_id if self._leader(tablet_id) == node_id else None
        elif isinstance(command, Decide):
            if not command.committed or self._leader(tablet_id) != node_id:
                return
            point = "after_decide"
            victim = node_id if self.rng.random() < 0.6 else self._leader(self.rng.choice([t for t in tablets if t != tablet_id]))
        self._maybe_crash(victim, point)

    def _on_resolve(self, tablet_id: str, command: Resolve) -> None:
        """`during_resolve`, at the first apply here of a transfer's Resolve(commit); one command
        carries the decisions of a whole `ResolveRequest`: the first transfer in it not seen yet."""
        for txn_id, commit_ts in command.decisions:
            key = ("Resolve", txn_id, tablet_id)
            if key in self.seen:
                continue
            self.seen.add(key)
            tablets = self.txn_tablets.get(txn_id)
            if commit_ts is None or not tablets or len(tablets) < 2:
                continue
            coordinator = next((t for t in tablets if t not in self._participants(txn_id)), None)
            victim = self._leader(tablet_id) if coordinator is None or self.rng.random() < 0.5 else self._leader(coordinator)
            self._maybe_crash(victim, "during_resolve")
            return

    def _maybe_crash(self, victim: str | None, point: str) -> None:
        if point in self.points and victim is not None and self.rng.random() < FIRE_PROBABILITY:
            self._crash(victim, point)

    def _participants(self, txn_id: str) -> set[str]:
        """Tablets of the transaction other than its coordinator (from the Decide, where logged)."""
        for node in self.cluster.nodes.values():
            for replica in node.replicas.values():
                decided = replica.state.txns.decisions.get(txn_id)
                if decided is not None:
                    return set(decided.participants)
        return set()

    def _leader(self, tablet_id: str) -> str | None:
        return self.cluster.lease_holder(tablet_id)

    def _prepared_at_leader(self, tablet_id: str, txn_id: str) -> bool:
        leader = self._leader(tablet_id)
        if leader is None:
            return True  # no leader to crash
        txns = self.cluster.nodes[leader].replicas[tablet_id].state.txns
        return txn_id in txns.prepared or txn_id in txns.decisions

    def _crash(self, victim: str, point: str) -> None:
        cluster = self.cluster
        if (self.driver.active or cluster.down or not self.driver.minority or victim == cluster.plan.skewed_node
                or not cluster.gate_open):
            return
        self.fired += 1
        cluster.crash(victim)
        cluster.marks[f"sim.crash_{point}"] += 1
        cluster.counters[f"fault.txn_crash_{point}"] += 1
        self.nursery.start_soon(self._restart_later, victim, self.rng.uniform(0.1, 0.5))

    async def _restart_later(self, victim: str, hold_s: float) -> None:
        await trio.sleep(hold_s)
        if victim in self.cluster.down:
            self.cluster.restart(victim, self.nursery)
