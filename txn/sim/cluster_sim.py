"""The whole-stack simulation: the node and client that ship, on a simulated world.

Role: each node is assembled by `txn.node.wiring.build_node` and run by
`serve_node` exactly as `chronodb node` does, but on the simulated network
(txn/net/simnet.py), `DictEngine`s (one per replica) whose crashes lose
unsynced writes, and `VirtualClock`s with offsets and drifts; clients are the
real client library (txn/sim/sim_client.py). `simulate(plan)` runs the plan
of one seed (txn/sim/plan.py): a workload under the plan's faults
(txn/sim/faults.py), then everything healed and a liveness check, and
returns a `SimOutcome` for the checkers (txn/sim/checkers.py); txn/sim/sweep.py
runs seeds and judges them.

Observed inside the nodes, without changing them: every applied command's
(replica, index, ts) through `TabletState.on_applied` (chained), the lease
holders of every tablet sampled after every Paxos driver turn (every
incarnation's core counts until its lease expires: a crashed holder's lease
still binds its successors), node tasks dying of an exception, and coverage marks
of every node incarnation (Paxos core, tablet replica, clock watch) plus the
harness's own (`sim.*`).

Everything random comes from the seed: the plan, the network's per-sender
streams, the fault and client streams, and trio's scheduler (seeded through
a private hook; pyproject.toml pins trio's version for that reason).
"""

from __future__ import annotations

import collections
import contextlib
import random
import traceback
from typing import Any, AsyncIterator, Callable

import attrs
import trio

from hlc import HybridClock
from hlc.physical import VirtualClock
from mvcc.engine import DictEngine
from paxos.replica import Replica
from txn.net.simnet import SimNetwork
from txn.node.config import ClusterConfig, NodeConfig
from txn.node.server import Node
from txn.node.wiring import NodeEnvironment, build_node, serve_node, trio_monotonic_ns, write_synced_after_checkpoint
from txn.sim.bank_checkers import Leftover
from txn.sim.bank_workload import ACCOUNTS, BankClient, BankHistory
from txn.sim.checkers import OK, Applied, Committed, LeaseSample, Op
from txn.sim.plan import HEAL_PHASE_S, KEYS, LIVENESS_BOUND_S, MAX_OFFSET_NS, SimPlan, tablet_of
from txn.sim.sim_client import SimClient
from txn.tablet.transactions import PEER_TIMEOUT_S, RECOVERY_AFTER_S, RECOVERY_INTERVAL_S

# After healing, transactions left prepared must be resolved within this. A participant's leader asks the
# coordinator (TxnStatusRequest) RECOVERY_AFTER_S after it first saw the transaction, in rounds of
# RECOVERY_INTERVAL_S; the inter-node links may still drop messages (the "drop" fault is a link property),
# and a lost status request is asked again only RECOVERY_AFTER_S after it was sent, once PEER_TIMEOUT_S
# passed: the bound allows one such loss (seed 75 of the first sweep lost one and needed ~4.5 s).
QUIESCE_BOUND_S = 2 * RECOVERY_AFTER_S + PEER_TIMEOUT_S + 2 * RECOVERY_INTERVAL_S
# A transaction left prepared by a crashed coordinator holds its locks until a participant's recovery asks
# (RECOVERY_AFTER_S after the current leader first saw it): a transfer touching its keys waits that long,
# and, like QUIESCE_BOUND_S, one lost status request (links may still drop) costs another round
# (seed 2030: with RECOVERY_AFTER_S raised to 5 s the bound without it was too short).
BANK_LIVENESS_BOUND_S = LIVENESS_BOUND_S + 2 * RECOVERY_AFTER_S + PEER_TIMEOUT_S + RECOVERY_INTERVAL_S
# A coordinator forgets a commit record this long after every participant acknowledged resolving it
# (txn/tablet/forgetting.py; 30 s on real clusters): well within a seed's run, so forgetting is exercised.
SIM_DECISION_RETENTION_NS = 200_000_000
BANK_GRACE_S = 0.3
# Bank seeds pay for recovery after healing (prepared transactions wait RECOVERY_AFTER_S): shorter phases.
BANK_FAULT_PHASE_S = 1.0
BANK_HEAL_PHASE_S = 0.3


def seed_trio_scheduler(seed: int) -> None:
    """Trio shuffles runnable batches with a module-level Random; seed it to replay."""
    trio._core._run._r.seed(f"{seed}/trio")  # noqa: SLF001 - test-only determinism hook (trio pinned)
    # Sort each runnable batch by task creation before shuffling (trio's Hypothesis mode): without it the
    # batch's order came from sets of tasks (hashed by address), so a seed's run depended on PYTHONHASHSEED
    # and on the seeds run before it in the same process.
    trio._core._run._ALLOW_DETERMINISTIC_SCHEDULING = True  # noqa: SLF001


@attrs.define(eq=False)
class SimOutcome:
    history: list[Op]
    committed: dict[bytes, Committed]
    applied: list[Applied]
    lease_violations: list[LeaseSample]
    errors: list[str]  # node deaths, liveness and fencing failures
    marks: collections.Counter[str]
    counters: collections.Counter[str]
    trace: list[str]
    digest: str
    bank: BankHistory | None = None
    account_versions: dict[bytes, tuple[tuple[Any, bytes | None], ...]] = attrs.Factory(dict)
    leftovers: list[Leftover] = attrs.Factory(list)


class SimCluster:
    def __init__(self, plan: SimPlan, net: SimNetwork) -> None:
        self.plan = plan
        self.net = net
        self.config = ClusterConfig(
            "sim", MAX_OFFSET_NS, [NodeConfig(n, n, 0) for n in plan.node_ids],  # host = node id: the sim dialer's address
            list(plan.tablets),
            # Commit records are forgotten within a seed's few seconds: any still asked about
            # afterwards breaks a transfer's atomicity, which the bank checkers see.
            decision_retention_ns=SIM_DECISION_RETENTION_NS,
        )
        self.clocks = {n: VirtualClock(plan.offsets_ns[n], plan.drifts_ppm[n]) for n in plan.node_ids}
        self.engines = {(n, t.id): DictEngine() for t in plan.tablets for n in t.replicas}
        self.nodes: dict[str, Node] = {}
        self.incarnation: collections.Counter[str] = collections.Counter()
        self.scopes: dict[str, trio.CancelScope] = {}
        self.down: set[str] = set()
        self.errors: list[str] = []
        self.marks: collections.Counter[str] = collections.Counter()
        self.counters: collections.Counter[str] = collections.Counter()
        self.applied: list[Applied] = []
        self.lease_violations: list[LeaseSample] = []
        self.cores: dict[str, list[tuple[str, Replica]]] = {t.id: [] for t in plan.tablets}
        self.holder: dict[str, str | None] = {t.id: None for t in plan.tablets}
        self.writes_in_flight: collections.Counter[str] = collections.Counter()
        self.history: list[Op] = []
        self.gate_open = True
        self.busy = 0
        self.snapshot_receiving = trio.Event()  # set when some replica is part way through receiving a snapshot
        # Called as (tablet, node, command) after every command a replica applied (not skipped): fault triggers.
        self.apply_listeners: list[Callable[[str, str, object], None]] = []

    # ---- nodes -------------------------------------------------------------

    def environment(self, node_id: str) -> NodeEnvironment:
        hlc = HybridClock(self.clocks[node_id], MAX_OFFSET_NS)
        return NodeEnvironment(
            clock=hlc, open_engine=lambda tablet: self.engines[(node_id, tablet.id)],
            open_transport=lambda handler: _already_open(self.net.endpoint(node_id, handler, hlc)),
            monotonic_ns=trio_monotonic_ns, seed=f"{self.plan.seed}/{node_id}/{self.incarnation[node_id]}",
            paxos_config=self.plan.paxos, gc_retention_ns=10**15, monitor_clocks=self.plan.monitor_clocks,
            write_synced=write_synced_after_checkpoint,
        )

    def start_node(self, node_id: str, nursery: trio.Nursery) -> None:
        env = self.environment(node_id)
        node = build_node(self.config, node_id, env)
        label = f"{node_id}#{self.incarnation[node_id]}"
        for tablet_id, replica in node.replicas.items():
            self._observe_applies(tablet_id, label, replica.state)
            self.cores[tablet_id].append((label, replica.paxos.core))
            self._observe_leases(tablet_id, replica.paxos)
        self.nodes[node_id] = node
        scope = self.scopes[node_id] = trio.CancelScope()

        async def body() -> None:
            with scope:
                try:
                    await serve_node(node, env)
                except Exception as error:  # a node process dying is a failure of the seed
                    frames = "".join(traceback.format_exception(error)[-6:])
                    self.errors.append(f"node {label} died at {trio.current_time():.3f}s: {error!r}\n{frames}")

        nursery.start_soon(body)

    def _observe_applies(self, tablet_id: str, label: str, state: Any) -> None:
        inner = state.on_applied
        node_id = label.split("#")[0]

        def on_applied(index: int, command: object, skipped: bool) -> None:
            # A skipped command (a deposed leader's tail) changed nothing: it is not "applied".
            if command is not None and hasattr(command, "ts") and not skipped:
                self.applied.append(Applied(tablet_id, label, index, command.ts))
            if inner is not None:
                inner(index, command, skipped)
            if command is not None and not skipped:
                for listener in self.apply_listeners:
                    listener(tablet_id, node_id, command)

        state.on_applied = on_applied

    def crash(self, node_id: str) -> None:
        self.collect_marks(self.nodes[node_id])
        if any(replica.paxos.write_out for replica in self.nodes[node_id].replicas.values()):
            self.marks["sim.crash_during_log_write"] += 1  # a turn's write lost, its Accepteds never sent
        self.scopes[node_id].cancel()
        self.net.crash(node_id)
        for key, engine in self.engines.items():
            if key[0] == node_id:
                self.engines[key] = engine.after_crash()
        self.down.add(node_id)
        self.counters["crashes"] += 1

    def restart(self, node_id: str, nursery: trio.Nursery) -> None:
        self.net.restart(node_id)
        self.incarnation[node_id] += 1
        self.down.discard(node_id)
        self.start_node(node_id, nursery)

    def collect_marks(self, node: Node) -> None:
        self.marks.update(node.watch.marks)
        for replica in node.replicas.values():
            self.marks.update(replica.marks)
            self.marks.update({name: count for name, count in replica.paxos.core.counters.items() if count})

    def receiving_snapshot(self) -> list[str]:
        """Up nodes with a snapshot transfer under way to one of their replicas."""
        return [n for n, node in sorted(self.nodes.items())
                if n not in self.down and any(r.paxos.core.receiving is not None for r in node.replicas.values())]

    def lease_holder(self, tablet_id: str) -> str | None:
        for node_id, node in sorted(self.nodes.items()):
            replica = node.replicas.get(tablet_id)
            if node_id not in self.down and replica is not None and replica.paxos.has_lease():
                return node_id
        return None

    # ---- observers -------------------------------------------------------------

    def _observe_leases(self, tablet_id: str, driver: Any) -> None:
        """Sample the tablet's lease holders after every turn of this driver.

        A second holder can only appear in a turn (a lease is acquired on an
        Accepted, or by advancing time in `tick`, both inside the turn), so
        sampling after each turn of every replica sees every overlap begin."""
        inner = driver._after_turn  # noqa: SLF001 - observing the driver, not changing it

        def after_turn(now: int) -> None:
            inner(now)
            self.sample_leases(tablet_id, now)
            if driver.core.receiving is not None:
                self.snapshot_receiving.set()

        driver._after_turn = after_turn

    def sample_leases(self, tablet_id: str, now: int) -> None:
        cores = self.cores[tablet_id]
        holders = tuple(label for label, core in cores if core.has_lease(now))
        if len(holders) > 1:
            self.lease_violations.append(LeaseSample(now, tablet_id, holders))
        if len(cores) > len(self.plan.node_ids):  # forget crashed incarnations once their lease ran out
            current = {f"{n}#{self.incarnation[n]}" for n in self.plan.node_ids}
            cores[:] = [(label, core) for label, core in cores if label in current or core.has_lease(now)]
        holder = holders[0].split("#")[0] if len(holders) == 1 else self.holder[tablet_id]
        if holder != self.holder[tablet_id]:
            if self.holder[tablet_id] is not None and self.writes_in_flight[tablet_id]:
                self.marks["sim.failover_under_load"] += 1
            self.holder[tablet_id] = holder

    def write_in_flight(self, key: bytes, delta: int) -> None:
        self.writes_in_flight[tablet_of(self.plan.tablets, key).id] += delta

    # ---- workload ------------------------------------------------------------

    def client(self, name: str, home: str, rng: random.Random | None = None) -> SimClient:
        """`rng`: the client library's random stream (transaction ids, retry jitter); seed it
        wherever the same run must do the same operations."""
        return SimClient(name, self.net, self.plan.node_ids, MAX_OFFSET_NS, self.history, home=home,
                         in_flight=self.write_in_flight, rng=rng)

    async def run_client(self, client: SimClient, stream: random.Random, end_s: float) -> None:
        async with client.open():
            while trio.current_time() < end_s:
                while not self.gate_open:
                    await trio.sleep(0.005)
                self.busy += 1
                try:
                    await _one_operation(client, stream)
                finally:
                    self.busy -= 1
                await trio.sleep(stream.uniform(0.001, 0.03))

    def bank_client(self, name: str, home: str, stream: str, history: BankHistory) -> BankClient:
        sim = SimClient(name, self.net, self.plan.node_ids, MAX_OFFSET_NS, self.history, home=home,
                        in_flight=self.write_in_flight, rng=random.Random(f"{self.plan.seed}/client/{stream}"))
        return BankClient(sim, history, random.Random(f"{self.plan.seed}/bank/{stream}"),
                          lambda key: tablet_of(self.plan.tablets, key).id, self.write_in_flight)

    async def run_bank_client(self, bank: BankClient, end_s: float) -> None:
        """Operations until end_s; the last one is cut off BANK_GRACE_S later."""
        async with bank.sim.open():
            while trio.current_time() < end_s:
                while not self.gate_open:
                    await trio.sleep(0.005)
                self.busy += 1
                try:
                    await bank.one_operation(end_s + BANK_GRACE_S)
                finally:
                    self.busy -= 1
                await trio.sleep(bank.stream.uniform(0.001, 0.03))

    async def check_bank_liveness(self, history: BankHistory) -> None:
        """A cross-tablet transfer commits within LIVENESS_BOUND_S of healing."""
        final = self.bank_client("bank-final", self.plan.node_ids[0], "final", history)
        src = ACCOUNTS[0]
        dst = next(a for a in reversed(ACCOUNTS) if tablet_of(self.plan.tablets, a) != tablet_of(self.plan.tablets, src))
        async with final.sim.open():
            deadline = trio.current_time() + BANK_LIVENESS_BOUND_S
            while not await final.transfer(src, dst, 1):
                if trio.current_time() > deadline:
                    self.errors.append(f"no transfer committed within {BANK_LIVENESS_BOUND_S}s of healing")
                    return
                await trio.sleep(0.02)
        self.marks["sim.bank_transfer_after_heal"] += 1

    async def check_liveness(self) -> None:
        """Every tablet takes a new write within LIVENESS_BOUND_S of healing."""
        final = self.client("final", self.plan.node_ids[0])
        async with final.open():
            for tablet in self.plan.tablets:
                key = next(k for k in KEYS if tablet.contains(k))
                deadline = trio.current_time() + LIVENESS_BOUND_S
                while True:
                    op = await final.write(key, f"live-{tablet.id}".encode(), timeout_s=0.5)
                    if op.outcome == OK:
                        break
                    if trio.current_time() > deadline:
                        states = {n: str(node.replicas[tablet.id].status()) for n, node in self.nodes.items() if tablet.id in node.replicas}
                        self.errors.append(f"tablet {tablet.id} not live {LIVENESS_BOUND_S}s after healing: {states}")
                        return
                    await trio.sleep(0.02)

    def _best_replicas(self) -> dict[str, Any]:
        best = {}
        for tablet in self.plan.tablets:
            replicas = [node.replicas[tablet.id] for n, node in sorted(self.nodes.items()) if tablet.id in node.replicas]
            best[tablet.id] = max(replicas, key=lambda r: r.state.applied_index())
        return best

    def account_versions(self) -> dict[bytes, tuple[tuple[Any, bytes | None], ...]]:
        """Every bank account's versions, ascending, from the replica of its tablet that applied the most."""
        best = self._best_replicas()
        return {key: tuple(sorted((v.ts, v.value) for v in best[tablet_of(self.plan.tablets, key).id].state.store.versions(key)))
                for key in ACCOUNTS}

    def leftovers(self) -> list[Leftover]:
        """Prepared transactions and intents still held by some replica."""
        found = []
        for node_id, node in sorted(self.nodes.items()):
            for tablet_id, replica in sorted(node.replicas.items()):
                state = replica.state
                if not state.usable:
                    continue
                prepared = tuple(sorted(state.txns.prepared))
                intents = tuple((i.key, i.txn_id) for i in state.store.intents())
                if prepared or intents:
                    found.append(Leftover(f"{node_id}#{self.incarnation[node_id]}/{tablet_id}", prepared, intents))
        return found

    async def await_quiescent(self) -> list[Leftover]:
        """Give recovery its time: poll until no replica holds a prepared transaction or an intent."""
        deadline = trio.current_time() + QUIESCE_BOUND_S
        while True:
            left = self.leftovers()
            if not left or trio.current_time() > deadline:
                return left
            await trio.sleep(0.05)

    def committed(self) -> dict[bytes, Committed]:
        """Every key's versions, from the replica of its tablet that applied the most."""
        result = {}
        for tablet in self.plan.tablets:
            replicas = [node.replicas[tablet.id] for n, node in sorted(self.nodes.items()) if tablet.id in node.replicas]
            best = max(replicas, key=lambda r: r.state.applied_index())
            for key in KEYS:
                if tablet.contains(key):
                    result[key] = Committed(key, sorted((v.ts, v.value) for v in best.state.store.versions(key)))
        return result


async def _one_operation(client: SimClient, stream: random.Random) -> None:
    key = stream.choice(KEYS)
    choice = stream.random()
    if choice < 0.45:
        value = None if stream.random() < 0.1 else f"{client.name}-{stream.randrange(10**6)}".encode()
        await client.write(key, value)
    elif choice < 0.7:
        await client.read(key)
    elif choice < 0.85 or not client.read_stamps:
        await client.read(key, stale_ns=stream.choice((0, 20_000_000, 200_000_000)))
    else:
        await client.read(key, at=stream.choice(client.read_stamps[-20:]))


@contextlib.asynccontextmanager
async def _already_open(transport: Any) -> AsyncIterator[Any]:
    yield transport


async def simulate(plan: SimPlan) -> SimOutcome:
    from txn.sim.faults import FaultDriver  # the fault drivers need SimCluster
    from txn.sim.txn_faults import TxnCrashTrigger

    net = SimNetwork(plan.seed, plan.network)
    cluster = SimCluster(plan, net)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(net.pump)
        for node_id in plan.node_ids:
            cluster.start_node(node_id, nursery)
        faults = FaultDriver(cluster, nursery)
        bank = BankHistory() if plan.workload == "bank" else None
        if bank is not None:
            opener = cluster.bank_client("opener", plan.node_ids[0], "opener", bank)
            async with opener.sim.open():
                if not await opener.open_accounts():
                    cluster.errors.append("the bank accounts could not be opened (no fault injected yet)")
            trigger = TxnCrashTrigger(cluster, faults, nursery, bank.txn_tablets)
            cluster.apply_listeners.append(trigger.on_applied)
            faults.duration_s = BANK_FAULT_PHASE_S
        heal_at = trio.current_time() + faults.duration_s
        heal_phase_s = BANK_HEAL_PHASE_S if bank is not None else HEAL_PHASE_S

        async def run_faults() -> None:
            if bank is not None:
                trigger.armed = True
            await faults.run()
            if bank is not None:
                trigger.armed = False  # no await since heal_all: nothing fired after healing

        async with trio.open_nursery() as work:
            work.start_soon(run_faults)
            for i in range(plan.clients):
                home = plan.node_ids[i % len(plan.node_ids)]
                if bank is not None and bank.opened:
                    work.start_soon(cluster.run_bank_client, cluster.bank_client(f"c{i}", home, str(i), bank), heal_at + heal_phase_s)
                elif bank is None:
                    client = cluster.client(f"c{i}", home)
                    work.start_soon(cluster.run_client, client, random.Random(f"{plan.seed}/client/{i}"), heal_at + HEAL_PHASE_S)
        await cluster.check_liveness()
        if bank is not None and bank.opened:
            await cluster.check_bank_liveness(bank)
        await faults.check_rejoined()
        leftovers = await cluster.await_quiescent()
        committed = cluster.committed()
        account_versions = cluster.account_versions() if bank is not None else {}
        for node in cluster.nodes.values():
            cluster.collect_marks(node)
        nursery.cancel_scope.cancel()
    return SimOutcome(cluster.history, committed, cluster.applied, cluster.lease_violations, cluster.errors,
                      cluster.marks, cluster.counters, net.trace(), net.trace_digest(), bank, account_versions, leftovers)

