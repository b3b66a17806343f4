"""One tablet replica's state: the MVCC data, the applied log index and safe time.

Role: the Paxos state machine of a tablet (`applied_index`, `apply`,
`export_snapshot`, `install_snapshot`). Pure: works on an `Engine` and an
`MvccStore`; no trio, no clock. The trio side (txn/tablet/tablet_replica.py) decides what
to propose and when to serve; this module only applies what was chosen.

On disk, in the replica's LevelDB (the Paxos log uses b"p", MVCC data b"m"):

    b"t/applied"     8-byte big-endian index of the last applied slot
    b"t/safe"        12-byte timestamp: the largest command timestamp applied
    b"t/epoch"       cbor [round, node]: the epoch (ballot) of the last applied Barrier
    b"t/installing"  8-byte big-endian snapshot index: present only while a
                     snapshot install is unfinished
    b"t/p/", b"t/d/" prepared transactions and coordinator decisions (txn/tablet/txn_records.py)

A snapshot is a header chunk (cbor [version 4, index, safe time, epoch round,
epoch node, N]), N chunks of transaction records (txn/tablet/txn_records.py,
each of about `snapshot_chunk_bytes`), then the MVCC chunks (mvcc/snapshot.py).
Installing one is crash-atomic in effect (section "Snapshot install"
of ARCHITECTURE.md's paxos part): one synced write puts `t/installing`, then
the store and the transaction records are cleared and the chunks imported
(unsynced), then ONE synced batch writes `t/applied`, `t/safe`, `t/epoch` and
deletes `t/installing`. A version-3 header (a build before 12-05) carries the
records itself; they are written as a chunk's are. A replica that starts with `t/installing` (or with
mvcc's own import-unfinished marker) holds a half-deleted store: it is
`install_pending` (not `usable`), reports applied index 0 and safe time
`Timestamp.MIN`, and the Paxos core, told so by `install_pending`, applies
nothing, never campaigns (so never exports) and asks its leader for a
snapshot; the next install clears whatever is left. Callers that read the
store directly (the tablet driver, the node's inspector) must check
`usable` first.

Invariants:
- each apply writes its MVCC changes and the new applied index in ONE engine
  batch, so after any crash the MVCC data is exactly that of a log prefix,
  and replay resumes right after it;
- applies are not synced: the Paxos log (same LevelDB, same write-ahead log)
  is synced on every accept, and a synced LevelDB write makes every earlier
  write durable too; a lost unsynced tail is replayed from the log;
- `safe_ts` only grows, and no command applied later carries a timestamp at
  or below it, so a read at T <= safe_ts sees its final answer here. This
  holds because apply SKIPS (consumes the slot, writes nothing) every command
  from an epoch older than the last applied Barrier's, or with ts <= safe_ts:
  a deposed leader's log tail that Paxos chose after a newer leader's
  entries (txn/tablet/commands.py). The decision depends only on the log, so
  every replica skips the same commands; `on_applied` reports each skip so
  the proposer answers "not committed". Before epochs, such a tail hit an
  assertion and crashed every replica of the tablet on every restart.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

import cbor2

from hlc import Timestamp
from mvcc.engine import Batch, Engine
from mvcc.store import MvccStore
from paxos.messages import Ballot
from txn.tablet.commands import NO_EPOCH, Barrier, Decide, Forget, Prepare, Resolve, SafeTimeAdvance, WriteBatch, decode_command
from txn.tablet.txn_records import TxnRecords

APPLIED_KEY = b"t/applied"
SAFE_TS_KEY = b"t/safe"
EPOCH_KEY = b"t/epoch"
INSTALLING_KEY = b"t/installing"
# Slots applied by one engine write at most: a Paxos turn's (512 entries at most, PaxosConfig) fit;
# a replay or a catch-up longer than that is written in parts.
MAX_SLOTS_PER_WRITE = 1024
SNAPSHOT_HEADER_VERSION = 4  # 2: the last barrier's epoch; 3: the transaction records; 4: theirs in chunks

# (index, command or None for a no-op / snapshot install, skipped: a stale command, or a Prepare that failed)
AppliedListener = Callable[[int, object, bool], None]


class TabletState:
    """The Paxos `StateMachine` of one tablet replica."""

    # Mutation point for the simulation's mutant tests: False applies every
    # command (the pre-epoch behaviour, minus the assertion).
    SKIP_STALE_COMMANDS = True

    def __init__(
        self, engine: Engine, *, on_applied: AppliedListener | None = None, snapshot_chunk_bytes: int = 1 << 20,
        on_batch_applied: Callable[[], None] | None = None,
    ) -> None:
        """`on_applied(index, command, skipped)` is told of every slot applied (a snapshot install
        as (index, None, False)); `on_batch_applied()` after the last slot of each engine write
        and after an install, for work that needs doing once per batch, not per slot."""
        self.engine = engine
        self.snapshot_chunk_bytes = snapshot_chunk_bytes
        self.store = MvccStore(engine, prefix=b"m")
        self.on_applied = on_applied
        self.on_batch_applied = on_batch_applied
        raw_applied = engine.get(APPLIED_KEY)
        self._applied_index = int.from_bytes(raw_applied, "big") if raw_applied else 0
        raw_safe = engine.get(SAFE_TS_KEY)
        self.safe_ts = Timestamp.from_bytes(raw_safe) if raw_safe else Timestamp.MIN
        raw_epoch = engine.get(EPOCH_KEY)
        self.barrier_epoch = Ballot(*cbor2.loads(raw_epoch)) if raw_epoch else NO_EPOCH
        self.writes_applied = 0
        self.skipped = 0
        self.decisions_forgotten = 0  # commit records deleted by Forget commands applied here (since start)
        self.txns = TxnRecords(engine, self.store)
        self.install_pending = False
        self.installs_recovered = 0  # installs that finished after a restart found one unfinished
        self._recovering = engine.get(INSTALLING_KEY) is not None or self.store.import_incomplete()
        if self._recovering:
            # A crash interrupted an install: the store is a mix of old and new
            # data, so no index or safe time describes it.
            self._mark_pending()

    @property
    def usable(self) -> bool:
        """Whether the store may be read: False while a snapshot install is unfinished (even across a restart)."""
        return not self.install_pending

    def _mark_pending(self) -> None:
        self.install_pending = True
        self._applied_index = 0
        self.safe_ts = Timestamp.MIN

    def applied_index(self) -> int:
        return self._applied_index

    def apply(self, index: int, command_bytes: bytes) -> None:
        self.apply_entries(((index, command_bytes),))

    def apply_entries(self, entries: Sequence[tuple[int, bytes]]) -> None:
        """Apply consecutive slots in engine writes of at most `MAX_SLOTS_PER_WRITE` (one for a
        Paxos turn's worth), each carrying the applied index of its last slot, so a crash leaves
        some prefix applied. A transaction command reads the store while staging (intents,
        decisions): the batch keeps an `overlay`, through which it sees what the slots before
        it in the same batch staged (before 12-05 each such command had an engine write of its
        own, and the listener's per-write work with it)."""
        batch, told = self._new_batch(), []
        last = self._applied_index
        for index, command_bytes in entries:
            assert index == last + 1, f"apply out of order: {index} after {last}"
            last = index
            command = decode_command(command_bytes)
            if len(told) >= MAX_SLOTS_PER_WRITE:
                batch, told = self._write(batch, told)
            skipped = command is not None and self.is_stale(command)
            if command is not None and not skipped:
                assert command.ts > self.safe_ts, f"command ts {command.ts} not above safe time {self.safe_ts}"
                if isinstance(command, WriteBatch):
                    for key, value in command.writes:
                        self.store.stage_write(batch, key, command.ts, value)
                    self.writes_applied += 1
                elif isinstance(command, Prepare):
                    skipped = not self.txns.stage_prepare(batch, command, command_bytes)
                elif isinstance(command, Decide):
                    self.txns.stage_decide(batch, command)
                elif isinstance(command, Resolve):
                    self.txns.stage_resolve(batch, command)
                elif isinstance(command, Forget):
                    self.decisions_forgotten += self.txns.stage_forget(batch, command)
                if isinstance(command, Barrier):
                    self.barrier_epoch = command.epoch
                    batch.put(EPOCH_KEY, cbor2.dumps([command.epoch.round, command.epoch.node]))
                self.safe_ts = command.ts
            if skipped and not isinstance(command, Prepare):
                self.skipped += 1
            told.append((index, command, skipped))
        if told:
            self._write(batch, told)

    @staticmethod
    def _new_batch() -> Batch:
        batch = Batch()
        batch.overlay = {}
        return batch

    def _write(self, batch: Batch, told: list[tuple[int, object, bool]]) -> tuple[Batch, list[tuple[int, object, bool]]]:
        """Write staged slots (unsynced: the Paxos log holds them durably) with the applied index of
        the last and the safe time after it (once per batch: LevelDB keeps every put of a batch,
        also of a key put before), then count them applied and tell the listener, slot by slot.
        A listener told of a slot sees the state after the whole batch (safe time, barrier epoch:
        a later slot's), never before its own slot. Returns a fresh batch and list."""
        batch.put(SAFE_TS_KEY, self.safe_ts.to_bytes())
        batch.put(APPLIED_KEY, told[-1][0].to_bytes(8, "big"))
        self.engine.apply(batch, sync=False)
        for index, command, skipped in told:
            self._applied_index = index
            if self.on_applied is not None:
                self.on_applied(index, command, skipped)
        if self.on_batch_applied is not None:
            self.on_batch_applied()
        return self._new_batch(), []

    def read_safe_ts(self, closed_ts: Timestamp = Timestamp.MIN) -> Timestamp:
        """The highest timestamp a read may be served at here: safe time (or a leader's closed
        timestamp this replica has applied far enough for, txn/tablet/leader.py), held below
        prepared transactions."""
        return self.txns.read_safe_ts(max(self.safe_ts, closed_ts))

    def is_stale(self, command: "WriteBatch | SafeTimeAdvance | Barrier") -> bool:
        """A command this state machine skips: from a deposed leadership, or not above safe time."""
        if not self.SKIP_STALE_COMMANDS:
            return False
        return command.epoch < self.barrier_epoch or command.ts <= self.safe_ts

    def export_snapshot(self) -> tuple[int, Iterable[bytes]]:
        """(applied index, chunks): a header, the transaction records' chunks (as many as the
        header says), then the MVCC export.

        The chunks are materialized here, while no apply can interleave, so the
        index and the data describe the same moment."""
        assert not self.install_pending, "export of a half-installed store (a replica needing a snapshot never leads)"
        epoch = self.barrier_epoch
        records = self.txns.export_chunks(self.snapshot_chunk_bytes)
        header = cbor2.dumps([SNAPSHOT_HEADER_VERSION, self._applied_index, self.safe_ts.to_bytes(), epoch.round,
                              epoch.node, len(records)])
        return self._applied_index, [header, *records, *self.store.export_chunks(chunk_bytes=self.snapshot_chunk_bytes)]

    def install_snapshot(self, index: int, chunks: Iterable[bytes]) -> None:
        """Replace everything with the snapshot at `index`; after a crash at any point
        the replica restarts either as it was or `install_pending` (see the module docstring).
        Takes a version-3 header too (every transaction record in it: a leader of a build
        before 12-05)."""
        iterator = iter(chunks)
        version, header_index, safe_bytes, epoch_round, epoch_node, records = cbor2.loads(next(iterator))
        if version not in (SNAPSHOT_HEADER_VERSION, 3) or header_index != index:
            raise ValueError(f"snapshot header {version}/{header_index} does not match index {index}")
        if version == SNAPSHOT_HEADER_VERSION and not (type(records) is int and records >= 0):
            raise ValueError(f"snapshot header counts {records!r} transaction record chunks")
        marker = Batch()
        marker.put(INSTALLING_KEY, index.to_bytes(8, "big"))
        self.engine.apply(marker, sync=True)  # before the first delete: a restart must see the store as broken
        self._mark_pending()
        self.store.clear(sync=False)
        self.txns.clear_records()
        if version == SNAPSHOT_HEADER_VERSION:
            for _ in range(records):
                chunk = next(iterator, None)
                if chunk is None:
                    raise ValueError(f"snapshot stream ended within its {records} transaction record chunks")
                self.txns.import_chunk(chunk)
        else:
            self.txns.import_records(records)
        self.store.import_chunks(iterator, sync=False)
        safe_ts = Timestamp.from_bytes(safe_bytes)
        batch = Batch()
        batch.put(APPLIED_KEY, index.to_bytes(8, "big"))
        batch.put(SAFE_TS_KEY, safe_ts.to_bytes())
        # The skip rule's state and the transaction records travel with the data: a
        # replica that installed a snapshot must skip and resolve exactly as the others.
        batch.put(EPOCH_KEY, cbor2.dumps([epoch_round, epoch_node]))
        batch.delete(INSTALLING_KEY)
        self.engine.apply(batch, sync=True)  # syncs the unsynced clear and import before it too
        assert self.engine.get(INSTALLING_KEY) is None and not self.store.import_incomplete()
        self.install_pending = False
        self.barrier_epoch = Ballot(epoch_round, epoch_node)
        self.txns.load()
        self._applied_index = index
        self.safe_ts = safe_ts
        if self._recovering:
            self._recovering = False
            self.installs_recovered += 1
        if self.on_applied is not None:
            self.on_applied(index, None, False)
        if self.on_batch_applied is not None:
            self.on_batch_applied()
