"""Which version of each key a scan at a timestamp sees, over engine pairs in order.

Role: the per-entry loops behind `MvccStore.scan` and `versions`, kept apart
from the store's bookkeeping. Input: version entries in engine order (see
mvcc/keys.py: keys ascending, each key's versions newest first) or the reverse
of it, and the read timestamp's inverted form; output: rows
`(user key, value, version ts)` of live keys.

Invariant used: no version group (P "v" escape(key) 00 01) is a prefix of
another, so `startswith(group)` tells exactly whether an entry is that key's.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable

from hlc.timestamp import Timestamp
from mvcc.keys import TAGGED_TOMBSTONE, TS_SIZE, ts_from_inverted, unescape
from mvcc.records import MvccError


def untag(stored: bytes) -> bytes | None:
    if stored == TAGGED_TOMBSTONE:
        return None
    if stored[:1] != b"\x01":
        raise MvccError(f"corrupt MVCC value: bad tag {stored[:1]!r}")
    return stored[1:]


def visible_forward(
    pairs: Iterable[tuple[bytes, bytes]], inverted: bytes, limit: int | None, skip: int, nothing: bytes,
    max_bytes: int | None = None,
) -> list[tuple[bytes, bytes, Timestamp]]:
    """Each key's newest version at or below the read ts (its suffix >= `inverted`);
    `nothing` is a prefix no version key starts with. With `max_bytes`, stops at the
    row that takes the rows' keys and values past it (see `past_bytes`)."""
    rows: list[tuple[bytes, bytes, Timestamp]] = []
    total = 0
    # The group whose visible version is found; startswith() is exact because no
    # group is a prefix of another (mvcc/keys.py).
    decided = nothing
    for engine_key, stored in pairs:
        if engine_key.startswith(decided):
            continue
        suffix = engine_key[-TS_SIZE:]
        if suffix < inverted:
            continue  # newer than the read
        decided = engine_key[:-TS_SIZE]
        if stored != TAGGED_TOMBSTONE:
            rows.append((unescape(decided[skip:-2]), untag(stored), ts_from_inverted(suffix)))  # type: ignore[arg-type]
            total += len(rows[-1][0]) + len(rows[-1][1])
            if (limit is not None and len(rows) >= limit) or past_bytes(rows, total, max_bytes):
                break
    return rows


def visible_reverse(
    pairs: Iterable[tuple[bytes, bytes]], inverted: bytes, limit: int | None, skip: int, nothing: bytes,
    max_bytes: int | None = None,
) -> list[tuple[bytes, bytes, Timestamp]]:
    """As visible_forward over descending engine keys: each key's versions arrive
    oldest first, so its visible version is the last one at or below the read ts."""
    rows: list[tuple[bytes, bytes, Timestamp]] = []
    total = 0
    group = None
    candidate: tuple[bytes, bytes] | None = None
    for engine_key, stored in pairs:
        key_group = engine_key[:-TS_SIZE]
        if key_group != group:
            if candidate is not None and candidate[1] != TAGGED_TOMBSTONE:
                rows.append(_row(candidate, skip))
                total += len(rows[-1][0]) + len(rows[-1][1])
                if (limit is not None and len(rows) >= limit) or past_bytes(rows, total, max_bytes):
                    return rows
            group, candidate = key_group, None
        if engine_key[-TS_SIZE:] >= inverted:
            candidate = (engine_key, stored)
    if candidate is not None and candidate[1] != TAGGED_TOMBSTONE:
        rows.append(_row(candidate, skip))
    return rows


def past_bytes(rows: list, total: int, max_bytes: int | None) -> bool:
    """Whether a scan bounded by max_bytes stops here: its rows' keys and values are past it,
    and it has at least two rows, so that a caller trimming to max_bytes (txn/api/limits.py
    scan_page) sees that more rows follow its first, however large that one is."""
    return max_bytes is not None and total > max_bytes and len(rows) >= 2


def _row(pair: tuple[bytes, bytes], skip: int) -> tuple[bytes, bytes, Timestamp]:
    engine_key, stored = pair
    return unescape(engine_key[skip : -TS_SIZE - 2]), untag(stored), ts_from_inverted(engine_key[-TS_SIZE:])  # type: ignore[return-value]
