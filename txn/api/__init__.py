"""txn.api: the node's protocol, by audience (above txn.wire).

- `client.py`  tablet map, writes, reads, scans (`ReadMode`)
- `admin.py`   status, skew injection, inspection (`SkewAction`)
- `peer.py`    Paxos envelopes and clock probes between nodes
- `txn.py`     read-write transactions (2PL + 2PC) and read timestamps
- `errors.py`  `ErrorCode`, `AbortReason`, `ErrorReply`, and `failure()` for the node
- `cluster.py` the cluster's configuration records
- `limits.py`  key, value and write-batch size limits (`oversize`)
- `metrics.py` durable watermark and commit counters per replica
- `backup.py`  paged export of a tablet's versions at a timestamp (backups)

Pure. Importing the package registers every message with the wire codec;
`from txn import api` then `api.WriteRequest` is the usual spelling.
"""

from txn.api.admin import (
    FaultAction,
    FaultReply,
    FaultRequest,
    RepairReply,
    RepairRequest,
    InspectKeyReply,
    InspectKeyRequest,
    InspectLogReply,
    InspectLogRequest,
    InspectTabletReply,
    InspectTabletRequest,
    InspectTxnReply,
    InspectTxnRequest,
    LogEntryInfo,
    NodeClockReply,
    NodeStatusReply,
    PeerClock,
    SkewAction,
    SkewRequest,
    StatusRequest,
    TabletStatus,
    TxnOnTablet,
    VersionInfo,
)
from txn.api.backup import ExportedVersion, ExportReply, ExportRequest
from txn.api.client import (
    KeyWrite,
    NodeInfo,
    ReadMode,
    ReadReply,
    ReadRequest,
    Row,
    ScanReply,
    ScanRequest,
    TabletInfo,
    TabletMapReply,
    TabletMapRequest,
    WriteReply,
    WriteRequest,
)
from txn.api.errors import AbortReason, ErrorCode, ErrorReply, RequestFailed, aborted, failure
from txn.api.txn import (
    AbortReply,
    AbortRequest,
    CommitReply,
    CommitRequest,
    KeyRange,
    OnePhaseCommitRequest,
    ParticipantPart,
    ParticipantVote,
    PrepareReply,
    PrepareRequest,
    ResolveDecision,
    ResolveReply,
    ResolveRequest,
    TimestampReply,
    TimestampRequest,
    TxnReadReply,
    TxnReadRequest,
    TxnScanReply,
    TxnScanRequest,
    TxnState,
    TxnStatusReply,
    TxnStatusRequest,
)
from txn.api.metrics import DurabilityReply, DurabilityRequest, TabletDurability
from txn.api.peer import ClockProbe, ClockProbeReply, PaxosEnvelope

__all__ = [
    "FaultAction", "FaultReply", "FaultRequest", "RepairReply", "RepairRequest",
    "ClockProbe", "ClockProbeReply", "ErrorCode", "ErrorReply", "InspectKeyReply", "InspectKeyRequest",
    "InspectLogReply", "InspectLogRequest", "InspectTxnReply", "InspectTxnRequest", "TxnOnTablet", "InspectTabletReply", "InspectTabletRequest", "KeyWrite",
    "LogEntryInfo", "NodeClockReply", "NodeInfo", "NodeStatusReply", "PaxosEnvelope", "PeerClock", "ReadMode",
    "ReadReply", "ReadRequest", "RequestFailed", "Row", "ScanReply", "ScanRequest", "SkewAction", "SkewRequest",
    "StatusRequest", "TabletInfo", "TabletMapReply", "TabletMapRequest", "VersionInfo", "WriteReply",
    "WriteRequest", "failure", "aborted", "AbortReason", "AbortReply", "AbortRequest", "CommitReply",
    "CommitRequest", "KeyRange", "OnePhaseCommitRequest", "ParticipantPart", "ParticipantVote", "PrepareReply", "PrepareRequest",
    "ResolveDecision", "ResolveReply", "ResolveRequest", "TimestampReply", "TimestampRequest", "TxnReadReply", "TxnReadRequest",
    "TxnScanReply", "TxnScanRequest", "TxnState", "TxnStatusReply", "TxnStatusRequest",
    "ExportedVersion", "ExportReply", "ExportRequest", "DurabilityReply", "DurabilityRequest", "TabletDurability",
]
