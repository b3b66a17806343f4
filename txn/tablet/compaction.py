"""Which key ranges a tablet replica compacts after GC and log truncation, and when.

Role: the pure policy of the space loop (txn/tablet/space.py). GC
(mvcc/store.py) and Paxos log truncation (paxos/) delete keys, but LevelDB
keeps the deleted data, and the tombstones on top of it, until a compaction
rewrites the files holding them; a compaction call blocks the node's trio
loop until it is done, for a time that grows with the data in and around its
range. This module turns what GC chunks and truncation report into bounded
compaction ranges and a pace; it does no I/O and reads no clock.

Rules:
- MVCC slices. The chunks of one GC pass are grouped into slices of
  consecutive chunks; a slice closes once it examined `slice_versions`
  versions, or when the pass ends. A closed slice is compacted when its
  chunks dropped at least `min_dropped` versions and at least
  `min_fraction` of those they examined. What a slice dropped below that is
  owed: once the owed drops reach both `min_dropped` and `min_fraction` of
  the versions the last whole pass examined, the next pass compacts every
  slice (a sweep) and the debt is cleared. So the dropped versions no
  compaction has reached stay below about twice `min_fraction` of the store
  (less what LevelDB's own compactions reclaim meanwhile). Under steady
  overwrites a pass drops about interval / (retention + interval) of the
  versions (1/7 with a 30 s retention and 5 s passes): every third pass
  sweeps, instead of a compaction after every pass.
- Paxos log: the range up to the log's snapshot index is compacted once the
  index advanced by at least `log_min_entries` since the last log
  compaction (truncation deletes thousands of entries at a time) and the
  truncated range still holds at least `log_min_share` of the engine's
  bytes (LevelDB's estimate, table files only). LevelDB drops a truncated
  entry by itself once a compaction of its own brings the entry and its
  tombstone together, which a steady write load keeps causing (in the
  benchmark below, 13 MB of 22 MB of truncated log was still in table
  files at the end); what it leaves longest is what writes that stopped
  left in young files. A log
  compaction is not a small call: the tables a memtable flush writes span
  the MVCC keys and the log's, so compacting the log's range rewrites
  whatever those tables overlap, a cost that grows with the store
  (`chronodb bench compaction`: on a 100 MB tablet, a log compaction at
  every check and three to four times the CPU per Paxos entry, without the share
  rule). With it, a large store pays for a log compaction only once dead
  log is a real part of it, and the dead log stays below about
  `log_min_share` of the store.
- Pace: after a compaction that took d, the next waits
  d * (1 - duty) / duty, so in the long run compaction holds the loop at
  most `duty` of the time. A single call is not split further: LevelDB
  compacts whole files, and a file of an upper level can overlap most of
  the next one.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class CompactionPolicy:
    slice_versions: int = 20_000  # versions examined per slice: bounds one compaction's key range
    min_dropped: int = 100  # fewer dropped versions are not worth a compaction (they become debt)
    min_fraction: float = 0.25  # ... nor fewer than this share of the versions examined
    log_min_entries: int = 1_000  # truncated log entries worth a log compaction
    log_min_share: float = 0.25  # ... once the truncated range holds this share of the engine's bytes
    duty: float = 0.2  # longest share of the time spent compacting

    def __attrs_post_init__(self) -> None:
        if self.slice_versions < 1 or self.min_dropped < 1 or self.log_min_entries < 1:
            raise ValueError("slice_versions, min_dropped and log_min_entries must be at least 1")
        if not 0 <= self.min_fraction <= 1 or not 0 <= self.log_min_share <= 1 or not 0 < self.duty <= 1:
            raise ValueError("need 0 <= min_fraction <= 1, 0 <= log_min_share <= 1 and 0 < duty <= 1")

    def pause_ns(self, took_ns: int) -> int:
        """How long to wait after a compaction that took `took_ns` before the next."""
        return int(max(0, took_ns) * (1 - self.duty) / self.duty)

    def log_compaction_due(self, snapshot_index: int, compacted_through: int) -> bool:
        """Enough entries were truncated since the last log compaction to look at their bytes."""
        return snapshot_index - compacted_through >= self.log_min_entries

    def log_compaction_worth(self, truncated_bytes: int, engine_bytes: int) -> bool:
        """The truncated range's bytes (still in table files) are a large enough share of the engine's."""
        return truncated_bytes > 0 and truncated_bytes >= self.log_min_share * engine_bytes


@attrs.frozen
class Slice:
    """Consecutive GC chunks: the engine key range `[start, end)` to compact, and what they did."""

    start: bytes
    end: bytes
    examined: int
    dropped: int


@attrs.define
class SlicePlanner:
    """Feed it every GC chunk of every pass (`chunk`, then `finish_pass`); it answers the slices to compact."""

    policy: CompactionPolicy = attrs.Factory(CompactionPolicy)
    debt: int = 0  # dropped versions of slices that were not compacted
    last_pass_examined: int = 0
    sweep: bool = False  # this pass compacts every slice
    _open: Slice | None = None
    _pass_examined: int = 0

    def start_pass(self) -> None:
        policy = self.policy
        self.sweep = self.debt >= policy.min_dropped and self.debt >= policy.min_fraction * self.last_pass_examined
        self._open, self._pass_examined = None, 0

    def chunk(self, start: bytes, end: bytes, examined: int, dropped: int) -> Slice | None:
        """One GC chunk's span and counts (`GcProgress`); a slice to compact now, if one closed."""
        self._pass_examined += examined
        current = self._open
        if current is None:
            current = Slice(start, end, examined, dropped)
        else:
            current = Slice(current.start, max(current.end, end), current.examined + examined, current.dropped + dropped)
        if current.examined < self.policy.slice_versions:
            self._open = current
            return None
        self._open = None
        return self._close(current)

    def finish_pass(self) -> Slice | None:
        """The pass ended: the last slice to compact, if any; a sweep clears the debt."""
        current, self._open = self._open, None
        due = self._close(current) if current is not None else None
        self.last_pass_examined = self._pass_examined
        if self.sweep:
            self.debt, self.sweep = 0, False
        return due

    def _close(self, current: Slice) -> Slice | None:
        policy = self.policy
        worth = current.dropped >= policy.min_dropped and current.dropped >= policy.min_fraction * current.examined
        if worth or (self.sweep and current.examined > 0):
            return current
        self.debt += current.dropped
        return None
