"""A chronodb node: hosts its tablet replicas and answers clients and peers.

Role: opens one LevelDB per tablet replica (`DIR/<node>/tablets/<tablet>/`),
starts a `TabletReplica` for each, and listens on the node's address for
peers (Paxos traffic in `PaxosEnvelope`s, one-way) and clients (requests of
txn/api.py). `run_node()` runs until cancelled; startup problems raise
`NodeStartError` with a one-line reason.

Clock safety (DESIGN.md contract 6, hlc/offsets.py): the node probes every
peer's physical clock each `PROBE_INTERVAL_S` and fences itself while its
offset from a majority of peers is beyond 80% of max_offset, and at boot
until it has measured enough peers. A fenced node drops all Paxos traffic in
and out (so it neither grants nor takes leases: to the others it looks
partitioned) and refuses reads and writes; it rejoins by itself.

Admin requests: `SkewRequest` drives the node's `SkewedClock` (skew injection;
not persisted), `Inspect*Request`s read a replica's state for the inspector.

Invariants:
- a request never crashes the node: a failure becomes an `ErrorReply`;
- a node serves only tablets it replicates; others get `unknown_tablet`;
- LevelDB directories are opened by this process alone (LevelDB's lock),
  and closed on the way out, also after cancellation.
"""

from __future__ import annotations

import logging
import os
from contextlib import ExitStack
from typing import Any

import trio

from hlc import HybridClock, SkewedClock, SystemClock
from hlc.offsets import OffsetMonitor
from mvcc.engine import EngineError
from mvcc.engine_leveldb import LevelDbEngine
from paxos.types import PaxosConfig
from txn import api, wire
from txn.node.config import ClusterConfig, ConfigError, ensure_node_dir, tablet_dir
from txn.api.errors import RequestFailed, failure
from txn.tablet.tablet_replica import TabletReplica
from txn.net.messaging import AddressInUse, TransportError
from txn.net.transport import open_tcp_transport

PROBE_INTERVAL_S = 0.2
PROBE_TIMEOUT_S = 0.5
MAX_LOG_ENTRIES = 1000

log = logging.getLogger("chronodb.node")


class NodeStartError(Exception):
    """The node cannot start: port in use, data directory locked or foreign, ..."""


def monotonic_ns() -> int:
    return round(trio.current_time() * 1e9)


class Node:
    """The transport's handler: routes Paxos messages and client requests to replicas."""

    def __init__(self, config: ClusterConfig, node_id: str, clock: HybridClock, *, monitor_clocks: bool = True) -> None:
        self.config = config
        self.node_id = node_id
        self.clock = clock
        self.replicas: dict[str, TabletReplica] = {}
        self.transport: Any = None
        self.bad_paxos_messages = 0
        self.peers = [n.id for n in config.nodes if n.id != node_id]
        self.monitor = OffsetMonitor(self.peers, config.max_offset_ns)
        if not monitor_clocks:
            self.monitor.fenced, self.monitor.reason = False, "clock monitoring off"
        self.strobe_scope: trio.CancelScope | None = None
        self.nursery: trio.Nursery | None = None

    @property
    def fenced(self) -> bool:
        return self.monitor.fenced

    # ---- Handler protocol ---------------------------------------------------

    def handle_message(self, src: str, msg: Any) -> None:
        if not isinstance(msg, api.PaxosEnvelope):
            log.warning("dropping unexpected one-way message %s from %s", type(msg).__name__, src)
            return
        if self.fenced:
            return  # fenced: to Paxos, this node is partitioned away
        replica = self.replicas.get(msg.tablet_id)
        if replica is None or src not in replica.tablet.replicas:
            self.bad_paxos_messages += 1
            return
        try:
            inner = wire.decode(msg.payload)
        except wire.ProtocolError as error:
            self.bad_paxos_messages += 1
            log.warning("bad Paxos payload from %s for %s: %s", src, msg.tablet_id, error)
            return
        replica.paxos.deliver(src, inner)

    async def handle_request(self, src: str, msg: Any) -> Any:
        try:
            return await self._dispatch(msg)
        except RequestFailed as failed:
            return failed.reply

    async def _dispatch(self, msg: Any) -> Any:
        if isinstance(msg, api.TabletMapRequest):
            return self.tablet_map()
        if isinstance(msg, api.StatusRequest):
            return self.status()
        if isinstance(msg, api.WriteRequest):
            return await self._replica(msg.tablet_id).write(msg.writes, msg.timeout_ns)
        if isinstance(msg, api.ReadRequest):
            return await self._replica(msg.tablet_id).read(msg)
        if isinstance(msg, api.ScanRequest):
            return await self._replica(msg.tablet_id).scan(msg)
        if isinstance(msg, api.ClockProbe):
            return api.ClockProbeReply(self.clock.physical.now_ns())
        if isinstance(msg, api.SkewRequest):
            return self.skew(msg)
        if isinstance(msg, api.InspectKeyRequest):
            return self.inspect_key(msg)
        if isinstance(msg, api.InspectTabletRequest):
            return self.inspect_tablet(msg)
        if isinstance(msg, api.InspectLogRequest):
            return self.inspect_log(msg)
        raise failure(api.ErrorCode.BAD_REQUEST, f"unknown request {type(msg).__name__}")

    def _replica(self, tablet_id: str) -> TabletReplica:
        replica = self.replicas.get(tablet_id)
        if replica is None:
            raise failure(api.ErrorCode.UNKNOWN_TABLET, f"node {self.node_id} holds no replica of tablet {tablet_id!r}")
        return replica

    # ---- answers ---------------------------------------------------------------

    def tablet_map(self) -> api.TabletMapReply:
        nodes = tuple(api.NodeInfo(n.id, n.host, n.port) for n in self.config.nodes)
        tablets = []
        for tablet in self.config.tablets:
            replica = self.replicas.get(tablet.id)
            leader = replica.leader_hint() if replica is not None else None
            tablets.append(api.TabletInfo(tablet.id, tablet.start, tablet.end, tablet.replicas, leader))
        return api.TabletMapReply(self.config.cluster_id, self.config.max_offset_ns, nodes, tuple(tablets))

    def status(self) -> api.NodeStatusReply:
        return api.NodeStatusReply(
            self.node_id, self.clock.now(), self.clock.physical.now_ns(), self.fenced, self.monitor.reason,
            tuple(replica.status() for replica in self.replicas.values()),
        )

    def send_paxos(self, tablet_id: str):
        def send(dst: str, message: object) -> None:
            if self.transport is not None and not self.fenced:
                self.transport.send(dst, api.PaxosEnvelope(tablet_id, wire.encode(message)))
        return send


    # ---- clock monitoring and skew injection ------------------------------------

    async def clock_probe_loop(self) -> None:
        while True:
            async with trio.open_nursery() as nursery:
                for peer in self.peers:
                    nursery.start_soon(self._probe, peer)
            self._update_fence()
            await trio.sleep(PROBE_INTERVAL_S)

    async def _probe(self, peer: str) -> None:
        physical = self.clock.physical
        sent = physical.now_ns()
        try:
            reply = await self.transport.call(peer, api.ClockProbe(), timeout_s=PROBE_TIMEOUT_S)
        except TransportError:
            return
        if isinstance(reply, api.ClockProbeReply):
            self.monitor.record(peer, sent, reply.physical_ns, physical.now_ns())

    def _update_fence(self) -> None:
        was, was_reason = self.fenced, self.monitor.reason
        state = self.monitor.evaluate(self.clock.physical.now_ns())
        for replica in self.replicas.values():
            replica.fenced = state.fenced
        if state.fenced != was:
            if state.fenced:
                log.warning("node %s FENCED: %s; not serving, not granting or taking leases", self.node_id, state.reason)
            elif was_reason.startswith("waiting"):
                log.info("node %s measured its peers' clocks (%s): serving", self.node_id, self._offsets_text())
            else:
                log.warning("node %s unfenced: %s (%s); serving again", self.node_id, state.reason, self._offsets_text())

    def _offsets_text(self) -> str:
        return ", ".join(f"{peer} {offset / 1e6:+.3f}ms±{error / 1e6:.3f}" for peer, offset, error in self.monitor.offsets())

    def skewed_clock(self) -> SkewedClock:
        physical = self.clock.physical
        if not isinstance(physical, SkewedClock):
            raise failure(api.ErrorCode.BAD_REQUEST, f"node {self.node_id} runs on a clock that cannot be skewed")
        return physical

    def skew(self, request: api.SkewRequest) -> api.NodeClockReply:
        physical = self.skewed_clock()
        if request.action != api.SkewAction.SHOW and self.strobe_scope is not None:
            self.strobe_scope.cancel()
            self.strobe_scope = None
        if request.action == api.SkewAction.SET:
            if request.offset_ns is not None:
                physical.set_offset(request.offset_ns)
            if request.drift_ppm is not None:
                physical.set_drift(request.drift_ppm)
        elif request.action == api.SkewAction.BUMP:
            physical.bump(request.offset_ns or 0)
        elif request.action == api.SkewAction.CLEAR:
            physical.clear()
        elif request.action == api.SkewAction.STROBE:
            if not (request.offset_ns and request.period_ns and request.duration_ns) or request.period_ns <= 0:
                raise failure(api.ErrorCode.BAD_REQUEST, "strobe needs an offset, a positive period and a duration")
            assert self.nursery is not None
            self.strobe_scope = trio.CancelScope()
            self.nursery.start_soon(self._strobe, self.strobe_scope, request.offset_ns, request.period_ns, request.duration_ns)
        if request.action != api.SkewAction.SHOW:
            log.warning("node %s: clock skew %s: offset %dns, drift %dppm", self.node_id, request.action,
                        physical.offset_ns, physical.drift_ppm)
        return self.clock_report()

    async def _strobe(self, scope: trio.CancelScope, offset_ns: int, period_ns: int, duration_ns: int) -> None:
        physical = self.skewed_clock()
        base = physical.offset_ns
        with scope:
            with trio.move_on_after(duration_ns / 1e9):
                high = True
                while True:
                    physical.set_offset(base + offset_ns if high else base)
                    high = not high
                    await trio.sleep(period_ns / 1e9)
            physical.set_offset(base)
        if self.strobe_scope is scope:
            self.strobe_scope = None

    def clock_report(self) -> api.NodeClockReply:
        physical = self.clock.physical
        rejected = {}
        if self.transport is not None:
            rejected = {peer: stats.rejected_clock for peer, stats in self.transport.statistics().peers.items()}
        offsets = {peer: (offset, error) for peer, offset, error in self.monitor.offsets()}
        peers = tuple(
            api.PeerClock(peer, *offsets.get(peer, (0, -1)), rejected.get(peer, 0)) for peer in self.peers
        )
        return api.NodeClockReply(
            self.node_id, getattr(physical, "offset_ns", 0), getattr(physical, "drift_ppm", 0),
            self.strobe_scope is not None, self.fenced, self.monitor.reason, physical.now_ns(), self.clock.now(), peers,
        )

    # ---- inspection ------------------------------------------------------------

    def inspect_key(self, request: api.InspectKeyRequest) -> api.InspectKeyReply:
        replica = self._replica(request.tablet_id)
        store = replica.state.store
        versions = sorted((api.VersionInfo(v.ts, v.value) for v in store.versions(request.key)), key=lambda v: v.ts)
        intent = store.intent(request.key)
        return api.InspectKeyReply(
            self.node_id, request.tablet_id, replica.state.applied_index(), versions,
            intent.txn_id if intent else None, intent.ts if intent else None,
        )

    def inspect_tablet(self, request: api.InspectTabletRequest) -> api.InspectTabletReply:
        replica = self._replica(request.tablet_id)
        stats = replica.state.store.statistics()
        size = getattr(replica.engine, "size_on_disk", lambda: 0)()
        return api.InspectTabletReply(
            self.node_id, replica.status(), stats.keys, stats.versions, stats.tombstones, stats.intents,
            stats.approximate_bytes, stats.oldest_version_ts, stats.newest_version_ts, size,
        )

    def inspect_log(self, request: api.InspectLogRequest) -> api.InspectLogReply:
        replica = self._replica(request.tablet_id)
        status = replica.paxos.status()
        start = max(request.from_index, status.first_index)
        stop = min(request.to_index, status.last_index, start + MAX_LOG_ENTRIES - 1)
        entries = replica.paxos.entries(start, stop) if stop >= start else []
        return api.InspectLogReply(
            self.node_id, status.first_index, status.last_index,
            tuple(api.LogEntryInfo(index, str(ballot), command) for index, ballot, command in entries),
        )


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
    gc_retention_ns: int | None = None,
    task_status: trio.TaskStatus[Node] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run one node until cancelled."""
    try:
        me = config.node(node_id)
        ensure_node_dir(data_dir, config, node_id)
    except ConfigError as error:
        raise NodeStartError(str(error)) from None
    clock = HybridClock(physical or SkewedClock(SystemClock()), config.max_offset_ns)
    node = Node(config, node_id, clock)
    peers = {n.id: n.address for n in config.nodes if n.id != node_id}
    with ExitStack() as stack:
        engines = open_engines(stack, data_dir, config, node_id)
        for tablet in config.tablets_of(node_id):
            node.replicas[tablet.id] = TabletReplica(
                node_id=node_id, tablet=tablet, engine=engines[tablet.id], clock=clock,
                max_offset_ns=config.max_offset_ns, send=node.send_paxos(tablet.id),
                monotonic_ns=monotonic_ns, paxos_config=paxos_config or PaxosConfig(),
                seed=f"{node_id}/{tablet.id}", gc_retention_ns=gc_retention_ns or config.gc_retention_ns,
            )
        node._update_fence()
        try:
            transport_cm = open_tcp_transport(
                node_id=node_id, cluster_id=config.cluster_id, host=me.host, port=me.port,
                peers=peers, clock=clock, handler=node, logger=logging.getLogger("chronodb.transport"),
            )
            async with transport_cm as transport:
                node.transport = transport
                async with trio.open_nursery() as nursery:
                    node.nursery = nursery
                    nursery.start_soon(node.clock_probe_loop)
                    for replica in node.replicas.values():
                        await nursery.start(replica.run)
                    log.info("node %s serving %d tablets on %s:%d", node_id, len(node.replicas), me.host, me.port)
                    task_status.started(node)
        except AddressInUse as error:
            raise NodeStartError(str(error)) from None
        except TransportError as error:
            raise NodeStartError(f"cannot listen on {me.host}:{me.port}: {error}") from None
