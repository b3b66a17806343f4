"""Admin requests and replies: status, skew injection, inspection.

Role: what `chronodb status`, `skew` and `inspect` ask a node. Every request
is `hlc_exempt`: an operator must reach a node whose clock ran off. Pure.
"""

from __future__ import annotations

import enum
from typing import ClassVar

import attrs

from hlc.timestamp import Timestamp
from txn.wire.codec import register_classes


class SkewAction(enum.StrEnum):
    SHOW = "show"
    SET = "set"  # offset_ns and/or drift_ppm
    BUMP = "bump"  # a one-off jump of offset_ns
    STROBE = "strobe"  # flip between +offset_ns and 0 every period_ns for duration_ns
    CLEAR = "clear"


class FaultAction(enum.StrEnum):
    SHOW = "show"
    BLOCK = "block"  # drop traffic with `peers` (added to what is already blocked)
    CLEAR = "clear"  # drop nothing any more


@attrs.frozen
class FaultRequest:
    """Fault injection for `chronodb verify` and `chronodb fault`: the node's transport
    drops every frame to (`outgoing`) and/or from (`incoming`) the given peers until
    cleared. A real network fault from the other nodes' view; not persisted."""

    hlc_exempt: ClassVar[bool] = True  # admin: must reach a node whose clock ran off
    action: FaultAction
    peers: tuple[str, ...] = attrs.field(converter=tuple, default=())
    incoming: bool = True
    outgoing: bool = True


@attrs.frozen
class FaultReply:
    node_id: str
    blocked_incoming: tuple[str, ...] = attrs.field(converter=tuple)  # sorted peer ids
    blocked_outgoing: tuple[str, ...] = attrs.field(converter=tuple)
    dropped_frames: int  # frames dropped by the fault since the node started


@attrs.frozen
class RepairRequest:
    """`chronodb repair`: rebuild this node's replica of `tablet_id` from its peers (txn/node/rebuild.py):
    its store is set aside, a fresh one learns everything again and votes once fenced."""

    hlc_exempt: ClassVar[bool] = True  # admin: must reach a node whose clock ran off
    tablet_id: str


@attrs.frozen
class RepairReply:
    node_id: str
    tablet_id: str
    message: str  # what was done


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
    prepared_txns: tuple[str, ...] = attrs.field(converter=tuple, default=())  # transactions prepared here
    lock_holders: int = 0  # transactions holding locks at this leader
    rebuilding: str = ""  # why this replica is rebuilding from its peers (txn/node/rebuild.py); "" if it is not


@attrs.frozen
class NodeStatusReply:
    node_id: str
    hlc_now: Timestamp
    physical_ns: int
    fenced: bool
    fence_reason: str
    tablets: tuple[TabletStatus, ...] = attrs.field(converter=tuple)


@attrs.frozen
class SkewRequest:
    hlc_exempt: ClassVar[bool] = True  # admin: must reach a node whose clock ran off
    action: SkewAction
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
    # The replica's space loop since its node started (txn/tablet/space.py).
    gc_passes: int = 0
    gc_dropped: int = 0  # versions GC deleted
    compactions: int = 0  # LevelDB compactions of what GC and log truncation freed
    compaction_max_ns: int = 0  # the longest one (it held the node's loop that long)
    gc_passes_skipped: int = 0  # of gc_passes: nothing could be dropped, no version read


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


@attrs.frozen
class InspectTxnRequest:
    hlc_exempt: ClassVar[bool] = True  # admin: must reach a node whose clock ran off
    txn_id: str


@attrs.frozen
class TxnOnTablet:
    """One replica's knowledge of a transaction."""

    tablet_id: str
    serving: bool  # this replica is the tablet's serving leader (locks are only known there)
    prepared_ts: Timestamp | None
    coordinator: str | None
    writes: int  # its writes on this tablet: prepared here, or the coordinator's own part of a decision
    decision: str | None  # "committed" / "aborted": this tablet coordinates it and logged a decision
    commit_ts: Timestamp | None
    locked_keys: int
    locked_ranges: int
    aborted_reason: str | None  # the leader aborted it (wounded, timed out, ...)


@attrs.frozen
class InspectTxnReply:
    node_id: str
    tablets: tuple[TxnOnTablet, ...] = attrs.field(converter=tuple)


register_classes(
    FaultRequest, FaultReply, RepairRequest, RepairReply,
    InspectTxnRequest, TxnOnTablet, InspectTxnReply,
    StatusRequest, TabletStatus, NodeStatusReply, SkewRequest, PeerClock, NodeClockReply,
    InspectKeyRequest, VersionInfo, InspectKeyReply, InspectTabletRequest, InspectTabletReply,
    InspectLogRequest, LogEntryInfo, InspectLogReply,
)
