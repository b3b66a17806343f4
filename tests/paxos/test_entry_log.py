"""The replica's log keeps at most `log_resident_bytes` of applied entries in memory and reads the rest back."""

from __future__ import annotations

import pathlib
import random

from mvcc.engine_leveldb import LevelDbEngine
from paxos.entry_log import EntryLog
from paxos.messages import Accept, Accepted, Ballot, Entry, Promise
from paxos.replica import Replica
from paxos.storage import PaxosStorage
from paxos.types import PaxosConfig, Persist, PersistedState

B1 = Ballot(1, "n1")
KB = 1024


def big(index: int, size: int = 10 * KB) -> Entry:
    return Entry(index, B1, bytes([index % 251]) * size)


def test_applied_entries_over_the_budget_leave_memory_oldest_first_and_read_back() -> None:
    disk = {i: big(i) for i in range(1, 11)}
    reads: list[int] = []
    log = EntryLog(disk.values(), read=lambda i: reads.append(i) or disk.get(i), resident_bytes=35 * KB)
    log.evict(applied_index=10, pending=())
    assert log.resident_bytes <= 35 * KB and log.evictions == 7, "the 7 oldest left memory"
    assert all(i in log for i in range(1, 11)) and log.max_index(0) == 10
    assert [log[i] for i in range(1, 11)] == [disk[i] for i in range(1, 11)], "every entry reads back unchanged"
    assert reads == list(range(1, 8)), "only the evicted ones were read from disk"


def test_unapplied_and_unsynced_entries_stay_in_memory() -> None:
    disk = {i: big(i) for i in range(1, 11)}
    log = EntryLog(disk.values(), read=disk.get, resident_bytes=0)
    log.evict(applied_index=6, pending=(3,))
    assert log.evictions == 2, "1 and 2 go; 3 is not yet synced, and the evicted run stays contiguous"
    del disk[3], disk[8]  # what a crash before the sync would lose
    assert log[3] == big(3) and log[8] == big(8)
    log.evict(applied_index=6, pending=())
    assert log.evictions == 6 and log.get(7) == big(7), "4..6 go once synced; 7.. are not applied"


def test_truncation_and_install_forget_evicted_slots() -> None:
    disk = {i: big(i) for i in range(1, 11)}
    log = EntryLog(disk.values(), read=disk.get, resident_bytes=0)
    log.evict(applied_index=8, pending=())
    log.drop_through(5)
    assert 5 not in log and 6 in log and log.get(5) is None and log[6] == big(6)
    log.drop_through(9)
    assert sorted(log.indexes()) == [10] and log.resident_bytes == 10 * KB
    disk[11] = big(11)  # written and synced, then applied
    log.put(big(11))
    log.evict(applied_index=11, pending=())
    assert sorted(log.indexes()) == [10, 11] and log.resident_bytes == 0 and log[11] == big(11)


def test_without_a_reader_nothing_leaves_memory() -> None:
    log = EntryLog([big(i) for i in range(1, 5)], resident_bytes=0)
    log.evict(applied_index=4, pending=())
    assert log.evictions == 0 and log.resident_bytes == 40 * KB


def test_a_restart_loads_only_unapplied_entries_and_a_leader_catches_a_follower_up_from_disk(tmp_path: pathlib.Path) -> None:
    """On LevelDB: 20 x 256 KiB applied entries; the restarted leader holds none of them in memory,
    and a follower that missed them all gets every one, read back from the log."""
    engine = LevelDbEngine(tmp_path / "log")
    storage = PaxosStorage(engine)
    entries = tuple(Entry(i, B1, bytes([i]) * (256 * KB)) for i in range(1, 21))
    storage.write(Persist(promised=B1, entries=entries))
    persisted = storage.load(resident_after=20)
    assert persisted.entries == () and persisted.stored == tuple(range(1, 21))
    assert storage.load(resident_after=18).entries == entries[18:]
    assert storage.load() == PersistedState(B1, 0, entries)
    config = PaxosConfig(log_resident_bytes=512 * KB)
    leader = Replica(node_id="n1", peers=("n1", "n2", "n3"), config=config, rng=random.Random(1),
                     persisted=persisted, applied_index=20, now_ns=0, read_entry=storage.read_entry)
    assert leader.log.resident_bytes == 0 and leader.last_index == 20 and leader.chosen_index == 20
    leader.start_phase_1(0)
    for peer in ("n2", "n3"):
        leader.step(peer, Promise(leader.ballot, 21, (), 0, 0), 0)
    assert leader.role.value == "leader"
    got: dict[int, Entry] = {}  # what follower n2 holds
    for step in range(200):
        now = step * config.heartbeat_ns
        leader.tick(now)
        ready = leader.ready(now)
        storage.write(ready.persist)
        leader.advance(ready, now)
        for out in ready.early_messages + ready.messages:
            if out.dst == "n2" and isinstance(out.message, Accept):
                got.update({e.index: e for e in out.message.entries})
                match = next(i for i in range(len(got) + 2) if i + 1 not in got)
                leader.step("n2", Accepted(leader.ballot, match, now, 0, False), now)
        if len(got) > 20:
            break
    assert [got[i].command for i in range(1, 21)] == [e.command for e in entries], "the follower got every entry"
    assert leader.counters.get("paxos.entry_read_back", 0) >= 20, "read from the log on disk, not from memory"
    assert leader.log.resident_bytes <= config.log_resident_bytes
    engine.close()
