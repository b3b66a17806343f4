"""A real node's synced log writes in its log-writer thread (txn/node/log_writer.py): each batch
lands on LevelDB off the event loop's thread, the engine's bookkeeping (its write count, the pinned
`first` reader) follows on the loop, writes queued while the thread was busy are finished with one
loop wake-up, a failed write fails only its caller, and a cancelled caller still waits for its write."""

from __future__ import annotations

import pathlib
import threading

import pytest
import trio

from mvcc.engine import Batch, EngineError
from mvcc.engine_leveldb import LevelDbEngine
from txn.node.log_writer import LogWriter


def _batch(key: bytes, value: bytes) -> Batch:
    batch = Batch()
    batch.put(key, value)
    return batch


class _HeldEngine(LevelDbEngine):
    """A LevelDB engine whose writes wait for `release` (set from the test) and record their order."""

    def __init__(self, path: pathlib.Path) -> None:
        super().__init__(path)
        self.release = threading.Event()
        self.started = threading.Event()
        self.written: list[bytes] = []

    def write_only(self, batch: Batch, *, sync: bool) -> None:
        self.started.set()
        assert self.release.wait(10), "the test never released the write"
        assert sync
        super().write_only(batch, sync=sync)
        self.written.append(batch._ops[0][0])


async def _wait_started(engine: _HeldEngine) -> None:
    with trio.fail_after(10):
        while not engine.started.is_set():
            await trio.sleep(0.001)


async def test_the_write_lands_off_the_loop_thread_and_reads_after_it_see_it(tmp_path: pathlib.Path) -> None:
    engine = LevelDbEngine(tmp_path / "db")
    writer = LogWriter()
    try:
        engine.apply(_batch(b"p\x01a", b"1"), sync=True)
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
        callbacks: list[tuple[int, int]] = []  # (thread, generation) of the batch's after_apply
        batch.after_apply(lambda: callbacks.append((threading.get_ident(), engine.generation)))
        await writer.write(engine, batch)
        assert writers and writers[0] != threading.get_ident(), "written on the event loop's thread"
        assert engine.generation == generation + 1
        assert callbacks == [(threading.get_ident(), generation + 1)], "after_apply: once, on the loop, after the write"
        assert engine.first(b"p", b"q") == (b"p\x01b", b"2"), "a reader pinned before the write"
    finally:
        writer.close()
        engine.close()
    reopened = LevelDbEngine(tmp_path / "db")
    try:
        assert list(reopened.iterate(b"p", b"q")) == [(b"p\x01b", b"2")]
    finally:
        reopened.close()


async def test_a_failed_write_fails_its_caller_only(tmp_path: pathlib.Path) -> None:
    closed = LevelDbEngine(tmp_path / "closed")
    closed.close()
    engine = LevelDbEngine(tmp_path / "db")
    writer = LogWriter()
    try:
        with pytest.raises(EngineError, match="closed"):
            await writer.write(closed, _batch(b"p\x01a", b"1"))
        assert closed.generation == 0, "a failed write was counted"
        await writer.write(engine, _batch(b"p\x01b", b"2"))  # the thread lives on
        assert engine.get(b"p\x01b") == b"2"
    finally:
        writer.close()
        engine.close()


async def test_writes_queued_while_the_thread_is_busy_finish_together_in_order(tmp_path: pathlib.Path) -> None:
    held = _HeldEngine(tmp_path / "held")
    others = [LevelDbEngine(tmp_path / f"db{i}") for i in range(2)]
    writer = LogWriter()
    finished: list[str] = []

    async def write(name: str, engine: LevelDbEngine, key: bytes) -> None:
        await writer.write(engine, _batch(key, b"v"))
        finished.append(name)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write, "held", held, b"k0")
            await _wait_started(held)
            nursery.start_soon(write, "first", others[0], b"k1")
            nursery.start_soon(write, "second", others[1], b"k2")
            await trio.sleep(0.05)
            assert finished == [], "a write finished before the one ahead of it"
            held.release.set()
        assert sorted(finished) == ["first", "held", "second"]
        assert writer.writes == 3
        # One wake-up for the held write, one for the two queued behind it.
        assert writer.wakeups == 2, writer.wakeups
        assert [engine.get(key) for engine, key in ((held, b"k0"), (others[0], b"k1"), (others[1], b"k2"))] == [b"v"] * 3
    finally:
        held.release.set()
        writer.close()
        for engine in (held, *others):
            engine.close()


async def test_a_cancelled_caller_still_waits_for_its_write(tmp_path: pathlib.Path) -> None:
    held = _HeldEngine(tmp_path / "held")
    writer = LogWriter()
    ended = trio.Event()
    outcome: list[str] = []

    async def write(scope_box: list[trio.CancelScope]) -> None:
        try:
            with trio.CancelScope() as scope:
                scope_box.append(scope)
                await writer.write(held, _batch(b"k", b"v"))
                outcome.append("returned")
        finally:
            ended.set()

    try:
        async with trio.open_nursery() as nursery:
            box: list[trio.CancelScope] = []
            nursery.start_soon(write, box)
            await _wait_started(held)
            box[0].cancel()
            await trio.sleep(0.05)
            assert not ended.is_set(), "the caller left while its write was still out"
            held.release.set()
        assert outcome == ["returned"] and held.get(b"k") == b"v"
        assert held.generation == 1, "the write's bookkeeping was skipped"
    finally:
        held.release.set()
        writer.close()
        held.close()
