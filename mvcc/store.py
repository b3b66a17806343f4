"""The multi-version store of one tablet replica, on an `Engine`.

Role: versions (values and tombstones at timestamps), intents of prepared
transactions, reads and scans at a timestamp, GC below a horizon (and the
engine compaction that returns the space GC freed), and export and import
as snapshot chunks. The key layout is in mvcc/keys.py.

Inputs: user keys and values (bytes), `Timestamp`s, `Batch`es the caller
applies (`stage_*`) or writes the store applies itself (the other mutators,
each one atomic batch with the caller's `sync`).

Invariants:
- Touches only engine keys under its prefix: the same LevelDB holds the
  Paxos log (b"p") and tablet metadata (b"t"). One `MvccStore` per (engine,
  prefix): it caches the GC horizon and the intent keys, which only its own
  methods write.
- A read at ts sees the newest version with version ts <= ts; tombstones read
  as nothing. A key's intent is reported by reads at or above its timestamp.
- At most one intent per key; another transaction's intent is an
  `IntentConflict`. Resolving or aborting an intent that is not there (or
  belongs to another transaction) does nothing, so both are idempotent.
- Reads, scans and writes below the GC horizon raise `BelowGcHorizon`; the
  horizon never moves back and is persisted in the batch of the first GC
  chunk that raises it, so no version it hides is dropped before it is durable.
- A GC pass that could drop nothing is skipped: it only moves the horizon
  (`GcProgress.skipped`). `_clean_below_wall` W says: no version with a wall
  time below W lies above the horizon a completed pass (or skip) left clean,
  so a pass at a horizon whose wall is below W finds every version at or
  below it already in the form GC leaves (each key's newest one, not a
  tombstone). W is the oldest version a completed pass saw above its horizon
  (`plan_chunk`'s `oldest_above`), lowered by every version staged since that
  pass began (`stage_write`, `write`; what was there when it began, it read).
  W is -1 (never skip) on a new store object and after `clear` and
  `import_chunks`; a pass counts only if its chunks followed one another
  (each resumed from the token the last one returned). So a store on a fresh
  cluster, or one written only recently, is not read by GC at all until its
  oldest version falls behind the horizon. HAZARD: a version is counted when
  staged, so a caller applies a batch it staged versions in before the next
  GC call can run (TabletState.apply_entries stages and writes without
  yielding); a batch staged before a pass began and applied after the pass
  read that key would go unseen.
- `stage_*` read the engine as it is, not the batch being built, except
  for the intents staged in a batch that keeps an `overlay` (mvcc/engine.py
  `Batch`): an applier staging several commands in one batch sees through
  it what the earlier ones did to intents (`intent(key, batch=)`).

Performance notes: a point read is one `engine.first` seek (LevelDB reuses one
iterator until the next write); the set of intent keys is kept in memory, so
a read of a key without an intent costs no second lookup. The set is taken by
a scan of the intents once, then kept up to date by the intent changes this
store stages, each applied to it by its batch's `after_apply` callback (so
exactly when the engine applied it; a failed write changes neither), not
scanned again after every engine write: the engine also takes the Paxos log's
writes and plain versions, which leave the intents as they were. Above
`INTENT_CACHE_MAX` intents, or after an import or a clear, it is scanned again
on the next read that needs it. `Timestamp`
ordering (attrs-generated, about 2 us a comparison) is kept off the hot
paths: they compare `wall` first and encoded bytes in loops.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from hlc.timestamp import Timestamp
from mvcc import gc as gc_planner
from mvcc import snapshot
from mvcc.engine import Batch, Engine
from mvcc.keys import GROUP_END, TAGGED_TOMBSTONE, TERMINATOR, TS_SIZE, KeySpace, inverted_ts, tag_value, ts_from_inverted
from mvcc.records import (
    BelowGcHorizon,
    GcProgress,
    Intent,
    IntentConflict,
    MvccError,
    MvccStatistics,
    ReadResult,
    ScanResult,
    SnapshotError,
    Version,
    decode_intent,
    encode_intent,
)
from mvcc.visible import past_bytes, untag, visible_forward, visible_reverse

# Reads keep the set of intent keys in memory (refreshed after any write) when
# there are at most this many, so a read of a key without an intent costs one seek.
INTENT_CACHE_MAX = 256
CLEAR_BATCH_KEYS = 10_000
TS_CACHE_MAX = 4096
_new_tuple = tuple.__new__
_VALUE_TAG = 1
_NO_WALL = 1 << 64  # above every wall time: "no version"


class MvccStore:
    """Versions, intents, GC and snapshots of one tablet replica under `prefix`."""

    def __init__(self, engine: Engine, prefix: bytes = b"m") -> None:
        self.engine = engine
        self.space = KeySpace(prefix)
        self._horizon = self._load_horizon()
        # The intent keys (engine keys) when `_intent_keys_known`; None: more than INTENT_CACHE_MAX.
        self._intent_keys: set[bytes] | None = None
        self._intent_keys_known = False
        # Hot-path caches: the versions prefix, the engine's point-seek, the last read
        # timestamp's inverted form, and Timestamps decoded from version keys.
        self._versions = self.space.versions
        self._first = engine.first
        self._last_ts: Timestamp | None = None
        self._last_inverted = b""
        self._decoded: dict[bytes, Timestamp] = {}
        # GC skips (module docstring): W, the oldest wall staged since the running pass began,
        # that pass's oldest version above its horizon (an inverted ts), and the token it is at.
        self._clean_below_wall = -1
        self._written_min_wall = _NO_WALL
        self._pass_oldest_above = b""
        self._pass_token: bytes | None = None
        self._pass_whole = False

    # -- writes -------------------------------------------------------------

    def stage_write(self, batch: Batch, key: bytes, ts: Timestamp, value: bytes | None) -> None:
        """Add a version of `key` at `ts` (value None: a tombstone) to `batch`."""
        wall = ts.wall
        if wall <= self._horizon.wall and ts < self._horizon:
            raise BelowGcHorizon(self._horizon, ts)
        if wall < self._written_min_wall:
            self._written_min_wall = wall
        if wall < self._clean_below_wall:
            self._clean_below_wall = wall
        batch.put(self.space.group(key) + inverted_ts(ts), tag_value(value))

    def write(self, writes: Iterable[tuple[bytes, bytes | None]], ts: Timestamp, *, sync: bool) -> None:
        """Write all `(key, value | None)` at `ts` in one atomic batch."""
        wall = ts.wall
        if wall <= self._horizon.wall and ts < self._horizon:
            raise BelowGcHorizon(self._horizon, ts)
        if wall < self._written_min_wall:
            self._written_min_wall = wall
        if wall < self._clean_below_wall:
            self._clean_below_wall = wall
        versions, suffix = self._versions, TERMINATOR + inverted_ts(ts)
        ops: list[tuple[bytes, bytes | None]] = [
            (versions + key.replace(b"\x00", b"\x00\xff") + suffix, TAGGED_TOMBSTONE if value is None else b"\x01" + value)
            for key, value in writes
        ]
        self.engine.apply(Batch(ops), sync=sync)

    # -- reads --------------------------------------------------------------

    def read(self, key: bytes, ts: Timestamp) -> ReadResult:
        """The newest live version of `key` at or below `ts`, and its intent if at or below `ts`."""
        if ts.wall <= self._horizon.wall and ts < self._horizon:
            raise BelowGcHorizon(self._horizon, ts)
        if ts is not self._last_ts:
            self._last_ts, self._last_inverted = ts, inverted_ts(ts)
        group = self._versions + key.replace(b"\x00", b"\x00\xff") + TERMINATOR
        found = self._first(group + self._last_inverted, group + GROUP_END)
        if self._intent_keys_known and self._intent_keys is not None and not self._intent_keys:
            intent = None  # no intents at all: the common case costs no second lookup
        else:
            intent = self._intent_at_or_below(key, ts)
        if found is None or found[1] == TAGGED_TOMBSTONE:
            return ReadResult(None, None, intent)
        engine_key, stored = found
        if stored[0] != _VALUE_TAG:
            raise MvccError(f"corrupt version of {key!r}: bad tag {stored[:1]!r}")
        suffix = engine_key[-TS_SIZE:]
        version_ts = self._decoded.get(suffix)
        if version_ts is None:
            version_ts = self._decode_ts(suffix)
        return _new_tuple(ReadResult, (stored[1:], version_ts, intent))  # ReadResult(...), minus a call

    def scan(
        self, start: bytes, end: bytes | None, ts: Timestamp, *, limit: int | None = None, reverse: bool = False,
        max_bytes: int | None = None,
    ) -> ScanResult:
        """Live rows with start <= key < end (end None: no bound) at `ts`, in key order
        (descending with reverse), at most `limit`, and with `max_bytes` stopping at the
        row that takes their keys and values past it (never before the second row);
        plus the intents at or below `ts` among the keys the scan covered (up to the
        last row when the limit or max_bytes cut it short)."""
        if ts.wall <= self._horizon.wall and ts < self._horizon:
            raise BelowGcHorizon(self._horizon, ts)
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0: {limit}")
        if (end is not None and end <= start) or limit == 0:
            return ScanResult((), ())
        low = self.space.group(start)
        high = self.space.versions_end if end is None else self.space.group(end)
        pairs = self.engine.iterate(low, high, reverse=reverse)
        walk = visible_reverse if reverse else visible_forward
        # P "v" 00 00 starts no version key: an escaped key never starts with 00 00.
        rows = walk(pairs, inverted_ts(ts), limit, len(self.space.versions), self.space.versions + b"\x00\x00", max_bytes)
        covered_start, covered_end = start, end
        cut_by_bytes = past_bytes(rows, sum(len(key) + len(value) for key, value, _ in rows), max_bytes)
        if (limit is not None and len(rows) == limit) or cut_by_bytes:
            if reverse:
                covered_start = rows[-1][0]
            else:
                covered_end = rows[-1][0] + b"\x00"  # the smallest key above the last row
        return ScanResult(rows, self._intents_in(covered_start, covered_end, ts))

    def versions(self, key: bytes) -> tuple[Version, ...]:
        """Every stored version of `key`, newest first, tombstones included."""
        group = self.space.group(key)
        return tuple(
            Version(ts_from_inverted(engine_key[-TS_SIZE:]), untag(stored))
            for engine_key, stored in self.engine.iterate(group, group + GROUP_END)
        )

    # -- intents ------------------------------------------------------------

    def intent(self, key: bytes, *, batch: Batch | None = None) -> Intent | None:
        """`key`'s intent, if any; with `batch`, as it will be once that batch is applied (an
        intent staged or deleted in it is seen when the batch keeps an `overlay`)."""
        intent_key = self.space.intent_key(key)
        overlay = None if batch is None else batch.overlay
        if overlay is not None and intent_key in overlay:
            stored = overlay[intent_key]
        else:
            stored = self.engine.get(intent_key)
        return None if stored is None else decode_intent(key, stored)

    def stage_intent(self, batch: Batch, intent: Intent) -> None:
        """Add `intent` to `batch`; replaces an intent of the same transaction."""
        if intent.ts.wall <= self._horizon.wall and intent.ts < self._horizon:
            raise BelowGcHorizon(self._horizon, intent.ts)
        existing = self.intent(intent.key, batch=batch)
        if existing is not None and existing.txn_id != intent.txn_id:
            raise IntentConflict(intent.key, existing.txn_id, intent.txn_id)
        intent_key = self.space.intent_key(intent.key)
        encoded = encode_intent(intent)
        batch.put(intent_key, encoded)
        if batch.overlay is not None:
            batch.overlay[intent_key] = encoded
        batch.after_apply(lambda: self._intent_applied(intent_key, True))

    def put_intent(self, intent: Intent, *, sync: bool) -> None:
        batch = Batch()
        self.stage_intent(batch, intent)
        self.engine.apply(batch, sync=sync)

    def stage_resolve_intent(self, batch: Batch, key: bytes, txn_id: str, commit_ts: Timestamp) -> bool:
        """Turn `txn_id`'s intent on `key` into a version at `commit_ts`; False if there is none."""
        existing = self.intent(key, batch=batch)
        if existing is None or existing.txn_id != txn_id:
            return False
        if commit_ts < existing.ts:
            raise MvccError(f"commit timestamp {commit_ts} is below the intent's timestamp {existing.ts} ({existing})")
        self.stage_write(batch, key, commit_ts, existing.value)
        self._stage_intent_delete(batch, key)
        return True

    def resolve_intent(self, key: bytes, txn_id: str, commit_ts: Timestamp, *, sync: bool) -> bool:
        batch = Batch()
        done = self.stage_resolve_intent(batch, key, txn_id, commit_ts)
        if done:
            self.engine.apply(batch, sync=sync)
        return done

    def stage_abort_intent(self, batch: Batch, key: bytes, txn_id: str) -> bool:
        """Remove `txn_id`'s intent on `key`; False if there is none."""
        existing = self.intent(key, batch=batch)
        if existing is None or existing.txn_id != txn_id:
            return False
        self._stage_intent_delete(batch, key)
        return True

    def abort_intent(self, key: bytes, txn_id: str, *, sync: bool) -> bool:
        batch = Batch()
        done = self.stage_abort_intent(batch, key, txn_id)
        if done:
            self.engine.apply(batch, sync=sync)
        return done

    def intents(self) -> tuple[Intent, ...]:
        """Every intent, in key order."""
        return self._intents_in(b"", None, Timestamp.MAX)

    # -- GC -----------------------------------------------------------------

    def gc_horizon(self) -> Timestamp:
        return self._horizon

    def gc(
        self, horizon: Timestamp, *, max_versions: int = 1000, resume_from: bytes | None = None, sync: bool = False
    ) -> GcProgress:
        """Drop versions no read at or above `horizon` can see, examining about
        `max_versions` versions; call again with `resume_from` until done. A horizon
        below the current one means the current one. A pass that could drop nothing
        only moves the horizon (`skipped`, module docstring)."""
        effective = max(horizon, self._horizon)
        start, passed = self.space.versions, False
        if resume_from is None:
            if effective.wall < self._clean_below_wall:
                batch = Batch()  # applied even if empty, as a pass's: `sync` syncs what came before
                if effective != self._horizon:
                    batch.put(self.space.horizon_key, effective.to_bytes())
                self.engine.apply(batch, sync=sync)
                self._horizon = effective
                return GcProgress(True, None, 0, 0, start, self.space.versions_end, skipped=True)
            self._written_min_wall, self._pass_oldest_above, self._pass_whole = _NO_WALL, b"", True
        else:
            if resume_from != self._pass_token:
                self._pass_whole = False  # not the running pass's next chunk: it proves nothing clean
            try:
                start, passed = gc_planner.decode_token(resume_from, effective)
            except ValueError as error:
                raise MvccError(str(error)) from None
        pairs = self.engine.iterate(start, self.space.versions_end)
        chunk = gc_planner.plan_chunk(pairs, effective, passed=passed, max_versions=max_versions)
        batch = Batch()
        if effective != self._horizon:
            batch.put(self.space.horizon_key, effective.to_bytes())
        for key in chunk.deletes:
            batch.delete(key)
        self.engine.apply(batch, sync=sync)
        self._horizon = effective
        if chunk.oldest_above > self._pass_oldest_above:
            self._pass_oldest_above = chunk.oldest_above
        if chunk.resume is None:
            if self._pass_whole:
                oldest = self._pass_oldest_above
                self._clean_below_wall = min(ts_from_inverted(oldest).wall if oldest else _NO_WALL, self._written_min_wall)
            self._pass_token, self._pass_whole = None, False
            return GcProgress(True, None, len(chunk.deletes), chunk.examined, start, self.space.versions_end)
        token = gc_planner.encode_token(effective, *chunk.resume)
        self._pass_token = token
        return GcProgress(False, token, len(chunk.deletes), chunk.examined, start, chunk.stop or self.space.versions_end)

    def compact(self, span_start: bytes | None = None, span_end: bytes | None = None) -> None:
        """Let the engine reclaim what GC dropped in `[span_start, span_end)` (GC chunk spans,
        `GcProgress`; None: from the first or to the last version). Changes nothing readable;
        on LevelDB it is a manual compaction of the range and blocks until done."""
        start = self.space.versions if span_start is None else max(span_start, self.space.versions)
        end = self.space.versions_end if span_end is None else min(span_end, self.space.versions_end)
        if start < end:
            self.engine.compact(start, end)

    # -- snapshots ----------------------------------------------------------

    def is_empty(self) -> bool:
        return self.engine.first(self.space.prefix, self.space.end) is None

    def import_incomplete(self) -> bool:
        """True if an import started and did not finish (clear() and import again)."""
        return self.engine.get(self.space.importing_key) is not None

    def export_chunks(self, *, chunk_bytes: int = 1 << 20) -> Iterator[bytes]:
        """The whole store as snapshot chunks, read from one engine view."""
        if self.import_incomplete():
            raise SnapshotError("cannot export a store whose import did not finish")
        prefix_length = len(self.space.prefix)
        with self.engine.view() as view:
            pairs = self.engine.iterate(self.space.prefix, self.space.end, view=view)
            relative = ((key[prefix_length:], value) for key, value in pairs)
            yield from snapshot.encode_chunks(relative, chunk_bytes)

    def import_chunks(self, chunks: Iterable[bytes], *, sync: bool = True) -> None:
        """Load an exported stream into this (empty) store. A stream that fails part
        way leaves the store marked incomplete: clear() it and import again."""
        if not self.is_empty():
            raise SnapshotError(f"import needs an empty store; the store under {self.space.prefix!r} has data")
        marker = Batch()
        marker.put(self.space.importing_key, b"")
        self.engine.apply(marker, sync=False)
        sequence, finished = 0, False
        try:
            for data in chunks:
                if finished:
                    raise SnapshotError(f"snapshot stream continues after its last chunk ({sequence})")
                chunk = snapshot.decode_chunk(data, sequence)
                batch = Batch()
                for key, value in chunk.pairs:
                    batch.put(self.space.prefix + key, value)
                if chunk.last:
                    batch.delete(self.space.importing_key)
                    finished = True
                self.engine.apply(batch, sync=sync and finished)
                sequence += 1
        finally:
            self._intent_keys_known = False  # the stream may have carried intents: scan again
            self._clean_below_wall, self._pass_whole = -1, False  # versions GC has not seen
        self._horizon = self._load_horizon()
        if not finished:
            raise SnapshotError(f"snapshot stream ended after {sequence} chunks without its last chunk")

    def clear(self, *, sync: bool = True) -> int:
        """Delete everything under the prefix (in several batches); returns the key count."""
        cleared = 0
        try:
            while True:
                batch = Batch()
                for key, _ in self.engine.iterate(self.space.prefix, self.space.end):
                    batch.delete(key)
                    if len(batch) >= CLEAR_BATCH_KEYS:
                        break
                if not len(batch):
                    break
                self.engine.apply(batch, sync=sync)
                cleared += len(batch)
        finally:
            self._intent_keys_known = False
            self._clean_below_wall, self._pass_whole = -1, False
        self._horizon = Timestamp.MIN
        return cleared

    # -- statistics ---------------------------------------------------------

    def statistics(self) -> MvccStatistics:
        keys = versions = tombstones = 0
        oldest: Timestamp | None = None
        newest: Timestamp | None = None
        group = None
        for engine_key, stored in self.engine.iterate(self.space.versions, self.space.versions_end):
            versions += 1
            tombstones += stored == TAGGED_TOMBSTONE
            ts = ts_from_inverted(engine_key[-TS_SIZE:])
            oldest = ts if oldest is None or ts < oldest else oldest
            newest = ts if newest is None or ts > newest else newest
            if engine_key[:-TS_SIZE] != group:
                group = engine_key[:-TS_SIZE]
                keys += 1
        intents = sum(1 for _ in self.engine.iterate(self.space.intents, self.space.intents_end))
        size = self.engine.approximate_size(self.space.prefix, self.space.end)
        return MvccStatistics(keys, versions, tombstones, intents, size, oldest, newest, self._horizon)

    # -- helpers ------------------------------------------------------------

    def _decode_ts(self, suffix: bytes) -> Timestamp:
        if len(self._decoded) >= TS_CACHE_MAX:
            self._decoded.clear()
        decoded = self._decoded[suffix] = ts_from_inverted(suffix)
        return decoded

    def _load_horizon(self) -> Timestamp:
        stored = self.engine.get(self.space.horizon_key)
        return Timestamp.MIN if stored is None else Timestamp.from_bytes(stored)

    def _stage_intent_delete(self, batch: Batch, key: bytes) -> None:
        intent_key = self.space.intent_key(key)
        batch.delete(intent_key)
        if batch.overlay is not None:
            batch.overlay[intent_key] = None
        batch.after_apply(lambda: self._intent_applied(intent_key, False))

    def _intent_applied(self, intent_key: bytes, present: bool) -> None:
        """A staged intent change was applied: keep the in-memory set as the engine now is."""
        keys = self._intent_keys
        if not self._intent_keys_known or keys is None:
            self._intent_keys_known = False  # too many to keep, or not taken yet: scan when needed
        elif present:
            keys.add(intent_key)
            if len(keys) > INTENT_CACHE_MAX:
                self._intent_keys_known = False
        else:
            keys.discard(intent_key)

    def _intent_at_or_below(self, key: bytes, ts: Timestamp) -> Intent | None:
        if not self._intent_keys_known:
            self._refresh_intent_keys()
        intent_key = self.space.intent_key(key)
        if self._intent_keys is not None and intent_key not in self._intent_keys:
            return None
        stored = self.engine.get(intent_key)
        if stored is None:
            return None
        intent = decode_intent(key, stored)
        return intent if intent.ts <= ts else None

    def _refresh_intent_keys(self) -> None:
        """Scan the intents. Above INTENT_CACHE_MAX the set is not kept (None): every read then
        looks its key up, and each applied intent change asks for a scan again."""
        found = []
        for key, _ in self.engine.iterate(self.space.intents, self.space.intents_end):
            found.append(key)
            if len(found) > INTENT_CACHE_MAX:
                self._intent_keys = None
                break
        else:
            self._intent_keys = set(found)
        self._intent_keys_known = True

    def _intents_in(self, start: bytes, end: bytes | None, ts: Timestamp) -> tuple[Intent, ...]:
        if not self._intent_keys_known:
            self._refresh_intent_keys()
        if self._intent_keys is not None and not self._intent_keys:
            return ()
        low = self.space.intent_key(start)
        high = self.space.intents_end if end is None else self.space.intent_key(end)
        found = []
        for engine_key, stored in self.engine.iterate(low, high):
            intent = decode_intent(self.space.decode_intent_key(engine_key), stored)
            if intent.ts <= ts:
                found.append(intent)
        return tuple(found)
