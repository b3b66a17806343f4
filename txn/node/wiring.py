"""The one place a node is assembled: from its configuration and an environment.

Role: `build_node(config, node_id, env)` creates the `Node` and one
`TabletReplica` per tablet it replicates; `serve_node(node, env)` opens the
transport (and the `/metrics` endpoint, when the environment names its
address) and runs the clock watch and every replica until cancelled. The
environment says what is real and what is simulated: the clock, where
engines come from, which transport, the monotonic time source, random
streams. `run_node()` (the `chronodb node` process: TCP, LevelDB, the system
clock) and the whole-stack simulation (txn/sim/cluster_sim.py: the simulated
network, `DictEngine`s, virtual clocks) both go through these two functions,
so the simulation runs the node that ships.

Invariants: LevelDB directories are opened by this process alone (LevelDB's
lock) and closed on the way out, also after cancellation; start-up problems
(a port in use, the node's or its metrics port) raise `NodeStartError` with
a one-line reason.
"""

from __future__ import annotations

import errno
import logging
import os
from contextlib import ExitStack
from typing import Any, AsyncContextManager, Callable

import attrs
import prometheus_client
import trio

from hlc import HybridClock
from hlc.physical import SkewedClock, SystemClock
from mvcc.engine import Engine, EngineError
from mvcc.engine_leveldb import LevelDbEngine
from paxos.types import PaxosConfig
from txn.net.messaging import AddressInUse, TransportError
from txn.net.tls import NodeTls
from txn.net.transport import open_tcp_transport
from txn.node.config import ClusterConfig, ConfigError, TabletConfig, ensure_node_dir, tablet_dir
from txn.node.metrics_http import open_metrics_listeners, serve_metrics
from txn.node.server import Node, NodeStartError
from txn.tablet.tablet_replica import TabletReplica

log = logging.getLogger("chronodb.node")


@attrs.frozen
class NodeEnvironment:
    """What a node runs on. Everything else comes from cluster.toml."""

    clock: HybridClock
    open_engine: Callable[[TabletConfig], Engine]
    open_transport: Callable[[Node], AsyncContextManager[Any]]
    monotonic_ns: Callable[[], int]
    seed: str  # root of the node's random streams: f"{seed}/{tablet}"
    paxos_config: PaxosConfig = attrs.Factory(PaxosConfig)
    gc_retention_ns: int | None = None  # None: the cluster's gc_retention
    monitor_clocks: bool = True
    metrics_address: tuple[str, int] | None = None  # where to serve /metrics; None: nowhere (the simulation)
    # LevelDB compactions in a worker thread (txn/tablet/space.py): real nodes only;
    # the simulation keeps every call inline (a thread would escape its virtual clock).
    offload_compaction: bool = False


def trio_monotonic_ns() -> int:
    return round(trio.current_time() * 1e9)


def build_node(config: ClusterConfig, node_id: str, env: NodeEnvironment) -> Node:
    node = Node(config, node_id, env.clock, monitor_clocks=env.monitor_clocks)
    for tablet in config.tablets_of(node_id):
        node.replicas[tablet.id] = TabletReplica(
            node_id=node_id, tablet=tablet, engine=env.open_engine(tablet), clock=env.clock,
            max_offset_ns=config.max_offset_ns, send=node.send_paxos(tablet.id),
            monotonic_ns=env.monotonic_ns, paxos_config=env.paxos_config,
            seed=f"{env.seed}/{tablet.id}", gc_retention_ns=env.gc_retention_ns or config.gc_retention_ns,
            offload_compaction=env.offload_compaction,
        )
        node.replicas[tablet.id].txns.call_tablet = node.call_tablet
        node.metrics.attach(node.replicas[tablet.id])
    node.watch.update_fence()
    return node


async def serve_node(node: Node, env: NodeEnvironment, *, task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED) -> None:
    """Open the metrics port and the transport, run the clock watch and the replicas until cancelled."""
    metrics_listeners = await _open_metrics(env.metrics_address)
    try:
        await _serve(node, env, metrics_listeners, task_status)
    finally:
        for listener in metrics_listeners:
            await trio.aclose_forcefully(listener)


async def _open_metrics(address: tuple[str, int] | None) -> list[trio.SocketListener]:
    """Bound first, so a taken port fails the start before anything else opens."""
    if address is None:
        return []
    host, port = address
    try:
        return await open_metrics_listeners(host, port)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise NodeStartError(f"cannot listen for metrics on {host}:{port}: the address is already in use "
                                 "(another node running?)") from None
        raise NodeStartError(f"cannot listen for metrics on {host}:{port}: {error.strerror or error}") from None


async def _serve(node: Node, env: NodeEnvironment, metrics_listeners: list[trio.SocketListener],
                 task_status: trio.TaskStatus[Node]) -> None:
    async with env.open_transport(node) as transport:
        node.transport = transport
        async with trio.open_nursery() as nursery:
            node.nursery = nursery
            if metrics_listeners:
                await nursery.start(serve_metrics, metrics_listeners, node.metrics.render)
            if env.monitor_clocks:
                nursery.start_soon(node.watch.probe_loop, lambda peer, msg, timeout_s: transport.call(peer, msg, timeout_s=timeout_s))
            for replica in node.replicas.values():
                await nursery.start(replica.run)
            log.info("node %s serving %d tablets at %s", node.node_id, len(node.replicas), getattr(transport, "address", "?"))
            task_status.started(node)


def open_engines(stack: ExitStack, data_dir: str | os.PathLike[str], config: ClusterConfig, node_id: str) -> dict[str, LevelDbEngine]:
    engines = {}
    for tablet in config.tablets_of(node_id):
        path = tablet_dir(data_dir, node_id, tablet.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            engine = LevelDbEngine(str(path))
        except EngineError as error:
            raise NodeStartError(str(error)) from None
        stack.callback(engine.close)
        engines[tablet.id] = engine
    return engines


async def run_node(
    config: ClusterConfig, node_id: str, data_dir: str | os.PathLike[str], *,
    physical: SkewedClock | None = None, paxos_config: PaxosConfig | None = None,
    gc_retention_ns: int | None = None, tls: NodeTls | None = None,
    task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run one real node (TCP, LevelDB, the system clock) until cancelled; `tls` None is --insecure."""
    try:
        me = config.node(node_id)
        ensure_node_dir(data_dir, config, node_id)
    except ConfigError as error:
        raise NodeStartError(str(error)) from None
    clock = HybridClock(physical or SkewedClock(SystemClock()), config.max_offset_ns)
    peers = {n.id: n.address for n in config.nodes if n.id != node_id}
    # One node per process here: no `_created` series (Prometheus' text format
    # would show each as a gauge of its own, doubling every counter's lines).
    prometheus_client.disable_created_metrics()
    with ExitStack() as stack:
        engines = open_engines(stack, data_dir, config, node_id)
        env = NodeEnvironment(
            clock=clock, open_engine=lambda tablet: engines[tablet.id],
            open_transport=lambda handler: open_tcp_transport(
                node_id=node_id, cluster_id=config.cluster_id, host=me.host, port=me.port,
                peers=peers, clock=clock, handler=handler, logger=logging.getLogger("chronodb.transport"), tls=tls,
            ),
            monotonic_ns=trio_monotonic_ns, seed=node_id, paxos_config=paxos_config or PaxosConfig(),
            gc_retention_ns=gc_retention_ns, metrics_address=me.metrics_address, offload_compaction=True,
        )
        node = build_node(config, node_id, env)
        try:
            await serve_node(node, env, task_status=task_status)
        except AddressInUse as error:
            raise NodeStartError(str(error)) from None
        except TransportError as error:
            raise NodeStartError(f"cannot listen on {me.host}:{me.port}: {error}") from None
