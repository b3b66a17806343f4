"""GC passes that could drop nothing are skipped (mvcc/store.py, GC): they read no version and
only move the horizon; a version written between two horizons, a horizon reaching the oldest
version above the last one, a new store object, or a pass pieced together from two passes'
chunks makes the next pass read again, and it drops what a full pass drops."""

from __future__ import annotations

import pytest

from hlc.timestamp import Timestamp
from mvcc.engine import Batch, DictEngine
from mvcc.keys import inverted_ts
from mvcc.records import BelowGcHorizon
from mvcc.store import MvccStore


def walls(store: MvccStore, key: bytes) -> list[int]:
    return [version.ts.wall for version in store.versions(key)]


def whole_pass(store: MvccStore, wall: int, max_versions: int = 1000):
    progress = store.gc(Timestamp(wall), max_versions=max_versions)
    examined = progress.examined
    while not progress.done:
        progress = store.gc(Timestamp(wall), max_versions=max_versions, resume_from=progress.resume_from)
        examined += progress.examined
    return progress, examined


def cleaned_at_70() -> MvccStore:
    """k@60 and k@100, j@100 and j@200, GC'd at 70: the oldest version above the horizon is at 100."""
    store = MvccStore(DictEngine())
    store.write([(b"k", b"old")], Timestamp(60), sync=False)
    store.write([(b"k", b"new"), (b"j", b"new")], Timestamp(100), sync=False)
    store.write([(b"j", b"newer")], Timestamp(200), sync=False)
    progress, examined = whole_pass(store, 70)
    assert not progress.skipped and examined == 4 and walls(store, b"k") == [100, 60]
    return store


def test_a_pass_that_could_drop_nothing_reads_nothing_and_moves_the_horizon() -> None:
    store = cleaned_at_70()
    progress = store.gc(Timestamp(90))
    assert progress.skipped and progress.done and progress.examined == 0 and progress.dropped == 0
    assert store.gc_horizon() == Timestamp(90)
    with pytest.raises(BelowGcHorizon):
        store.read(b"k", Timestamp(80))
    assert store.read(b"k", Timestamp(95)).value == b"old"
    assert MvccStore(store.engine).gc_horizon() == Timestamp(90)  # written to the engine, as a pass does
    assert walls(store, b"k") == [100, 60]


@pytest.mark.parametrize("how", ["write", "staged"])
def test_a_version_written_between_the_horizons_makes_the_next_pass_read(how: str) -> None:
    store = cleaned_at_70()
    if how == "write":
        store.write([(b"k", b"mid")], Timestamp(80), sync=False)
    else:
        batch = Batch()
        store.stage_write(batch, b"k", Timestamp(80), b"mid")
        store.engine.apply(batch, sync=False)
    progress, examined = whole_pass(store, 90)
    assert not progress.skipped and examined > 0
    assert walls(store, b"k") == [100, 80]  # k@60 is hidden by k@80 at 90: dropped


def test_a_horizon_reaching_the_oldest_version_above_the_last_one_reads() -> None:
    store = cleaned_at_70()
    progress, _ = whole_pass(store, 100)
    assert not progress.skipped and progress.dropped == 1
    assert walls(store, b"k") == [100]


def test_skips_go_on_only_until_a_write_at_or_below_the_next_horizon() -> None:
    store = cleaned_at_70()
    store.write([(b"k", b"later")], Timestamp(120), sync=False)  # above every horizon below: no read needed
    assert store.gc(Timestamp(90)).skipped and store.gc(Timestamp(99)).skipped
    progress, _ = whole_pass(store, 110)
    assert not progress.skipped and walls(store, b"k") == [120, 100]
    assert store.gc(Timestamp(115)).skipped  # that pass saw k@120 as the oldest above 110


def test_a_new_store_object_reads_on_its_first_pass() -> None:
    store = cleaned_at_70()
    store.engine.apply(Batch([(store.space.group(b"k") + bytes(12), b"\x01x")]), sync=False)  # not through the store
    fresh = MvccStore(store.engine)
    progress, examined = whole_pass(fresh, 90)
    assert not progress.skipped and examined > 0


@pytest.mark.parametrize("how", ["import", "clear"])
def test_clear_and_import_forget_what_was_clean(how: str) -> None:
    """The imported store (never GC'd) has k@80, which hides k@60 at 90; so has one cleared and
    written again below the old store's oldest version above its horizon. (Import needs an empty
    store: one that a pass at the lowest horizon found empty, so that no version was above it.)"""
    other = MvccStore(DictEngine())
    for wall in (60, 80, 100):
        other.write([(b"k", b"%d" % wall)], Timestamp(wall), sync=False)
    if how == "import":
        store = MvccStore(DictEngine())
        assert whole_pass(store, 0)[0].done and store.is_empty()
        store.import_chunks(list(other.export_chunks()), sync=False)
    else:
        store = cleaned_at_70()
        store.clear(sync=False)
        for wall in (60, 80, 100):
            store.engine.apply(Batch([(store.space.group(b"k") + inverted_ts(Timestamp(wall)), b"\x01v")]), sync=False)
    progress, _ = whole_pass(store, 90)
    assert not progress.skipped and walls(store, b"k") == [100, 80]


def test_a_pass_pieced_from_two_passes_chunks_proves_nothing_clean() -> None:
    """Pass A reads a and b; pass B reads a, then resumes at A's token (past b): b was never read
    by B, so B's finish must not count as a whole pass."""
    store = MvccStore(DictEngine())
    store.write([(b"a", b"1"), (b"c", b"1")], Timestamp(100), sync=False)
    store.write([(b"b", b"old")], Timestamp(60), sync=False)
    store.write([(b"b", b"mid")], Timestamp(75), sync=False)
    first = store.gc(Timestamp(50), max_versions=1000)  # one whole pass (nothing dropped), then the pieced one
    assert first.done and not first.skipped
    store.write([(b"a", b"2")], Timestamp(65), sync=False)  # so that the pass at 70 cannot be skipped
    progress = store.gc(Timestamp(70), max_versions=1)
    a_token = None
    while not progress.done:  # pass A, chunk by chunk, until its token lies past key b
        if progress.resume_from is not None and progress.resume_from[13:].startswith(store.space.group(b"c")):
            a_token = progress.resume_from
            break
        progress = store.gc(Timestamp(70), max_versions=1, resume_from=progress.resume_from)
    assert a_token is not None
    assert not store.gc(Timestamp(70), max_versions=1).done  # pass B: its first chunk reads a only
    progress = store.gc(Timestamp(70), max_versions=1000, resume_from=a_token)  # then A's rest: c
    assert progress.done
    assert walls(store, b"b") == [75, 60]
    progress, _ = whole_pass(store, 90)
    assert not progress.skipped
    assert walls(store, b"b") == [75]  # b@60 is hidden by b@75 at 90


def test_a_version_written_during_a_pass_behind_its_reads_counts() -> None:
    """Written between two chunks of a pass, into a key the pass already read."""
    store = MvccStore(DictEngine())
    store.write([(b"a", b"old")], Timestamp(60), sync=False)
    store.write([(b"a", b"new"), (b"b", b"new")], Timestamp(100), sync=False)
    progress = store.gc(Timestamp(70), max_versions=2)  # reads a's two versions, stops at b
    assert not progress.done and progress.resume_from[13:].startswith(store.space.group(b"b"))
    store.write([(b"a", b"mid")], Timestamp(80), sync=False)
    while not progress.done:
        progress = store.gc(Timestamp(70), max_versions=2, resume_from=progress.resume_from)
    progress, _ = whole_pass(store, 90)
    assert not progress.skipped and walls(store, b"a") == [100, 80]


def test_a_skipped_pass_asked_to_sync_syncs_what_came_before() -> None:
    """As a pass's batch does, even when the horizon does not move: gc(sync=True) is a sync point."""
    store = cleaned_at_70()
    store.gc(Timestamp(90), sync=False)
    store.write([(b"j", b"newest")], Timestamp(300), sync=False)
    progress = store.gc(Timestamp(80), sync=True)  # below the horizon: it stays at 90
    assert progress.skipped
    assert isinstance(store.engine, DictEngine)
    after = MvccStore(store.engine.after_crash())
    assert after.gc_horizon() == Timestamp(90) and walls(after, b"j") == [300, 200, 100]
