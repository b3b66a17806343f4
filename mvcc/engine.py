"""The storage engine interface under the MVCC store and the Paxos log, and a dict engine.

Role: the small, ordered, byte-keyed interface that everything persistent in a
tablet replica is written against. `mvcc/engine_leveldb.py` implements it on
LevelDB (the only plyvel import); `DictEngine` here implements it in memory
for tests and deterministic simulation.

Interface (`Engine`):
- `get(key, *, view=None) -> bytes | None`
- `apply(batch, *, sync)`: all of a `Batch` or none of it, in op order (a later
  op on the same key wins). `sync=True` returns only once the batch and
  everything before it are durable. Once it is applied, and only then, the
  batch's `after_apply` callbacks run, in the order added (a failed apply runs
  none): a cache of what the batch changes is updated exactly when it is.
- `iterate(start, stop, *, reverse=False, view=None)`: `(key, value)` pairs with
  `start <= key < stop` (`stop=None`: no upper bound), ascending, or descending
  with `reverse=True`. Without a view the iterator sees the engine as of the
  call (LevelDB's implicit iterator snapshot); later writes are not seen.
- `view()`: a consistent read view (a LevelDB snapshot), a context manager;
  pass it as `view=` to `get`/`iterate`. Close it (leave the `with`) when done.
- `first(start, stop, *, view=None) -> (key, value) | None`: the first pair in
  `[start, stop)`; the point-read primitive (LevelDB reuses one iterator for
  it until the next write, which makes it several times cheaper than
  `iterate`).
- `generation`: how many batches this engine object has applied; a cache of
  what was read stays valid while it is unchanged.
- `approximate_size(start, stop) -> int`: bytes in `[start, stop)`, roughly.
- `compact(start=None, stop=None)`: reclaim the space of deleted and
  overwritten data in `[start, stop)` (None: unbounded) now; changes nothing
  readable. LevelDB does it as a manual compaction that returns when done
  (its cost grows with the data in and around the range); `DictEngine`
  holds no garbage and only counts the calls (`compactions`).
- `close()`: later calls raise `EngineError`.

Errors: any call may raise `EngineError` (I/O failure, closed engine), or its
subclass `CorruptionError` when stored data fails a checksum: never altered
bytes. Iterators may raise either part way. A failed `apply` changed nothing
readable: `generation` and the engine's caches are as before it.

Durability model of `DictEngine` (what a crash keeps): batches applied with
`sync=False` are *volatile* until a later batch is applied with `sync=True`,
which makes them and itself durable, as LevelDB's write-ahead log does.
`after_crash()` returns a fresh engine holding every durable batch and, if
asked, a prefix of the volatile tail (a real crash may keep some of it, in
order, never a later one without an earlier one).

Pure: no I/O, no clock, no randomness.
"""

from __future__ import annotations

import bisect
import weakref
from collections.abc import Iterator
from typing import Callable, Protocol

import attrs


class EngineError(Exception):
    """The engine cannot do what was asked: closed, missing or locked directory, I/O failure."""


class CorruptionError(EngineError):
    """Stored data failed a checksum or is malformed; the message names the directory.

    Raised instead of returning altered bytes. Not retryable: the replica's
    data must be restored (from a peer's snapshot) before it serves again.
    """


class Batch:
    """Writes to apply atomically, in order: `put(key, value)` and `delete(key)`.

    `overlay`: None, or a dict an applier sets when it stages several commands into one batch
    and a later one reads what an earlier one staged (txn/tablet/state.py). Writers that keep
    it (the MVCC store's intents) put each staged key's latest value there (None: deleted);
    their readers look there before the engine. Other keys are not in it."""

    __slots__ = ("_ops", "_after", "overlay")

    def __init__(self, ops: list[tuple[bytes, bytes | None]] | None = None) -> None:
        """`ops`, if given, is taken over as is: bytes keys and values (None: delete),
        unchecked; the MVCC store's write path builds it directly for speed."""
        self._ops: list[tuple[bytes, bytes | None]] = [] if ops is None else ops
        self._after: list[Callable[[], None]] | None = None
        self.overlay: dict[bytes, bytes | None] | None = None

    def after_apply(self, callback: Callable[[], None]) -> None:
        """Call `callback()` once the batch is applied (by the engine's `apply`, on its caller's thread)."""
        if self._after is None:
            self._after = []
        self._after.append(callback)

    def applied(self) -> None:
        """Run the `after_apply` callbacks; engines call it when `apply` succeeded."""
        if self._after is not None:
            for callback in self._after:
                callback()

    def put(self, key: bytes, value: bytes) -> None:
        if type(key) is not bytes or type(value) is not bytes:
            raise TypeError(f"Batch.put takes bytes key and value, got {type(key).__name__} and {type(value).__name__}")
        self._ops.append((key, value))

    def delete(self, key: bytes) -> None:
        if type(key) is not bytes:
            raise TypeError(f"Batch.delete takes a bytes key, got {type(key).__name__}")
        self._ops.append((key, None))

    @property
    def ops(self) -> tuple[tuple[bytes, bytes | None], ...]:
        """`(key, value)` pairs in order; value None means delete."""
        return tuple(self._ops)

    def __len__(self) -> int:
        return len(self._ops)

    def __repr__(self) -> str:
        return f"Batch({len(self._ops)} ops)"


class View(Protocol):
    """A consistent read view; leave the `with` (or call close) to release it."""

    def __enter__(self) -> "View": ...

    def __exit__(self, *exc_info: object) -> None: ...

    def close(self) -> None: ...


class Engine(Protocol):
    """An ordered byte-keyed store with atomic batches and consistent views."""

    def get(self, key: bytes, *, view: View | None = None) -> bytes | None: ...

    def apply(self, batch: Batch, *, sync: bool) -> None: ...

    def iterate(
        self, start: bytes, stop: bytes | None, *, reverse: bool = False, view: View | None = None
    ) -> Iterator[tuple[bytes, bytes]]: ...

    def keys(self, start: bytes, stop: bytes | None) -> Iterator[bytes]:
        """The keys in [start, stop), ascending, without reading their values into memory."""
        ...

    def view(self) -> View: ...

    def first(self, start: bytes, stop: bytes | None, *, view: View | None = None) -> tuple[bytes, bytes] | None: ...

    generation: int

    def approximate_size(self, start: bytes, stop: bytes | None) -> int: ...

    def compact(self, start: bytes | None = None, stop: bytes | None = None) -> None: ...

    def close(self) -> None: ...


@attrs.define(eq=False)
class _State:
    """A sorted dict image; shared by views until the next write copies it (copy-on-write)."""

    data: dict[bytes, bytes] = attrs.field(factory=dict)
    keys: list[bytes] = attrs.field(factory=list)  # sorted keys of `data`

    def copy(self) -> "_State":
        return _State(dict(self.data), list(self.keys))

    def write(self, key: bytes, value: bytes | None) -> None:
        if value is None:
            if self.data.pop(key, None) is not None:
                del self.keys[bisect.bisect_left(self.keys, key)]
        else:
            if key not in self.data:
                bisect.insort(self.keys, key)
            self.data[key] = value


@attrs.define(eq=False)
class DictView:
    """A `DictEngine` read view: the engine's state at the moment `view()` was called."""

    state: _State | None

    def __enter__(self) -> "DictView":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self.state = None


def _iterate_state(state: _State, start: bytes, stop: bytes | None, reverse: bool) -> Iterator[tuple[bytes, bytes]]:
    keys, data = state.keys, state.data
    low = bisect.bisect_left(keys, start)
    high = len(keys) if stop is None else bisect.bisect_left(keys, stop)
    indexes = range(high - 1, low - 1, -1) if reverse else range(low, high)
    for index in indexes:
        key = keys[index]
        yield key, data[key]


class DictEngine:
    """A sorted in-memory `Engine` that also models what a crash keeps.

    Views and iterators share the current state; while any of them is alive,
    the next write copies the state first, so they stay consistent.
    """

    def __init__(self) -> None:
        self._state = _State()
        self._readers: weakref.WeakSet[object] = weakref.WeakSet()  # live views and iterators of _state
        self._durable: dict[bytes, bytes] = {}
        self._volatile: list[tuple[tuple[bytes, bytes | None], ...]] = []
        self._closed = False
        self.generation = 0  # batches applied through this object
        self.compactions = 0  # compact() calls, for tests

    def _check_open(self) -> None:
        if self._closed:
            raise EngineError("engine is closed")

    def _read_state(self, view: View | None) -> _State:
        self._check_open()
        if view is None:
            return self._state
        if not isinstance(view, DictView) or view.state is None:
            raise EngineError(f"not an open view of this engine: {view!r}")
        return view.state

    def get(self, key: bytes, *, view: View | None = None) -> bytes | None:
        return self._read_state(view).data.get(key)

    def apply(self, batch: Batch, *, sync: bool) -> None:
        self._check_open()
        ops = batch.ops
        if self._readers:
            self._state = self._state.copy()
            self._readers = weakref.WeakSet()
        for key, value in ops:
            self._state.write(key, value)
        self.generation += 1
        self._volatile.append(ops)
        if sync:
            for volatile_ops in self._volatile:
                _write_all(self._durable, volatile_ops)
            self._volatile.clear()
        batch.applied()

    def iterate(
        self, start: bytes, stop: bytes | None, *, reverse: bool = False, view: View | None = None
    ) -> Iterator[tuple[bytes, bytes]]:
        pairs = _iterate_state(self._read_state(view), start, stop, reverse)
        if view is None:
            self._readers.add(pairs)
        return pairs

    def keys(self, start: bytes, stop: bytes | None) -> Iterator[bytes]:
        return (key for key, _ in self.iterate(start, stop))

    def first(self, start: bytes, stop: bytes | None, *, view: View | None = None) -> tuple[bytes, bytes] | None:
        state = self._read_state(view)
        index = bisect.bisect_left(state.keys, start)
        if index == len(state.keys):
            return None
        key = state.keys[index]
        if stop is not None and key >= stop:
            return None
        return key, state.data[key]

    def view(self) -> DictView:
        self._check_open()
        made = DictView(self._state)
        self._readers.add(made)
        return made

    def approximate_size(self, start: bytes, stop: bytes | None) -> int:
        return sum(len(key) + len(value) for key, value in _iterate_state(self._read_state(None), start, stop, False))

    def compact(self, start: bytes | None = None, stop: bytes | None = None) -> None:
        """Nothing to reclaim in memory; counts the call, for tests."""
        self._check_open()
        self.compactions += 1

    def close(self) -> None:
        self._closed = True

    @property
    def unsynced_batches(self) -> int:
        """How many applied batches a crash could still lose."""
        return len(self._volatile)

    def after_crash(self, *, keep_unsynced_batches: int = 0) -> "DictEngine":
        """A new engine holding what survives a crash now: every synced batch and all
        before it, plus the first `keep_unsynced_batches` of the volatile tail."""
        if not 0 <= keep_unsynced_batches <= len(self._volatile):
            raise ValueError(f"keep_unsynced_batches must be in [0, {len(self._volatile)}]: {keep_unsynced_batches}")
        survivor = DictEngine()
        data = dict(self._durable)
        for ops in self._volatile[:keep_unsynced_batches]:
            _write_all(data, ops)
        survivor._state = _State(data, sorted(data))
        survivor._durable = dict(data)
        return survivor

    def contents(self) -> dict[bytes, bytes]:
        """A copy of everything, for test assertions."""
        return dict(self._read_state(None).data)


def _write_all(data: dict[bytes, bytes], ops: tuple[tuple[bytes, bytes | None], ...]) -> None:
    for key, value in ops:
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
