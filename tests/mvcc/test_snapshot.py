"""Snapshots: export from one view while writes go on, import into an empty store (on
LevelDB), and both read identically at every timestamp; bad streams are refused."""

from __future__ import annotations

import pathlib
import tempfile

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hlc.timestamp import Timestamp
from mvcc.engine import Batch, DictEngine
from mvcc.engine_leveldb import LevelDbEngine
from mvcc.records import Intent, SnapshotError
from mvcc.store import MvccStore

KEYS = st.lists(st.sampled_from([0x00, 0x01, 0x61, 0xFF]), max_size=3).map(bytes)
HISTORY = st.lists(st.tuples(KEYS, st.integers(0, 10), st.none() | st.binary(max_size=3)), max_size=30)
WALLS = range(0, 13)


def filled(history: list[tuple[bytes, int, bytes | None]], engine: DictEngine | LevelDbEngine) -> MvccStore:
    store = MvccStore(engine)
    for key, wall, value in history:
        store.write([(key, value)], Timestamp(wall), sync=False)
    return store


def assert_same_at_every_timestamp(a: MvccStore, b: MvccStore, keys: set[bytes]) -> None:
    assert a.gc_horizon() == b.gc_horizon()
    assert a.intents() == b.intents()
    assert a.statistics().versions == b.statistics().versions
    for wall in WALLS:
        for logical in (0, 1):
            ts = Timestamp(wall, logical)
            if ts < a.gc_horizon():
                continue
            assert a.scan(b"", None, ts) == b.scan(b"", None, ts)
            assert a.scan(b"", None, ts, reverse=True) == b.scan(b"", None, ts, reverse=True)
            for key in keys:
                assert a.read(key, ts) == b.read(key, ts)


@settings(max_examples=40, deadline=None)
@given(history=HISTORY, horizon=st.none() | st.integers(0, 10), chunk_bytes=st.integers(1, 300),
       intent_keys=st.lists(KEYS, max_size=3, unique=True))
def test_import_reads_like_the_original_at_every_timestamp(
    history: list[tuple[bytes, int, bytes | None]], horizon: int | None, chunk_bytes: int, intent_keys: list[bytes]
) -> None:
    source = filled(history, DictEngine())
    for number, key in enumerate(intent_keys):
        source.put_intent(Intent(key, f"t{number}", Timestamp(11, number), b"p%d" % number), sync=False)
    if horizon is not None:
        source.gc(Timestamp(horizon))
    with tempfile.TemporaryDirectory() as directory, LevelDbEngine(directory) as engine:
        target = MvccStore(engine, prefix=b"q")
        target.import_chunks(source.export_chunks(chunk_bytes=chunk_bytes))
        assert not target.import_incomplete()
        keys = {key for key, _, _ in history} | set(intent_keys) | {b"", b"\x00", b"\xff"}
        assert_same_at_every_timestamp(source, target, keys)
        # And a reopened LevelDB store still does.
        engine.close()
        with LevelDbEngine(directory, create_if_missing=False) as reopened:
            assert_same_at_every_timestamp(source, MvccStore(reopened, prefix=b"q"), keys)


def test_export_is_one_consistent_view_while_writes_go_on() -> None:
    source = filled([(b"k%03d" % index, 1, b"old" * 10) for index in range(200)], DictEngine())
    expected = MvccStore(DictEngine())
    expected.import_chunks(source.export_chunks())
    stream = source.export_chunks(chunk_bytes=512)
    chunks = [next(stream)]
    source.write([(b"k%03d" % index, b"new") for index in range(200)], Timestamp(2), sync=False)
    source.write([(b"k%03d" % index, None) for index in range(0, 200, 2)], Timestamp(3), sync=False)
    source.gc(Timestamp(3))
    chunks.extend(stream)
    assert len(chunks) > 2
    copy = MvccStore(DictEngine())
    copy.import_chunks(chunks)
    assert_same_at_every_timestamp(copy, expected, {b"k000", b"k001", b"k199"})


def test_export_view_on_leveldb_ignores_later_writes(tmp_path: pathlib.Path) -> None:
    with LevelDbEngine(tmp_path / "db") as engine:
        source = filled([(b"a", 1, b"1"), (b"b", 1, b"2")], engine)
        stream = source.export_chunks(chunk_bytes=1)
        first = next(stream)
        source.write([(b"c", b"3")], Timestamp(2), sync=False)
        copy = MvccStore(DictEngine())
        copy.import_chunks([first, *stream])
        assert [row[0] for row in copy.scan(b"", None, Timestamp(5)).rows] == [b"a", b"b"]


def test_import_refuses_a_store_with_data_and_leaves_other_prefixes_alone() -> None:
    engine = DictEngine()
    foreign = Batch()
    foreign.put(b"p\x00log", b"entry")
    engine.apply(foreign, sync=True)
    store = MvccStore(engine)
    assert store.is_empty()
    store.write([(b"a", b"1")], Timestamp(1), sync=False)
    with pytest.raises(SnapshotError, match="empty"):
        store.import_chunks(filled([(b"x", 1, b"y")], DictEngine()).export_chunks())
    assert store.clear() == 1
    assert store.is_empty() and engine.get(b"p\x00log") == b"entry"


def test_cut_short_or_damaged_streams_are_refused_and_recoverable() -> None:
    source = filled([(b"k%02d" % index, 1, b"v" * 20) for index in range(20)], DictEngine())
    chunks = list(source.export_chunks(chunk_bytes=100))
    assert len(chunks) > 3
    target = MvccStore(DictEngine())
    with pytest.raises(SnapshotError, match="without its last chunk"):
        target.import_chunks(chunks[:-1])
    assert target.import_incomplete() and not target.is_empty()
    with pytest.raises(SnapshotError, match="did not finish"):
        next(target.export_chunks())
    target.clear()
    with pytest.raises(SnapshotError, match="out of order"):
        target.import_chunks([chunks[0], chunks[2]])
    target.clear()
    with pytest.raises(SnapshotError, match="not valid CBOR|not an MVCC snapshot"):
        target.import_chunks([b"\xff\x00garbage"])
    target.clear()
    with pytest.raises(SnapshotError, match="outside the MVCC keyspace"):
        target.import_chunks([cbor2.dumps([1, 0, True, [[b"zzz", b"v"]]])])
    target.clear()
    with pytest.raises(SnapshotError, match="after its last chunk"):
        target.import_chunks([chunks[-1], chunks[-1]] if len(chunks) == 1 else [*chunks, chunks[-1]])
    target.clear()
    target.import_chunks(chunks)
    assert target.scan(b"", None, Timestamp(1)) == source.scan(b"", None, Timestamp(1))
