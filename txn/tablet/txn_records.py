"""A tablet's transaction records: its prepared transactions and its coordinator decisions.

Role: the part of the tablet state machine that 2PC adds (txn/tablet/state.py
calls it from `apply`). Pure: works on an `Engine`, an `MvccStore` and a
`Batch`; no trio, no clock.

On disk, in the replica's LevelDB beside the tablet metadata:

    b"t/p/" txn_id   the Prepare command (its log bytes, as applied) of a prepared transaction
    b"t/d/" txn_id   cbor [committed, commit_ts bytes, [participant tablets]]: a decision
                     of a transaction this tablet coordinates

Rules (each applied identically on every replica, from the log alone):
- Prepare: the writes become MVCC intents at the prepare timestamp, and the
  record is kept, unless the transaction is already decided here (a presumed
  abort got in first) or another transaction's intent holds one of the keys:
  then the Prepare FAILS (nothing written) and its proposer answers abort.
- Decide: the first decision of a transaction wins; a later one changes
  nothing. A winning commit writes the coordinator's own writes (which did
  not prepare) as versions at the decision's timestamp, unless an intent
  holds one of their keys: then the Decide FAILS (no decision recorded) and
  its proposer answers abort. If the transaction is prepared here (a
  coordinator that prepared), its intents are resolved by the same batch
  (at the decision's timestamp, or removed).
- Resolve: for each of its decisions, a prepared transaction's intents become
  versions at its commit_ts, or vanish; resolving an unknown or finished
  transaction changes nothing (idempotent: coordinators and recovery may
  both send it). Its transactions' intents are on distinct keys (one intent
  per key), so one batch stages them all.
- Forget: each named transaction's COMMIT record is deleted; an abort record,
  or none, is left as is. The leader logs it only for commits every other
  participant acknowledged resolving, a retention after (txn/tablet/forgetting.py);
  nothing can ask about such a transaction again (why: ARCHITECTURE.md,
  Forgetting decisions). Abort records stay: a prepare a client sent itself
  and its later vote-carrying commit must still find the abort.
- While a transaction is prepared here at prepare_ts, no read at or above
  prepare_ts may be served (`read_safe_ts`): its commit timestamp is not
  known yet and will be at or above prepare_ts (Spanner's t_safe).

Memory: the prepared records are all in memory (`prepared`: transactions in
flight). The decisions are read from the engine, where they stay, through a
bounded cache (`DecisionTable`: the `DECISION_CACHE_MAX` latest decided or
looked up), so a coordinator's memory does not grow with the transactions it
decided (273 bytes each when all were kept, 12-05). A lookup the cache
misses, as for a transaction not decided here (the common case: a new
commit, a prepare), is one engine read (about 2.5 us on LevelDB). What a
lookup answers is the engine's, so every replica answers alike whatever its
cache holds. A decision is cached when staged, before its batch is applied;
a later command of the same batch finds it through the batch's `overlay`
(mvcc/engine.py) even if the cache dropped it meanwhile. The intents such a
command reads (`MvccStore.intent(key, batch=)`) come through it likewise.

Known limit: abort decisions are kept forever. Commit decisions whose
participants' acknowledgements their leader did not see (a leader change in
between, a participant unreachable for all its attempts) are found later by
the leader's sweep of old records (txn/tablet/transactions.py).
"""

from __future__ import annotations

from typing import Iterable

import attrs
import cbor2

from hlc.timestamp import Timestamp
from mvcc.engine import Batch, Engine
from mvcc.records import Intent
from mvcc.store import MvccStore
from txn.tablet.commands import Decide, Forget, Prepare, Resolve, decode_command, encode_command

PREPARED_PREFIX = b"t/p/"
DECISION_PREFIX = b"t/d/"
DECISION_CACHE_MAX = 4096
IMPORT_BATCH_KEYS = 10_000  # deletes per engine write when an install clears the records


@attrs.frozen
class DecisionRecord:
    committed: bool
    commit_ts: Timestamp
    participants: tuple[str, ...] = attrs.field(converter=tuple)
    # The coordinator's own writes in the decision (its part, 12-04): the inspector's count. 0 for
    # an abort, for a coordinator that prepared, and for records stored before the count was.
    writes: int = 0


def _prefix_end(prefix: bytes) -> bytes:
    return prefix[:-1] + bytes([prefix[-1] + 1])


def encode_decision(record: DecisionRecord) -> bytes:
    return cbor2.dumps([record.committed, record.commit_ts.to_bytes(), list(record.participants), record.writes])


def decode_decision(value: bytes) -> DecisionRecord:
    committed, ts_bytes, participants, *rest = cbor2.loads(value)  # rest: [writes], absent before 12-04
    return DecisionRecord(committed, Timestamp.from_bytes(ts_bytes), participants, rest[0] if rest else 0)


class DecisionTable:
    """A tablet's coordinator decisions by transaction id: the engine's records (b"t/d/" txn_id)
    behind a cache of at most `DECISION_CACHE_MAX` (the oldest cached goes first)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.cached: dict[str, DecisionRecord] = {}

    def get(self, txn_id: str, *, batch: Batch | None = None) -> DecisionRecord | None:
        """The decision, if any; with `batch`, also one staged in it and not applied yet (seen
        through the batch's `overlay`, whatever the cache evicted meanwhile)."""
        record = self.cached.get(txn_id)
        if record is None:
            key = DECISION_PREFIX + txn_id.encode()
            overlay = None if batch is None else batch.overlay
            value = overlay[key] if overlay is not None and key in overlay else self.engine.get(key)
            if value is None:
                return None
            record = decode_decision(value)
            self._cache(txn_id, record)
        return record

    def __contains__(self, txn_id: str) -> bool:
        return self.get(txn_id) is not None

    def __getitem__(self, txn_id: str) -> DecisionRecord:
        record = self.get(txn_id)
        if record is None:
            raise KeyError(txn_id)
        return record

    def stage(self, batch: Batch, txn_id: str, record: DecisionRecord) -> None:
        """Stage a decision's record in `batch` (and its `overlay`, if it keeps one), and cache it."""
        key, value = DECISION_PREFIX + txn_id.encode(), encode_decision(record)
        batch.put(key, value)
        if batch.overlay is not None:
            batch.overlay[key] = value
        self._cache(txn_id, record)

    def stage_delete(self, batch: Batch, txn_id: str) -> None:
        """Stage the deletion of a decision's record in `batch` (and its `overlay`), and uncache it."""
        key = DECISION_PREFIX + txn_id.encode()
        batch.delete(key)
        if batch.overlay is not None:
            batch.overlay[key] = None
        self.cached.pop(txn_id, None)

    def clear(self) -> None:
        """Forget the cache (the engine's records were replaced: a snapshot install)."""
        self.cached.clear()

    def _cache(self, txn_id: str, record: DecisionRecord) -> None:
        cached = self.cached
        cached[txn_id] = record
        if len(cached) > DECISION_CACHE_MAX:
            del cached[next(iter(cached))]


class TxnRecords:
    def __init__(self, engine: Engine, store: MvccStore) -> None:
        self.engine = engine
        self.store = store
        self.prepared: dict[str, Prepare] = {}
        self.decisions = DecisionTable(engine)
        self.load()

    def load(self) -> None:
        self.prepared.clear()
        self.decisions.clear()
        for key, value in self.engine.iterate(PREPARED_PREFIX, _prefix_end(PREPARED_PREFIX)):
            command = decode_command(value)
            assert isinstance(command, Prepare), f"bad prepared record at {key!r}"
            self.prepared[command.txn_id] = command

    # ---- applying commands (called by TabletState.apply; return False: the command failed) ----

    def stage_prepare(self, batch: Batch, command: Prepare, encoded: bytes | None = None) -> bool:
        """`encoded`: the command's log encoding, if the caller has it (kept as its record as is)."""
        if self.decisions.get(command.txn_id, batch=batch) is not None:
            return False  # decided before its prepare applied (presumed abort): never prepare it
        if command.txn_id in self.prepared:
            return True  # a duplicate of the same vote
        for key, _ in command.writes:
            intent = self.store.intent(key, batch=batch)
            if intent is not None and intent.txn_id != command.txn_id:
                return False
        for key, value in command.writes:
            self.store.stage_intent(batch, Intent(key, command.txn_id, command.ts, value))
        batch.put(PREPARED_PREFIX + command.txn_id.encode(), encode_command(command) if encoded is None else encoded)
        self.prepared[command.txn_id] = command
        return True

    def stage_decide(self, batch: Batch, command: Decide) -> bool:
        if self.decisions.get(command.txn_id, batch=batch) is not None:
            return False  # the first decision won
        if command.committed and any(self.store.intent(key, batch=batch) is not None for key, _ in command.writes):
            # The coordinator's own writes meet an intent (its leader's locks exclude that, so
            # never expected): no decision is recorded, and its proposer answers abort.
            return False
        record = DecisionRecord(command.committed, command.ts, command.participants,
                                len(command.writes) if command.committed else 0)
        self.decisions.stage(batch, command.txn_id, record)
        self._stage_finish(batch, command.txn_id, command.ts if command.committed else None)
        if command.committed:
            for key, value in command.writes:
                self.store.stage_write(batch, key, command.ts, value)
        return True

    def stage_resolve(self, batch: Batch, command: Resolve) -> None:
        for txn_id, commit_ts in command.decisions:  # one intent per key: they touch distinct keys
            self._stage_finish(batch, txn_id, commit_ts)

    def stage_forget(self, batch: Batch, command: Forget) -> int:
        """Delete the commit records of `command`'s transactions (module docstring); how many."""
        forgotten = 0
        for txn_id in command.txn_ids:
            record = self.decisions.get(txn_id, batch=batch)
            if record is not None and record.committed:
                self.decisions.stage_delete(batch, txn_id)
                forgotten += 1
        return forgotten

    def _stage_finish(self, batch: Batch, txn_id: str, commit_ts: Timestamp | None) -> bool:
        prepare = self.prepared.pop(txn_id, None)
        if prepare is None:
            return False
        for key, _ in prepare.writes:
            if commit_ts is not None:
                self.store.stage_resolve_intent(batch, key, txn_id, commit_ts)
            else:
                self.store.stage_abort_intent(batch, key, txn_id)
        batch.delete(PREPARED_PREFIX + txn_id.encode())
        return True

    # ---- reading ------------------------------------------------------------------

    def decision_page(self, after: bytes | None, limit: int) -> tuple[list[tuple[str, DecisionRecord]], bytes | None]:
        """Up to `limit` decision records in key order, from just after the record whose key ends
        in `after` (None: the first), and where the next page starts (None: this one reached the
        last record). A record whose id is not UTF-8 (none is written so) is passed over. For a
        coordinator's sweep of the records its leader's tracking missed (txn/tablet/transactions.py)."""
        start = DECISION_PREFIX + (b"" if after is None else after + b"\x00")
        page: list[tuple[str, DecisionRecord]] = []
        seen = 0
        last = b""
        records = self.engine.iterate(start, _prefix_end(DECISION_PREFIX))
        try:
            for key, value in records:
                seen += 1
                last = key[len(DECISION_PREFIX):]
                try:
                    page.append((last.decode(), decode_decision(value)))
                except (UnicodeDecodeError, ValueError, TypeError, cbor2.CBORDecodeError):
                    pass
                if seen >= limit:
                    break
        finally:
            close = getattr(records, "close", None)
            if close is not None:
                close()
        return page, (last if seen >= limit else None)

    def decision_bytes(self) -> int:
        """The engine's estimate of the bytes its decision records hold (LevelDB: in its table
        files, not the memtable): what the known limit above grows, and every snapshot carries."""
        return self.engine.approximate_size(DECISION_PREFIX, _prefix_end(DECISION_PREFIX))

    def min_prepared_ts(self) -> Timestamp | None:
        return min((p.ts for p in self.prepared.values()), default=None)

    def read_safe_ts(self, safe_ts: Timestamp) -> Timestamp:
        """The highest T a read may be served at: below every prepared transaction's timestamp."""
        lowest = self.min_prepared_ts()
        if lowest is None or lowest > safe_ts:
            return safe_ts
        return _just_below(lowest)

    def lock_records(self) -> Iterable[tuple[str, Timestamp, list[bytes], tuple[bytes, ...], tuple[tuple[bytes, bytes | None], ...]]]:
        """What a new leader rebuilds its lock table from."""
        for txn_id, prepare in sorted(self.prepared.items()):
            yield txn_id, prepare.priority, [key for key, _ in prepare.writes], prepare.read_keys, prepare.read_ranges

    # ---- snapshots ------------------------------------------------------------------

    def export_chunks(self, chunk_bytes: int) -> list[bytes]:
        """Every record (prepared, then decided) as snapshot chunks: each a cbor list of the
        records' keys and values flattened, [k1, v1, k2, v2, ...], closed once its pairs reach
        `chunk_bytes` (one record may exceed it). No chunk for no records. Bounded chunks, since
        the decisions are never deleted (ARCHITECTURE.md, known limits): until 12-05 they all
        went in the snapshot's header, one Paxos message, which passed the 16 MiB frame bound
        after about 270,000 transactions (63 bytes each), so a follower needing a snapshot could
        never get one."""
        if chunk_bytes < 1:
            raise ValueError(f"chunk_bytes must be positive: {chunk_bytes}")
        chunks: list[bytes] = []
        current: list[bytes] = []
        size = 0
        for prefix in (PREPARED_PREFIX, DECISION_PREFIX):
            for key, value in self.engine.iterate(prefix, _prefix_end(prefix)):
                current.extend((key, value))
                size += len(key) + len(value)
                if size >= chunk_bytes:
                    chunks.append(cbor2.dumps(current))
                    current, size = [], 0
        if current:
            chunks.append(cbor2.dumps(current))
        return chunks

    def clear_records(self) -> None:
        """Delete every record (unsynced; a snapshot install's, under its `installing` marker)."""
        for prefix in (PREPARED_PREFIX, DECISION_PREFIX):
            batch = Batch()
            for key, _ in self.engine.iterate(prefix, _prefix_end(prefix)):
                batch.delete(key)
                if len(batch) >= IMPORT_BATCH_KEYS:
                    self.engine.apply(batch, sync=False)
                    batch = Batch()
            if len(batch):
                self.engine.apply(batch, sync=False)

    def import_chunk(self, data: bytes) -> None:
        """Write one chunk of `export_chunks` (unsynced; a snapshot install's)."""
        self.import_records(cbor2.loads(data))

    def import_records(self, flat: object) -> None:
        """Write records given as [k1, v1, k2, v2, ...] (unsynced; a snapshot install's: a chunk,
        or a version-3 header's list of them all). A malformed list or a key outside the records'
        prefixes raises ValueError before anything is written."""
        if not (isinstance(flat, list) and len(flat) % 2 == 0 and all(isinstance(part, bytes) for part in flat)):
            raise ValueError("a snapshot's transaction records are not a flat list of keys and values")
        batch = Batch()
        for key, value in zip(flat[0::2], flat[1::2]):
            if not key.startswith((PREPARED_PREFIX, DECISION_PREFIX)):
                raise ValueError(f"snapshot carries a foreign transaction record key {key!r}")
            batch.put(key, value)
        self.engine.apply(batch, sync=False)


def _just_below(ts: Timestamp) -> Timestamp:
    if ts.logical > 0:
        return Timestamp(ts.wall, ts.logical - 1)
    return Timestamp(max(ts.wall - 1, 0), (1 << 31) - 1) if ts.wall > 0 else Timestamp.MIN
