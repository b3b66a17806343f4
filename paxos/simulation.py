"""A fast deterministic simulation of a Paxos group: the pure replica cores on one event heap.

Role: the bulk seed sweep (tests/sim/test_paxos_sim.py, `chronodb sim paxos`).
No trio: one heap of `(at_ns, seq, kind, node, payload)` drives every input
(messages, timer wake-ups, "storage done", client proposals, faults), as
STYLE.md section 5 allows for pure cores. The full trio driver on the
simulated network is exercised by fewer seeds (tests/sim/test_paxos_trio_sim.py).

Model: each replica runs the driver's loop: take every queued input, `ready()`,
send the early messages, then (if anything must be persisted) stay busy for
`fsync_ns` before the write counts as synced; then install / apply / send /
`advance()`. A crash loses the unsynced write and everything the state
machine applied since the last synced write (LevelDB keeps a sync's
predecessors). A snapshot install follows the driver's order: the log
truncation is synced, then the state machine installs; plans with
`install_crash` crash the first replica to install, either before the state
machine's "installing" marker (it restarts below its log start) or after it
(it restarts `install_pending`), and the sweep requires it to be resumed
(`paxos.snapshot_install_resumed`). Each replica has its own clock:
`local = t + offset + t*drift`. Half the plans name a preferred leader known
to every core; n1 still campaigns first, so leadership must be transferred
(`paxos.leadership_transferred`) while the one-lease-holder checker watches.

A run: a fault phase (drops, duplicates, delays, partitions, crash/restarts),
then everything heals; after `settle_ns` the client proposes `liveness_probes`
commands, one at a time, each of which must be applied at the leader within
`liveness_bound_ns`. Checkers (paxos/checkers.py) watch every apply and the
lease holders at every event.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from typing import Any

import attrs
import cbor2

from paxos.checkers import CheckFailure, HistoryChecker
from paxos.messages import ZERO_BALLOT, Ballot, Entry, describe
from paxos.replica import NEVER, Replica
from paxos.types import PaxosConfig, PersistedState, Ready

MS = 1_000_000
SECOND = 1_000_000_000
REQUIRED_MARKS = ("paxos.catch_up", "paxos.snapshot_installed", "paxos.recovered_accepted_value",
                  "paxos.lease_refused_prepare", "paxos.retransmit", "paxos.prevote_refused",
                  "paxos.snapshot_install_resumed", "paxos.leadership_transferred", "paxos.entries_evicted",
                  "paxos.entry_read_back")


@attrs.frozen
class SimPlan:
    seed: int
    replicas: int
    fault_ns: int
    drop: float
    duplicate: float
    delay_ns_max: int
    fsync_ns: int
    propose_every_ns: int
    crashes: tuple[tuple[int, int, int], ...]  # (at, replica number, down for)
    partitions: tuple[tuple[int, int, tuple[int, ...]], ...]  # (at, duration, minority side)
    offsets_ns: tuple[int, ...]
    drifts_ppm: tuple[int, ...]
    install_crash: bool = False  # crash the first replica to install a snapshot, mid-install
    preferred: int | None = None  # the replica number every core knows as preferred leader
    settle_ns: int = 4 * SECOND
    liveness_probes: int = 3
    liveness_bound_ns: int = 2 * SECOND
    # log_resident_bytes: a few commands stay in memory, so catch-up reads most entries back from "disk".
    config: PaxosConfig = PaxosConfig(truncate_threshold_entries=40, truncate_keep_entries=10,
                                      max_batch_entries=16, max_in_flight=64, snapshot_chunk_bytes=64,
                                      log_resident_bytes=24)

    @classmethod
    def from_seed(cls, seed: int) -> "SimPlan":
        rng = random.Random(f"{seed}/plan")
        replicas = rng.choice((3, 3, 5))
        fault_ns = rng.randint(3, 7) * SECOND
        crashes = tuple(
            (rng.randrange(fault_ns), rng.randrange(replicas), rng.randint(50, 2500) * MS)
            for _ in range(rng.randint(0, 3)))
        partitions = tuple(
            (rng.randrange(fault_ns), rng.randint(200, 3000) * MS,
             tuple(sorted(rng.sample(range(replicas), rng.randint(1, replicas // 2)))))
            for _ in range(rng.randint(0, 3)))
        return cls(
            seed=seed, replicas=replicas, fault_ns=fault_ns, drop=rng.choice((0.0, 0.02, 0.1)),
            duplicate=rng.choice((0.0, 0.02)), delay_ns_max=rng.choice((2, 10, 40)) * MS,
            fsync_ns=rng.choice((1, 3)) * MS, propose_every_ns=rng.choice((5, 10, 20)) * MS,
            crashes=crashes, partitions=partitions,
            offsets_ns=tuple(rng.randint(-5 * SECOND, 5 * SECOND) for _ in range(replicas)),
            drifts_ppm=tuple(rng.randint(-200, 200) for _ in range(replicas)),
            # Own stream: the draws above (and so every older seed's plan) stay as they were.
            install_crash=random.Random(f"{seed}/install_crash").random() < 0.4,
            preferred=_draw_preferred(random.Random(f"{seed}/preferred"), replicas),
        )


def _draw_preferred(rng: random.Random, replicas: int) -> int | None:
    """Half the plans have a preferred leader (n1 campaigns first at boot, so any other one
    must be handed leadership; n1 must get it back after failovers)."""
    return rng.randrange(replicas) if rng.random() < 0.5 else None


class ListStateMachine:
    """The replicated state: the list of applied commands (slot i at position i-1)."""

    def __init__(self, commands: list[bytes] | None = None, chunk_commands: int = 8, install_pending: bool = False) -> None:
        self.commands: list[bytes] = list(commands or [])
        self.chunk_commands = chunk_commands
        self.install_pending = install_pending  # a crash interrupted an install: no usable prefix

    def applied_index(self) -> int:
        return 0 if self.install_pending else len(self.commands)

    def apply(self, index: int, command: bytes) -> None:
        assert index == len(self.commands) + 1, (index, len(self.commands))
        self.commands.append(command)

    def export_snapshot(self) -> tuple[int, list[bytes]]:
        assert not self.install_pending, "export of a half-installed state machine"
        step = self.chunk_commands
        chunks = [cbor2.dumps(self.commands[i:i + step]) for i in range(0, len(self.commands), step)]
        return len(self.commands), chunks

    def install_snapshot(self, index: int, chunks: list[bytes]) -> None:
        commands: list[bytes] = []
        for chunk in chunks:
            commands.extend(cbor2.loads(chunk))
        assert len(commands) == index, (len(commands), index)
        self.commands = commands
        self.install_pending = False


@attrs.define(eq=False)
class SimReplica:
    node_id: str
    offset_ns: int
    drift_ppm: int
    promised: Ballot = ZERO_BALLOT
    snapshot_index: int = 0
    log: dict[int, Entry] = attrs.field(factory=dict)
    durable_commands: list[bytes] = attrs.field(factory=list)
    durable_installing: bool = False  # the state machine's synced "installing" marker
    sm: ListStateMachine = attrs.field(factory=ListStateMachine)
    core: Replica | None = None
    inbox: list[tuple[str, Any]] = attrs.field(factory=list)
    busy: bool = False
    epoch: int = 0
    wake_at: int = NEVER

    def local(self, t: int) -> int:
        return t + self.offset_ns + t * self.drift_ppm // 1_000_000

    def global_at(self, local_ns: int) -> int:
        t = (local_ns - self.offset_ns) * 1_000_000 // (1_000_000 + self.drift_ppm)
        while self.local(t) < local_ns:
            t += 1
        return max(t, 0)


class PaxosSimulation:
    def __init__(self, plan: SimPlan, *, trace: bool = False, replica_class: type[Replica] = Replica) -> None:
        self.plan = plan
        self.replica_class = replica_class
        self.now = 0
        self.heap: list[tuple[int, int, str, str, Any]] = []
        self.seq = 0
        self.net_rng = random.Random(f"{plan.seed}/net")
        self.client_rng = random.Random(f"{plan.seed}/client")
        self.ids = tuple(f"n{i + 1}" for i in range(plan.replicas))
        self.nodes = {node_id: SimReplica(node_id, plan.offsets_ns[i], plan.drifts_ppm[i])
                      for i, node_id in enumerate(self.ids)}
        self.blocked: set[tuple[str, str]] = set()
        self.faulty = True
        self.checker = HistoryChecker()
        self.marks: dict[str, int] = {}
        self.trace: list[str] | None = [] if trace else None
        self.digest = hashlib.sha256()
        self.counter = 0
        self.probe: tuple[bytes, int] | None = None  # (command, deadline)
        self.install_crash_rng = random.Random(f"{plan.seed}/install_crash/when")
        self.install_crash_pending = plan.install_crash

    # ------------------------------------------------------------ running

    def run(self) -> None:
        plan = self.plan
        for node_id in self.ids:
            self._boot(node_id, preferred=(node_id == "n1"))
        for at, number, down in plan.crashes:
            self._at(at, "crash", self.ids[number], down)
        for at, duration, side in plan.partitions:
            self._at(at, "partition", "", (duration, tuple(self.ids[i] for i in side)))
        self._at(plan.fault_ns, "heal", "", None)
        self._at(0, "client", "", None)
        end = plan.fault_ns + plan.settle_ns + plan.liveness_probes * plan.liveness_bound_ns + SECOND
        probes_done = 0
        while self.heap:
            at, _, kind, node_id, payload = heapq.heappop(self.heap)
            if at > end:
                break
            self.now = at
            if kind == "probe_done":
                probes_done += 1
                if probes_done == plan.liveness_probes:
                    break
                continue
            getattr(self, f"_on_{kind}")(node_id, payload)
            self._check_leases()
        if probes_done < plan.liveness_probes:
            raise CheckFailure(f"liveness: only {probes_done} of {plan.liveness_probes} probes chosen after healing")

    def _at(self, at: int, kind: str, node_id: str, payload: Any) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (at, self.seq, kind, node_id, payload))

    def _boot(self, node_id: str, preferred: bool = False) -> None:
        node = self.nodes[node_id]
        node.sm = ListStateMachine([] if node.durable_installing else node.durable_commands,
                                   install_pending=node.durable_installing)
        # As the driver loads: applied entries stay "on disk" (node.log), read back on demand.
        resident_after = 0 if node.sm.install_pending else node.sm.applied_index()
        state = PersistedState(node.promised, node.snapshot_index,
                               tuple(node.log[i] for i in sorted(node.log) if i > resident_after),
                               stored=tuple(i for i in sorted(node.log) if i <= resident_after))
        node.core = self.replica_class(node_id=node_id, peers=self.ids, config=self.plan.config,
                            rng=random.Random(f"{self.plan.seed}/paxos/{node_id}/{node.epoch}"),
                            persisted=state, applied_index=node.sm.applied_index(), now_ns=node.local(self.now),
                            install_pending=node.sm.install_pending,
                            preferred_leader=None if self.plan.preferred is None else self.ids[self.plan.preferred],
                            read_entry=lambda index, node=node: node.log.get(index))
        self.checker.on_restart(node_id, node.sm.applied_index())
        if preferred:
            node.core.campaign(node.local(self.now))
        self._process(node)

    # ------------------------------------------------------------ events

    def _on_deliver(self, node_id: str, payload: tuple[str, Any]) -> None:
        node = self.nodes[node_id]
        if node.core is not None:
            node.inbox.append(payload)
            self._process(node)

    def _on_wake(self, node_id: str, epoch: int) -> None:
        node = self.nodes[node_id]
        if node.core is not None and epoch == node.epoch and self.now >= node.wake_at:
            node.wake_at = NEVER
            self._process(node)

    def _on_synced(self, node_id: str, payload: tuple[int, Ready]) -> None:
        node = self.nodes[node_id]
        epoch, ready = payload
        if epoch == node.epoch and node.core is not None:
            self._complete(node, ready)

    def _on_crash(self, node_id: str, down_ns: int) -> None:
        node = self.nodes[node_id]
        if node.core is None:
            return
        self._count_marks(node.core)
        node.core = None
        node.inbox.clear()
        node.busy = False
        node.epoch += 1
        self._at(self.now + down_ns, "restart", node_id, None)
        self._log(f"{node_id} crash")

    def _on_restart(self, node_id: str, _payload: Any) -> None:
        self._log(f"{node_id} restart")
        self._boot(node_id)

    def _on_partition(self, _node_id: str, payload: tuple[int, tuple[str, ...]]) -> None:
        duration, side = payload
        if not self.faulty:
            return
        for a in side:
            for b in self.ids:
                if b not in side:
                    self.blocked |= {(a, b), (b, a)}
        self._at(self.now + duration, "unblock", "", side)
        self._log(f"partition {','.join(side)}")

    def _on_unblock(self, _node_id: str, side: tuple[str, ...]) -> None:
        self.blocked = {(a, b) for a, b in self.blocked if a not in side and b not in side}

    def _on_heal(self, _node_id: str, _payload: Any) -> None:
        self.faulty = False
        self.blocked.clear()
        for node_id, node in self.nodes.items():
            if node.core is None:
                node.epoch += 1
                self._boot(node_id)
        self._log("heal")
        self._at(self.now + self.plan.settle_ns, "probe", "", 0)

    def _on_client(self, _node_id: str, _payload: Any) -> None:
        if not self.faulty:
            return
        node = self.nodes[self.client_rng.choice(self.ids)]
        hint = node.core.leader_hint if node.core is not None else None
        if hint is not None and self.client_rng.random() < 0.8:
            node = self.nodes[hint]  # a client follows the redirect most of the time
        if node.core is not None:
            self.counter += 1
            node.core.propose(f"c{self.counter}".encode(), node.local(self.now))
            self._process(node)
        self._at(self.now + self.plan.propose_every_ns, "client", "", None)

    def _on_probe(self, _node_id: str, number: int) -> None:
        """After healing: one command at a time must be applied at the leader within the bound."""
        command = f"probe{number}".encode()
        if self.probe is None:
            self.probe = (command, self.now + self.plan.liveness_bound_ns)
        if self.now > self.probe[1]:
            raise CheckFailure(f"liveness: {command!r} not applied within {self.plan.liveness_bound_ns}ns of asking")
        leaders = [n for n in self.nodes.values() if n.core is not None and n.core.role.value == "leader"]
        for node in leaders:
            if command in node.sm.commands[-50:]:
                self.probe = None
                self._at(self.now, "probe_done", "", None)
                self._at(self.now, "probe", "", number + 1)
                return
        for node in leaders:
            if node.core is not None and not any(e.command == command for e in node.core.entries(node.core.chosen_index + 1, node.core.last_index)):
                node.core.propose(command, node.local(self.now))
                self._process(node)
        self._at(self.now + 10 * MS, "probe", "", number)

    # ------------------------------------------------------------ the driver loop

    def _process(self, node: SimReplica) -> None:
        core = node.core
        if core is None or node.busy:
            return
        local = node.local(self.now)
        for src, msg in node.inbox:
            core.step(src, msg, local)
        node.inbox.clear()
        core.tick(local)
        ready = core.ready(local)
        self._send_all(node.node_id, ready.early_messages)
        if ready.persist or ready.install is not None:
            node.busy = True
            self._at(self.now + self.plan.fsync_ns, "synced", node.node_id, (node.epoch, ready))
        else:
            self._complete(node, ready)

    def _complete(self, node: SimReplica, ready: Ready) -> None:
        core = node.core
        assert core is not None
        node.busy = False
        if ready.persist:  # the driver's order: the log truncation is synced before the install
            self._write(node, ready)
        if ready.install is not None:
            if self.install_crash_pending and self.faulty:
                self._crash_mid_install(node)
                return
            node.sm.install_snapshot(ready.install.index, list(ready.install.chunks))
            node.durable_commands, node.durable_installing = list(node.sm.commands), False  # its last write is synced
            self.checker.on_install(node.node_id, ready.install.index, node.sm.commands)
        for entry in ready.apply:
            node.sm.apply(entry.index, entry.command)
            self.checker.on_apply(node.node_id, entry.index, entry.command)
        self._send_all(node.node_id, ready.messages)
        local = node.local(self.now)
        core.advance(ready, local)
        if ready.export_snapshot:
            index, chunks = node.sm.export_snapshot()
            core.snapshot_exported(index, chunks, local)
        wake = node.global_at(ready.wake_at_ns) if ready.wake_at_ns < NEVER else NEVER
        if wake < node.wake_at or node.wake_at <= self.now:
            node.wake_at = max(wake, self.now + 1)
            if wake < NEVER:
                self._at(node.wake_at, "wake", node.node_id, node.epoch)
        if node.inbox or core.has_ready() or ready.export_snapshot:  # (not chosen > applied: a replica needing a snapshot applies nothing)
            self._at(self.now, "deliver_none", node.node_id, None)

    def _crash_mid_install(self, node: SimReplica) -> None:
        """The plan's crash during an install: after the truncation, before or after the state's marker."""
        self.install_crash_pending = False
        node.durable_installing = self.install_crash_rng.random() < 0.5
        self._log(f"{node.node_id} crash mid-install ({'after' if node.durable_installing else 'before'} the marker)")
        self._on_crash(node.node_id, self.install_crash_rng.randint(50, 500) * MS)

    def _on_deliver_none(self, node_id: str, _payload: Any) -> None:
        self._process(self.nodes[node_id])

    def _write(self, node: SimReplica, ready: Ready) -> None:
        persist = ready.persist
        node.durable_commands = list(node.sm.commands)  # the sync makes earlier state-machine writes durable
        if persist.promised is not None:
            node.promised = persist.promised
        for entry in persist.entries:
            node.log[entry.index] = entry
        if persist.truncate_through is not None:
            node.snapshot_index = max(node.snapshot_index, persist.truncate_through)
            for index in [i for i in node.log if i <= persist.truncate_through]:
                del node.log[index]

    def _send_all(self, src: str, outgoing: tuple[Any, ...]) -> None:
        for out in outgoing:
            self._log(describe(src, out.dst, out.message))
            if (src, out.dst) in self.blocked:
                continue
            copies = 1
            if self.faulty:
                if self.net_rng.random() < self.plan.drop:
                    continue
                if self.net_rng.random() < self.plan.duplicate:
                    copies = 2
            for _ in range(copies):
                delay = self.net_rng.randint(MS, self.plan.delay_ns_max) if self.faulty else self.net_rng.randint(MS, 2 * MS)
                self._at(self.now + delay, "deliver", out.dst, (src, out.message))

    # ------------------------------------------------------------ checks and bookkeeping

    def _check_leases(self) -> None:
        holders = [n.node_id for n in self.nodes.values()
                   if n.core is not None and n.core.lease_expiry_ns and n.core.has_lease(n.local(self.now))]
        if len(holders) > 1:
            self.checker.on_lease_holders(self.now, holders)

    def _count_marks(self, core: Replica) -> None:
        for name, count in core.counters.items():
            self.marks[name] = self.marks.get(name, 0) + count

    def final_marks(self) -> dict[str, int]:
        for node in self.nodes.values():
            if node.core is not None:
                self._count_marks(node.core)
                node.core.counters.clear()
        return self.marks

    def _log(self, line: str) -> None:
        self.digest.update(f"{self.now} {line}\n".encode())
        if self.trace is not None:
            self.trace.append(f"{self.now / 1e9:10.6f} {line}")


@attrs.frozen
class SeedResult:
    seed: int
    error: str | None
    marks: dict[str, int]
    digest: str
    trace: tuple[str, ...]


def run_seed(seed: int, *, trace: bool = False, replica_class: type[Replica] = Replica) -> SeedResult:
    """Run one seed; a failure is reported in `error` (with the trace kept if asked)."""
    sim = PaxosSimulation(SimPlan.from_seed(seed), trace=trace, replica_class=replica_class)
    error = None
    try:
        sim.run()
    except CheckFailure as failure:
        error = str(failure)
    except AssertionError as failure:  # an invariant of ours broke: report it as a failing seed too
        error = f"assertion: {failure!r}"
    return SeedResult(seed, error, sim.final_marks(), sim.digest.hexdigest(), tuple(sim.trace or ()))


def sweep(seeds: range, *, replica_class: type[Replica] = Replica) -> tuple[list[SeedResult], dict[str, int]]:
    """Run every seed; returns the failing results and the coverage marks summed over all."""
    failures: list[SeedResult] = []
    marks: dict[str, int] = {}
    for seed in seeds:
        result = run_seed(seed, replica_class=replica_class)
        for name, count in result.marks.items():
            marks[name] = marks.get(name, 0) + count
        if result.error is not None:
            failures.append(result)
    return failures, marks


def missing_marks(marks: dict[str, int]) -> list[str]:
    return [name for name in REQUIRED_MARKS if not marks.get(name)]
