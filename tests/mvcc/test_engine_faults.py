"""LevelDbEngine under damaged files and failing writes: clean errors, never altered bytes.

Corruption is made by flipping bytes in the files of a closed database; a
full disk by a fake plyvel DB whose writes raise plyvel.IOError (ENOSPC).
"""

from __future__ import annotations

import pathlib
import random
from collections.abc import Callable

import plyvel
import pytest

from hlc.timestamp import Timestamp
from mvcc.engine import Batch, CorruptionError, EngineError
from mvcc.engine_leveldb import LevelDbEngine
from mvcc.records import Intent
from mvcc.store import MvccStore

KEYS = 6000


def key_of(index: int) -> bytes:
    return b"key%08d" % index


def value_of(index: int) -> bytes:
    return random.Random(index).randbytes(100)  # incompressible: a flip lands in raw value bytes


def write_tables(path: pathlib.Path) -> None:
    """KEYS keys in several batches, compacted into .ldb table files, then closed."""
    with LevelDbEngine(path) as engine:
        for first in range(0, KEYS, 500):
            batch = Batch()
            for index in range(first, first + 500):
                batch.put(key_of(index), value_of(index))
            engine.apply(batch, sync=False)
        engine.compact()
    assert list(path.glob("*.ldb")), "compaction left table files"


def flip(path: pathlib.Path, offset: int, count: int) -> None:
    data = bytearray(path.read_bytes())
    for index in range(offset, offset + count):
        data[index] ^= 0xFF
    path.write_bytes(bytes(data))


def flip_value_area(directory: pathlib.Path) -> None:
    """64 bytes a quarter into the biggest table: data blocks come first, the index last."""
    table = max(directory.glob("*.ldb"), key=lambda file: file.stat().st_size)
    flip(table, table.stat().st_size // 4, 64)


def assert_one_line_naming(error: BaseException, directory: pathlib.Path) -> None:
    message = str(error)
    assert "\n" not in message and str(directory) in message, message
    assert not isinstance(error, plyvel.Error)


def read_every_key(read: Callable[[int], bytes | None]) -> list[CorruptionError]:
    """Read each key: the right bytes or CorruptionError, nothing else."""
    errors = []
    for index in range(KEYS):
        try:
            got = read(index)
        except CorruptionError as error:
            errors.append(error)
            continue
        assert got == value_of(index), f"key {index}: altered bytes returned silently"
    return errors


def test_flipped_table_bytes_raise_corruption_on_get_first_and_views(tmp_path: pathlib.Path) -> None:
    directory = tmp_path / "db"
    write_tables(directory)
    flip_value_area(directory)
    with LevelDbEngine(directory, create_if_missing=False) as engine:
        errors = read_every_key(lambda index: engine.get(key_of(index)))
        assert errors, "the flipped block went unnoticed"
        assert_one_line_naming(errors[0], directory)
        assert "checksum" in str(errors[0]) and "reading key b'key" in str(errors[0])

        def first_value(index: int) -> bytes | None:
            pair = engine.first(key_of(index), None)
            return None if pair is None or pair[0] != key_of(index) else pair[1]

        assert read_every_key(first_value)
        with engine.view() as view:
            assert read_every_key(lambda index: engine.get(key_of(index), view=view))


@pytest.mark.parametrize("reverse", [False, True])
def test_flipped_table_bytes_stop_a_scan_with_corruption(tmp_path: pathlib.Path, reverse: bool) -> None:
    directory = tmp_path / "db"
    write_tables(directory)
    flip_value_area(directory)
    with LevelDbEngine(directory, create_if_missing=False) as engine:
        seen = 0
        with pytest.raises(CorruptionError) as excinfo:
            for key, value in engine.iterate(b"key", None, reverse=reverse):
                assert value == value_of(int(key[3:])), "altered bytes returned silently"
                seen += 1
        assert 0 < seen < KEYS
        assert_one_line_naming(excinfo.value, directory)


def test_flipped_table_bytes_through_the_store(tmp_path: pathlib.Path) -> None:
    directory = tmp_path / "db"
    with LevelDbEngine(directory) as engine:
        store = MvccStore(engine)
        for first in range(0, KEYS, 500):
            store.write([(key_of(index), value_of(index)) for index in range(first, first + 500)], Timestamp(10 + first),
                        sync=False)
        engine.compact()
    flip_value_area(directory)
    with LevelDbEngine(directory, create_if_missing=False) as engine:
        store = MvccStore(engine)
        assert read_every_key(lambda index: store.read(key_of(index), Timestamp.MAX).value)


def test_flipped_log_byte_makes_open_fail_cleanly(tmp_path: pathlib.Path) -> None:
    directory = tmp_path / "db"
    with LevelDbEngine(directory) as engine:  # closed without compaction: the data is in the log only
        for index in range(200):
            engine.apply(Batch([(key_of(index), value_of(index))]), sync=True)
    (log,) = directory.glob("*.log")
    flip(log, log.stat().st_size // 2, 1)
    # Without paranoid checks LevelDB drops the damaged record and opens, losing writes silently.
    with pytest.raises(CorruptionError) as excinfo:
        LevelDbEngine(directory, create_if_missing=False)
    assert_one_line_naming(excinfo.value, directory)
    assert "corrupt" in str(excinfo.value) and "opening" in str(excinfo.value)


def test_flipped_manifest_byte_makes_open_fail_cleanly(tmp_path: pathlib.Path) -> None:
    directory = tmp_path / "db"
    write_tables(directory)
    (manifest,) = directory.glob("MANIFEST-*")
    flip(manifest, manifest.stat().st_size // 2, 1)
    with pytest.raises(CorruptionError) as excinfo:
        LevelDbEngine(directory, create_if_missing=False)
    assert_one_line_naming(excinfo.value, directory)


# -- a full disk ---------------------------------------------------------------

ENOSPC = b"IO error: 000003.log: No space left on device"


class _FailingWriteBatch:
    def __init__(self) -> None:
        self.ops = 0

    def put(self, key: bytes, value: bytes) -> None:
        self.ops += 1

    def delete(self, key: bytes) -> None:
        self.ops += 1

    def write(self) -> None:
        raise plyvel.IOError(ENOSPC)


class _FullDisk:
    """A plyvel DB whose writes fail as on a full disk; reads pass through."""

    def __init__(self, db: "plyvel.DB") -> None:
        self._db = db

    def __getattr__(self, name: str) -> object:
        return getattr(self._db, name)

    def put(self, key: bytes, value: bytes, *, sync: bool = False) -> None:
        raise plyvel.IOError(ENOSPC)

    def write_batch(self, *, sync: bool = False) -> _FailingWriteBatch:
        return _FailingWriteBatch()


@pytest.mark.parametrize("ops", [[(b"a", b"new")], [(b"a", b"new"), (b"b", None)], [(b"b", None)]])
def test_full_disk_is_an_engine_error_and_changes_nothing(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch, ops: list[tuple[bytes, bytes | None]]
) -> None:
    directory = tmp_path / "db"
    with LevelDbEngine(directory) as engine:
        engine.apply(Batch([(b"a", b"old"), (b"b", b"old")]), sync=True)
        assert engine.first(b"a", None) == (b"a", b"old")  # creates the cached reader
        generation, reader = engine.generation, engine._reader
        monkeypatch.setattr(engine, "_db", _FullDisk(engine._db))
        with pytest.raises(EngineError) as excinfo:
            engine.apply(Batch(list(ops)), sync=True)
        error = excinfo.value
        assert type(error) is EngineError and not isinstance(error, OSError)
        assert_one_line_naming(error, directory)
        assert "No space left on device" in str(error)
        assert engine.generation == generation, "a failed write is not counted"
        assert engine._reader is reader, "a failed write keeps the cached reader"
        assert engine.first(b"a", None) == (b"a", b"old")
        assert engine.get(b"b") == b"old"
        monkeypatch.undo()
        engine.apply(Batch([(b"a", b"new")]), sync=True)  # the disk has room again
        assert engine.generation == generation + 1
        assert engine.first(b"a", None) == (b"a", b"new")


def test_full_disk_leaves_the_store_consistent(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with LevelDbEngine(tmp_path / "db") as engine:
        store = MvccStore(engine)
        store.write([(b"k", b"v1")], Timestamp(10), sync=True)
        assert store.read(b"k", Timestamp(20)).value == b"v1"  # fills the intent cache: no intents
        monkeypatch.setattr(engine, "_db", _FullDisk(engine._db))
        with pytest.raises(EngineError):
            store.write([(b"k", b"v2")], Timestamp(15), sync=True)
        with pytest.raises(EngineError):
            store.put_intent(Intent(b"k", "txn-1", Timestamp(16), b"v3"), sync=True)
        with pytest.raises(EngineError):
            store.gc(Timestamp(12))
        assert store.gc_horizon() == Timestamp.MIN, "a failed GC chunk does not raise the horizon"
        assert store.read(b"k", Timestamp(20)) == store.read(b"k", Timestamp(11))
        assert store.read(b"k", Timestamp(20)).value == b"v1" and store.read(b"k", Timestamp(20)).intent is None
        monkeypatch.undo()
        store.put_intent(Intent(b"k", "txn-1", Timestamp(16), b"v3"), sync=True)
        assert store.read(b"k", Timestamp(20)).intent == Intent(b"k", "txn-1", Timestamp(16), b"v3")


def test_a_plain_file_where_the_directory_goes_is_an_engine_error(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "db"
    path.write_text("not a directory")
    with pytest.raises(EngineError) as excinfo:
        LevelDbEngine(path)
    assert not isinstance(excinfo.value, CorruptionError), "not corruption: nothing to rebuild"
    assert_one_line_naming(excinfo.value, path)
