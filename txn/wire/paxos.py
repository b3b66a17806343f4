"""Wire registration of the Paxos messages (type ids 100-199, txn/wire/type_ids.py).

Role: paxos/ may not import txn/ (layering), so its message classes are
registered with the wire codec here; `txn.wire` imports this module, so any
user of the codec can send Paxos traffic. Pure: registration only.
"""

from __future__ import annotations

from paxos.messages import (
    Accept, Accepted, Ballot, Entry, Prepare, PreVote, PreVoteReply, Promise, Reject, SnapshotAck, SnapshotChunk,
    TimeoutNow,
)
from txn.wire.codec import register_classes

PAXOS_TYPES: tuple[type, ...] = (
    Ballot, Entry, Prepare, Promise, Reject, Accept, Accepted, SnapshotChunk, SnapshotAck, PreVote, PreVoteReply,
    TimeoutNow,
)

register_classes(*PAXOS_TYPES)
