"""A chronodb node: routes peers' Paxos traffic and clients' requests to its tablet replicas.

Role: the transport's handler (txn/net/messaging.py `Handler`). Peers send
one-way `PaxosEnvelope`s; clients and admins send requests (txn/api/).
`Node` holds the replicas, the clock watch (fencing) and the admin answers;
txn/node/wiring.py builds and runs it, the same way over TCP and in
simulation.

Invariants:
- a request never crashes the node: a failure becomes an `ErrorReply`, and
  an unexpected exception is logged and becomes an ERROR envelope in the
  transport;
- every answer (and every handler exception) is counted in the node's
  Prometheus metrics (`self.metrics`, txn/node/metrics.py); counting never
  fails a request;
- a node serves only tablets it replicates; others get `unknown_tablet`;
- a fenced node drops Paxos traffic both ways and refuses reads and writes;
- a peer's Paxos message is queued to its replica's driver without waking
  the driver's task; the transport's `messages_read`, after each read, runs
  the turns owed in the reading task (paxos/driver.py `turn_now`), so the
  messages of one read still share one turn and one synced write;
- every request and one-way message is checked against the sender's role
  (txn/api/permissions.py) before anything else: the TCP transport reads it
  from the certificate (`transport.role_of(src)`); a refused request is
  `ErrorReply(permission_denied)`, nothing done. A transport without roles
  (the simulated network) trusts its parties: nodes are peers, clients admins;
- a request carrying writes (write batch, prepare, one-phase or coordinator commit) whose
  keys or values exceed cluster.toml's limits is refused (`bad_request`)
  before anything is locked or proposed (txn/api/limits.py);
- at most `SCAN_SLOTS` requests that build a large reply (scans, transactional
  scans, export pages: up to 4 MiB of rows each, txn/api/limits.py) run at
  once, node-wide; the others wait their turn. The transport cuts off a
  client whose replies pile up unread (`max_queued_reply_bytes`) only once a
  reply is queued, and lets a connection have 256 requests in flight: without
  this, 100 pipelined scans built 100 replies at once (660 MB);
- a request that meets a corrupt store gets `unavailable` and that tablet's
  replica is rebuilt from its peers (txn/node/rebuild.py); the node and its
  other tablets carry on.
"""

from __future__ import annotations

import collections
import logging
from typing import Any, Callable

import trio

from hlc import HybridClock, Timestamp
from mvcc.engine import CorruptionError
from paxos.driver import PaxosDriver
from paxos.messages import Accepted
from txn import api, wire
from txn.api.errors import RequestFailed, failure
from txn.api.limits import oversize, txn_id_problem
from txn.api.permissions import permission_problem
from txn.node.admin import NodeAdmin
from txn.node.clock_watch import ClockWatch
from txn.node.durability import node_durability
from txn.node.export import export_page
from txn.node.metrics import CLIENT, NodeMetrics
from txn.net.messaging import PeerUnreachable, TransportError
from txn.net.peer_rules import Role
from txn.node.config import ClusterConfig
from txn.tablet.tablet_replica import TabletReplica

log = logging.getLogger("chronodb.node")

# Transaction requests, by type: the tablet's TabletTransactions method that answers it.
CALL_ATTEMPT_MIN_S = 0.3  # call_tablet: the shortest attempt

# Requests whose reply may be large (up to MAX_SCAN_REPLY_BYTES of rows plus one row, and its
# encoding): at most this many are built at once, node-wide (8 x ~8 MiB x 2 copies at worst).
SCAN_SLOTS = 8
LARGE_REPLY_REQUESTS = (api.ScanRequest, api.TxnScanRequest, api.ExportRequest)

# Requests carrying writes: their sizes are checked before anything else (txn/api/limits.py).
SIZED_REQUESTS = (api.WriteRequest, api.PrepareRequest, api.OnePhaseCommitRequest, api.CommitRequest)

TXN_HANDLERS: dict[type, Any] = {
    api.TxnReadRequest: lambda txns, msg: txns.read(msg),
    api.TxnScanRequest: lambda txns, msg: txns.scan(msg),
    api.PrepareRequest: lambda txns, msg: txns.prepare(msg),
    api.CommitRequest: lambda txns, msg: txns.commit(msg),
    api.OnePhaseCommitRequest: lambda txns, msg: txns.one_phase_commit(msg),
    api.AbortRequest: lambda txns, msg: txns.abort(msg),
    api.TxnStatusRequest: lambda txns, msg: txns.status(msg),
    api.ResolveRequest: lambda txns, msg: txns.resolve(msg),
}


class NodeStartError(Exception):
    """The node cannot start: port in use, data directory locked or foreign, ..."""


class Node:
    """The transport's handler: routes Paxos messages and client requests to replicas."""

    def __init__(self, config: ClusterConfig, node_id: str, clock: HybridClock, *, monitor_clocks: bool = True) -> None:
        self.config = config
        self.tablet_ids = frozenset(t.id for t in config.tablets)
        self.node_id = node_id
        self.clock = clock
        self.replicas: dict[str, TabletReplica] = {}
        # Replica supervision (txn/node/rebuild.py): each replica's cancel scope, and the
        # rebuilds asked for (tablet -> why) that its supervisor carries out once it stopped.
        self.replica_scopes: dict[str, trio.CancelScope] = {}
        self.rebuild_requests: dict[str, str] = {}
        # Tablets with no replica here: the node last found serving each (call_tablet tries it first).
        self.remote_leaders: dict[str, str] = {}
        self.can_rebuild = False  # real stores only (not the simulation)
        self.transport: Any = None
        # The node's log-writer thread (txn/node/log_writer.py; real nodes only), read by the metrics.
        self.log_writer: Any = None
        self.nursery: trio.Nursery | None = None
        self.bad_paxos_messages = 0
        self.permission_denied = 0
        self.peers = [n.id for n in config.nodes if n.id != node_id]
        # (sender, reason) -> messages refused: reason "permission" or "bad_paxos"; the
        # sender is a peer id, or "client" for everyone else (a bounded set of labels).
        self.rejected: collections.Counter[tuple[str, str]] = collections.Counter()
        # Paxos drivers given messages since the transport last called `messages_read` (ordered:
        # the simulation's turns must run in the same order every time).
        self._turns_owed: dict[PaxosDriver, None] = {}
        self.watch = ClockWatch(node_id, self.peers, clock, config.max_offset_ns, enabled=monitor_clocks)
        self.watch.on_change = self._set_fenced
        self.admin = NodeAdmin(self)
        self.scan_slots = trio.CapacityLimiter(SCAN_SLOTS)
        self.metrics = NodeMetrics(self)

    @property
    def fenced(self) -> bool:
        return self.watch.fenced

    def _set_fenced(self, fenced: bool) -> None:
        for replica in self.replicas.values():
            replica.fenced = fenced

    def install_replica(self, replica: TabletReplica) -> None:
        """Make `replica` the one serving its tablet here (at start, and after a rebuild or restart)."""
        replica.txns.call_tablet = self.call_tablet
        replica.fenced = self.fenced
        self.metrics.attach(replica)
        self.replicas[replica.tablet.id] = replica

    def request_rebuild(self, tablet_id: str, reason: str) -> None:
        """Stop the tablet's replica and rebuild it from its peers (its supervisor does the work)."""
        replica = self.replica(tablet_id)
        if not self.can_rebuild:
            raise failure(api.ErrorCode.BAD_REQUEST, f"node {self.node_id} cannot rebuild replicas (no real stores)")
        if replica.paxos.core.rebuilding:
            raise failure(api.ErrorCode.BAD_REQUEST, f"replica of tablet {tablet_id} on {self.node_id} is already rebuilding")
        self.rebuild_requests.setdefault(tablet_id, reason)
        scope = self.replica_scopes.get(tablet_id)
        if scope is not None:
            scope.cancel()

    # ---- Handler protocol ---------------------------------------------------

    def role_of(self, src: str) -> Role | None:
        """The sender's role: from the transport's certificates, else by name (simulation)."""
        if src == self.node_id:
            return Role.PEER  # call_tablet to a local replica
        roles = getattr(self.transport, "role_of", None)
        if roles is not None:
            return roles(src)
        return Role.PEER if src in self.peers else Role.ADMIN

    def _refusal(self, src: str, msg: Any) -> str | None:
        problem = permission_problem(self.role_of(src), msg)
        if problem is not None:
            self.permission_denied += 1
            self.rejected[(self._sender(src), "permission")] += 1
            log.warning("refused %s from %s: %s", type(msg).__name__, src, problem)
        return problem

    def _sender(self, src: str) -> str:
        return src if src in self.peers else CLIENT

    def handle_message(self, src: str, msg: Any) -> None:
        if self._refusal(src, msg) is not None:
            return
        if not isinstance(msg, api.PaxosEnvelope):
            log.warning("dropping unexpected one-way message %s from %s", type(msg).__name__, src)
            return
        if self.fenced:
            return  # fenced: to Paxos, this node is partitioned away
        replica = self.replicas.get(msg.tablet_id)
        if replica is None or src not in replica.tablet.replicas:
            self.bad_paxos_messages += 1
            self.rejected[(self._sender(src), "bad_paxos")] += 1
            return
        try:
            inner = wire.decode(msg.payload)
        except wire.ProtocolError as error:
            self.bad_paxos_messages += 1
            self.rejected[(self._sender(src), "bad_paxos")] += 1
            log.warning("bad Paxos payload from %s for %s: %s", src, msg.tablet_id, error)
            return
        if msg.physical_ns and type(inner) is Accepted:
            # It echoes our send time of the Accept it answers: a round trip to measure src's clock by.
            self.watch.record_round_trip(src, replica.monotonic_ns() - inner.lease_sent_ns, msg.physical_ns)
        replica.paxos.deliver(src, inner, wake=False)
        self._turns_owed[replica.paxos] = None

    def messages_read(self) -> None:
        """The transport has handed over what one read carried: each Paxos driver given some of it
        runs its turn now, in the reading task, not a loop pass later in its own (a Paxos round
        crosses a busy event loop's passes several times; ARCHITECTURE.md, known limits). The
        messages of one read are still one turn: one synced write for all of them."""
        while self._turns_owed:
            driver = next(iter(self._turns_owed))
            del self._turns_owed[driver]
            driver.turn_now()

    def answer_now(self, src: str, msg: Any) -> Any:
        """The reply to a single-key read its replica can serve at once (`TabletReplica.read_now`),
        or to a peer's `ClockProbe`, for the transport to send without a task of its own; None:
        serve it with `handle_request`. Checked, refused, counted and timed as `handle_request`
        does. A probe's clock is read here, as its frame is taken from the socket: a task of its
        own would add a pass of the loaded event loop to the round trip (and to the sample's
        error bound: hlc/offsets.py), which under load pushed every sample too wide to use."""
        kind = type(msg)
        if kind is not api.ReadRequest and kind is not api.ClockProbe:
            return None
        started_s = trio.current_time()
        reply: Any = self._refused(src, msg)
        if reply is None and kind is api.ClockProbe:
            reply = api.ClockProbeReply(self.clock.physical.now_ns())
        elif reply is None:
            try:
                reply = self.replica(msg.tablet_id).read_now(msg)
            except (RequestFailed, CorruptionError) as error:
                reply = self._error_reply(msg, error)
            except Exception:
                self.metrics.failed(msg)
                raise
            if reply is None:
                return None
        self.metrics.answered(msg, reply, trio.current_time() - started_s)
        return reply

    def start_now(self, src: str, msg: Any, arrived: Timestamp | None, reply: Callable[[Any], None]) -> bool:
        """Start a single write from the reading task (`TabletReplica.start_write`), without a task
        of its own: True if taken, its reply then given through `reply` exactly once (later, from
        whichever task learns its outcome, or now if it is refused at once); False: serve it with
        `handle_request` (anything else, a write it would refuse for permission or size, or one
        whose locks are held). Counted and timed as `handle_request` does."""
        if type(msg) is not api.WriteRequest:
            return False
        replica = self.replicas.get(msg.tablet_id)
        if (replica is None or permission_problem(self.role_of(src), msg) is not None
                or oversize(msg.writes, self.config.max_key_bytes, self.config.max_value_bytes) is not None):
            return False  # refused, counted and logged on the usual path
        started_s = trio.current_time()

        def answer(result: api.WriteReply | RequestFailed) -> None:
            body = result.reply if isinstance(result, RequestFailed) else result
            self.metrics.answered(msg, body, trio.current_time() - started_s)
            reply(body)

        try:
            return replica.start_write(msg.writes, msg.timeout_ns, arrived, answer)
        except RequestFailed as failed:
            answer(failed)
            return True

    def _error_reply(self, msg: Any, error: RequestFailed | CorruptionError) -> api.ErrorReply:
        return error.reply if isinstance(error, RequestFailed) else self._corrupt(msg, error)

    def _refused(self, src: str, msg: Any) -> api.ErrorReply | None:
        """The reply refusing a request src may not make (counted and logged), or None."""
        problem = self._refusal(src, msg)
        if problem is None:
            return None
        return api.ErrorReply(api.ErrorCode.PERMISSION_DENIED, f"{self.node_id}: permission denied: {problem}", None, None)

    async def handle_request(self, src: str, msg: Any) -> Any:
        started_s = trio.current_time()
        reply: Any = self._refused(src, msg)
        if reply is None:
            try:
                if isinstance(msg, LARGE_REPLY_REQUESTS):
                    async with self.scan_slots:
                        reply = await self._dispatch(msg)
                else:
                    reply = await self._dispatch(msg)
            except (RequestFailed, CorruptionError) as error:
                reply = self._error_reply(msg, error)
            except Exception:
                self.metrics.failed(msg)
                raise
        self.metrics.answered(msg, reply, trio.current_time() - started_s)
        return reply

    def _corrupt(self, msg: Any, error: CorruptionError) -> api.ErrorReply:
        """A read met a corrupt store: refuse the request, rebuild that tablet's replica."""
        tablet_id = getattr(msg, "tablet_id", None)
        replica = self.replicas.get(tablet_id) if isinstance(tablet_id, str) else None
        if (replica is not None and self.can_rebuild and tablet_id not in self.rebuild_requests
                and not replica.paxos.core.rebuilding):
            log.error("tablet %s on %s: %s (while answering %s)", tablet_id, self.node_id, error, type(msg).__name__)
            self.request_rebuild(tablet_id, str(error))
        return api.ErrorReply(api.ErrorCode.UNAVAILABLE, f"replica of tablet {tablet_id} on {self.node_id} is corrupt "
                              "and being rebuilt; ask another replica", None, None)

    async def _dispatch(self, msg: Any) -> Any:
        # A request naming a transaction: its id is bounded (txn/api/limits.py). A ResolveRequest's
        # ids only find transactions prepared here, whose ids were checked as they came.
        txn_id = getattr(msg, "txn_id", None)
        if type(txn_id) is str and (problem := txn_id_problem(txn_id)) is not None:
            raise failure(api.ErrorCode.BAD_REQUEST, problem)
        if isinstance(msg, SIZED_REQUESTS):
            parts = msg.parts if type(msg) is api.CommitRequest else ()
            for part in parts:  # each becomes a prepare this node sends: only to tablets of the cluster
                if part.tablet_id not in self.tablet_ids:
                    raise failure(api.ErrorCode.BAD_REQUEST,
                                  f"a part names {part.tablet_id[:64]!r}, not a tablet of this cluster")
            for writes in (msg.writes, *(part.writes for part in parts)):  # each tablet's writes are one command
                problem = oversize(writes, self.config.max_key_bytes, self.config.max_value_bytes)
                if problem is not None:
                    raise failure(api.ErrorCode.BAD_REQUEST, problem)
        handler = TXN_HANDLERS.get(type(msg))  # first: a transaction's requests are most of the traffic
        if handler is not None:
            if self.fenced:
                raise failure(api.ErrorCode.UNAVAILABLE, f"{self.node_id} is fenced: its clock is out of bounds")
            return await handler(self.replica(msg.tablet_id).txns, msg)
        if isinstance(msg, api.TabletMapRequest):
            return self.tablet_map()
        if isinstance(msg, api.StatusRequest):
            return self.status()
        if isinstance(msg, api.WriteRequest):
            return await self.replica(msg.tablet_id).write(msg.writes, msg.timeout_ns)
        if isinstance(msg, api.ReadRequest):
            return await self.replica(msg.tablet_id).read(msg)
        if isinstance(msg, api.ScanRequest):
            return await self.replica(msg.tablet_id).scan(msg)
        if isinstance(msg, api.ClockProbe):
            return api.ClockProbeReply(self.clock.physical.now_ns())
        if isinstance(msg, api.SkewRequest):
            return self.admin.skew(msg)
        if isinstance(msg, api.FaultRequest):
            return self.admin.fault(msg)
        if isinstance(msg, api.RepairRequest):
            self.request_rebuild(msg.tablet_id, "repair asked for by an admin (chronodb repair)")
            return api.RepairReply(self.node_id, msg.tablet_id, f"replica of tablet {msg.tablet_id} on {self.node_id}: "
                                   "its store is set aside and the replica rebuilt from its peers")
        if isinstance(msg, api.InspectKeyRequest):
            return self.admin.inspect_key(msg)
        if isinstance(msg, api.InspectTabletRequest):
            return self.admin.inspect_tablet(msg)
        if isinstance(msg, api.InspectLogRequest):
            return self.admin.inspect_log(msg)
        if isinstance(msg, api.InspectTxnRequest):
            return self.admin.inspect_txn(msg)
        if isinstance(msg, api.DurabilityRequest):
            return node_durability(self.node_id, self.replicas)
        if isinstance(msg, api.ExportRequest):
            return await export_page(self.replica(msg.tablet_id), msg)
        if isinstance(msg, api.TimestampRequest):
            return api.TimestampReply(self.clock.now(), self.config.max_offset_ns)
        raise failure(api.ErrorCode.BAD_REQUEST, f"unknown request {type(msg).__name__}")

    async def call_tablet(self, tablet_id: str, message: object, timeout_s: float, *, resend: bool = True) -> object:
        """Node to node: `message` to tablet_id's serving leader, following hints, within timeout_s.

        `resend` (transaction status, resolve: idempotent): an attempt gets a third of the
        deadline (at least CALL_ATTEMPT_MIN_S), so one lost message does not use it all up.
        Without it (a coordinator's `PrepareRequest`), a message is sent again only where it
        surely did nothing (unreachable, or refused as not the leader or unavailable): an
        attempt gets the rest of the deadline, and one that went out unanswered ends the call
        (None, or the TIMEOUT reply)."""
        tablet = next((t for t in self.config.tablets if t.id == tablet_id), None)
        if tablet is None:
            raise failure(api.ErrorCode.UNKNOWN_TABLET, f"no tablet {tablet_id!r}")
        deadline = trio.current_time() + timeout_s
        local = self.replicas.get(tablet_id)
        hint = local.leader_hint() if local is not None else self.remote_leaders.get(tablet_id)
        attempt = 0
        reply: object = None
        while trio.current_time() < deadline:
            # The last hint first, else the replicas in turn.
            target = hint if hint in tablet.replicas else tablet.replicas[attempt % len(tablet.replicas)]
            hint = None
            attempt += 1
            remaining_s = deadline - trio.current_time()
            try:
                if target == self.node_id:
                    reply = await self.handle_request(self.node_id, message)
                else:
                    attempt_s = min(remaining_s, max(CALL_ATTEMPT_MIN_S, timeout_s / 3)) if resend else remaining_s
                    reply = await self.transport.call(target, message, timeout_s=attempt_s)
            except TransportError as error:
                if not resend and not isinstance(error, PeerUnreachable):
                    return None  # it may have been served: not sent again
                await trio.sleep(min(0.02 * attempt, 0.2))
                continue
            retried = (api.ErrorCode.NOT_LEADER, api.ErrorCode.UNAVAILABLE, api.ErrorCode.TIMEOUT) if resend else (
                api.ErrorCode.NOT_LEADER, api.ErrorCode.UNAVAILABLE)
            if isinstance(reply, api.ErrorReply) and reply.code in retried:
                if reply.leader_hint and reply.leader_hint != target:
                    hint = reply.leader_hint
                else:
                    await trio.sleep(min(0.02 * attempt, 0.2))
                continue
            if local is None and not isinstance(reply, api.ErrorReply):
                self.remote_leaders[tablet_id] = target  # where to go first next time
            return reply
        return reply

    def replica(self, tablet_id: str) -> TabletReplica:
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
        return api.TabletMapReply(self.config.cluster_id, self.config.max_offset_ns, nodes, tuple(tablets),
                                  self.config.max_key_bytes, self.config.max_value_bytes)

    def status(self) -> api.NodeStatusReply:
        return api.NodeStatusReply(
            self.node_id, self.clock.now(), self.clock.physical.now_ns(), self.fenced, self.watch.reason,
            tuple(replica.status() for replica in self.replicas.values()),
        )

    def send_paxos(self, tablet_id: str):
        def send(dst: str, message: object) -> None:
            if self.transport is not None and not self.fenced:
                physical_ns = self.clock.physical.now_ns() if type(message) is Accepted else 0
                self.transport.send(dst, api.PaxosEnvelope(tablet_id, wire.encode(message), physical_ns))
        return send
