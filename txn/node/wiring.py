"""The one place a node is assembled: from its configuration and an environment.

Role: `build_node(config, node_id, env)` creates the `Node` and one
`TabletReplica` per tablet it replicates; `serve_node(node, env)` opens the
transport (and the `/metrics` endpoint, when the environment names its
address) and runs the clock watch and every replica until cancelled. The
environment says what is real and what is simulated: the clock, where
engines come from, which transport, the monotonic time source, random
streams. `run_node()` (the `chronodb node` process: TCP bounded by
cluster.toml's `[limits]`, LevelDB, the system clock) and the whole-stack
simulation (txn/sim/cluster_sim.py: the simulated network, `DictEngine`s,
virtual clocks) both go through these two functions, so the simulation runs
the node that ships.

Each replica runs under `supervise_replica` (txn/node/rebuild.py): a
replica whose storage fails is rebuilt from its peers (corruption, or
`chronodb repair`) or restarted on its store (a full disk), while the node's
other tablets keep serving.

Invariants: LevelDB directories are opened by this process alone (LevelDB's
lock) and closed on the way out, also after cancellation, after the node's
log-writer thread (txn/node/log_writer.py) has stopped; a corrupt tablet
directory does not stop the node (it is set aside and that replica rebuilt);
start-up problems (a port in use, the node's or its metrics port, a store
that cannot be opened for another reason) raise `NodeStartError` with a
one-line reason.
"""

from __future__ import annotations

import errno
import logging
import os
from typing import Any, AsyncContextManager, Awaitable, Callable

import attrs
import prometheus_client
import trio

from hlc import HybridClock
from hlc.physical import SkewedClock, SystemClock
from mvcc.engine import Batch, Engine
from paxos.types import PaxosConfig
from txn.net.messaging import AddressInUse, TransportError
from txn.net.tls import NodeTls
from txn.net.transport import open_tcp_transport
from txn.node.config import ClusterConfig, ConfigError, TabletConfig, ensure_node_dir
from txn.node.log_writer import LogWriter
from txn.node.metrics_http import open_metrics_listeners, serve_metrics
from txn.node.rebuild import StartError, TabletEngines, supervise_replica
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
    # Commit-wait releases to within the event loop's timer resolution by yielding for the
    # last millisecond (txn/tablet/tablet_replica.py): real nodes only, for the same reason.
    precise_commit_wait: bool = False
    # How each replica's Paxos log writes its synced batches off the event loop (paxos/driver.py):
    # in the node's log-writer thread on real nodes (txn/node/log_writer.py); after a checkpoint in the
    # simulation (`write_synced_after_checkpoint`: other tasks run meanwhile, in virtual time);
    # None: inline.
    write_synced: Callable[[Engine, Batch], Awaitable[None]] | None = None
    # The real stores, which a corrupt replica's rebuild replaces (txn/node/rebuild.py);
    # None in the simulation (no rebuild: `chronodb repair` is refused there).
    engines: TabletEngines | None = None


def trio_monotonic_ns() -> int:
    return round(trio.current_time() * 1e9)


def build_node(config: ClusterConfig, node_id: str, env: NodeEnvironment) -> Node:
    node = Node(config, node_id, env.clock, monitor_clocks=env.monitor_clocks)
    node.can_rebuild = env.engines is not None
    for tablet in config.tablets_of(node_id):
        replica = make_replica(node, env, tablet, env.open_engine(tablet))
        if env.engines is not None and tablet.id in env.engines.corrupt_on_open:
            replica.rebuild_reason = env.engines.corrupt_on_open[tablet.id]
        node.install_replica(replica)
    node.watch.update_fence()
    return node


def make_replica(node: Node, env: NodeEnvironment, tablet: TabletConfig, engine: Engine) -> TabletReplica:
    return TabletReplica(
        node_id=node.node_id, tablet=tablet, engine=engine, clock=env.clock,
        max_offset_ns=node.config.max_offset_ns, send=node.send_paxos(tablet.id),
        monotonic_ns=env.monotonic_ns, paxos_config=env.paxos_config,
        seed=f"{env.seed}/{tablet.id}", gc_retention_ns=env.gc_retention_ns or node.config.gc_retention_ns,
        offload_compaction=env.offload_compaction, precise_commit_wait=env.precise_commit_wait,
        write_synced=env.write_synced, decision_retention_ns=node.config.decision_retention_ns,
    )


async def write_synced_after_checkpoint(engine: Engine, batch: Batch) -> None:
    """The simulation's: other tasks run first (as while a thread writes), then the write, inline."""
    await trio.lowlevel.checkpoint()
    engine.apply(batch, sync=True)


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
                nursery.start_soon(node.watch.probe_loop, lambda peer, msg, timeout_s: transport.call(peer, msg, timeout_s=timeout_s),
                                   transport.connected)
            for replica in list(node.replicas.values()):
                await nursery.start(supervise_replica, node, replica.tablet,
                                    lambda engine, tablet=replica.tablet: make_replica(node, env, tablet, engine), env.engines)
            log.info("node %s serving %d tablets at %s", node.node_id, len(node.replicas), getattr(transport, "address", "?"))
            task_status.started(node)


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
    try:
        engines = TabletEngines.open_all(data_dir, config, node_id)
    except StartError as error:
        raise NodeStartError(str(error)) from None
    log_writer = LogWriter(name=f"chronodb-{node_id}-log-writer")
    try:
        env = NodeEnvironment(
            clock=clock, open_engine=lambda tablet: engines.engines[tablet.id],
            open_transport=lambda handler: open_tcp_transport(
                node_id=node_id, cluster_id=config.cluster_id, host=me.host, port=me.port,
                peers=peers, clock=clock, handler=handler, logger=logging.getLogger("chronodb.transport"), tls=tls,
                options=config.limits.transport_options(),
            ),
            monotonic_ns=trio_monotonic_ns, seed=node_id, paxos_config=paxos_config or PaxosConfig(),
            gc_retention_ns=gc_retention_ns, metrics_address=me.metrics_address, offload_compaction=True,
            precise_commit_wait=True, write_synced=log_writer.write,
            engines=engines,
        )
        node = build_node(config, node_id, env)
        node.log_writer = log_writer
        try:
            await serve_node(node, env, task_status=task_status)
        except AddressInUse as error:
            raise NodeStartError(str(error)) from None
        except TransportError as error:
            raise NodeStartError(f"cannot listen on {me.host}:{me.port}: {error}") from None
    finally:
        log_writer.close()
        engines.close()
