"""Seeded simulation of one tablet on three nodes: real Node/TabletReplica code,
simulated network, virtual clocks with offsets, crashes that lose unsynced writes.

`simulate(seed)` returns (history, committed versions, counters); the test
checks the history with txn/checkers.py. Everything random comes from the
seed: the plan, the network's per-sender streams, and trio's scheduler (its
module-level random is seeded, so task order replays too).
"""

from __future__ import annotations

import random

import attrs
import trio
import trio.testing

from hlc import HybridClock, Timestamp, VirtualClock
from mvcc.engine import DictEngine
from paxos.types import PaxosConfig
from txn import api
from txn.sim.checkers import FAILED, OK, UNKNOWN, Committed, Op
from txn.node.config import ClusterConfig, NodeConfig, TabletConfig
from txn.net.messaging import TransportError
from txn.node.server import Node
from txn.tablet.tablet_replica import TabletReplica
from txn.net.simnet import SimNetConfig, SimNetwork

NODES = ("n1", "n2", "n3")
MAX_OFFSET_NS = 10_000_000
KEYS = [b"a", b"b", b"c", b"d"]
FAULT_PHASE_S = 6.0
HEALED_PHASE_S = 4.0


def seed_trio_scheduler(seed: int) -> None:
    """Trio shuffles runnable batches with a module-level Random; seed it to replay."""
    trio._core._run._r.seed(f"{seed}/trio")  # noqa: SLF001 - test-only determinism hook


@attrs.define(eq=False)
class SimCluster:
    seed: int
    net: SimNetwork
    config: ClusterConfig
    clocks: dict[str, VirtualClock]
    engines: dict[str, DictEngine] = attrs.Factory(dict)
    nodes: dict[str, Node] = attrs.Factory(dict)
    scopes: dict[str, trio.CancelScope] = attrs.Factory(dict)
    crashes: int = 0

    async def run_node(self, node_id: str, nursery: trio.Nursery) -> None:
        hlc = HybridClock(self.clocks[node_id], MAX_OFFSET_NS)
        node = Node(self.config, node_id, hlc, monitor_clocks=False)  # offsets stay within bounds here
        node.transport = self.net.endpoint(node_id, node, hlc)
        tablet = self.config.tablets[0]
        replica = TabletReplica(
            node_id=node_id, tablet=tablet, engine=self.engines[node_id], clock=hlc,
            max_offset_ns=MAX_OFFSET_NS, send=node.send_paxos(tablet.id),
            monotonic_ns=lambda: round(trio.current_time() * 1e9), paxos_config=PaxosConfig(),
            seed=f"{self.seed}/{node_id}", gc_retention_ns=10**15,
        )
        node.replicas[tablet.id] = replica
        self.nodes[node_id] = node
        scope = trio.CancelScope()
        self.scopes[node_id] = scope

        async def body() -> None:
            with scope:
                await replica.run()

        nursery.start_soon(body)

    def crash(self, node_id: str) -> None:
        self.scopes[node_id].cancel()
        self.net.crash(node_id)
        self.engines[node_id] = self.engines[node_id].after_crash()
        self.crashes += 1

    async def restart(self, node_id: str, nursery: trio.Nursery) -> None:
        self.net.restart(node_id)
        await self.run_node(node_id, nursery)


class SimClient:
    """A client endpoint that routes to the leader and records its history."""

    def __init__(self, name: str, net: SimNetwork, history: list[Op]) -> None:
        self.name = name
        self.endpoint = net.endpoint(name, self)
        # Clients speak TCP: their requests are never dropped (short of a
        # partition or crash), duplicated or reordered by the network; the
        # nodes do not deduplicate requests (see ARCHITECTURE.md).
        tcp_like = attrs.evolve(net.config, drop_rate=0.0, duplicate_rate=0.0, reorder=False)
        for node_id in NODES:
            net.set_link(name, node_id, tcp_like)
            net.set_link(node_id, name, tcp_like)
        self.history = history
        self.leader = "n1"
        self.last_problem = ""

    def handle_message(self, src: str, msg: object) -> None:
        pass

    async def handle_request(self, src: str, msg: object) -> object:
        raise AssertionError("clients serve nothing")

    async def _leader_call(self, build, *, is_write: bool, timeout_s: float = 2.0):
        """(outcome, reply): retries not_leader and undelivered requests until the deadline."""
        deadline = trio.current_time() + timeout_s
        while trio.current_time() < deadline:
            remaining = deadline - trio.current_time()
            try:
                attempt_s = min(remaining, 1.0)
                reply = await self.endpoint.call(self.leader, build(int(attempt_s * 1e9)), timeout_s=attempt_s)
            except TransportError as error:
                self.last_problem = f"{self.leader}: {error!r}"
                if is_write:
                    return UNKNOWN, None
                self.leader = NODES[(NODES.index(self.leader) + 1) % len(NODES)]
                await trio.sleep(0.01)  # a crashed node fails calls at once: never spin in one instant
                continue
            if isinstance(reply, api.ErrorReply):
                self.last_problem = f"{self.leader}: {reply}"
                if reply.code == api.ErrorCode.OUTCOME_UNKNOWN:
                    return UNKNOWN, None
                if reply.leader_hint in NODES and reply.leader_hint != self.leader:
                    self.leader = reply.leader_hint
                else:
                    self.leader = NODES[(NODES.index(self.leader) + 1) % len(NODES)]
                    await trio.sleep(0.02)
                continue
            return OK, reply
        return FAILED, None

    async def write(self, key: bytes, value: bytes | None) -> None:
        start = round(trio.current_time() * 1e9)
        outcome, reply = await self._leader_call(
            lambda t: api.WriteRequest("t1", (api.KeyWrite(key, value),), t), is_write=True)
        end = round(trio.current_time() * 1e9)
        self.history.append(Op("write", key, value, start, end, outcome, reply.ts if reply else None))

    async def strong_read(self, key: bytes) -> None:
        start = round(trio.current_time() * 1e9)
        outcome, reply = await self._leader_call(
            lambda t: api.ReadRequest("t1", key, api.ReadMode.STRONG, None, t), is_write=False)
        end = round(trio.current_time() * 1e9)
        if outcome == OK:
            self.history.append(Op("read", key, reply.value, start, end, OK, reply.ts, reply.version_ts, strong=True))

    async def stale_read(self, key: bytes, node_id: str, staleness_ns: int, clock: VirtualClock) -> None:
        start = round(trio.current_time() * 1e9)
        at = Timestamp(clock.now_ns() - staleness_ns, 0)
        try:
            reply = await self.endpoint.call(node_id, api.ReadRequest("t1", key, api.ReadMode.AT, at, 500_000_000), timeout_s=0.6)
        except TransportError:
            return
        if isinstance(reply, api.ReadReply):
            end = round(trio.current_time() * 1e9)
            self.history.append(Op("read", key, reply.value, start, end, OK, reply.ts, reply.version_ts))


async def simulate(seed: int) -> tuple[list[Op], dict[bytes, Committed], dict[str, int]]:
    plan = random.Random(f"{seed}/plan")
    net = SimNetwork(seed, SimNetConfig(
        latency_ns_min=1_000_000, latency_ns_max=plan.choice([3_000_000, 8_000_000]),
        drop_rate=plan.choice([0.0, 0.01, 0.03]), duplicate_rate=plan.choice([0.0, 0.02]),
    ))
    config = ClusterConfig(
        "sim", MAX_OFFSET_NS, [NodeConfig(n, "sim", 0) for n in NODES],
        [TabletConfig("t1", b"", None, NODES, "n1")],
    )
    # Offsets within +-max_offset/2, so any two clocks are within max_offset.
    clocks = {n: VirtualClock(offset_ns=plan.randint(-MAX_OFFSET_NS // 2, MAX_OFFSET_NS // 2)) for n in NODES}
    cluster = SimCluster(seed, net, config, clocks, {n: DictEngine() for n in NODES})
    history: list[Op] = []
    counters = {"crashes": 0, "partitions": 0}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(net.pump)
        for node_id in NODES:
            await cluster.run_node(node_id, nursery)
        clients = [SimClient(f"c{i}", net, history) for i in range(3)]
        fault_end = trio.current_time() + FAULT_PHASE_S
        end = fault_end + HEALED_PHASE_S

        async def workload(client: SimClient, stream: random.Random) -> None:
            while trio.current_time() < end:
                key = stream.choice(KEYS)
                choice = stream.random()
                if choice < 0.5:
                    value = None if stream.random() < 0.1 else f"{client.name}-{stream.randrange(10**6)}".encode()
                    await client.write(key, value)
                elif choice < 0.8:
                    await client.strong_read(key)
                else:
                    node_id = stream.choice(NODES)
                    await client.stale_read(key, node_id, stream.choice([0, 50_000_000, 300_000_000]), clocks[node_id])
                await trio.sleep(stream.uniform(0.001, 0.05))

        async def faults() -> None:
            stream = random.Random(f"{seed}/faults")
            await trio.sleep(1.0)
            while trio.current_time() < fault_end - 1.0:
                await trio.sleep(stream.uniform(0.3, 1.5))
                victim = stream.choice(NODES)
                if stream.random() < 0.5:
                    cluster.crash(victim)
                    counters["crashes"] += 1
                    await trio.sleep(stream.uniform(0.2, 1.5))
                    await cluster.restart(victim, nursery)
                else:
                    others = [n for n in NODES if n != victim]
                    net.partition([victim], others, one_way=stream.random() < 0.3)
                    counters["partitions"] += 1
                    await trio.sleep(stream.uniform(0.3, 1.5))
                    net.heal()
            net.heal()

        async with trio.open_nursery() as work:
            work.start_soon(faults)
            for i, client in enumerate(clients):
                work.start_soon(workload, client, random.Random(f"{seed}/client/{i}"))
        # The final answer: a strong read of every key through the leader (all applied there).
        final = SimClient("final", net, [])
        for key in KEYS:
            outcome, _ = await final._leader_call(
                lambda t, k=key: api.ReadRequest("t1", k, api.ReadMode.STRONG, None, t), is_write=False, timeout_s=10.0)
            if outcome != OK:
                states = {n: (node.replicas["t1"].status(), sorted(node.replicas["t1"].pending), node.replicas["t1"].floor) for n, node in cluster.nodes.items()}
                raise AssertionError(f"SEED={seed}: no leader after healing ({final.last_problem}): {states}")
        leader = cluster.nodes[final.leader].replicas["t1"]
        committed = {}
        for key in KEYS:
            versions = sorted((v.ts, v.value) for v in leader.state.store.versions(key))
            committed[key] = Committed(key, versions)
        counters["acked_after_heal"] = sum(
            1 for op in history if op.kind == "write" and op.outcome == OK and op.start_ns > fault_end * 1e9)
        nursery.cancel_scope.cancel()
    return history, committed, counters


def run_seed(seed: int) -> tuple[list[Op], dict[bytes, Committed], dict[str, int]]:
    seed_trio_scheduler(seed)
    return trio.run(simulate, seed, clock=trio.testing.MockClock(autojump_threshold=0))
