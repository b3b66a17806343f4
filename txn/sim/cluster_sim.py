"""Seeded simulation of one tablet on three nodes: the node and client that ship, on a simulated world.

Role: each node is assembled by `txn.node.wiring.build_node` and run by
`serve_node` exactly as `chronodb node` does, but on the simulated network
(txn/net/simnet.py), `DictEngine`s whose crashes lose unsynced writes, and
`VirtualClock`s with offsets; clients are the real client library
(txn/client/) on a simulated connection, so its retry and outcome-unknown
rules run here too. `simulate(seed)` returns (history, committed versions,
counters); tests check the history with txn/sim/checkers.py. Everything
random comes from the seed: the plan, the network's per-sender streams, and
trio's scheduler (its module-level random is seeded, so task order replays).
"""

from __future__ import annotations

import contextlib
import random
from typing import Any, AsyncIterator

import attrs
import trio
import trio.testing

from hlc import HybridClock
from hlc.physical import VirtualClock
from mvcc.engine import DictEngine
from txn.client import Client, ClientError, OutcomeUnknown, open_client
from txn.net.simnet import SimNetConfig, SimNetwork
from txn.node.config import ClusterConfig, NodeConfig, TabletConfig
from txn.node.server import Node
from txn.node.wiring import NodeEnvironment, build_node, serve_node, trio_monotonic_ns
from txn.sim.checkers import FAILED, OK, UNKNOWN, Committed, Op

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

    def environment(self, node_id: str) -> NodeEnvironment:
        hlc = HybridClock(self.clocks[node_id], MAX_OFFSET_NS)
        return NodeEnvironment(
            clock=hlc, open_engine=lambda tablet: self.engines[node_id],
            open_transport=lambda handler: _already_open(self.net.endpoint(node_id, handler, hlc)),
            monotonic_ns=trio_monotonic_ns, seed=f"{self.seed}/{node_id}",
            gc_retention_ns=10**15, monitor_clocks=False,  # offsets stay within bounds here
        )

    async def run_node(self, node_id: str, nursery: trio.Nursery) -> None:
        env = self.environment(node_id)
        node = build_node(self.config, node_id, env)
        self.nodes[node_id] = node
        scope = trio.CancelScope()
        self.scopes[node_id] = scope

        async def body() -> None:
            with scope:
                await serve_node(node, env)

        nursery.start_soon(body)

    def crash(self, node_id: str) -> None:
        self.scopes[node_id].cancel()
        self.net.crash(node_id)
        self.engines[node_id] = self.engines[node_id].after_crash()
        self.crashes += 1

    async def restart(self, node_id: str, nursery: trio.Nursery) -> None:
        self.net.restart(node_id)
        await self.run_node(node_id, nursery)


@contextlib.asynccontextmanager
async def _already_open(transport: Any) -> AsyncIterator[Any]:
    yield transport


class SimConnection:
    """The client library's view of one node over the simulated network."""

    def __init__(self, endpoint: Any, node_id: str) -> None:
        self.endpoint = endpoint
        self.node_id = node_id
        self.cluster_id: str | None = "sim"
        self.broken: str | None = None

    async def call(self, message: object, *, timeout_s: float) -> object:
        return await self.endpoint.call(self.node_id, message, timeout_s=timeout_s)


class SimClient:
    """The real client library (txn/client/) on a simulated endpoint, recording its history."""

    def __init__(self, name: str, net: SimNetwork, history: list[Op], clock: VirtualClock, *, home: str = NODES[0]) -> None:
        self.name = name
        self.home = home
        self.endpoint = net.endpoint(name, self)
        # Clients speak TCP: their requests are never dropped (short of a
        # partition or crash), duplicated or reordered by the network; the
        # nodes do not deduplicate requests (see ARCHITECTURE.md).
        tcp_like = attrs.evolve(net.config, drop_rate=0.0, duplicate_rate=0.0, reorder=False)
        for node_id in NODES:
            net.set_link(name, node_id, tcp_like)
            net.set_link(node_id, name, tcp_like)
        self.history = history
        self.clock = clock
        self.last_problem = ""
        self.client: Client | None = None

    def handle_message(self, src: str, msg: object) -> None:
        pass

    async def handle_request(self, src: str, msg: object) -> object:
        raise AssertionError("clients serve nothing")

    @contextlib.asynccontextmanager
    async def _dial(self, address: tuple[str, int], cluster_id: str | None, clock: HybridClock) -> AsyncIterator[SimConnection]:
        yield SimConnection(self.endpoint, address[0])

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator["SimClient"]:
        addresses = [(n, 0) for n in [self.home] + [n for n in NODES if n != self.home]]
        async with open_client(addresses, cluster_id="sim", clock=HybridClock(self.clock, MAX_OFFSET_NS),
                               timeout_s=2.0, dial=self._dial) as client:
            self.client = client
            yield self

    async def write(self, key: bytes, value: bytes | None) -> None:
        assert self.client is not None
        start = round(trio.current_time() * 1e9)
        outcome, ts = OK, None
        try:
            result = await self.client.write([(key, value)])
            ts = result.ts
        except OutcomeUnknown as error:
            outcome, self.last_problem = UNKNOWN, str(error)
        except ClientError as error:
            outcome, self.last_problem = FAILED, str(error)
        end = round(trio.current_time() * 1e9)
        self.history.append(Op("write", key, value, start, end, outcome, ts))

    async def strong_read(self, key: bytes) -> None:
        assert self.client is not None
        start = round(trio.current_time() * 1e9)
        try:
            result = await self.client.get(key)
        except ClientError as error:
            self.last_problem = str(error)
            return
        end = round(trio.current_time() * 1e9)
        self.history.append(Op("read", key, result.value, start, end, OK, result.ts, result.version_ts, strong=True))

    async def stale_read(self, key: bytes, staleness_ns: int) -> None:
        assert self.client is not None
        start = round(trio.current_time() * 1e9)
        try:
            result = await self.client.get(key, stale_ns=staleness_ns, timeout_s=0.6)
        except ClientError as error:
            self.last_problem = str(error)
            return
        end = round(trio.current_time() * 1e9)
        self.history.append(Op("read", key, result.value, start, end, OK, result.ts, result.version_ts))


async def simulate(seed: int) -> tuple[list[Op], dict[bytes, Committed], dict[str, int]]:
    plan = random.Random(f"{seed}/plan")
    net = SimNetwork(seed, SimNetConfig(
        latency_ns_min=1_000_000, latency_ns_max=plan.choice([3_000_000, 8_000_000]),
        drop_rate=plan.choice([0.0, 0.01, 0.03]), duplicate_rate=plan.choice([0.0, 0.02]),
    ))
    config = ClusterConfig(
        "sim", MAX_OFFSET_NS, [NodeConfig(n, n, 0) for n in NODES],  # host = node id: the sim dialer's address
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
        clients = [SimClient(f"c{i}", net, history, VirtualClock(), home=NODES[i % len(NODES)]) for i in range(3)]
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
                    await client.stale_read(key, stream.choice([0, 50_000_000, 300_000_000]))
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

        async def run_client(client: SimClient, stream: random.Random) -> None:
            async with client.open():
                await workload(client, stream)

        async with trio.open_nursery() as work:
            work.start_soon(faults)
            for i, client in enumerate(clients):
                work.start_soon(run_client, client, random.Random(f"{seed}/client/{i}"))
        # The final answer: a strong read of every key through the leader (all applied there).
        final = SimClient("final", net, [], VirtualClock())
        served_by = None
        async with final.open():
            assert final.client is not None
            for key in KEYS:
                try:
                    served_by = (await final.client.get(key, timeout_s=10.0)).served_by
                except ClientError as error:
                    states = {n: (node.replicas["t1"].status(), sorted(node.replicas["t1"].pending), node.replicas["t1"].floor) for n, node in cluster.nodes.items()}
                    raise AssertionError(f"SEED={seed}: no leader after healing ({error}): {states}") from None
        assert served_by is not None
        leader = cluster.nodes[served_by].replicas["t1"]
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
