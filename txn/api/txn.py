"""Transaction messages: read-write transactions (2PL + 2PC) and read timestamps.

Role: what a client says to tablet leaders to run a read-write transaction,
and what nodes say to each other to finish one (Spanner, OSDI 2012, 4.2.1).
Pure: attrs classes and their registration.

A read-write transaction (client side: txn/client/transaction.py):
1. reads: `TxnReadRequest` / `TxnScanRequest` to the tablet's leader, which
   takes a shared lock on the key (or range) for `txn_id` under wound-wait by
   `priority` (the transaction's first start timestamp, kept across retries:
   older wins) and answers the newest committed value;
2. writes are buffered at the client;
3. commit, one tablet touched: `OnePhaseCommitRequest` (locks, checks, one
   Paxos write, commit-wait); several tablets: one `CommitRequest` to the
   coordinator tablet (the first written key's tablet) with its own writes
   and read set and every other participant's (`parts`). Its leader takes
   its own part's locks and checks them as a prepare would, then sends a
   `PrepareRequest` to every other participant's leader, node to node
   (exclusive locks, read locks checked, a Prepare record with the writes as
   intents logged through Paxos; answers its prepare timestamp, the vote),
   picks the commit timestamp at or above every prepare timestamp, logs the
   decision with its writes through its own Paxos group (the coordinator
   skips the prepare: Spanner 4.2.1), waits out commit-wait and answers; it
   then resolves the participants (`ResolveRequest`, node to node, one request
   carrying every decision queued for that participant meanwhile). A client
   may also prepare the participants itself and send their votes instead
   (the path before 12-05, still served).
4. `AbortRequest` gives up: locks are released; a request naming the
   coordinator (`coordinator_tablet`, for a client that prepared the
   participants itself) also logs an abort decision there. chronodb's client
   names none: after its commit request was answered nothing is left to
   decide, and a participant still prepared starts its recovery on the abort.
A participant whose transaction stays prepared without a decision asks the
coordinator tablet (`TxnStatusRequest`); a coordinator with no record logs
an abort first and answers it (presumed abort).

A strong read-only transaction reads every key at one timestamp taken from a
node (`TimestampRequest`), never from the client's own clock.
"""

from __future__ import annotations

import enum
import attrs

from hlc.timestamp import Timestamp
from txn.api.client import KeyWrite, Row
from txn.api.errors import AbortReason  # noqa: F401 - part of this module's vocabulary
from txn.wire.codec import register_classes


class TxnState(enum.StrEnum):
    COMMITTED = "committed"
    ABORTED = "aborted"


@attrs.frozen
class KeyRange:
    start: bytes
    end: bytes | None  # None: to the end of the key space


@attrs.frozen
class TxnReadRequest:
    tablet_id: str
    txn_id: str
    priority: Timestamp
    key: bytes
    timeout_ns: int


@attrs.frozen
class TxnReadReply:
    value: bytes | None
    version_ts: Timestamp | None
    read_ts: Timestamp
    served_by: str
    # The leader's lease its shared lock was taken under (0: not said). Locks live in the serving
    # leader's memory: a transaction whose reads of one tablet came under two leases lost the
    # first one's locks, and its client aborts it (`lost_locks`), even if it read the key again.
    lease: int = 0


@attrs.frozen
class TxnScanRequest:
    tablet_id: str
    txn_id: str
    priority: Timestamp
    start: bytes
    end: bytes | None
    limit: int
    timeout_ns: int


@attrs.frozen
class TxnScanReply:
    rows: tuple[Row, ...] = attrs.field(converter=tuple)
    read_ts: Timestamp
    served_by: str
    more: bool = False  # cut short of the limit by the node's reply bounds (as ScanReply.more)
    lease: int = 0  # as TxnReadReply.lease


@attrs.frozen
class PrepareRequest:
    tablet_id: str
    txn_id: str
    priority: Timestamp
    coordinator_tablet: str
    writes: tuple[KeyWrite, ...] = attrs.field(converter=tuple)
    read_keys: tuple[bytes, ...] = attrs.field(converter=tuple)  # shared locks it must still hold here
    read_ranges: tuple[KeyRange, ...] = attrs.field(converter=tuple)
    timeout_ns: int = 0

    def __str__(self) -> str:
        return f"PrepareRequest {self.txn_id} at {self.tablet_id} writes={len(self.writes)} reads={len(self.read_keys)}"


@attrs.frozen
class PrepareReply:
    prepare_ts: Timestamp


@attrs.frozen
class ParticipantVote:
    tablet_id: str
    prepare_ts: Timestamp


@attrs.frozen
class ParticipantPart:
    """A participant's share of a transaction, for the coordinator to prepare it with (`CommitRequest.parts`)."""

    tablet_id: str
    writes: tuple[KeyWrite, ...] = attrs.field(converter=tuple)
    read_keys: tuple[bytes, ...] = attrs.field(converter=tuple)
    read_ranges: tuple[KeyRange, ...] = attrs.field(converter=tuple)


@attrs.frozen
class CommitRequest:
    """To the coordinator tablet's leader: commit a transaction that touched several tablets.

    The coordinator does not prepare (Spanner 4.2.1): its own part comes here,
    its writes and the reads it must still hold shared locks on, and its leader
    takes the exclusive locks, checks the read locks and logs them in the
    decision itself. The other participants come either as `parts`, which the
    coordinator's leader prepares itself (a `PrepareRequest` to each, node to
    node, the client's path since 12-05), or as `votes` of participants the
    client prepared (the path before; both may be given). A request with an
    empty own part is for a coordinator that was prepared by a `PrepareRequest`."""

    tablet_id: str  # the coordinator tablet
    txn_id: str
    priority: Timestamp
    votes: tuple[ParticipantVote, ...] = attrs.field(converter=tuple)
    timeout_ns: int = 0
    writes: tuple[KeyWrite, ...] = attrs.field(default=(), converter=tuple)
    read_keys: tuple[bytes, ...] = attrs.field(default=(), converter=tuple)
    read_ranges: tuple[KeyRange, ...] = attrs.field(default=(), converter=tuple)
    parts: tuple[ParticipantPart, ...] = attrs.field(default=(), converter=tuple)

    def __str__(self) -> str:
        return (f"CommitRequest {self.txn_id} at {self.tablet_id} votes={len(self.votes)} parts={len(self.parts)} "
                f"writes={len(self.writes)} reads={len(self.read_keys)}")


@attrs.frozen
class OnePhaseCommitRequest:
    """A transaction that touched one tablet: locks, checks and one Paxos write."""

    tablet_id: str
    txn_id: str
    priority: Timestamp
    writes: tuple[KeyWrite, ...] = attrs.field(converter=tuple)
    read_keys: tuple[bytes, ...] = attrs.field(converter=tuple)
    read_ranges: tuple[KeyRange, ...] = attrs.field(converter=tuple)
    timeout_ns: int = 0


@attrs.frozen
class CommitReply:
    commit_ts: Timestamp
    commit_wait_ns: int


@attrs.frozen
class AbortRequest:
    """The client gives up: release this transaction's locks here (and decide abort here, when
    `coordinator_tablet` names this tablet: for a client that prepared participants itself)."""

    tablet_id: str
    txn_id: str
    coordinator_tablet: str | None
    timeout_ns: int = 0


@attrs.frozen
class AbortReply:
    # The reason this leader had already aborted the transaction before the
    # client gave up (wounded, timed out, ...), None if it had not: the client
    # then knows its reads may not have been consistent (it was a zombie).
    already_aborted: str | None = None


@attrs.frozen
class TxnStatusRequest:
    """Node to node (or an inspector): the coordinator tablet's decision, presuming abort."""

    tablet_id: str  # the coordinator tablet
    txn_id: str
    timeout_ns: int = 0


@attrs.frozen
class TxnStatusReply:
    txn_id: str
    state: TxnState
    commit_ts: Timestamp | None


@attrs.frozen
class ResolveDecision:
    """One transaction's decision for a participant (commit_ts None: abort)."""

    txn_id: str
    commit_ts: Timestamp | None


MAX_RESOLVE_DECISIONS = 512  # per ResolveRequest: a coordinator sends what queued while the last was out


@attrs.frozen
class ResolveRequest:
    """Coordinator to participant: the decisions of transactions prepared there, as many as queued
    at the coordinator for this participant while its previous request was out (at most
    MAX_RESOLVE_DECISIONS)."""

    tablet_id: str
    decisions: tuple[ResolveDecision, ...] = attrs.field(converter=tuple)
    timeout_ns: int = 0


@attrs.frozen
class ResolveReply:
    pass


@attrs.frozen
class TimestampRequest:
    """A timestamp from a node's clock (for strong read-only transactions and stale reads)."""


@attrs.frozen
class TimestampReply:
    now: Timestamp
    max_offset_ns: int


register_classes(
    KeyRange, TxnReadRequest, TxnReadReply, TxnScanRequest, TxnScanReply, PrepareRequest, PrepareReply,
    ParticipantVote, ParticipantPart, CommitRequest, OnePhaseCommitRequest, CommitReply, AbortRequest, AbortReply,
    TxnStatusRequest, TxnStatusReply, ResolveDecision, ResolveRequest, ResolveReply, TimestampRequest, TimestampReply,
)

__all__ = [
    "AbortReason", "AbortReply", "AbortRequest", "CommitReply", "CommitRequest", "KeyRange", "OnePhaseCommitRequest",
    "ParticipantPart", "ParticipantVote", "PrepareReply", "PrepareRequest", "ResolveDecision", "ResolveReply", "ResolveRequest", "TimestampReply",
    "TimestampRequest", "TxnReadReply", "TxnReadRequest", "TxnScanReply", "TxnScanRequest", "TxnState",
    "TxnStatusReply", "TxnStatusRequest",
]
