"""The one table of wire type ids: every message class of every layer, by name.

Role: a frame names its message by a small integer. Ids are given here and
nowhere else, so a reader sees the whole protocol in one place and two
modules can never pick the same number. Modules register their classes with
`txn.wire.codec.register_classes(...)`, which looks the ids up here; a class
missing from this table cannot be registered. Pure.

Ranges: 1-99 messaging (txn/wire/envelope.py), 100-199 Paxos (paxos/messages.py,
registered by txn/wire/paxos.py since paxos/ cannot import txn/), 200-399
tablet, client, admin and peer messages (txn/api/).

Invariants: ids and names are unique (checked at import); an id once shipped
is never reused for another message (old nodes would misread it).
"""

from __future__ import annotations

TYPE_IDS: dict[str, int] = {
    # messaging (txn/wire/envelope.py)
    "Handshake": 1, "HandshakeRefused": 2, "Envelope": 3, "HandlerError": 4, "Ping": 10, "Pong": 11,
    "Keepalive": 12,
    # Paxos (paxos/messages.py)
    "Ballot": 100, "Entry": 101, "Prepare": 102, "Promise": 103, "Reject": 104,
    "Accept": 105, "Accepted": 106, "SnapshotChunk": 107, "SnapshotAck": 108, "PreVote": 109, "PreVoteReply": 110,
    "TimeoutNow": 111,
    # client requests (txn/api/client.py)
    "KeyWrite": 200, "NodeInfo": 201, "TabletInfo": 202, "TabletMapRequest": 203, "TabletMapReply": 204,
    "WriteRequest": 205, "WriteReply": 206, "ReadRequest": 207, "ReadReply": 208, "ScanRequest": 209,
    "Row": 210, "ScanReply": 211,
    # failures (txn/api/errors.py)
    "ErrorReply": 212,
    # admin requests (txn/api/admin.py)
    "StatusRequest": 213, "TabletStatus": 214, "NodeStatusReply": 215,
    "SkewRequest": 219, "PeerClock": 220, "NodeClockReply": 221,
    "InspectKeyRequest": 222, "VersionInfo": 223, "InspectKeyReply": 224, "InspectTabletRequest": 225,
    "InspectTabletReply": 226, "InspectLogRequest": 227, "LogEntryInfo": 228, "InspectLogReply": 229,
    "InspectTxnRequest": 300, "TxnOnTablet": 301, "InspectTxnReply": 302,
    "FaultRequest": 303, "FaultReply": 304, "RepairRequest": 305, "RepairReply": 306,
    # node to node (txn/api/peer.py)
    "PaxosEnvelope": 216, "ClockProbe": 217, "ClockProbeReply": 218,
    # transactions (txn/api/txn.py)
    "KeyRange": 230, "TxnReadRequest": 231, "TxnReadReply": 232, "TxnScanRequest": 233, "TxnScanReply": 234,
    "PrepareRequest": 235, "PrepareReply": 236, "ParticipantVote": 237, "CommitRequest": 238,
    "OnePhaseCommitRequest": 239, "CommitReply": 240, "AbortRequest": 241, "AbortReply": 242,
    "TxnStatusRequest": 243, "TxnStatusReply": 244, "ResolveRequest": 245, "ResolveReply": 246,
    "TimestampRequest": 247, "TimestampReply": 248, "ParticipantPart": 256, "ResolveDecision": 257,
    # backup export (txn/api/backup.py)
    "ExportRequest": 250, "ExportedVersion": 251, "ExportReply": 252,
    # durability figures (txn/api/metrics.py)
    "DurabilityRequest": 253, "TabletDurability": 254, "DurabilityReply": 255,
}

assert len(set(TYPE_IDS.values())) == len(TYPE_IDS), "duplicate type id in TYPE_IDS"
