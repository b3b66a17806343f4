"""The tablet state machine: applies log commands to MVCC, persists index and safe time."""

from __future__ import annotations

import pytest

from hlc import Timestamp
from mvcc.engine import DictEngine
from txn.tablet.commands import Barrier, SafeTimeAdvance, WriteBatch, encode_command
from txn.tablet.state import TabletState


def ts(wall: int) -> Timestamp:
    return Timestamp(wall, 0)


def test_apply_writes_and_track_safe_time() -> None:
    engine = DictEngine()
    seen = []
    state = TabletState(engine, on_applied=lambda index, command: seen.append((index, command)))
    state.apply(1, encode_command(Barrier(ts(10))))
    state.apply(2, encode_command(WriteBatch(ts(20), [(b"a", b"1"), (b"b", b"2")])))
    state.apply(3, b"")
    state.apply(4, encode_command(WriteBatch(ts(30), [(b"a", None)])))
    state.apply(5, encode_command(SafeTimeAdvance(ts(40))))
    assert state.applied_index() == 5 and state.safe_ts == ts(40)
    assert state.store.read(b"a", ts(25)).value == b"1"
    assert state.store.read(b"a", ts(30)).value is None
    assert state.store.read(b"b", ts(19)).value is None
    assert [index for index, _ in seen] == [1, 2, 3, 4, 5]
    assert seen[2][1] is None


def test_index_and_safe_time_survive_reopen_and_crash() -> None:
    engine = DictEngine()
    state = TabletState(engine)
    state.apply(1, encode_command(WriteBatch(ts(5), [(b"k", b"v")])))
    reopened = TabletState(engine)
    assert reopened.applied_index() == 1 and reopened.safe_ts == ts(5)
    # Applies are unsynced: a crash may lose them, but then index and data go together.
    crashed = TabletState(engine.after_crash())
    assert (crashed.applied_index(), crashed.store.read(b"k", ts(9)).value) in ((0, None), (1, b"v"))


def test_out_of_order_and_backward_timestamps_are_bugs() -> None:
    state = TabletState(DictEngine())
    with pytest.raises(AssertionError):
        state.apply(2, b"")
    state.apply(1, encode_command(SafeTimeAdvance(ts(50))))
    with pytest.raises(AssertionError):
        state.apply(2, encode_command(WriteBatch(ts(50), [(b"k", b"v")])))


def test_snapshot_round_trip() -> None:
    source = TabletState(DictEngine())
    for i in range(1, 40):
        source.apply(i, encode_command(WriteBatch(ts(i * 10), [(b"key%02d" % (i % 7), b"v%d" % i)])))
    index, chunks = source.export_snapshot()
    target = TabletState(DictEngine())
    target.apply(1, encode_command(WriteBatch(ts(1), [(b"stale", b"gone")])))
    target.install_snapshot(index, chunks)
    assert target.applied_index() == index == 39 and target.safe_ts == source.safe_ts
    assert target.store.read(b"stale", ts(10**6)).value is None
    for at in (ts(55), ts(200), ts(390)):
        assert target.store.scan(b"", None, at).rows == source.store.scan(b"", None, at).rows
