"""The store against the in-memory model: every operation, random keys and timestamps,
on LevelDB (in a temporary directory, reopened now and then) and on DictEngine
(crashed now and then, losing exactly the unsynced tail)."""

from __future__ import annotations

import shutil
import tempfile

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from hlc.timestamp import Timestamp
from mvcc.engine import Batch, DictEngine
from mvcc.engine_leveldb import LevelDbEngine
from mvcc.records import BelowGcHorizon, Intent, IntentConflict, MvccError, SnapshotError
from mvcc.store import MvccStore
from tests.mvcc.model import Model

KEYS = st.lists(st.sampled_from([0x00, 0x01, 0x61, 0xFF]), max_size=3).map(bytes)
VALUES = st.none() | st.binary(max_size=3)
TIMESTAMPS = st.builds(Timestamp, st.integers(0, 12), st.integers(0, 1))
TXNS = st.sampled_from(["t1", "t2", "t3"])
# Keys of other owners of the same engine (the Paxos log, tablet metadata): never touched.
FOREIGN = {b"l\xff\xff": b"before", b"n": b"after", b"p\x00": b"paxos", b"t": b"meta"}


class StoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.engine = self.open_engine()
        batch = Batch()
        for key, value in FOREIGN.items():
            batch.put(key, value)
        self.engine.apply(batch, sync=True)
        self.store = MvccStore(self.engine)
        self.model = Model()
        self.durable = Model()

    def open_engine(self):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    def synced(self, sync: bool) -> None:
        if sync:
            self.durable = self.model.copy()

    # -- mutations ----------------------------------------------------------

    @rule(writes=st.lists(st.tuples(KEYS, VALUES), min_size=1, max_size=4), ts=TIMESTAMPS, sync=st.booleans(), staged=st.booleans())
    def write(self, writes: list[tuple[bytes, bytes | None]], ts: Timestamp, sync: bool, staged: bool) -> None:
        if ts < self.model.horizon:
            with pytest.raises(BelowGcHorizon) as raised:
                self.store.write(writes, ts, sync=sync)
            assert raised.value.horizon == self.model.horizon and raised.value.requested == ts
            assert str(self.model.horizon) in str(raised.value)
            return
        if staged:
            batch = Batch()
            for key, value in writes:
                self.store.stage_write(batch, key, ts, value)
            self.engine.apply(batch, sync=sync)
        else:
            self.store.write(writes, ts, sync=sync)
        for key, value in writes:
            self.model.write(key, ts, value)
        self.synced(sync)

    @rule(key=KEYS, txn=TXNS, ts=TIMESTAMPS, value=VALUES, sync=st.booleans())
    def put_intent(self, key: bytes, txn: str, ts: Timestamp, value: bytes | None, sync: bool) -> None:
        intent = Intent(key, txn, ts, value)
        existing = self.model.intents.get(key)
        if ts < self.model.horizon:
            with pytest.raises(BelowGcHorizon):
                self.store.put_intent(intent, sync=sync)
        elif existing is not None and existing.txn_id != txn:
            with pytest.raises(IntentConflict, match=existing.txn_id):
                self.store.put_intent(intent, sync=sync)
        else:
            self.store.put_intent(intent, sync=sync)
            self.model.intents[key] = intent
            self.synced(sync)

    @rule(key=KEYS, txn=TXNS, delta=st.integers(-1, 3), sync=st.booleans())
    def resolve_intent(self, key: bytes, txn: str, delta: int, sync: bool) -> None:
        existing = self.model.intents.get(key)
        base = existing.ts.wall if existing is not None else 5
        commit_ts = Timestamp(max(0, base + delta), 0)
        if existing is None or existing.txn_id != txn:
            assert self.store.resolve_intent(key, txn, commit_ts, sync=sync) is False
        elif commit_ts < existing.ts:
            with pytest.raises(MvccError, match="below the intent"):
                self.store.resolve_intent(key, txn, commit_ts, sync=sync)
        elif commit_ts < self.model.horizon:
            with pytest.raises(BelowGcHorizon):
                self.store.resolve_intent(key, txn, commit_ts, sync=sync)
        else:
            assert self.store.resolve_intent(key, txn, commit_ts, sync=sync) is True
            del self.model.intents[key]
            self.model.write(key, commit_ts, existing.value)
            self.synced(sync)
            assert self.store.resolve_intent(key, txn, commit_ts, sync=sync) is False  # idempotent

    @rule(key=KEYS, txn=TXNS, sync=st.booleans())
    def abort_intent(self, key: bytes, txn: str, sync: bool) -> None:
        existing = self.model.intents.get(key)
        matches = existing is not None and existing.txn_id == txn
        assert self.store.abort_intent(key, txn, sync=sync) is matches
        if matches:
            del self.model.intents[key]
            self.synced(sync)
        assert self.store.abort_intent(key, txn, sync=sync) is False

    @rule(horizon=TIMESTAMPS, max_versions=st.integers(1, 4), sync=st.booleans())
    def gc(self, horizon: Timestamp, max_versions: int, sync: bool) -> None:
        progress = self.store.gc(horizon, max_versions=max_versions, sync=sync)
        rounds = 1
        while not progress.done:
            assert progress.resume_from is not None
            progress = self.store.gc(horizon, max_versions=max_versions, resume_from=progress.resume_from, sync=sync)
            rounds += 1
            assert rounds < 200
        self.model.gc(horizon)
        self.synced(sync)
        assert self.store.gc_horizon() == self.model.horizon

    @rule(chunk_bytes=st.integers(1, 200))
    def export_import_round_trip(self, chunk_bytes: int) -> None:
        copy = MvccStore(DictEngine(), prefix=b"x")
        copy.import_chunks(self.store.export_chunks(chunk_bytes=chunk_bytes))
        assert copy.gc_horizon() == self.store.gc_horizon()
        assert copy.intents() == self.store.intents()
        for key in self.model.all_keys():
            assert copy.versions(key) == self.store.versions(key)
        assert copy.is_empty() == self.store.is_empty()
        if not copy.is_empty():
            with pytest.raises(SnapshotError, match="empty"):
                copy.import_chunks(self.store.export_chunks())

    @rule(sync=st.booleans())
    def clear_and_reimport(self, sync: bool) -> None:
        chunks = list(self.store.export_chunks(chunk_bytes=64))
        self.store.clear(sync=sync)
        assert self.store.is_empty()
        self.store.import_chunks(chunks, sync=sync)
        # clear() is not one atomic batch, so a crash could only be judged after the whole sequence.
        self.synced(sync)
        if not sync:
            self.engine.apply(Batch(), sync=True)
            self.synced(True)

    # -- reads --------------------------------------------------------------

    @rule(key=KEYS, ts=TIMESTAMPS)
    def read(self, key: bytes, ts: Timestamp) -> None:
        if ts < self.model.horizon:
            with pytest.raises(BelowGcHorizon):
                self.store.read(key, ts)
            return
        result = self.store.read(key, ts)
        assert (result.value, result.version_ts, result.intent) == self.model.read(key, ts)
        # GC never changes a read at or above the horizon.
        assert self.model.read(key, ts, source="history") == self.model.read(key, ts)

    @rule(start=KEYS, end=st.none() | KEYS, ts=TIMESTAMPS, limit=st.none() | st.integers(0, 4), reverse=st.booleans())
    def scan(self, start: bytes, end: bytes | None, ts: Timestamp, limit: int | None, reverse: bool) -> None:
        if ts < self.model.horizon:
            with pytest.raises(BelowGcHorizon):
                self.store.scan(start, end, ts, limit=limit, reverse=reverse)
            return
        result = self.store.scan(start, end, ts, limit=limit, reverse=reverse)
        rows, intents = self.model.scan(start, end, ts, limit, reverse)
        assert list(result.rows) == rows
        assert list(result.intents) == intents

    @rule()
    def statistics(self) -> None:
        stats = self.store.statistics()
        all_ts = [ts for versions in self.model.versions.values() for ts in versions]
        assert stats.keys == len(self.model.versions)
        assert stats.versions == len(all_ts)
        assert stats.tombstones == sum(v is None for vs in self.model.versions.values() for v in vs.values())
        assert stats.intents == len(self.model.intents)
        assert stats.oldest_version_ts == (min(all_ts) if all_ts else None)
        assert stats.newest_version_ts == (max(all_ts) if all_ts else None)
        assert stats.gc_horizon == self.model.horizon
        assert stats.approximate_bytes >= 0

    @invariant()
    def versions_and_intents_match(self) -> None:
        for key in self.model.all_keys():
            expected = sorted(self.model.versions.get(key, {}).items(), reverse=True)
            assert [(v.ts, v.value) for v in self.store.versions(key)] == expected
            assert self.store.intent(key) == self.model.intents.get(key)
        assert self.store.is_empty() == (not self.model.versions and not self.model.intents and self.model.horizon == Timestamp.MIN)
        for key, value in FOREIGN.items():
            assert self.engine.get(key) == value

    def teardown(self) -> None:
        self.engine.close()


class LevelDbStoreMachine(StoreMachine):
    def open_engine(self) -> LevelDbEngine:
        self.directory = tempfile.mkdtemp(prefix="chronodb-mvcc-")
        return LevelDbEngine(self.directory)

    @rule()
    def reopen(self) -> None:
        self.engine.close()
        self.engine = LevelDbEngine(self.directory, create_if_missing=False)
        self.store = MvccStore(self.engine)

    def teardown(self) -> None:
        super().teardown()
        shutil.rmtree(self.directory, ignore_errors=True)


class DictStoreMachine(StoreMachine):
    def open_engine(self) -> DictEngine:
        return DictEngine()

    @precondition(lambda self: isinstance(self.engine, DictEngine))
    @rule()
    def crash(self) -> None:
        self.engine = self.engine.after_crash()
        self.store = MvccStore(self.engine)
        self.model = self.durable.copy()


TestStoreOnLevelDb = LevelDbStoreMachine.TestCase
TestStoreOnLevelDb.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestStoreOnDictEngine = DictStoreMachine.TestCase
TestStoreOnDictEngine.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)
