"""A real node's synced log write in a worker thread (txn/node/wiring.py): the batch lands on
LevelDB, and the engine's bookkeeping (its write count, the pinned `first` reader) follows on the
event loop, so what is read after the write returned sees it."""

from __future__ import annotations

import pathlib
import threading

import pytest

from mvcc.engine import Batch, EngineError
from mvcc.engine_leveldb import LevelDbEngine
from txn.node.wiring import write_synced_in_thread


async def test_the_write_lands_off_the_loop_thread_and_reads_after_it_see_it(tmp_path: pathlib.Path) -> None:
    engine = LevelDbEngine(tmp_path / "db")
    try:
        before = Batch()
        before.put(b"p\x01a", b"1")
        engine.apply(before, sync=True)
        assert engine.first(b"p", b"q") == (b"p\x01a", b"1")  # pins the `first` reader
        generation = engine.generation
        writers: list[int] = []
        write_only = engine.write_only

        def recording(batch: Batch, *, sync: bool) -> None:
            writers.append(threading.get_ident())
            assert sync
            write_only(batch, sync=sync)

        engine.write_only = recording  # type: ignore[method-assign]
        batch = Batch()
        batch.delete(b"p\x01a")
        batch.put(b"p\x01b", b"2")
        await write_synced_in_thread(engine, batch)
        assert writers and writers[0] != threading.get_ident(), "written on the event loop's thread"
        assert engine.generation == generation + 1
        assert engine.first(b"p", b"q") == (b"p\x01b", b"2"), "a reader pinned before the write"
    finally:
        engine.close()
    reopened = LevelDbEngine(tmp_path / "db")
    try:
        assert list(reopened.iterate(b"p", b"q")) == [(b"p\x01b", b"2")]
    finally:
        reopened.close()


async def test_a_closed_engine_fails_the_write_with_its_own_error(tmp_path: pathlib.Path) -> None:
    engine = LevelDbEngine(tmp_path / "db")
    engine.close()
    batch = Batch()
    batch.put(b"p\x01a", b"1")
    with pytest.raises(EngineError, match="closed"):
        await write_synced_in_thread(engine, batch)
