"""The values and errors the MVCC store hands out, and the stored form of an intent.

Role: frozen records shared by `mvcc/store.py`, `mvcc/gc.py`,
`mvcc/snapshot.py` and the layers above (tablet, inspector).

Stored intent (value of key P "i" escape(key) 00 01, see mvcc/keys.py):
    ts (12 bytes, Timestamp.to_bytes) | len(txn_id utf-8) (2 bytes, big-endian) | txn_id | tagged value

Pure: no I/O.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

import attrs

from hlc.timestamp import Timestamp
from mvcc.keys import tag_value, untag_value


class MvccError(Exception):
    """The store cannot do what the caller asked (the caller's mistake or a damaged store)."""


class BelowGcHorizon(MvccError):
    """A read or write below the GC horizon: the versions it would need may be gone."""

    def __init__(self, horizon: Timestamp, requested: Timestamp) -> None:
        super().__init__(
            f"timestamp {requested} is below the GC horizon {horizon}: versions older than the horizon "
            "may have been garbage-collected; read at or above it"
        )
        self.horizon = horizon
        self.requested = requested


class IntentConflict(MvccError):
    """Another transaction's intent already holds the key."""

    def __init__(self, key: bytes, holder: str, requester: str) -> None:
        super().__init__(f"key {key!r} already has an intent of transaction {holder}; {requester} cannot add one")
        self.key = key
        self.holder = holder
        self.requester = requester


class SnapshotError(MvccError):
    """An import was refused or a snapshot stream is malformed or cut short."""


@attrs.frozen
class Intent:
    """The provisional write of a prepared transaction: value None is a provisional delete."""

    key: bytes
    txn_id: str
    ts: Timestamp
    value: bytes | None

    def __str__(self) -> str:
        shown = "delete" if self.value is None else f"{len(self.value)}B"
        return f"intent {self.key!r} txn={self.txn_id} ts={self.ts} {shown}"


@attrs.frozen
class Version:
    """One stored version of a key; value None is a tombstone."""

    ts: Timestamp
    value: bytes | None


class ReadResult(NamedTuple):
    """A point read: the newest live version at or below the read timestamp (value and
    version_ts both None if there is none or it is a tombstone), and the key's intent if
    its timestamp is at or below the read timestamp (the caller must wait for it).

    A NamedTuple rather than attrs: it is built on the point-read hot path, where
    a frozen attrs instance costs about 0.5 us, some 15% of a whole read."""

    value: bytes | None
    version_ts: Timestamp | None
    intent: Intent | None


@attrs.frozen
class ScanResult:
    """Live rows `(key, value, version_ts)` in scan order, and the intents at or below
    the read timestamp within the part of the range the scan covered."""

    rows: tuple[tuple[bytes, bytes, Timestamp], ...] = attrs.field(converter=tuple)
    intents: tuple[Intent, ...] = attrs.field(converter=tuple)


@attrs.frozen
class GcProgress:
    """One GC chunk's outcome; pass `resume_from` (opaque) to the next call until `done`.

    `examined`: version entries the chunk read. `span_start`, `span_end`: the
    engine key range `[span_start, span_end)` it read and dropped from
    (positions, opaque to callers: the spans of one pass's chunks cover the
    versions in order, overlapping where a chunk resumes at a pending
    tombstone; pass `(first chunk's start, last chunk's end)` of consecutive
    chunks to `MvccStore.compact`). `skipped`: the pass found, without reading
    a version, that it could drop nothing, and only moved the horizon (mvcc/store.py, GC)."""

    done: bool
    resume_from: bytes | None
    dropped: int
    examined: int = 0
    span_start: bytes = b""
    span_end: bytes = b""
    skipped: bool = False


@attrs.frozen
class MvccStatistics:
    """What the inspector and `status` show about one store."""

    keys: int
    versions: int
    tombstones: int
    intents: int
    approximate_bytes: int
    oldest_version_ts: Timestamp | None
    newest_version_ts: Timestamp | None
    gc_horizon: Timestamp


_TXN_LENGTH = struct.Struct(">H")


def encode_intent(intent: Intent) -> bytes:
    txn = intent.txn_id.encode()
    if len(txn) > 0xFFFF:
        raise ValueError(f"transaction id too long ({len(txn)} bytes)")
    return intent.ts.to_bytes() + _TXN_LENGTH.pack(len(txn)) + txn + tag_value(intent.value)


def decode_intent(key: bytes, stored: bytes) -> Intent:
    ts = Timestamp.from_bytes(stored[:12])
    (length,) = _TXN_LENGTH.unpack(stored[12:14])
    txn_id = stored[14 : 14 + length].decode()
    return Intent(key, txn_id, ts, untag_value(stored[14 + length :]))
