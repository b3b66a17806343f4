"""Wire registration of the Paxos messages (type ids 100-199).

Role: paxos/ may not import txn/ (layering), so its message classes are
registered with the wire codec here; importing this module is what lets a
node send Paxos traffic over TCP. Pure: registration only.
"""

from __future__ import annotations

from paxos.messages import (
    Accept, Accepted, Ballot, Entry, Prepare, PreVote, PreVoteReply, Promise, Reject, SnapshotAck, SnapshotChunk,
)
from txn import wire

PAXOS_TYPES: tuple[tuple[int, type], ...] = (
    (100, Ballot), (101, Entry), (102, Prepare), (103, Promise), (104, Reject),
    (105, Accept), (106, Accepted), (107, SnapshotChunk), (108, SnapshotAck), (109, PreVote), (110, PreVoteReply),
)

for _type_id, _cls in PAXOS_TYPES:
    wire.register(_type_id, _cls)
