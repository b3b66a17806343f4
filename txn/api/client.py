"""Request and reply messages between clients, nodes and the admin tools.

Role: the node's public protocol (type ids 200-299), spoken over the
transport of txn/transport.py. Pure: attrs classes and their registration.

Conventions:
- every request that can wait carries `timeout_ns`, the caller's remaining
  deadline; the node never waits longer;
- failures are values: an `ErrorReply` whose `code` is one of ERROR_CODES,
  so the client can tell "retry elsewhere" (not_leader) from "do not retry"
  (outcome_unknown) from "your fault" (bad_request);
- every read reply carries the timestamp it was served at.
"""

from __future__ import annotations

from typing import ClassVar

import attrs

from hlc import Timestamp
from txn.wire.codec import register_classes

READ_STRONG = "strong"  # the leader picks a timestamp covering every acknowledged write
READ_AT = "at"  # at the given timestamp (exact staleness is `at now - d`)
READ_MAX_STALE = "max_stale"  # the freshest timestamp served without waiting, >= ts
READ_MODES = (READ_STRONG, READ_AT, READ_MAX_STALE)

ERROR_NOT_LEADER = "not_leader"  # not proposed: safe to retry at leader_hint
ERROR_OUTCOME_UNKNOWN = "outcome_unknown"  # proposed; may or may not commit
ERROR_BELOW_GC_HORIZON = "below_gc_horizon"
ERROR_FUTURE_READ = "future_read"
ERROR_TIMEOUT = "timeout"  # a read could not be served in time: safe to retry
ERROR_UNKNOWN_TABLET = "unknown_tablet"
ERROR_BAD_REQUEST = "bad_request"
ERROR_UNAVAILABLE = "unavailable"  # the node is starting, stopping or fenced
ERROR_CODES = (
    ERROR_NOT_LEADER, ERROR_OUTCOME_UNKNOWN, ERROR_BELOW_GC_HORIZON, ERROR_FUTURE_READ,
    ERROR_TIMEOUT, ERROR_UNKNOWN_TABLET, ERROR_BAD_REQUEST, ERROR_UNAVAILABLE,
)


@attrs.frozen
class KeyWrite:
    key: bytes
    value: bytes | None  # None: delete


@attrs.frozen
class NodeInfo:
    id: str
    host: str
    port: int


@attrs.frozen
class TabletInfo:
    id: str
    start: bytes
    end: bytes | None
    replicas: tuple[str, ...] = attrs.field(converter=tuple)
    leader: str | None  # the answering node's best knowledge


@attrs.frozen
class TabletMapRequest:
    hlc_exempt: ClassVar[bool] = True  # admin: must reach a node whose clock ran off


@attrs.frozen
class TabletMapReply:
    cluster_id: str
    max_offset_ns: int
    nodes: tuple[NodeInfo, ...] = attrs.field(converter=tuple)
    tablets: tuple[TabletInfo, ...] = attrs.field(converter=tuple)


@attrs.frozen
class WriteRequest:
    tablet_id: str
    writes: tuple[KeyWrite, ...] = attrs.field(converter=tuple)
    timeout_ns: int

    def __str__(self) -> str:
        return f"WriteRequest {self.tablet_id} keys={len(self.writes)}"


@attrs.frozen
class WriteReply:
    ts: Timestamp
    commit_wait_ns: int  # how long the ack waited for commit-wait after the write was chosen


@attrs.frozen
class ReadRequest:
    tablet_id: str
    key: bytes
    mode: str
    ts: Timestamp | None
    timeout_ns: int


@attrs.frozen
class ReadReply:
    ts: Timestamp  # the timestamp the read was served at
    value: bytes | None
    version_ts: Timestamp | None  # commit timestamp of the version read
    served_by: str


@attrs.frozen
class ScanRequest:
    tablet_id: str
    start: bytes
    end: bytes | None
    mode: str
    ts: Timestamp | None
    limit: int
    timeout_ns: int


@attrs.frozen
class Row:
    key: bytes
    value: bytes
    version_ts: Timestamp


@attrs.frozen
class ScanReply:
    ts: Timestamp
    rows: tuple[Row, ...] = attrs.field(converter=tuple)
    served_by: str


@attrs.frozen
class ErrorReply:
    code: str
    message: str
    leader_hint: str | None
    horizon: Timestamp | None

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


@attrs.frozen
class StatusRequest:
    hlc_exempt: ClassVar[bool] = True  # admin: must reach a node whose clock ran off


@attrs.frozen
class TabletStatus:
    id: str
    is_leader: bool
    lease_holder: bool
    serving: bool  # leader whose barrier is applied and whose predecessor's timestamps are past
    leader_hint: str | None
    ballot: str
    first_index: int
    last_index: int
    chosen_index: int
    applied_index: int
    snapshot_index: int
    pending_proposals: int
    safe_ts: Timestamp
    gc_horizon: Timestamp
    lease_remaining_ns: int  # how long the lease still holds; 0 when not holding one
    follower_reads: int


@attrs.frozen
class NodeStatusReply:
    node_id: str
    hlc_now: Timestamp
    physical_ns: int
    fenced: bool
    fence_reason: str
    tablets: tuple[TabletStatus, ...] = attrs.field(converter=tuple)


@attrs.frozen
class PaxosEnvelope:
    """A Paxos message of one tablet, node to node (payload: wire-encoded)."""

    tablet_id: str
    payload: bytes


@attrs.frozen
class ClockProbe:
    """Node to node, every probe interval: what is your physical clock?

    Exempt from the HLC rejection of messages from too far ahead (it is not
    absorbed into the clock either): a node whose clock ran off must still be
    able to measure that it did, or it could never fence itself."""

    hlc_exempt: ClassVar[bool] = True


@attrs.frozen
class ClockProbeReply:
    hlc_exempt: ClassVar[bool] = True
    physical_ns: int


SKEW_SHOW = "show"
SKEW_SET = "set"  # offset_ns and/or drift_ppm
SKEW_BUMP = "bump"  # a one-off jump of offset_ns
SKEW_STROBE = "strobe"  # flip between +offset_ns and 0 every period_ns for duration_ns
SKEW_CLEAR = "clear"
SKEW_ACTIONS = (SKEW_SHOW, SKEW_SET, SKEW_BUMP, SKEW_STROBE, SKEW_CLEAR)


@attrs.frozen
class SkewRequest:
    hlc_exempt: ClassVar[bool] = True  # admin: must reach a node whose clock ran off
    action: str
    offset_ns: int | None
    drift_ppm: int | None
    period_ns: int | None
    duration_ns: int | None


@attrs.frozen
class PeerClock:
    peer: str
    offset_ns: int
    error_ns: int
    rejected_messages: int  # messages from this peer refused for coming from too far ahead


@attrs.frozen
class NodeClockReply:
    node_id: str
    offset_ns: int  # injected
    drift_ppm: int  # injected
    strobing: bool
    fenced: bool
    fence_reason: str
    physical_ns: int
    hlc_now: Timestamp
    peers: tuple[PeerClock, ...] = attrs.field(converter=tuple)


@attrs.frozen
class InspectKeyRequest:
    hlc_exempt: ClassVar[bool] = True  # admin: must reach a node whose clock ran off
    tablet_id: str
    key: bytes


@attrs.frozen
class VersionInfo:
    ts: Timestamp
    value: bytes | None  # None: tombstone


@attrs.frozen
class InspectKeyReply:
    node_id: str
    tablet_id: str
    applied_index: int
    versions: tuple[VersionInfo, ...] = attrs.field(converter=tuple)  # ascending timestamps
    intent_txn: str | None
    intent_ts: Timestamp | None


@attrs.frozen
class InspectTabletRequest:
    hlc_exempt: ClassVar[bool] = True  # admin: must reach a node whose clock ran off
    tablet_id: str


@attrs.frozen
class InspectTabletReply:
    node_id: str
    status: TabletStatus
    keys: int
    versions: int
    tombstones: int
    intents: int
    approximate_bytes: int
    oldest_version_ts: Timestamp | None
    newest_version_ts: Timestamp | None
    leveldb_bytes: int


@attrs.frozen
class InspectLogRequest:
    hlc_exempt: ClassVar[bool] = True  # admin: must reach a node whose clock ran off
    tablet_id: str
    from_index: int
    to_index: int


@attrs.frozen
class LogEntryInfo:
    index: int
    ballot: str
    command: bytes


@attrs.frozen
class InspectLogReply:
    node_id: str
    first_index: int
    last_index: int
    entries: tuple[LogEntryInfo, ...] = attrs.field(converter=tuple)


register_classes(
    KeyWrite, NodeInfo, TabletInfo, TabletMapRequest, TabletMapReply, WriteRequest, WriteReply, ReadRequest,
    ReadReply, ScanRequest, Row, ScanReply, ErrorReply, StatusRequest, TabletStatus, NodeStatusReply, PaxosEnvelope,
    ClockProbe, ClockProbeReply, SkewRequest, PeerClock, NodeClockReply, InspectKeyRequest, VersionInfo,
    InspectKeyReply, InspectTabletRequest, InspectTabletReply, InspectLogRequest, LogEntryInfo, InspectLogReply,
)
