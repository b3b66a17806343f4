"""Durability figures of a node's tablet replicas: the durable watermark and commit counters.

Role: what `chronodb status --json` and `inspect tablets` ask a node besides
its status (type ids 253-255, txn/wire/type_ids.py). Pure.

- `durable_index`: the highest log index known fsynced on a majority of the
  tablet's replicas (acceptors fsync before they answer, so a chosen index is
  durable by definition; a leader also counts its followers' reported match
  indexes), `durable_ts` the timestamp of the last timestamped command at or
  below it (None when none is in the log any more);
- `distributed_commits`: commits this replica acknowledged as leader after a
  majority fsynced them (single writes, one-phase commits, and the commit
  decisions of two-phase transactions it coordinated); `not_durable_commits`:
  commits it answered `outcome_unknown` because majority durability could not
  be confirmed in time.
"""

from __future__ import annotations

from typing import ClassVar

import attrs

from hlc.timestamp import Timestamp
from txn.wire.codec import register_classes


@attrs.frozen
class DurabilityRequest:
    hlc_exempt: ClassVar[bool] = True  # admin: must reach a node whose clock ran off


@attrs.frozen
class TabletDurability:
    tablet_id: str
    is_leader: bool
    chosen_index: int
    applied_index: int
    durable_index: int
    durable_ts: Timestamp | None
    distributed_commits: int
    not_durable_commits: int


@attrs.frozen
class DurabilityReply:
    node_id: str
    tablets: tuple[TabletDurability, ...] = attrs.field(converter=tuple)


register_classes(DurabilityRequest, TabletDurability, DurabilityReply)
