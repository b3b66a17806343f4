"""The export page builder (txn/node/export.py) on a store in memory: what a full and
an incremental backup take, and page cuts that never split a key's choice."""

from __future__ import annotations

import types

from hlc import Timestamp
from mvcc.engine import DictEngine
from mvcc.store import MvccStore
from txn import api
from txn.node.export import _build_page


def ts(wall: int) -> Timestamp:
    return Timestamp(wall, 0)


def replica_with(history: list[tuple[bytes, int, bytes | None]]):
    store = MvccStore(DictEngine(), prefix=b"m")
    for key, wall, value in history:
        store.write([(key, value)], ts(wall), sync=False)
    return types.SimpleNamespace(state=types.SimpleNamespace(store=store), node_id="n1")


HISTORY = [
    (b"a", 10, b"a10"), (b"a", 20, b"a20"), (b"a", 30, b"a30"),
    (b"b\x00", 15, b"b15"), (b"b\x00", 25, None),  # deleted at 25
    (b"c", 40, b"c40"),  # after every ts below
    (b"d", 5, b"d5"), (b"d", 22, None), (b"d", 24, b"d24"),
]


def all_pages(replica, at: int, since: int | None, max_bytes: int) -> tuple[list[tuple[bytes, int, bytes | None]], int]:
    rows, resume, pages = [], None, 0
    while True:
        request = api.ExportRequest("t1", ts(at), None if since is None else ts(since), resume, max_bytes, 10**9)
        reply = _build_page(replica, request)
        pages += 1
        rows += [(v.key, v.ts.wall, v.value) for v in reply.versions]
        resume = reply.resume
        if resume is None:
            return rows, pages


def test_full_backup_takes_the_version_each_key_shows_at_ts() -> None:
    replica = replica_with(HISTORY)
    for max_bytes in (1, 10, 1 << 20):  # 1 byte: a page per version examined, cuts inside keys
        rows, pages = all_pages(replica, 26, None, max_bytes)
        assert rows == [(b"a", 20, b"a20"), (b"d", 24, b"d24")], max_bytes  # b\0 is a tombstone at 26, c is later
        assert pages >= (2 if max_bytes < 20 else 1)


def test_incremental_backup_takes_every_version_after_since_tombstones_included() -> None:
    replica = replica_with(HISTORY)
    for max_bytes in (1, 1 << 20):
        rows, _ = all_pages(replica, 30, 20, max_bytes)
        assert rows == [(b"a", 30, b"a30"), (b"b\x00", 25, None), (b"d", 24, b"d24"), (b"d", 22, None)]


def test_full_then_incremental_replays_every_timestamp_of_the_chain() -> None:
    replica = replica_with(HISTORY)
    base, _ = all_pages(replica, 12, None, 7)
    increment, _ = all_pages(replica, 40, 12, 7)
    store = MvccStore(DictEngine(), prefix=b"m")
    for key, wall, value in base + increment:
        store.write([(key, value)], ts(wall), sync=False)
    for at in range(12, 41):
        got = store.scan(b"", None, ts(at)).rows
        want = replica.state.store.scan(b"", None, ts(at)).rows
        assert got == want, at
