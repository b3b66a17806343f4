"""The Paxos log's durable state in the replica's LevelDB, through mvcc's `Engine` interface.

Role: the storage edge of one replica. `load()` recovers exactly what was
synced; `write(persist)` applies one `Persist` (new promise, accepted entries,
truncation) as one atomic batch with one synced write (group commit: the
driver gathers a whole step's changes into one Persist); `batch_of(persist)`
is that batch, for a driver that writes it off the event loop.

Key layout (the replica's LevelDB also holds MVCC data under b"m" and tablet
metadata under b"t"; this module writes only under b"p"):
    b"p\\x00promised"              cbor [round, node]      the promised ballot
    b"p\\x00snapshot"              cbor int                log truncated through here
    b"p\\x01" + index (8 bytes BE) cbor [round, node, command]  accepted entry
Big-endian indexes make key order equal slot order, so truncation and
recovery are range scans.

Invariants: a write is atomic (one batch) and synced before `write` returns;
entries at or below the snapshot index are deleted in the same batch that
records it (so a truncation lists the keys to delete from past the recorded
index); `load()` asserts the keys it reads decode to what was written.

Space: truncation leaves the deleted entries, and LevelDB's tombstones over
them, in the files until a compaction rewrites them; `compact_log(through)`
compacts exactly the log's range up to `through` (the tablet's space loop
calls it after truncations, txn/tablet/space.py). It changes nothing that
`load()` reads.
"""

from __future__ import annotations

import struct

import cbor2

from mvcc.engine import Batch, Engine
from paxos.messages import ZERO_BALLOT, Ballot, Entry
from paxos.types import PersistedState, Persist

PREFIX = b"p"
PROMISED_KEY = b"p\x00promised"
SNAPSHOT_KEY = b"p\x00snapshot"
REBUILDING_KEY = b"p\x00rebuilding"
LOG_PREFIX = b"p\x01"
LOG_END = b"p\x02"


def entry_key(index: int) -> bytes:
    return LOG_PREFIX + struct.pack(">Q", index)


def index_of(key: bytes) -> int:
    assert key.startswith(LOG_PREFIX) and len(key) == len(LOG_PREFIX) + 8, key
    return struct.unpack(">Q", key[len(LOG_PREFIX):])[0]


def _decode_entry(key: bytes, value: bytes) -> Entry:
    round_, node, command = cbor2.loads(value)
    return Entry(index_of(key), Ballot(round_, node), command)


class PaxosStorage:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.synced_writes = 0
        self.entries_written = 0

    def load(self, resident_after: int | None = None) -> PersistedState:
        """The promise, the truncation point and the log. With `resident_after`, entries at or below it
        (applied ones) stay on disk: only their indexes are listed (`stored`), read back by `read_entry`."""
        raw = self.engine.get(PROMISED_KEY)
        promised = ZERO_BALLOT
        if raw is not None:
            round_, node = cbor2.loads(raw)
            promised = Ballot(round_, node)
        raw = self.engine.get(SNAPSHOT_KEY)
        snapshot_index = cbor2.loads(raw) if raw is not None else 0
        stored: list[int] = []
        loaded_from = LOG_PREFIX
        if resident_after is not None and resident_after > snapshot_index:
            loaded_from = entry_key(resident_after + 1)
            stored = [index_of(key) for key in self.engine.keys(LOG_PREFIX, loaded_from)]
        entries = []
        for key, value in self.engine.iterate(loaded_from, LOG_END):
            entry = _decode_entry(key, value)
            assert entry.index > snapshot_index, (entry.index, snapshot_index)
            entries.append(entry)
        return PersistedState(promised, snapshot_index, tuple(entries), self.engine.get(REBUILDING_KEY) is not None,
                              stored=tuple(stored))

    def read_entry(self, index: int) -> Entry | None:
        """One log entry read back (the core keeps only recent entries in memory)."""
        key = entry_key(index)
        value = self.engine.get(key)
        return None if value is None else _decode_entry(key, value)

    def mark_rebuilding(self) -> None:
        """Record (synced) that this acceptor's state was lost: until the core clears it, it votes for nothing.
        Written into a fresh, empty store before its replica starts (txn/node/rebuild.py)."""
        batch = Batch()
        batch.put(REBUILDING_KEY, b"")
        self.engine.apply(batch, sync=True)

    def write(self, persist: Persist, *, sync: bool = True) -> None:
        if not persist:
            return
        self.engine.apply(self.batch_of(persist), sync=sync)
        if sync:
            self.count_synced(persist)
        else:
            self.entries_written += len(persist.entries)

    def batch_of(self, persist: Persist) -> Batch:
        """The one batch that writes `persist` (reads the log's keys for a truncation)."""
        batch = Batch()
        if persist.promised is not None:
            batch.put(PROMISED_KEY, cbor2.dumps([persist.promised.round, persist.promised.node]))
        for entry in persist.entries:
            batch.put(entry_key(entry.index), cbor2.dumps([entry.ballot.round, entry.ballot.node, entry.command]))
        if persist.truncate_through is not None:
            # From past the last recorded truncation: the keys at or below it were deleted with it, and a
            # listing from the log's start would walk their tombstones, as many as LevelDB has not yet
            # compacted away (on a large store, most of them: txn/tablet/compaction.py).
            raw = self.engine.get(SNAPSHOT_KEY)
            live_from = LOG_PREFIX if raw is None else entry_key(cbor2.loads(raw) + 1)
            for key in list(self.engine.keys(live_from, entry_key(persist.truncate_through + 1))):
                batch.delete(key)  # keys only: a thousand truncated 4 MiB entries are not read into memory
            for entry in persist.entries:
                if entry.index <= persist.truncate_through:
                    batch.delete(entry_key(entry.index))
            batch.put(SNAPSHOT_KEY, cbor2.dumps(persist.truncate_through))
        if persist.rebuilt:
            batch.delete(REBUILDING_KEY)  # in the same batch as the fence promise that makes voting safe
        return batch

    def count_synced(self, persist: Persist) -> None:
        """Count a synced write of `persist` (made by `write`, or by the driver off the loop)."""
        self.synced_writes += 1
        self.entries_written += len(persist.entries)

    def truncated_bytes(self, through: int) -> tuple[int, int]:
        """(bytes the truncated entries at or below `through` still hold, bytes of the whole engine),
        as the engine estimates them (LevelDB: table files only, not the memtable)."""
        return self.engine.approximate_size(LOG_PREFIX, entry_key(through + 1)), self.engine.approximate_size(b"", None)

    def compact_log(self, through: int) -> None:
        """Let the engine reclaim the truncated entries at or below `through` (and their tombstones)."""
        self.engine.compact(LOG_PREFIX, entry_key(through + 1))
