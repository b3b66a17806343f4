"""The Engine contract, on DictEngine and LevelDbEngine alike, plus each one's extras."""

from __future__ import annotations

import contextlib
import os
import pathlib
import tempfile
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mvcc.engine import Batch, DictEngine, Engine, EngineError
import mvcc.engine_leveldb as engine_leveldb
from mvcc.engine_leveldb import LevelDbEngine

KEYS = st.binary(min_size=0, max_size=4).map(lambda b: bytes(x % 4 * 0x55 for x in b))  # bytes 00 55 aa ff
OPS = st.lists(st.tuples(KEYS, st.none() | st.binary(max_size=3)), max_size=30)


@pytest.fixture(params=["dict", "leveldb"])
def engine(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[Engine]:
    made: Engine = DictEngine() if request.param == "dict" else LevelDbEngine(tmp_path / "db")
    yield made
    made.close()


def batch_of(ops: list[tuple[bytes, bytes | None]]) -> Batch:
    batch = Batch()
    for key, value in ops:
        if value is None:
            batch.delete(key)
        else:
            batch.put(key, value)
    return batch


def test_batch_records_ops_in_order_and_rejects_non_bytes() -> None:
    batch = batch_of([(b"a", b"1"), (b"a", None), (b"", b"")])
    assert batch.ops == ((b"a", b"1"), (b"a", None), (b"", b""))
    assert len(batch) == 3
    with pytest.raises(TypeError):
        batch.put("a", b"1")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        batch.delete(None)  # type: ignore[arg-type]


def test_get_apply_iterate_bounds(engine: Engine) -> None:
    engine.apply(batch_of([(b"b", b"2"), (b"a", b"1"), (b"c", b""), (b"d", b"4"), (b"d", None)]), sync=True)
    assert engine.get(b"a") == b"1"
    assert engine.get(b"c") == b""
    assert engine.get(b"d") is None
    assert list(engine.iterate(b"a", b"c")) == [(b"a", b"1"), (b"b", b"2")]
    assert list(engine.iterate(b"a", b"b", reverse=True)) == [(b"a", b"1")]
    assert list(engine.iterate(b"b", None, reverse=True)) == [(b"c", b""), (b"b", b"2")]
    assert list(engine.iterate(b"", None)) == [(b"a", b"1"), (b"b", b"2"), (b"c", b"")]


def test_view_is_consistent_while_writes_go_on(engine: Engine) -> None:
    engine.apply(batch_of([(b"k1", b"old"), (b"k2", b"old")]), sync=False)
    with engine.view() as view:
        live = engine.iterate(b"", None)
        engine.apply(batch_of([(b"k1", b"new"), (b"k2", None), (b"k3", b"new")]), sync=False)
        assert engine.get(b"k1", view=view) == b"old"
        assert list(engine.iterate(b"", None, view=view)) == [(b"k1", b"old"), (b"k2", b"old")]
        assert list(live) == [(b"k1", b"old"), (b"k2", b"old")]
    assert list(engine.iterate(b"", None)) == [(b"k1", b"new"), (b"k3", b"new")]


def test_after_apply_callbacks_run_once_the_batch_is_applied_in_order(engine: Engine) -> None:
    seen: list[tuple[str, bytes | None]] = []
    batch = batch_of([(b"k", b"v")])
    batch.after_apply(lambda: seen.append(("first", engine.get(b"k"))))
    batch.after_apply(lambda: seen.append(("second", engine.get(b"k"))))
    assert seen == []  # not when added
    engine.apply(batch, sync=False)
    assert seen == [("first", b"v"), ("second", b"v")]  # after the write, in order
    failing = batch_of([(b"k", None)])
    failing.after_apply(lambda: seen.append(("failed", None)))
    engine.close()
    with pytest.raises(EngineError):
        engine.apply(failing, sync=False)
    assert len(seen) == 2  # a failed apply runs none


def test_closed_engine_raises(engine: Engine) -> None:
    engine.close()
    with pytest.raises(EngineError):
        engine.get(b"a")


def test_approximate_size_counts_something_for_dict_engine() -> None:
    engine = DictEngine()
    engine.apply(batch_of([(b"a", b"123"), (b"b", b"45")]), sync=False)
    assert engine.approximate_size(b"", None) == 7
    assert engine.approximate_size(b"b", None) == 3


@settings(max_examples=40, deadline=None)
@given(batches=st.lists(OPS, max_size=5), start=KEYS, stop=st.none() | KEYS, reverse=st.booleans())
def test_leveldb_iterates_like_dict_engine(
    batches: list[list[tuple[bytes, bytes | None]]], start: bytes, stop: bytes | None, reverse: bool
) -> None:
    with tempfile.TemporaryDirectory() as directory, LevelDbEngine(directory) as level:
        model = DictEngine()
        for ops in batches:
            level.apply(batch_of(ops), sync=False)
            model.apply(batch_of(ops), sync=False)
        expected = list(model.iterate(start, stop, reverse=reverse))
        assert list(level.iterate(start, stop, reverse=reverse)) == expected
        with level.view() as view:
            assert list(level.iterate(start, stop, reverse=reverse, view=view)) == expected
        for key in {key for ops in batches for key, _ in ops}:
            assert level.get(key) == model.get(key)


@settings(max_examples=40, deadline=None)
@given(batches=st.lists(st.tuples(OPS, st.booleans()), max_size=8), data=st.data())
def test_dict_engine_crash_keeps_synced_prefix(batches: list[tuple[list, bool]], data: st.DataObject) -> None:
    engine = DictEngine()
    states = [{}]
    last_synced = 0
    for number, (ops, sync) in enumerate(batches, start=1):
        engine.apply(batch_of(ops), sync=sync)
        state = dict(states[-1])
        for key, value in ops:
            if value is None:
                state.pop(key, None)
            else:
                state[key] = value
        states.append(state)
        if sync:
            last_synced = number
    assert engine.unsynced_batches == len(batches) - last_synced
    keep = data.draw(st.integers(0, engine.unsynced_batches))
    survivor = engine.after_crash(keep_unsynced_batches=keep)
    assert survivor.contents() == states[last_synced + keep]
    assert list(survivor.iterate(b"", None)) == sorted(states[last_synced + keep].items())
    assert survivor.unsynced_batches == 0
    assert engine.contents() == states[-1]


def test_leveldb_reopen_keeps_data(tmp_path: pathlib.Path) -> None:
    with LevelDbEngine(tmp_path / "db") as engine:
        engine.apply(batch_of([(b"p1", b"x")]), sync=True)
    with LevelDbEngine(tmp_path / "db", create_if_missing=False) as engine:
        assert engine.get(b"p1") == b"x"
        engine.compact()
        assert engine.size_on_disk() > 0
        assert engine.approximate_size(b"", None) >= 0


def test_leveldb_open_errors_name_the_path(tmp_path: pathlib.Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(EngineError, match=f"^data directory {missing} does not exist$"):
        LevelDbEngine(missing, create_if_missing=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(EngineError, match="holds no database"):
        LevelDbEngine(tmp_path / "empty", create_if_missing=False)
    with LevelDbEngine(tmp_path / "db"):
        with pytest.raises(EngineError, match=f"^data directory {tmp_path / 'db'} is in use by another process$"):
            LevelDbEngine(tmp_path / "db")


def test_leveldb_lock_held_by_another_process(tmp_path: pathlib.Path) -> None:
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parents[2]
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from mvcc.engine_leveldb import LevelDbEngine; "
         "e = LevelDbEngine(sys.argv[1]); print('open', flush=True); sys.stdin.read()", str(tmp_path / "db")],
        cwd=root, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "open\n"
        with pytest.raises(EngineError, match=f"^data directory {tmp_path / 'db'} is in use by another process$"):
            LevelDbEngine(tmp_path / "db")
    finally:
        holder.communicate("")
    assert holder.returncode == 0


def test_first_sees_writes_and_views(engine: Engine) -> None:
    assert engine.first(b"", None) is None
    before = engine.generation
    engine.apply(batch_of([(b"b", b"2"), (b"d", b"4")]), sync=False)
    assert engine.generation == before + 1
    assert engine.first(b"a", None) == (b"b", b"2")
    assert engine.first(b"b", b"c") == (b"b", b"2")
    assert engine.first(b"c", b"d") is None
    assert engine.first(b"e", None) is None
    with engine.view() as view:
        engine.apply(batch_of([(b"c", b"3"), (b"b", None)]), sync=False)
        assert engine.first(b"a", None) == (b"c", b"3")  # the cached reader follows the write
        assert engine.first(b"a", None, view=view) == (b"b", b"2")


def test_leveldb_compact_everything_reaches_one_level(tmp_path: pathlib.Path) -> None:
    with LevelDbEngine(tmp_path / "db") as engine:
        for version in range(6):
            batch = Batch()
            for index in range(20_000):
                batch.put(b"k%08d%02d" % (index, version), b"v" * 60)
            engine.apply(batch, sync=False)
        engine.compact()
        db = engine.plyvel_db
        levels = [int(db.get_property(b"leveldb.num-files-at-level%d" % level)) for level in range(7)]
        assert sum(1 for count in levels if count) == 1, levels
        assert engine.get(b"k0000000005") == b"v" * 60


def test_size_on_disk_counts_a_file_deleted_under_the_listing_as_nothing(tmp_path: pathlib.Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """LevelDB's compaction thread deletes files while the directory is listed: `chronodb bench
    compaction` once died on the FileNotFoundError."""

    class Vanished:
        name = "000999.ldb"

        def is_file(self) -> bool:
            return True

        def stat(self) -> os.stat_result:
            raise FileNotFoundError(2, "No such file or directory", self.name)

    real_scandir = os.scandir

    @contextlib.contextmanager
    def listing_with_a_vanished_file(path):  # type: ignore[no-untyped-def]
        with real_scandir(path) as entries:
            yield [*entries, Vanished()]

    with LevelDbEngine(tmp_path / "db") as engine:
        engine.apply(Batch([(b"k", b"v" * 1000)]), sync=True)
        size = engine.size_on_disk()
        monkeypatch.setattr(engine_leveldb.os, "scandir", listing_with_a_vanished_file)
        assert engine.size_on_disk() == size > 0
