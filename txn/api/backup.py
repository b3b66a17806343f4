"""Backup export: the request that streams one tablet's versions at a timestamp, in pages.

Role: what `chronodb backup` asks a replica (type ids 250-259 in
txn/wire/type_ids.py). Pure: attrs classes and their registration.

`ExportRequest(tablet_id, ts, since, resume, max_bytes, timeout_ns)` asks for
the versions of `tablet_id` with `since < version ts <= ts`:
- `since` None: a full backup, the version each key shows at `ts` (its newest
  version at or below `ts`; keys whose version there is a tombstone are left
  out, they hide nothing in an empty store);
- `since` set: an incremental backup, EVERY version in `(since, ts]`,
  tombstones included, so a chain restores any timestamp it covers.
The replica serves only once it could serve a read at `ts` (safe time past
`ts`, no prepared transaction at or below it: the `ReadRequest(mode=AT)`
wait), and fails with `below_gc_horizon` (naming the horizon) when `ts`, or
`since`, is below its GC horizon. `resume` is the opaque position the
previous page ended at (None: the start); a reply's `resume` None means the
tablet is done. Pages are bounded by `max_bytes` (keys plus values), give or
take one version; resume tokens are valid on every replica (they are
positions in the MVCC key order, not in one replica's files).
"""

from __future__ import annotations

import attrs

from hlc.timestamp import Timestamp
from txn.wire.codec import register_classes

EXPORT_PAGE_BYTES_MAX = 4 << 20  # what a node serves in one page at most, whatever was asked


@attrs.frozen
class ExportRequest:
    tablet_id: str
    ts: Timestamp
    since: Timestamp | None
    resume: bytes | None
    max_bytes: int
    timeout_ns: int

    def __str__(self) -> str:
        return f"ExportRequest {self.tablet_id} ts={self.ts} since={self.since}"


@attrs.frozen
class ExportedVersion:
    key: bytes
    ts: Timestamp
    value: bytes | None  # None: a tombstone (incremental backups only)


@attrs.frozen
class ExportReply:
    ts: Timestamp
    versions: tuple[ExportedVersion, ...] = attrs.field(converter=tuple)
    resume: bytes | None  # None: the tablet is done
    served_by: str
    gc_horizon: Timestamp


register_classes(ExportRequest, ExportedVersion, ExportReply)
