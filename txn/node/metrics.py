"""Prometheus metrics of one node: its registry, the instruments updated inline, the scrape-time collector.

Role: `NodeMetrics(node)` owns the node's `CollectorRegistry`; what
`/metrics` serves is `generate_latest(node.metrics.registry)`
(txn/node/metrics_http.py). Two kinds of figures:
- updated inline, as requests are answered (`answered`, called by
  `Node.handle_request`; `attach` hooks each replica's Paxos proposals):
  requests by kind and outcome, latency histograms, transaction outcomes;
- read at scrape time by `NodeCollector` from state the node keeps anyway
  (Paxos indexes, leases, safe time, GC horizon, clock offsets, fencing,
  transport counters, LevelDB size): nothing on the hot path.
ARCHITECTURE.md (Metrics) lists every name and what it means.

Invariants:
- one registry per node, nothing process-global: several nodes in one
  process (the simulation, tests) never share a series;
- label values come from bounded sets, never from raw request fields: tablet
  ids of this node's replicas (anything else is "other"), request class names
  (registered wire types), `ErrorCode`, `AbortReason` and `ReadMode` values,
  cluster.toml's peer ids and "client";
- the hot path costs one dict lookup and one `inc`/`observe` per figure
  (label children are cached); durations come from trio's clock;
- a failure while collecting one tablet's figures drops that tablet's samples
  from this scrape (logged), never the scrape and never the node.
"""

from __future__ import annotations

import gc
import logging
import re
from typing import TYPE_CHECKING, Any, Iterator

from prometheus_client import CollectorRegistry, Counter, GCCollector, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from hlc import Timestamp
from txn import api
from txn.node.durability import durable_index

if TYPE_CHECKING:
    from txn.node.server import Node
    from txn.tablet.tablet_replica import TabletReplica

log = logging.getLogger("chronodb.metrics")

# Seconds: from sub-millisecond reads through commit-wait (max_offset, 10 ms by default) to timeouts.
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5,
                     1.0, 2.5, 5.0, 10.0)
OTHER = "other"  # the tablet label of a request naming a tablet this node does not hold
CLIENT = "client"  # the peer label of every sender that is not a node of cluster.toml
TXN_REQUESTS = frozenset({api.TxnReadRequest, api.TxnScanRequest, api.PrepareRequest, api.CommitRequest,
                          api.OnePhaseCommitRequest})

_kinds: dict[type, str] = {}


def request_kind(cls: type) -> str:
    """`WriteRequest` -> "write", `OnePhaseCommitRequest` -> "one_phase_commit", `ClockProbe` -> "clock_probe"."""
    kind = _kinds.get(cls)
    if kind is None:
        name = cls.__name__.removesuffix("Request")
        kind = _kinds[cls] = re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
    return kind


class NodeMetrics:
    def __init__(self, node: "Node") -> None:
        self.node = node
        self.registry = CollectorRegistry(auto_describe=False)
        registry = self.registry
        self.requests = Counter("chronodb_requests", "Requests answered, by kind and outcome (ok or the error code)",
                                ["kind", "outcome"], registry=registry)
        self.write_latency = Histogram("chronodb_write_latency_seconds", "Acknowledged single-tablet writes, "
                                       "request to answer (commit-wait included)", ["tablet"],
                                       buckets=LATENCY_BUCKETS_S, registry=registry)
        self.read_latency = Histogram("chronodb_read_latency_seconds", "Answered reads (op get or scan) by read mode",
                                      ["tablet", "mode", "op"], buckets=LATENCY_BUCKETS_S, registry=registry)
        self.commit_wait = Histogram("chronodb_commit_wait_seconds", "Commit-wait replication did not hide: from the "
                                     "write applied to its acknowledgement (writes and transaction commits)", ["tablet"],
                                     buckets=LATENCY_BUCKETS_S, registry=registry)
        self.paxos_round = Histogram("chronodb_paxos_round_seconds", "Successful proposals of this replica as leader, "
                                     "from propose to chosen and applied here", ["tablet"],
                                     buckets=LATENCY_BUCKETS_S, registry=registry)
        self.txn_commits = Counter("chronodb_txn_commits", "Transactions committed, answered by the tablet that "
                                   "commits them (2PC: the coordinator), by path", ["tablet", "path"], registry=registry)
        self.txn_aborts = Counter("chronodb_txn_aborts", "Transaction requests answered txn_aborted, by the tablet "
                                  "that refused and the abort reason", ["tablet", "reason"], registry=registry)
        self.txn_unknown = Counter("chronodb_txn_outcome_unknown", "Transaction commits answered outcome_unknown by "
                                   "the tablet that commits them, by path", ["tablet", "path"], registry=registry)
        registry.register(NodeCollector(node))
        ProcessCollector(registry=registry)  # process_cpu_seconds_total, process_resident_memory_bytes, ...
        GCCollector(registry=registry)  # python_gc_collections_total{generation}, python_gc_objects_collected_total
        self._children: dict[tuple[Any, ...], Any] = {}
        # The hot paths' label children, by the request's own values (bounded: only
        # tablets this node holds are cached, the rest fall back to `_child`).
        self._request_counters: dict[tuple[type, api.ErrorCode | None], Any] = {}
        self._write_children: dict[str, tuple[Any, Any]] = {}
        self._read_children: dict[tuple[str, api.ReadMode, type], Any] = {}
        self.failures = 0  # answers that could not be counted (a bug of ours)

    def render(self) -> bytes:
        """The registry in Prometheus' text format (what `/metrics` answers)."""
        return generate_latest(self.registry)

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def _tablet(self, msg: Any) -> str:
        tablet = getattr(msg, "tablet_id", None)
        return tablet if tablet in self.node.replicas else OTHER

    def attach(self, replica: "TabletReplica") -> None:
        """Time the replica's proposals (in its monotonic ns) into chronodb_paxos_round_seconds."""
        child = self._child(self.paxos_round, replica.tablet.id)

        def observe(ns: int) -> None:
            try:
                child.observe(ns / 1e9)
            except Exception:  # noqa: BLE001 - the proposal succeeded; counting it must not say otherwise
                self._count_failure("proposal")

        replica.observe_proposal_ns = observe

    def answered(self, msg: Any, reply: Any, seconds: float) -> None:
        """One request answered (an `ErrorReply` included) after `seconds`. Never raises: a bug
        here must not fail the request (the first one is logged)."""
        try:
            self._answered(msg, reply, seconds)
        except Exception:  # noqa: BLE001
            self._count_failure(msg)

    def failed(self, msg: Any) -> None:
        """A request whose handler raised (the transport answers an ERROR envelope). Never raises."""
        try:
            self._child(self.requests, request_kind(type(msg)), "error").inc()
        except Exception:  # noqa: BLE001
            self._count_failure(msg)

    def _count_failure(self, what: Any) -> None:
        self.failures += 1
        if self.failures == 1:
            name = what if isinstance(what, str) else type(what).__name__
            log.warning("metrics: cannot count a %s (logged once)", name, exc_info=True)

    def _answered(self, msg: Any, reply: Any, seconds: float) -> None:
        cls = type(msg)
        error = reply if type(reply) is api.ErrorReply else None
        key = (cls, None if error is None else error.code)
        counter = self._request_counters.get(key)
        if counter is None:
            outcome = "ok" if error is None else str(error.code)
            counter = self._request_counters[key] = self.requests.labels(request_kind(cls), outcome)
        counter.inc()
        if cls in TXN_REQUESTS:
            self._transaction(msg, reply, error)
        elif error is not None:
            return
        elif cls is api.WriteRequest:
            latency, commit_wait = self._writes(msg.tablet_id)
            latency.observe(seconds)
            commit_wait.observe(reply.commit_wait_ns / 1e9)
        elif cls is api.ReadRequest or cls is api.ScanRequest:
            key = (msg.tablet_id, msg.mode, cls)
            child = self._read_children.get(key)
            if child is None:
                tablet = self._tablet(msg)
                child = self._child(self.read_latency, tablet, str(msg.mode), "get" if cls is api.ReadRequest else "scan")
                if tablet is not OTHER:
                    self._read_children[key] = child
            child.observe(seconds)

    def _writes(self, tablet_id: str) -> tuple[Any, Any]:
        children = self._write_children.get(tablet_id)
        if children is None:
            tablet = tablet_id if tablet_id in self.node.replicas else OTHER
            children = (self._child(self.write_latency, tablet), self._child(self.commit_wait, tablet))
            if tablet is not OTHER:
                self._write_children[tablet_id] = children
        return children

    def _transaction(self, msg: Any, reply: Any, error: api.ErrorReply | None) -> None:
        tablet = self._tablet(msg)
        path = None
        if isinstance(msg, api.CommitRequest):
            path = "two_phase"
        elif isinstance(msg, api.OnePhaseCommitRequest):
            path = "one_phase" if msg.writes else "read_only"
        if error is None:
            if path is not None:
                self._child(self.txn_commits, tablet, path).inc()
                if path != "read_only":
                    self._child(self.commit_wait, tablet).observe(reply.commit_wait_ns / 1e9)
        elif error.code is api.ErrorCode.TXN_ABORTED:
            self._child(self.txn_aborts, tablet, str(error.abort_reason or "unknown")).inc()
        elif error.code is api.ErrorCode.OUTCOME_UNKNOWN and path is not None:
            self._child(self.txn_unknown, tablet, path).inc()


class NodeCollector:
    """Figures read from the node's state at scrape time (a prometheus_client custom collector)."""

    def __init__(self, node: "Node") -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        node = self.node
        families = _Families()
        families.gauge("chronodb_node_info", "Always 1: this node's id and cluster", ["node", "cluster_id"]).add_metric(
            [node.node_id, node.config.cluster_id], 1)
        families.gauge("chronodb_fenced", "1 while this node is fenced (clock out of bounds): not serving").add_metric(
            [], 1 if node.fenced else 0)
        families.counter("chronodb_fence_events", "Times this node fenced itself").add_metric(
            [], node.watch.marks["node.fenced"])
        families.gauge("chronodb_gc_frozen_objects", "Objects in the process frozen out of garbage collection "
                       "(start-up's, txn/node/gc_settings.py)").add_metric([], gc.get_freeze_count())
        if node.log_writer is not None:
            families.counter("chronodb_log_writes", "Synced Paxos log writes of this node's tablets (one per turn "
                             "that wrote), made by its log-writer thread").add_metric([], node.log_writer.writes)
            families.counter("chronodb_log_writer_passes", "Passes of the node's log-writer thread: each writes and "
                             "syncs every write queued when it began and wakes the event loop once (log writes per "
                             "pass above 1: tablets' turns that shared a pass)").add_metric([], node.log_writer.wakeups)
        samples = families.counter("chronodb_clock_samples", "Round trips that measured a peer's clock, by source: "
                                   "probe (a ClockProbe) or paxos (a heartbeat's Accepted); paxos_dropped: "
                                   "heartbeat round trips too slow to use; probe_dialed: probes that waited for "
                                   "their link's dial, not used", ["source"])
        for source in ("probe", "paxos", "paxos_dropped", "probe_dialed"):
            samples.add_metric([source], node.watch.samples[source])
        offset = families.gauge("chronodb_clock_offset_seconds", "Measured offset of a peer's clock from this node's "
                                "(positive: the peer is ahead)", ["peer"])
        error = families.gauge("chronodb_clock_offset_error_seconds", "Uncertainty of that offset (half the round trip)",
                               ["peer"])
        for peer, offset_ns, error_ns in node.watch.offsets():
            offset.add_metric([peer], offset_ns / 1e9)
            error.add_metric([peer], error_ns / 1e9)
        self._rejected(families)
        now_ns = node.clock.physical.now_ns()
        for tablet_id, replica in sorted(node.replicas.items()):
            try:
                samples = tablet_samples(replica, now_ns)
            except Exception:  # noqa: BLE001 - a figure for operators must not fail the scrape
                log.warning("metrics: cannot collect tablet %s", tablet_id, exc_info=True)
                continue
            for (kind, name, help_text, extra_labels), values in samples.items():
                family = families.family(kind, name, help_text, ["tablet", *extra_labels])
                for labels, value in values:
                    family.add_metric([tablet_id, *labels], value)
        yield from families.all()

    def _rejected(self, families: "_Families") -> None:
        node = self.node
        rejected = families.counter("chronodb_rejected_messages", "Messages refused from a sender (peer id, or client), "
                                    "by reason: clock (HLC beyond max_offset), permission (role may not send it), "
                                    "bad_paxos (Paxos traffic for a tablet it does not share, or undecodable)",
                                    ["peer", "reason"])
        counts = dict(node.rejected)
        statistics = getattr(node.transport, "statistics", None)
        if statistics is not None:
            for peer, stats in statistics().peers.items():
                if peer in node.peers:
                    counts[(peer, "clock")] = counts.get((peer, "clock"), 0) + stats.rejected_clock
        for peer in node.peers:
            counts.setdefault((peer, "clock"), 0)
        for (peer, reason), count in sorted(counts.items()):
            rejected.add_metric([peer, reason], count)


Samples = dict[tuple[str, str, str, tuple[str, ...]], list[tuple[list[str], float]]]


def tablet_samples(replica: "TabletReplica", now_ns: int) -> Samples:
    """One replica's scrape-time figures: (kind, name, help, extra label names) -> [(extra label values, value)]."""
    status = replica.paxos.status()
    counters = dict(status.counters)
    samples: Samples = {}

    def put(kind: str, name: str, help_text: str, value: float, **labels: str) -> None:
        samples.setdefault((kind, name, help_text, tuple(labels)), []).append((list(labels.values()), value))

    put("gauge", "chronodb_lease_holder", "1 while this replica holds the tablet's Paxos lease", int(status.lease_holder))
    put("gauge", "chronodb_serving_leader", "1 while this replica serves as the tablet's leader", int(replica._is_serving()))
    put("counter", "chronodb_leader_changes", "Times this replica took a new lease as the tablet's leader "
        "(summed over replicas: the tablet's leader changes)", counters.get("paxos.lease_acquired", 0))
    put("gauge", "chronodb_chosen_index", "Highest Paxos log index known chosen", status.chosen_index)
    put("gauge", "chronodb_applied_index", "Highest Paxos log index applied to this replica's state", status.applied_index)
    put("gauge", "chronodb_durable_index", "Highest Paxos log index known fsynced on a majority", durable_index(replica))
    safe = replica.readable_safe_ts  # logged safe time, or a closed timestamp from the leader
    if safe != Timestamp.MIN:
        put("gauge", "chronodb_safe_time_lag_seconds", "This node's physical clock minus the replica's safe time",
            (now_ns - safe.wall) / 1e9)
    horizon = replica.state.store.gc_horizon()
    if horizon != Timestamp.MIN:
        put("gauge", "chronodb_gc_horizon_lag_seconds", "This node's physical clock minus the replica's GC horizon "
            "(history kept; about gc_retention plus the safe-time lag)", (now_ns - horizon.wall) / 1e9)
    put("gauge", "chronodb_leveldb_size_bytes", "Size of the replica's LevelDB (its directory's files; "
        "an estimate for other engines)", engine_size(replica.engine))
    put("counter", "chronodb_distributed_commits", "Writes this replica acknowledged as leader after a majority "
        "fsynced them", replica.distributed_commits)
    put("counter", "chronodb_not_durable_commits", "Writes this replica answered outcome_unknown because majority "
        "durability was not confirmed in time", replica.not_durable_commits)
    put("counter", "chronodb_follower_reads", "Reads this replica served while not the leader", replica.follower_reads)
    put("gauge", "chronodb_prepared_transactions", "Transactions prepared on this replica, not yet resolved",
        len(replica.state.txns.prepared))
    put("gauge", "chronodb_txn_decision_bytes", "Bytes of the 2PC decision records this replica holds as coordinator "
        "(the engine's estimate; LevelDB: table files only). Commit records are deleted once every participant "
        "resolved them (chronodb_txn_decisions_forgotten_total); abort records stay. A snapshot carries them all",
        replica.state.txns.decision_bytes())
    put("counter", "chronodb_txn_decisions_forgotten", "2PC commit records this replica deleted since it started, "
        "by Forget commands its coordinator's leader logged once every participant had resolved them",
        replica.state.decisions_forgotten)
    decisions = ("chronodb_txn_abort_decisions", "2PC aborts this replica logged as coordinator, by cause: client "
                 "(an AbortRequest named this coordinator: a client that prepared participants itself) or presumed "
                 "(asked about, with no decision logged)")
    put("counter", *decisions, replica.marks["txn.abort_decided_for_client"], cause="client")
    put("counter", *decisions, replica.marks["txn.presumed_abort"], cause="presumed")
    put("counter", "chronodb_txn_resolve_requests", "ResolveRequests this replica sent as 2PC coordinator and had "
        "answered", replica.marks["txn.resolve_requests"])
    put("counter", "chronodb_txn_resolve_decisions", "Commit decisions those ResolveRequests carried (per request: "
        "how many a participant logged together)", replica.marks["txn.resolve_decisions"])
    for event, count in sorted(counters.items()):
        put("counter", "chronodb_paxos_events", "Paxos core and driver counters of this replica (elections, "
            "refused and hostile messages, snapshots, synced writes, ...)", count, event=event)
    return samples


def engine_size(engine: Any) -> int:
    """The LevelDB directory's size; LevelDB's own estimate when a file vanished under the
    listing (a compaction) or for engines without a directory."""
    size_on_disk = getattr(engine, "size_on_disk", None)
    if size_on_disk is not None:
        try:
            return int(size_on_disk())
        except OSError:
            pass
    return int(engine.approximate_size(b"", None))


class _Families:
    """Metric families by name, created on first use, yielded in creation order."""

    def __init__(self) -> None:
        self._families: dict[str, Metric] = {}

    def family(self, kind: str, name: str, help_text: str, labels: list[str] | None = None) -> Metric:
        family = self._families.get(name)
        if family is None:
            cls = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            family = self._families[name] = cls(name, help_text, labels=labels or [])
        return family

    def gauge(self, name: str, help_text: str, labels: list[str] | None = None) -> Metric:
        return self.family("gauge", name, help_text, labels)

    def counter(self, name: str, help_text: str, labels: list[str] | None = None) -> Metric:
        return self.family("counter", name, help_text, labels)

    def all(self) -> Iterator[Metric]:
        yield from self._families.values()
