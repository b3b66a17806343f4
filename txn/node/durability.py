"""The durable watermark of a tablet replica, read from its Paxos core without changing it.

Role: answers `DurabilityRequest` (txn/api/metrics.py). Input: the node's
replicas; output: one `TabletDurability` per replica.

The durable index is the highest log index known fsynced on a majority.
Acceptors fsync before they answer (paxos/replica.py), so:
- on any replica, the chosen index is durable (chosen = accepted by a majority);
- a leader also knows each follower's `match_index` (the highest index it
  reported accepted, i.e. synced) and its own `self_match` (its synced
  prefix); the majority-th largest of those is durable too.
The durable timestamp is that of the last timestamped command at or below
the durable index (no-ops carry none), looked up at most LOOKBACK entries
back; None when the log no longer holds one (truncated after a snapshot).
"""

from __future__ import annotations

from hlc import Timestamp
from paxos.quorum import quorum_floor
from txn import api
from txn.tablet.commands import decode_command
from txn.tablet.tablet_replica import TabletReplica

LOOKBACK_ENTRIES = 64


def durable_index(replica: TabletReplica) -> int:
    core = replica.paxos.core
    durable = core.chosen_index
    if replica.paxos.status().is_leader:
        matches = [core.self_match] + [progress.match_index for progress in core.progress.values()]
        durable = max(durable, min(quorum_floor(matches, len(core.peers), durable), core.last_index))
    return durable


def durable_ts(replica: TabletReplica, index: int) -> Timestamp | None:
    low = max(replica.paxos.core.first_index, index - LOOKBACK_ENTRIES + 1, 1)
    if index < low:
        return None
    for at in range(index, low - 1, -1):  # newest first, one at a time: older entries may be read from disk
        found = replica.paxos.entries(at, at)
        if not found:
            continue
        _, _, command_bytes = found[0]
        try:
            command = decode_command(command_bytes)
        except Exception:  # noqa: BLE001 - a figure for operators; an undecodable entry has no timestamp to give
            continue
        ts = getattr(command, "ts", None)
        if isinstance(ts, Timestamp):
            return ts
    return None


def tablet_durability(replica: TabletReplica) -> api.TabletDurability:
    status = replica.paxos.status()
    index = durable_index(replica)
    return api.TabletDurability(
        replica.tablet.id, status.is_leader, status.chosen_index, status.applied_index, index, durable_ts(replica, index),
        replica.distributed_commits, replica.not_durable_commits,
    )


def node_durability(node_id: str, replicas: dict[str, TabletReplica]) -> api.DurabilityReply:
    return api.DurabilityReply(node_id, tuple(tablet_durability(replicas[t]) for t in sorted(replicas)))
