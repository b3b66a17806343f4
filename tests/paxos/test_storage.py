"""PaxosStorage on the mvcc engine: a restart recovers exactly what was synced, under b"p" only."""

from __future__ import annotations

import pathlib
import random

from mvcc.engine import Batch, DictEngine
from mvcc.engine_leveldb import LevelDbEngine
from paxos.messages import ZERO_BALLOT, Ballot, Entry
from paxos.storage import LOG_END, LOG_PREFIX, PaxosStorage, entry_key, index_of
from paxos.types import Persist, PersistedState

B1, B2 = Ballot(1, "n1"), Ballot(2, "n2")


def test_a_fresh_store_is_empty() -> None:
    assert PaxosStorage(DictEngine()).load() == PersistedState(ZERO_BALLOT, 0, ())


def test_key_order_is_slot_order() -> None:
    keys = [entry_key(i) for i in (1, 2, 255, 256, 2**40)]
    assert sorted(keys) == keys and [index_of(k) for k in keys] == [1, 2, 255, 256, 2**40]


def test_restart_recovers_exactly_the_synced_state() -> None:
    engine = DictEngine()
    storage = PaxosStorage(engine)
    storage.write(Persist(promised=B1, entries=(Entry(1, B1, b"a"), Entry(2, B1, b"b"))))
    storage.write(Persist(promised=B2, entries=(Entry(2, B2, b"c"), Entry(3, B2, b""))))
    other = Batch()
    other.put(b"m-user-key", b"not paxos")
    engine.apply(other, sync=False)
    storage.write(Persist(entries=(Entry(4, B2, b"lost"),)), sync=False)  # never synced
    recovered = PaxosStorage(engine.after_crash()).load()
    assert recovered == PersistedState(B2, 0, (Entry(1, B1, b"a"), Entry(2, B2, b"c"), Entry(3, B2, b"")))
    assert storage.synced_writes == 2


def test_truncation_deletes_entries_and_records_the_snapshot_index() -> None:
    engine = DictEngine()
    storage = PaxosStorage(engine)
    storage.write(Persist(promised=B1, entries=tuple(Entry(i, B1, b"x%d" % i) for i in range(1, 6))))
    storage.write(Persist(entries=(Entry(6, B1, b"x6"),), truncate_through=3))
    recovered = PaxosStorage(engine.after_crash()).load()
    assert recovered.snapshot_index == 3
    assert [e.index for e in recovered.entries] == [4, 5, 6]
    assert all(key.startswith(b"p") for key in engine.contents())


class ListingEngine(DictEngine):
    """A DictEngine that records where every key listing starts."""

    def __init__(self) -> None:
        super().__init__()
        self.listed_from: list[bytes] = []

    def keys(self, start: bytes, stop: bytes | None):  # type: ignore[no-untyped-def]
        self.listed_from.append(start)
        return super().keys(start, stop)


def test_truncation_lists_only_the_keys_past_the_last_truncation() -> None:
    """The keys at or below the recorded snapshot index went with it. Listed from the log's start,
    LevelDB walks the tombstones over every one it has not compacted away: on a large store that
    listing grew to 17% of a node's event loop within 8 minutes of 64 writers (ARCHITECTURE.md)."""
    engine = ListingEngine()
    storage = PaxosStorage(engine)
    storage.write(Persist(promised=B1, entries=tuple(Entry(i, B1, b"x%d" % i) for i in range(1, 11))))
    storage.write(Persist(truncate_through=4))
    storage.write(Persist(entries=(Entry(11, B1, b"x11"),), truncate_through=8))
    assert engine.listed_from == [LOG_PREFIX, entry_key(5)]
    recovered = PaxosStorage(engine.after_crash()).load()
    assert recovered.snapshot_index == 8 and [e.index for e in recovered.entries] == [9, 10, 11]


def test_leveldb_round_trip(tmp_path: pathlib.Path) -> None:
    engine = LevelDbEngine(str(tmp_path / "db"))
    PaxosStorage(engine).write(Persist(promised=B2, entries=(Entry(7, B2, b"\x00\xff"),), truncate_through=6))
    engine.close()
    engine = LevelDbEngine(str(tmp_path / "db"))
    assert PaxosStorage(engine).load() == PersistedState(B2, 6, (Entry(7, B2, b"\x00\xff"),))
    engine.close()


def test_compact_log_returns_the_space_truncation_freed(tmp_path: pathlib.Path) -> None:
    """Truncation alone leaves the entries' bytes (and tombstones) in LevelDB's files; compact_log returns them."""
    rng = random.Random(3)
    with LevelDbEngine(str(tmp_path / "db")) as engine:
        storage = PaxosStorage(engine)
        for first in range(1, 3001, 100):
            storage.write(Persist(promised=B1, entries=tuple(Entry(i, B1, rng.randbytes(300)) for i in range(first, first + 100))))
        engine.compact()  # in table files, where approximate_size sees them
        full = engine.approximate_size(LOG_PREFIX, LOG_END)
        assert full > 3000 * 300 * 0.9
        storage.write(Persist(truncate_through=2900))
        assert engine.approximate_size(LOG_PREFIX, LOG_END) >= full * 0.9, "deletes alone free nothing"
        storage.compact_log(2900)
        assert engine.approximate_size(LOG_PREFIX, LOG_END) < full * 0.1
        recovered = storage.load()
        assert recovered.snapshot_index == 2900 and [e.index for e in recovered.entries] == list(range(2901, 3001))
