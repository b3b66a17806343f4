"""MvccStore behaviour spelled out on small examples (the stateful test covers the rest)."""

from __future__ import annotations

import pytest

from hlc.timestamp import Timestamp
from mvcc.engine import Batch, DictEngine, EngineError
from mvcc.records import Intent, IntentConflict, MvccError, ReadResult, Version
from mvcc.store import INTENT_CACHE_MAX, MvccStore

T = Timestamp


def test_versions_tombstones_and_empty_values() -> None:
    store = MvccStore(DictEngine())
    store.write([(b"k", b"")], T(10), sync=False)
    store.write([(b"k", None)], T(20), sync=False)
    store.write([(b"k", b"back")], T(30), sync=False)
    assert store.read(b"k", T(9)) == ReadResult(None, None, None)
    assert store.read(b"k", T(10)) == ReadResult(b"", T(10), None)  # empty value, not a tombstone
    assert store.read(b"k", T(25)) == ReadResult(None, None, None)
    assert store.read(b"k", T.MAX) == ReadResult(b"back", T(30), None)
    assert store.versions(b"k") == (Version(T(30), b"back"), Version(T(20), None), Version(T(10), b""))


def test_intent_visibility_conflicts_and_resolution() -> None:
    store = MvccStore(DictEngine())
    store.write([(b"k", b"old")], T(5), sync=False)
    store.put_intent(Intent(b"k", "txn-a", T(10), b"new"), sync=False)
    assert store.read(b"k", T(9)).intent is None
    at_intent = store.read(b"k", T(10))
    assert at_intent.intent == Intent(b"k", "txn-a", T(10), b"new") and at_intent.value == b"old"
    with pytest.raises(IntentConflict, match="txn-a"):
        store.put_intent(Intent(b"k", "txn-b", T(11), None), sync=False)
    store.put_intent(Intent(b"k", "txn-a", T(12), None), sync=False)  # the same txn may replace its intent
    with pytest.raises(MvccError, match="below the intent"):
        store.resolve_intent(b"k", "txn-a", T(11), sync=False)
    assert store.resolve_intent(b"k", "txn-b", T(15), sync=False) is False
    assert store.resolve_intent(b"k", "txn-a", T(15), sync=True) is True
    assert store.resolve_intent(b"k", "txn-a", T(15), sync=True) is False
    assert store.intent(b"k") is None
    assert store.read(b"k", T(14)) == ReadResult(b"old", T(5), None)
    assert store.read(b"k", T(15)) == ReadResult(None, None, None)  # the intent was a delete
    store.put_intent(Intent(b"k", "txn-c", T(20), b"x"), sync=False)
    assert store.abort_intent(b"k", "txn-c", sync=False) is True
    assert store.abort_intent(b"k", "txn-c", sync=False) is False
    assert store.versions(b"k")[0] == Version(T(15), None)


def test_scan_reports_intents_only_in_the_covered_range() -> None:
    store = MvccStore(DictEngine())
    store.write([(b"a", b"1"), (b"b", b"2"), (b"c", b"3"), (b"d", b"4")], T(1), sync=False)
    for key in (b"a", b"c", b"e"):
        store.put_intent(Intent(key, "t", T(5), b"p"), sync=False)
    assert [i.key for i in store.scan(b"", None, T(4)).intents] == []
    assert [i.key for i in store.scan(b"", None, T(5)).intents] == [b"a", b"c", b"e"]
    forward = store.scan(b"", None, T(5), limit=2)
    assert [row[0] for row in forward.rows] == [b"a", b"b"] and [i.key for i in forward.intents] == [b"a"]
    backward = store.scan(b"", None, T(5), limit=2, reverse=True)
    assert [row[0] for row in backward.rows] == [b"d", b"c"] and [i.key for i in backward.intents] == [b"c", b"e"]
    assert store.scan(b"b", b"d", T(5)).rows == ((b"b", b"2", T(1)), (b"c", b"3", T(1)))
    assert store.scan(b"d", b"b", T(5)).rows == ()


def test_scan_with_max_bytes_stops_at_the_row_past_it_never_before_the_second() -> None:
    store = MvccStore(DictEngine())
    store.write([(b"a", b"x" * 10), (b"b", b"x" * 10), (b"c", b"x" * 10), (b"d", b"x" * 10)], T(1), sync=False)
    store.put_intent(Intent(b"d", "t", T(1), b"p"), sync=False)
    for reverse, first in ((False, [b"a", b"b", b"c"]), (True, [b"d", b"c", b"b"])):
        cut = store.scan(b"", None, T(2), max_bytes=25, reverse=reverse)
        assert [row[0] for row in cut.rows] == first  # 33 bytes: the third row is the one past 25
        assert [row[0] for row in store.scan(b"", None, T(2), max_bytes=5, reverse=reverse).rows] == first[:2]
    assert store.scan(b"", None, T(2), max_bytes=25).intents == ()  # d was not covered
    assert len(store.scan(b"", None, T(2), max_bytes=1000).rows) == 4


def test_staged_writes_share_a_batch_with_other_owners() -> None:
    engine = DictEngine()
    store = MvccStore(engine)
    store.put_intent(Intent(b"k", "t", T(3), b"v"), sync=False)
    batch = Batch()
    batch.put(b"p\x00\x00\x00\x07", b"log entry")  # e.g. the Paxos log's applied index
    store.stage_write(batch, b"other", T(4), b"w")
    assert store.stage_resolve_intent(batch, b"k", "t", T(4)) is True
    assert store.intent(b"k") is not None  # nothing happens until the batch is applied
    engine.apply(batch, sync=True)
    assert store.read(b"k", T(4)).value == b"v" and store.read(b"other", T(4)).value == b"w"
    assert engine.get(b"p\x00\x00\x00\x07") == b"log entry"
    assert all(key.startswith(b"m") for key in engine.contents() if key != b"p\x00\x00\x00\x07")


def test_statistics_example() -> None:
    store = MvccStore(DictEngine())
    store.write([(b"a", b"1"), (b"b", None)], T(3), sync=False)
    store.write([(b"a", b"2")], T(7), sync=False)
    store.put_intent(Intent(b"c", "t", T(9), b"x"), sync=False)
    stats = store.statistics()
    assert (stats.keys, stats.versions, stats.tombstones, stats.intents) == (2, 3, 1, 1)
    assert (stats.oldest_version_ts, stats.newest_version_ts, stats.gc_horizon) == (T(3), T(7), T.MIN)
    assert stats.approximate_bytes > 0


def test_many_intents_beyond_the_read_cache() -> None:
    store = MvccStore(DictEngine())
    for index in range(300):
        store.put_intent(Intent(b"k%03d" % index, "t", T(2), b"v"), sync=False)
    assert store.read(b"k299", T(2)).intent is not None
    assert store.read(b"k300", T(2)).intent is None
    assert len(store.scan(b"", None, T(2)).intents) == 300


class CountingScans(DictEngine):
    """Counts scans of the intents (iterations starting at the store's intents prefix)."""

    def __init__(self, intents_prefix: bytes) -> None:
        super().__init__()
        self.intents_prefix = intents_prefix
        self.intent_scans = 0

    def iterate(self, start, stop, **kwargs):  # noqa: ANN001, ANN003, ANN201
        if start == self.intents_prefix:
            self.intent_scans += 1
        return super().iterate(start, stop, **kwargs)


def test_the_intent_keys_are_scanned_once_then_kept_by_the_changes_applied() -> None:
    engine = CountingScans(MvccStore(DictEngine()).space.intents)
    store = MvccStore(engine)
    store.put_intent(Intent(b"a", "t1", T(10), b"x"), sync=False)
    assert store.read(b"a", T(10)).intent is not None and engine.intent_scans == 1
    for wall in range(11, 31):  # plain versions and other owners' writes (the Paxos log) leave the intents
        store.write([(b"b", b"%d" % wall)], T(wall), sync=False)
        engine.apply(Batch([(b"p\x00log", b"%d" % wall)]), sync=True)
        assert store.read(b"a", T(wall)).intent is not None and store.read(b"b", T(wall)).intent is None
    store.put_intent(Intent(b"c", "t2", T(31), b"y"), sync=False)
    assert store.resolve_intent(b"a", "t1", T(32), sync=False)
    assert store.read(b"a", T(40)) == ReadResult(b"x", T(32), None)
    assert store.read(b"c", T(40)).intent == Intent(b"c", "t2", T(31), b"y")
    assert store.abort_intent(b"c", "t2", sync=False)
    assert store.read(b"c", T(40)).intent is None
    assert engine.intent_scans == 1, "scanned again after writes that the store already knew the effect of"


class FailsOnce(DictEngine):
    fail_next = False

    def apply(self, batch: Batch, *, sync: bool) -> None:
        if self.fail_next:
            self.fail_next = False
            raise EngineError("the disk is full")
        super().apply(batch, sync=sync)


def test_an_intent_change_counts_once_its_batch_is_applied_and_not_if_it_fails() -> None:
    engine = FailsOnce()
    store = MvccStore(engine)
    intent = Intent(b"k", "t", T(10), b"v")
    batch = Batch()
    store.stage_intent(batch, intent)
    assert store.read(b"k", T(10)).intent is None  # staged, not applied: reads see the engine as it is
    engine.apply(batch, sync=False)
    assert store.read(b"k", T(10)).intent == intent
    batch = Batch()
    assert store.stage_resolve_intent(batch, b"k", "t", T(11))
    assert store.read(b"k", T(20)).intent == intent  # still there until the batch is applied
    engine.fail_next = True
    with pytest.raises(EngineError):
        engine.apply(batch, sync=False)
    assert store.read(b"k", T(20)).intent == intent  # the failed write changed nothing
    engine.apply(batch, sync=False)
    assert store.read(b"k", T(20)) == ReadResult(b"v", T(11), None)


def test_intents_read_right_across_the_cache_limit_and_after_a_clear_and_an_import() -> None:
    store = MvccStore(DictEngine())
    for index in range(INTENT_CACHE_MAX + 10):  # past the limit: the set is not kept
        store.put_intent(Intent(b"k%04d" % index, "t", T(2), b"v"), sync=False)
    for index in range(0, INTENT_CACHE_MAX + 10, 2):  # half resolved: back under it
        assert store.resolve_intent(b"k%04d" % index, "t", T(3), sync=False)
    assert [store.read(b"k%04d" % i, T(3)).intent is None for i in range(6)] == [True, False] * 3
    exported = list(store.export_chunks())
    assert store.clear(sync=False) > 0
    assert store.read(b"k0001", T(3)).intent is None
    store.import_chunks(exported, sync=False)
    assert store.read(b"k0001", T(3)).intent == Intent(b"k0001", "t", T(2), b"v")
    assert store.read(b"k0002", T(3)) == ReadResult(b"v", T(3), None)
