"""On a real LevelDB directory, GC alone returns no space; GC followed by the compaction of
the chunks' spans does (what the tablet's space loop relies on, txn/tablet/space.py)."""

from __future__ import annotations

import pathlib
import random

from hlc.timestamp import Timestamp
from mvcc.engine_leveldb import LevelDbEngine
from mvcc.store import MvccStore

KEYS = 200
VERSIONS = 40
VALUE_BYTES = 200  # random: snappy cannot shrink them


def fill(store: MvccStore) -> Timestamp:
    rng = random.Random(7)
    wall = 0
    for _ in range(VERSIONS):
        wall += 1
        store.write([(b"key-%04d" % k, rng.randbytes(VALUE_BYTES)) for k in range(KEYS)], Timestamp(wall), sync=False)
    return Timestamp(wall)


def test_gc_then_compacting_the_chunk_spans_returns_the_space(tmp_path: pathlib.Path) -> None:
    with LevelDbEngine(tmp_path / "db") as engine:
        store = MvccStore(engine)
        newest = fill(store)
        engine.compact()  # everything in table files, where approximate_size sees it
        versions = store.space.versions, store.space.versions_end
        full = engine.approximate_size(*versions)
        assert full > KEYS * VERSIONS * VALUE_BYTES * 0.9
        spans, resume, dropped = [], None, 0
        while True:
            progress = store.gc(newest, max_versions=500, resume_from=resume)
            spans.append((progress.span_start, progress.span_end))
            dropped += progress.dropped
            if progress.done:
                break
            resume = progress.resume_from
        assert dropped == KEYS * (VERSIONS - 1) and len(spans) > 10
        # Deletes are tombstones: GC by itself frees nothing.
        assert engine.approximate_size(*versions) >= full * 0.9
        before = engine.size_on_disk()
        # Compact the pass in two slices, as the space loop does (each a union of consecutive spans).
        middle = len(spans) // 2
        store.compact(spans[0][0], spans[middle - 1][1])
        store.compact(spans[middle][0], spans[-1][1])
        after = engine.approximate_size(*versions)
        assert after < full * 0.1, (full, after)
        assert engine.size_on_disk() < before * 0.5, (before, engine.size_on_disk())
        assert all(len(store.versions(b"key-%04d" % k)) == 1 for k in range(KEYS))
        assert store.read(b"key-0000", newest).value is not None

