"""The LevelDB `Engine`: the only module in chronodb that imports plyvel.

Role: one LevelDB directory per tablet replica, shared by the MVCC store
(prefix b"m"), the Paxos log (b"p") and tablet metadata (b"t"); each user of
it keeps to its own prefix.

Mapping onto plyvel:
- `apply(batch, sync=...)` is one `write_batch(sync=...)`: atomic, and with
  sync=True fsynced (with all earlier writes) before it returns.
  `write_only` + `note_write` are `apply` in two parts, the write for a
  worker thread (a node's Paxos log writes, txn/node/log_writer.py) and the
  bookkeeping for the event loop's thread.
- `view()` is a plyvel snapshot; `get`/`iterate` with `view=` read from it.
- `iterate` without a view uses a plain plyvel iterator, which LevelDB pins
  to an implicit snapshot at creation.
- `first` reuses one raw iterator until the next write (`generation` counts
  writes); the block cache is `cache_bytes` (32 MiB by default).
- Works around two plyvel 1.5 quirks: reverse iterators given a start bound
  drop keys, and `compact_range(stop=None)` compacts nothing.
- Opening fails with `EngineError` and a one-line message naming the path:
  a missing directory (create_if_missing=False), a directory with no
  database, or a lock held by another process (or another open engine).

Checked storage: the database is opened with `paranoid_checks=True` (a
damaged log, manifest or table found while opening or compacting is an error,
not silently skipped) and every read verifies block checksums
(`verify_checksums=True` on gets, iterators and the `first` reader). Without
the latter LevelDB returns a table block's altered bytes as if they were
data. plyvel's exceptions never leave this module: `plyvel.CorruptionError`
becomes `CorruptionError`, any other (`plyvel.IOError`: ENOSPC, EIO...)
`EngineError`, each one line naming the directory; iterators translate
them part way too.

A failed write changed nothing readable: LevelDB inserts a batch into its
memtable only after the log append (and sync) succeeded. So `apply` counts a
batch in `generation` and drops the `first` reader only once the write
returned; a failed one leaves both, and every cache keyed on `generation`,
as they were. Whether a batch whose sync failed survives a restart is
unknown (it may be in the log), and LevelDB may refuse all later writes
until reopened.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import plyvel

from mvcc.engine import Batch, CorruptionError, EngineError, View

# LevelDB's block cache (its default is 8 MiB). Versioned data is several
# times the size of the live data, and seeks touch more blocks than gets.
DEFAULT_CACHE_BYTES = 32 << 20

# A key above every key the store writes (all prefixes are single ASCII
# letters), for approximate sizes of unbounded ranges.
_TOP_KEY = b"\xff" * 16


class LevelDbView:
    """A LevelDB snapshot, closed on leaving the `with`."""

    __slots__ = ("snapshot",)

    def __init__(self, snapshot: "plyvel.Snapshot") -> None:
        self.snapshot: plyvel.Snapshot | None = snapshot

    def __enter__(self) -> "LevelDbView":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self.snapshot is not None:
            self.snapshot.close()
            self.snapshot = None


def _detail(error: Exception) -> str:
    """plyvel's message (LevelDB's status text, as bytes) on one line."""
    detail = error.args[0] if error.args else error
    if isinstance(detail, bytes):
        detail = detail.decode("utf-8", "replace")
    return " ".join(str(detail).split())


def _key_text(key: bytes) -> str:
    return repr(key) if len(key) <= 40 else f"{key[:40]!r}..."


def _error(path: str, doing: str, error: Exception) -> EngineError:
    """The EngineError (CorruptionError for corruption) for a plyvel error while `doing`."""
    if isinstance(error, plyvel.CorruptionError):
        detail = _detail(error).removeprefix("Corruption: ")
        return CorruptionError(f"data directory {path} is corrupt: {detail} ({doing})")
    return EngineError(f"data directory {path}: {doing} failed: {_detail(error)}")


def _open_error(path: str, error: Exception) -> EngineError:
    text = _detail(error)
    lowered = text.lower()
    if "lock" in lowered and ("temporarily unavailable" in lowered or "already held" in lowered or "resource" in lowered):
        return EngineError(f"data directory {path} is in use by another process")
    if "does not exist" in lowered or "create_if_missing" in lowered:
        return EngineError(f"data directory {path} holds no database (expected a LevelDB directory)")
    if isinstance(error, plyvel.CorruptionError) or "corrupt" in lowered:
        return CorruptionError(f"data directory {path} is corrupt: {text.removeprefix('Corruption: ')} (opening)")
    return EngineError(f"cannot open data directory {path}: {text}")


def _checked(pairs: Iterator[tuple[bytes, bytes]], path: str) -> Iterator[tuple[bytes, bytes]]:
    """`pairs`, with plyvel's errors part way translated."""
    try:
        yield from pairs
    except plyvel.Error as error:
        raise _error(path, "iterating", error) from None


def _checked_keys(keys: Iterator[bytes], path: str) -> Iterator[bytes]:
    try:
        yield from keys
    except plyvel.Error as error:
        raise _error(path, "iterating", error) from None


def _at_least(pairs: Iterator[tuple[bytes, bytes]], start: bytes) -> Iterator[tuple[bytes, bytes]]:
    for pair in pairs:
        if pair[0] < start:
            return
        yield pair


class LevelDbEngine:
    """An `Engine` on one LevelDB directory."""

    def __init__(
        self, path: str | os.PathLike[str], *, create_if_missing: bool = True, cache_bytes: int = DEFAULT_CACHE_BYTES
    ) -> None:
        self.path = os.fspath(path)
        if not create_if_missing and not os.path.isdir(self.path):
            raise EngineError(f"data directory {self.path} does not exist")
        if create_if_missing:
            try:
                os.makedirs(self.path, exist_ok=True)
            except OSError as error:  # a plain file in the way, a read-only parent...
                raise EngineError(f"cannot create data directory {self.path}: {error.strerror or error}") from None
        try:
            self._db: plyvel.DB | None = plyvel.DB(
                self.path, create_if_missing=create_if_missing, lru_cache_size=cache_bytes, paranoid_checks=True
            )
        except (plyvel.Error, OSError) as error:
            raise _open_error(self.path, error) from None
        self.generation = 0  # batches applied through this object
        # One raw iterator for `first`, pinned to the state after the last
        # write through this engine; dropped by the next write.
        self._reader: plyvel.RawIterator | None = None

    def _open_db(self) -> "plyvel.DB":
        if self._db is None:
            raise EngineError(f"engine on {self.path} is closed")
        return self._db

    def _snapshot(self, view: View | None) -> "plyvel.Snapshot":
        if not isinstance(view, LevelDbView) or view.snapshot is None:
            raise EngineError(f"not an open view of this engine: {view!r}")
        return view.snapshot

    def get(self, key: bytes, *, view: View | None = None) -> bytes | None:
        source = self._open_db() if view is None else self._snapshot(view)
        try:
            return source.get(key, verify_checksums=True)
        except plyvel.Error as error:
            raise _error(self.path, f"reading key {_key_text(key)}", error) from None

    def apply(self, batch: Batch, *, sync: bool) -> None:
        self.write_only(batch, sync=sync)
        self.note_write(batch)

    def write_only(self, batch: Batch, *, sync: bool) -> None:
        """`apply`'s LevelDB write without its bookkeeping: it touches no Python state of this
        object, so a worker thread may run it while the event loop's thread reads (LevelDB is
        thread-safe, and plyvel lets go of the GIL while it writes). Call `note_write(batch)` on
        the loop's thread once it returned. The engine must not be closed while it runs."""
        db = self._db
        if db is None:
            raise EngineError(f"engine on {self.path} is closed")
        ops = batch._ops
        try:
            if len(ops) == 1 and ops[0][1] is not None:
                db.put(ops[0][0], ops[0][1], sync=sync)  # one put is atomic by itself, and cheaper
            else:
                write_batch = db.write_batch(sync=sync)
                put = write_batch.put
                for key, value in ops:
                    if value is None:
                        write_batch.delete(key)
                    else:
                        put(key, value)
                write_batch.write()
        except plyvel.Error as error:
            raise _error(self.path, f"writing a batch of {len(ops)} ops", error) from None

    def note_write(self, batch: Batch) -> None:
        """`batch` was written (`write_only`): count it, drop the `first` reader pinned before it,
        and run its `after_apply` callbacks. Only after the write returned: a failed write changed
        nothing readable (module docstring)."""
        self.generation += 1
        if self._reader is not None:
            self._drop_reader()
        batch.applied()

    def _drop_reader(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def first(self, start: bytes, stop: bytes | None, *, view: View | None = None) -> tuple[bytes, bytes] | None:
        if view is None:
            reader = self._reader
            if reader is None:
                reader = self._reader = self._open_db().raw_iterator(verify_checksums=True)
        else:
            reader = self._snapshot(view).raw_iterator(verify_checksums=True)
        try:
            reader.seek(start)
            pair = reader.item()
        except plyvel.IteratorInvalidError:  # past the last key
            return None
        except plyvel.Error as error:
            if reader is self._reader:
                self._drop_reader()
            raise _error(self.path, f"seeking to key {_key_text(start)}", error) from None
        if stop is not None and pair[0] >= stop:
            return None
        return pair

    def iterate(
        self, start: bytes, stop: bytes | None, *, reverse: bool = False, view: View | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        source = self._open_db() if view is None else self._snapshot(view)
        try:
            if reverse:
                # plyvel 1.5 drops keys from reverse iterators given a start bound
                # (start=b"a", stop=b"b" over {a}, or start=b"" over {b""}, yield
                # nothing), so bound only the top and stop at `start` here.
                pairs = source.iterator(stop=stop, reverse=True, verify_checksums=True)
                return _checked(_at_least(pairs, start) if start else pairs, self.path)
            return _checked(source.iterator(start=start, stop=stop, verify_checksums=True), self.path)
        except plyvel.Error as error:
            raise _error(self.path, f"seeking to key {_key_text(start)}", error) from None

    def keys(self, start: bytes, stop: bytes | None) -> Iterator[bytes]:
        try:
            keys = self._open_db().iterator(start=start, stop=stop, include_value=False, verify_checksums=True)
        except plyvel.Error as error:
            raise _error(self.path, f"seeking to key {_key_text(start)}", error) from None
        return _checked_keys(keys, self.path)

    def view(self) -> LevelDbView:
        return LevelDbView(self._open_db().snapshot())

    def approximate_size(self, start: bytes, stop: bytes | None) -> int:
        try:
            return self._open_db().approximate_size(start, _TOP_KEY if stop is None else stop)
        except plyvel.Error as error:
            raise _error(self.path, "estimating a range's size", error) from None

    def compact(self, start: bytes | None = None, stop: bytes | None = None) -> None:
        """Compact the key range (everything by default), dropping overwritten data."""
        db = self._open_db()
        try:
            if stop is None:
                # plyvel 1.5 turns stop=None into an empty bound and compacts nothing
                # beyond flushing the memtable, so bound the range by the last key.
                last = next(db.iterator(reverse=True, include_value=False, verify_checksums=True), None)
                if last is None:
                    return
                stop = last + b"\x00"
            db.compact_range(start=start, stop=stop)
        except plyvel.Error as error:
            raise _error(self.path, "compacting", error) from None

    @property
    def plyvel_db(self) -> "plyvel.DB":
        """The underlying plyvel DB, for the raw-LevelDB baselines of `chronodb bench`
        (tools may not import plyvel); never for writing around the engine."""
        return self._open_db()

    def size_on_disk(self) -> int:
        """Bytes of all files in the directory. A file LevelDB deletes while it is listed (its
        compaction thread, or a writer's) holds no space any more and counts 0."""
        total = 0
        with os.scandir(self.path) as entries:
            for entry in entries:
                try:
                    if entry.is_file():
                        total += entry.stat().st_size
                except FileNotFoundError:
                    continue
        return total

    def close(self) -> None:
        self._drop_reader()
        if self._db is not None:
            db, self._db = self._db, None
            try:
                db.close()
            except plyvel.Error as error:
                raise _error(self.path, "closing", error) from None

    def __enter__(self) -> "LevelDbEngine":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
