"""One page of a tablet's backup export, served by one replica.

Role: answers `ExportRequest` (txn/api/backup.py) from the replica's MVCC
store. Input: the replica and the request; output: an `ExportReply` or a
`RequestFailed` (`below_gc_horizon`, `timeout`, `unavailable`, ...).

Invariants:
- a page is served only after the same wait a `ReadRequest(mode=AT)` makes
  (`TabletReplica.read_ts`: safe time past ts, held below prepared
  transactions; on a leader, its own commands at or below ts finished
  commit-wait), and then while no intent at or below ts remains: so nothing
  can still appear at or below ts, and a prepared-but-unresolved
  transaction never leaks into a backup;
- a page is built synchronously (no await between the first and the last
  engine read), so it is one consistent view of the store; GC between pages
  cannot drop anything a page needs, because GC only drops versions hidden
  below its horizon and every page re-checks that ts (and since) are at or
  above the horizon;
- writers are not blocked: the export takes no lock and proposes nothing.

The resume token is the version key (relative to the MVCC prefix) of the
next version to examine: MVCC key order is the same on every replica, so a
backup can resume on another replica after one dies.
"""

from __future__ import annotations

import trio

from hlc import Timestamp
from mvcc.keys import TAGGED_TOMBSTONE, TS_SIZE, inverted_ts, ts_from_inverted, unescape
from mvcc.visible import untag
from txn import api
from txn.api.backup import EXPORT_PAGE_BYTES_MAX
from txn.api.errors import failure
from txn.tablet.tablet_replica import TabletReplica

PAGE_VERSIONS_MAX = 10_000
VERSION_OVERHEAD_BYTES = 16  # timestamp and framing, counted against max_bytes


async def export_page(replica: TabletReplica, request: api.ExportRequest) -> api.ExportReply:
    """Serve one page of `request` once a read at request.ts could be served here."""
    if request.since is not None and request.since >= request.ts:
        raise failure(api.ErrorCode.BAD_REQUEST, f"since {request.since} is not below the backup timestamp {request.ts}")
    with trio.move_on_after(max(request.timeout_ns, 0) / 1e9):
        await replica.read_ts(api.ReadMode.AT, request.ts, request.timeout_ns)
        await _wait_no_intents_at_or_below(replica, request.ts)
        _check_horizon(replica, request)
        return _build_page(replica, request)
    raise failure(api.ErrorCode.TIMEOUT, f"a transaction prepared on tablet {replica.tablet.id} at or below {request.ts} was not resolved in time",
                  leader_hint=replica.leader_hint())


async def _wait_no_intents_at_or_below(replica: TabletReplica, ts: Timestamp) -> None:
    """A prepared transaction's intent at or below ts may still commit at or below ts: wait for its fate."""
    while True:
        changed = replica._changed
        if not any(intent.ts <= ts for intent in replica.state.store.intents()):
            return
        replica.marks["tablet.export_waited_for_intent"] += 1
        await replica._wait_changed(changed)


def _check_horizon(replica: TabletReplica, request: api.ExportRequest) -> None:
    horizon = replica.state.store.gc_horizon()
    if request.ts < horizon:
        raise failure(api.ErrorCode.BELOW_GC_HORIZON,
                      f"backup timestamp {request.ts} is below the GC horizon {horizon} of tablet {replica.tablet.id} on {replica.node_id}",
                      horizon=horizon)
    if request.since is not None and request.since < horizon:
        raise failure(api.ErrorCode.BELOW_GC_HORIZON,
                      f"the earlier backup's timestamp {request.since} is below the GC horizon {horizon} of tablet "
                      f"{replica.tablet.id} on {replica.node_id}: versions after it may be gone; take a full backup",
                      horizon=horizon)


def _build_page(replica: TabletReplica, request: api.ExportRequest) -> api.ExportReply:
    store = replica.state.store
    space = store.space
    prefix_length = len(space.prefix)
    start = space.versions if request.resume is None else space.prefix + request.resume
    if not start.startswith(space.versions):
        raise failure(api.ErrorCode.BAD_REQUEST, f"bad resume token {request.resume!r}")
    budget = max(1, min(request.max_bytes, EXPORT_PAGE_BYTES_MAX))
    ts_inverted = inverted_ts(request.ts)
    since_inverted = None if request.since is None else inverted_ts(request.since)
    versions: list[api.ExportedVersion] = []
    used = 0
    decided_group = None  # full backups: the group whose version at ts was already taken (or was a tombstone)
    for engine_key, stored in store.engine.iterate(start, space.versions_end):
        group, suffix = engine_key[:-TS_SIZE], engine_key[-TS_SIZE:]
        # A full backup cuts pages between keys only: the next page must not take
        # an older version of a key whose version at ts this page already took.
        if (used >= budget or len(versions) >= PAGE_VERSIONS_MAX) and (since_inverted is not None or group != decided_group):
            return api.ExportReply(request.ts, versions, engine_key[prefix_length:], replica.node_id, store.gc_horizon())
        if suffix < ts_inverted:
            continue  # newer than ts
        if since_inverted is None:
            if group == decided_group:
                continue
            decided_group = group
            if stored == TAGGED_TOMBSTONE:
                continue
        elif suffix >= since_inverted:
            continue  # at or below since: in the earlier backup
        key = unescape(group[len(space.versions):-2])
        value = untag(stored)
        versions.append(api.ExportedVersion(key, ts_from_inverted(suffix), value))
        used += len(key) + (0 if value is None else len(value)) + VERSION_OVERHEAD_BYTES
    return api.ExportReply(request.ts, versions, None, replica.node_id, store.gc_horizon())
