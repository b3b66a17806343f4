"""GC semantics: which versions go, bounded chunks, and no read at or above the horizon
changing at any point (between chunks, after a crash between chunks, with the horizon
raised part way)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hlc.timestamp import Timestamp
from mvcc import gc as planner
from mvcc.engine import Batch, DictEngine
from mvcc.records import BelowGcHorizon, MvccError
from mvcc.store import MvccStore
from tests.mvcc.model import Model

KEYS = st.lists(st.sampled_from([0x00, 0x61, 0xFF]), max_size=2).map(bytes)
HISTORY = st.lists(st.tuples(KEYS, st.integers(0, 15), st.none() | st.binary(max_size=2)), max_size=40)


def build(history: list[tuple[bytes, int, bytes | None]]) -> tuple[MvccStore, Model]:
    store, model = MvccStore(DictEngine()), Model()
    for key, wall, value in history:
        store.write([(key, value)], Timestamp(wall), sync=False)
        model.write(key, Timestamp(wall), value)
    return store, model


def assert_reads_match_history(store: MvccStore, model: Model, horizon: Timestamp) -> None:
    for key in model.all_keys():
        for wall in range(horizon.wall, 17):
            result = store.read(key, Timestamp(wall))
            assert (result.value, result.version_ts, result.intent) == model.read(key, Timestamp(wall), source="history")


def test_gc_keeps_newest_at_or_below_horizon_and_drops_hidden_tombstones() -> None:
    store, _ = build([(b"a", 1, b"1"), (b"a", 2, b"2"), (b"a", 5, b"5"), (b"b", 1, b"x"), (b"b", 3, None), (b"c", 9, None)])
    progress = store.gc(Timestamp(4))
    assert progress.done and progress.dropped == 3
    assert [(v.ts.wall, v.value) for v in store.versions(b"a")] == [(5, b"5"), (2, b"2")]
    assert store.versions(b"b") == ()  # the tombstone at 3 hid everything: all gone
    assert [(v.ts.wall, v.value) for v in store.versions(b"c")] == [(9, None)]  # above the horizon: kept
    assert store.gc_horizon() == Timestamp(4)
    with pytest.raises(BelowGcHorizon, match=r"below the GC horizon 4\.0") as raised:
        store.read(b"a", Timestamp(3))
    assert raised.value.horizon == Timestamp(4) and raised.value.requested == Timestamp(3)
    with pytest.raises(BelowGcHorizon):
        store.scan(b"", None, Timestamp(3, 5))
    with pytest.raises(BelowGcHorizon):
        store.write([(b"a", b"late")], Timestamp(3), sync=False)
    assert store.read(b"a", Timestamp(4)).value == b"2"
    store.gc(Timestamp(2))  # a lower horizon never moves it back
    assert store.gc_horizon() == Timestamp(4)


def test_horizon_survives_reopen() -> None:
    store, _ = build([(b"a", 1, b"1"), (b"a", 2, b"2")])
    store.gc(Timestamp(3), sync=True)
    reopened = MvccStore(store.engine.after_crash())  # type: ignore[attr-defined]
    assert reopened.gc_horizon() == Timestamp(3)
    with pytest.raises(BelowGcHorizon):
        reopened.read(b"a", Timestamp(1))


def test_every_chunk_makes_progress_on_a_long_tombstoned_history() -> None:
    store, model = build([(b"k", wall, None if wall == 20 else b"v") for wall in range(1, 21)] + [(b"z", 1, b"z")])
    chunks, progress = 0, store.gc(Timestamp(30), max_versions=1)
    while not progress.done:
        chunks += 1
        assert progress.dropped >= 1 or chunks == 1
        progress = store.gc(Timestamp(30), max_versions=1, resume_from=progress.resume_from)
    assert store.versions(b"k") == ()
    assert [v.value for v in store.versions(b"z")] == [b"z"]
    assert chunks <= 21


@settings(max_examples=150, deadline=None)
@given(history=HISTORY, horizon=st.integers(0, 16), max_versions=st.integers(1, 5), crash=st.booleans())
def test_chunked_gc_never_changes_a_read_at_or_above_the_horizon(
    history: list[tuple[bytes, int, bytes | None]], horizon: int, max_versions: int, crash: bool
) -> None:
    store, model = build(history)
    store.engine.apply(Batch(), sync=True)  # everything durable
    progress = store.gc(Timestamp(horizon), max_versions=max_versions, sync=True)
    while True:
        assert_reads_match_history(store, model, Timestamp(horizon))
        if progress.done:
            break
        assert progress.dropped <= max_versions + 2
        if crash:  # every chunk was synced: a crash between chunks loses nothing
            store = MvccStore(store.engine.after_crash())  # type: ignore[attr-defined]
        progress = store.gc(Timestamp(horizon), max_versions=max_versions, resume_from=progress.resume_from, sync=True)
    model.gc(Timestamp(horizon))
    for key in model.all_keys():
        assert [(v.ts, v.value) for v in store.versions(key)] == sorted(model.versions.get(key, {}).items(), reverse=True)


@settings(max_examples=100, deadline=None)
@given(history=HISTORY, first=st.integers(0, 16), raise_by=st.integers(0, 5), chunks_first=st.integers(1, 4))
def test_raising_the_horizon_part_way_through(
    history: list[tuple[bytes, int, bytes | None]], first: int, raise_by: int, chunks_first: int
) -> None:
    store, model = build(history)
    progress = store.gc(Timestamp(first), max_versions=2)
    for _ in range(chunks_first - 1):
        if progress.done:
            break
        progress = store.gc(Timestamp(first), max_versions=2, resume_from=progress.resume_from)
    second = Timestamp(first + raise_by)
    progress = store.gc(second, max_versions=2, resume_from=progress.resume_from)
    while not progress.done:
        assert_reads_match_history(store, model, second)
        progress = store.gc(second, max_versions=2, resume_from=progress.resume_from)
    progress = store.gc(second)  # a full pass at the final horizon
    assert_reads_match_history(store, model, second)
    model.gc(second)
    for key in model.all_keys():
        assert [(v.ts, v.value) for v in store.versions(key)] == sorted(model.versions.get(key, {}).items(), reverse=True)


def test_bad_resume_tokens() -> None:
    store, _ = build([(b"a", wall, b"v") for wall in range(5)])
    progress = store.gc(Timestamp(9), max_versions=1)
    assert not progress.done and progress.resume_from is not None
    with pytest.raises(MvccError, match="not a GC resume token"):
        store.gc(Timestamp(9), resume_from=b"junk")
    with pytest.raises(ValueError, match="above"):
        planner.decode_token(progress.resume_from, Timestamp(8))
    with pytest.raises(ValueError):
        planner.plan_chunk([], Timestamp(1), passed=False, max_versions=0)


@settings(max_examples=100, deadline=None)
@given(history=HISTORY, horizon=st.integers(0, 16), max_versions=st.integers(1, 5))
def test_chunk_spans_cover_every_dropped_version_in_order(
    history: list[tuple[bytes, int, bytes | None]], horizon: int, max_versions: int
) -> None:
    """What the tablet compacts after GC: the union of consecutive chunks' spans holds
    every key they dropped, and a pass's spans run from the first version to the end."""
    store, _ = build(history)
    engine: DictEngine = store.engine  # type: ignore[assignment]
    spans: list[tuple[bytes, bytes]] = []
    resume = None
    while True:
        before = engine.contents()
        progress = store.gc(Timestamp(horizon), max_versions=max_versions, resume_from=resume)
        dropped = set(before) - set(engine.contents())
        assert len(dropped) == progress.dropped
        assert progress.examined <= max_versions + 1
        assert all(progress.span_start <= key < progress.span_end for key in dropped), (progress, sorted(dropped))
        if spans:
            assert spans[-1][0] <= progress.span_start <= spans[-1][1], "consecutive spans leave no gap"
        spans.append((progress.span_start, progress.span_end))
        if progress.done:
            break
        resume = progress.resume_from
    assert spans[0][0] == store.space.versions and spans[-1][1] == store.space.versions_end


def test_compact_is_clamped_to_the_store_and_changes_nothing_readable() -> None:
    store, model = build([(b"a", wall, b"v%d" % wall) for wall in range(1, 6)])
    engine: DictEngine = store.engine  # type: ignore[assignment]
    store.gc(Timestamp(4))
    contents = engine.contents()
    store.compact()
    store.compact(b"", b"\xff")  # outside the versions: clamped to them
    store.compact(store.space.versions_end, None)  # an empty range: no call
    assert engine.compactions == 2 and engine.contents() == contents
    assert_reads_match_history(store, model, Timestamp(4))
