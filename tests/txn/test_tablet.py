"""The tablet state machine: applies log commands to MVCC, persists index and safe time."""

from __future__ import annotations

import cbor2
import pytest

from hlc import Timestamp
from mvcc.engine import Batch, DictEngine
from paxos.messages import Ballot
from txn.tablet.commands import (
    Barrier, Decide, Prepare, Resolve, SafeTimeAdvance, WriteBatch, decode_command, encode_command,
)
from txn.tablet import state as state_module
from txn.tablet.state import TabletState
from txn.tablet import txn_records
from txn.tablet.txn_records import DECISION_PREFIX


def ts(wall: int) -> Timestamp:
    return Timestamp(wall, 0)


def test_apply_writes_and_track_safe_time() -> None:
    engine = DictEngine()
    seen = []
    state = TabletState(engine, on_applied=lambda index, command, skipped: seen.append((index, command)))
    state.apply(1, encode_command(Barrier(ts(10))))
    state.apply(2, encode_command(WriteBatch(ts(20), [(b"a", b"1"), (b"b", b"2")])))
    state.apply(3, b"")
    state.apply(4, encode_command(WriteBatch(ts(30), [(b"a", None)])))
    state.apply(5, encode_command(SafeTimeAdvance(ts(40))))
    assert state.applied_index() == 5 and state.safe_ts == ts(40)
    assert state.store.read(b"a", ts(25)).value == b"1"
    assert state.store.read(b"a", ts(30)).value is None
    assert state.store.read(b"b", ts(19)).value is None
    assert [index for index, _ in seen] == [1, 2, 3, 4, 5]
    assert seen[2][1] is None


def test_index_and_safe_time_survive_reopen_and_crash() -> None:
    engine = DictEngine()
    state = TabletState(engine)
    state.apply(1, encode_command(WriteBatch(ts(5), [(b"k", b"v")])))
    reopened = TabletState(engine)
    assert reopened.applied_index() == 1 and reopened.safe_ts == ts(5)
    # Applies are unsynced: a crash may lose them, but then index and data go together.
    crashed = TabletState(engine.after_crash())
    assert (crashed.applied_index(), crashed.store.read(b"k", ts(9)).value) in ((0, None), (1, b"v"))


class CountingEngine(DictEngine):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def apply(self, batch, *, sync: bool) -> None:  # noqa: ANN001
        self.writes += 1
        super().apply(batch, sync=sync)


def test_a_turns_plain_writes_are_one_engine_write_and_listeners_hear_after_it() -> None:
    engine = CountingEngine()
    heard: list[tuple[int, bytes | None]] = []
    state = TabletState(engine, on_applied=lambda index, command, skipped: heard.append(
        (index, state.store.read(b"k", ts(100)).value)))  # what the store holds when told
    state.apply_entries([(1, encode_command(Barrier(ts(10))))] + [
        (i, encode_command(WriteBatch(ts(10 * i), [(b"k", b"v%d" % i)]))) for i in range(2, 6)] + [
        (6, b""), (7, encode_command(SafeTimeAdvance(ts(70))))])
    assert engine.writes == 1
    assert state.applied_index() == 7 and state.safe_ts == ts(70)
    assert [index for index, _ in heard] == [1, 2, 3, 4, 5, 6, 7]
    assert all(value == b"v5" for _, value in heard)  # written before anyone is told
    assert TabletState(engine).applied_index() == 7 and state.store.read(b"k", ts(35)).value == b"v3"
    # The batch is one unsynced write: a crash keeps all of the turn or none of it.
    crashed = TabletState(engine.after_crash())
    assert (crashed.applied_index(), crashed.store.read(b"k", ts(100)).value) == (0, None)
    kept = TabletState(engine.after_crash(keep_unsynced_batches=1))
    assert (kept.applied_index(), kept.safe_ts, kept.store.read(b"k", ts(100)).value) == (7, ts(70), b"v5")


def test_a_transaction_command_in_a_turn_sees_what_the_turn_staged_before_it() -> None:
    """A Decide resolves the intents of a Prepare applied in the same turn (it reads them from the store)."""
    engine = CountingEngine()
    state = TabletState(engine)
    epoch = Ballot(1, "n1")
    prepare = Prepare(ts(20), epoch, "tx1", ts(20), "t1", [(b"k", b"txn")], [], [])
    state.apply_entries([
        (1, encode_command(Barrier(ts(10), epoch))),
        (2, encode_command(WriteBatch(ts(15), [(b"j", b"plain")], epoch))),
        (3, encode_command(prepare)),
        (4, encode_command(Decide(ts(30), epoch, "tx1", True, []))),
        (5, encode_command(WriteBatch(ts(40), [(b"j", b"later")], epoch))),
    ])
    assert state.store.read(b"k", ts(30)).value == b"txn" and state.store.intent(b"k") is None
    assert state.store.read(b"j", ts(39)).value == b"plain" and state.store.read(b"j", ts(40)).value == b"later"
    assert not state.txns.prepared and state.applied_index() == 5
    assert engine.writes == 1  # the whole turn: the Decide saw the Prepare's intent through the batch


def test_commands_of_one_write_see_intents_the_earlier_ones_staged_or_removed() -> None:
    """In one engine write: a Prepare on a key whose intent an earlier Resolve (commit) or Decide
    (abort) removed prepares; one meeting another transaction's intent staged just before is
    refused; a coordinator's own write meeting a staged intent decides nothing."""
    engine = CountingEngine()
    state = TabletState(engine)
    epoch = Ballot(1, "n1")
    state.apply_entries([
        (1, encode_command(Barrier(ts(10), epoch))),
        (2, encode_command(Prepare(ts(20), epoch, "tx1", ts(20), "t9", [(b"k", b"one")], [], []))),
        (3, encode_command(Prepare(ts(21), epoch, "tx2", ts(21), "t9", [(b"k", b"two")], [], []))),  # tx1's intent
        (4, encode_command(Resolve(ts(30), epoch, [("tx1", ts(25))]))),
        (5, encode_command(Prepare(ts(31), epoch, "tx3", ts(31), "t9", [(b"k", b"three")], [], []))),  # k is free again
        (6, encode_command(Decide(ts(32), epoch, "tx4", True, [], [(b"k", b"own")]))),  # meets tx3's intent
        (7, encode_command(Decide(ts(33), epoch, "tx3", False, []))),  # tx3 coordinated here: aborted
        (8, encode_command(Prepare(ts(34), epoch, "tx5", ts(34), "t9", [(b"k", b"five")], [], []))),
    ])
    assert engine.writes == 1
    assert sorted(state.txns.prepared) == ["tx5"]
    assert state.store.read(b"k", ts(100)).value == b"one" and state.store.read(b"k", ts(24)).value is None
    intent = state.store.intent(b"k")
    assert intent is not None and (intent.txn_id, intent.value) == ("tx5", b"five")
    assert state.txns.decisions.get("tx4") is None and not state.txns.decisions["tx3"].committed
    reloaded = TabletState(engine)
    assert sorted(reloaded.txns.prepared) == ["tx5"] and reloaded.store.intent(b"k") == intent


def test_a_decision_staged_in_a_write_wins_over_a_later_one_even_evicted_from_the_cache(monkeypatch) -> None:  # noqa: ANN001
    """First decision wins inside one engine write too, and a Prepare after a presumed abort
    there never prepares, although the cache (bound 2 here) dropped the staged decisions."""
    monkeypatch.setattr(txn_records, "DECISION_CACHE_MAX", 2)
    engine = CountingEngine()
    state = TabletState(engine)
    epoch = Ballot(1, "n1")
    entries = [(1, encode_command(Barrier(ts(10), epoch))),
               (2, encode_command(Decide(ts(20), epoch, "tx1", False, []))),  # a presumed abort
               (3, encode_command(Decide(ts(21), epoch, "tx2", True, [], [(b"a", b"1")])))]
    entries += [(4 + i, encode_command(Decide(ts(22 + i), epoch, f"other{i}", False, []))) for i in range(5)]
    entries += [(9, encode_command(Prepare(ts(30), epoch, "tx1", ts(30), "t1", [(b"b", b"x")], [], []))),
                (10, encode_command(Decide(ts(31), epoch, "tx2", False, []))),
                (11, encode_command(Decide(ts(32), epoch, "tx1", True, [], [(b"c", b"y")])))]
    state.apply_entries(entries)
    assert engine.writes == 1
    assert "tx1" not in state.txns.prepared and state.store.intent(b"b") is None
    assert state.txns.decisions["tx2"].committed and state.txns.decisions["tx2"].commit_ts == ts(21)
    assert not state.txns.decisions["tx1"].committed
    assert state.store.read(b"a", ts(40)).value == b"1" and state.store.read(b"c", ts(40)).value is None


def test_a_long_apply_is_written_in_parts_each_with_its_applied_index() -> None:
    engine = CountingEngine()
    state = TabletState(engine)
    count = state_module.MAX_SLOTS_PER_WRITE + 5
    state.apply_entries([(i, encode_command(WriteBatch(ts(10 * i), [(b"k", b"v%d" % i)]))) for i in range(1, count + 1)])
    assert engine.writes == 2 and state.applied_index() == count
    assert TabletState(engine).store.read(b"k", ts(10 * count)).value == b"v%d" % count


def test_one_resolve_command_finishes_several_transactions_in_one_engine_write() -> None:
    """A participant logs every decision of a ResolveRequest in one command: a commit's intents
    become versions at its commit timestamp, an abort's vanish, an unknown one changes nothing,
    and the records survive a reload."""
    engine = CountingEngine()
    state = TabletState(engine)
    epoch = Ballot(1, "n1")
    state.apply_entries([
        (1, encode_command(Barrier(ts(10), epoch))),
        (2, encode_command(Prepare(ts(20), epoch, "tx1", ts(20), "t1", [(b"a", b"1"), (b"b", b"2")], [], []))),
        (3, encode_command(Prepare(ts(21), epoch, "tx2", ts(21), "t1", [(b"c", b"3")], [], []))),
    ])
    writes_before = engine.writes
    state.apply_entries([(4, encode_command(Resolve(ts(40), epoch, [("tx1", ts(30)), ("gone", ts(30)), ("tx2", None)])))])
    assert engine.writes == writes_before + 1
    assert [state.store.read(key, ts(30)).value for key in (b"a", b"b")] == [b"1", b"2"]
    assert state.store.read(b"a", ts(29)).value is None
    assert all(state.store.intent(key) is None for key in (b"a", b"b", b"c"))
    assert state.store.read(b"c", ts(50)).value is None
    assert not state.txns.prepared and not TabletState(engine).txns.prepared


def test_a_coordinators_writes_become_versions_only_with_the_decision_that_wins_and_commits() -> None:
    """The coordinator does not prepare: its writes ride in its Decide (Spanner 4.2.1)."""
    epoch = Ballot(1, "n1")
    state = TabletState(DictEngine())
    state.apply_entries([
        (1, encode_command(Barrier(ts(10), epoch))),
        (2, encode_command(Decide(ts(20), epoch, "tx1", True, ["t2"], [(b"a", b"1"), (b"b", None)]))),
        (3, encode_command(Decide(ts(30), epoch, "tx2", False, [], [(b"c", b"2")]))),  # an abort writes nothing
        (4, encode_command(Decide(ts(40), epoch, "tx2", True, [], [(b"c", b"3")]))),  # the abort came first
    ])
    assert state.store.read(b"a", ts(19)).value is None and state.store.read(b"a", ts(20)).value == b"1"
    assert state.store.read(b"c", ts(50)).value is None
    assert state.txns.decisions["tx1"].committed and not state.txns.decisions["tx2"].committed
    reloaded = TabletState(state.engine)
    assert reloaded.store.read(b"a", ts(25)).value == b"1" and reloaded.txns.decisions["tx1"].participants == ("t2",)
    # The record counts the coordinator's own writes (the inspector shows them); an abort's none.
    assert [reloaded.txns.decisions[t].writes for t in ("tx1", "tx2")] == [2, 0]


def test_a_decision_record_stored_before_it_counted_writes_loads_with_none() -> None:
    engine = DictEngine()
    batch = Batch()
    batch.put(DECISION_PREFIX + b"old", cbor2.dumps([True, ts(20).to_bytes(), ["t2"]]))  # before 12-04
    engine.apply(batch, sync=True)
    record = TabletState(engine).txns.decisions["old"]
    assert (record.committed, record.commit_ts, record.participants, record.writes) == (True, ts(20), ("t2",), 0)


def test_decisions_stay_on_disk_and_only_a_bounded_number_in_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory does not grow with the transactions a coordinator decided: past the cache's bound
    every decision is still answered (from the engine), as it is after a restart; the first
    decision still wins over a later one for an evicted transaction; unknown ids are not decided."""
    monkeypatch.setattr(txn_records, "DECISION_CACHE_MAX", 8)
    epoch = Ballot(1, "n1")
    state = TabletState(DictEngine())
    entries = [(1, encode_command(Barrier(ts(10), epoch)))]
    entries += [(2 + i, encode_command(Decide(ts(20 + i), epoch, f"tx{i}", i % 3 != 0, ["t2"], [(b"k%d" % i, b"v")])))
                for i in range(40)]
    entries.append((42, encode_command(Decide(ts(100), epoch, "tx1", False, [], []))))  # tx1 was decided first: no effect
    state.apply_entries(entries)
    records = state.txns.decisions
    assert len(records.cached) <= 8
    assert [records[f"tx{i}"].committed for i in range(40)] == [i % 3 != 0 for i in range(40)]
    assert records["tx1"].commit_ts == ts(21) and state.store.read(b"k1", ts(30)).value == b"v"
    assert "tx40" not in records and records.get("nope") is None and len(records.cached) <= 8
    with pytest.raises(KeyError):
        records["nope"]
    reloaded = TabletState(state.engine)
    assert not reloaded.txns.decisions.cached  # nothing read at start
    assert reloaded.txns.decisions["tx0"].commit_ts == ts(20) and not reloaded.txns.decisions["tx0"].committed
    # A snapshot install replaces the records: what the cache held of the old ones is forgotten.
    source = TabletState(DictEngine())
    source.apply_entries([(1, encode_command(Barrier(ts(10), epoch))),
                          (2, encode_command(Decide(ts(20), epoch, "tx38", False, [], [])))])
    assert records["tx38"].committed  # cached here
    state.install_snapshot(*source.export_snapshot())
    assert not records["tx38"].committed and "tx37" not in records


def test_a_coordinators_decision_whose_writes_meet_an_intent_is_not_recorded() -> None:
    epoch = Ballot(1, "n1")
    state = TabletState(DictEngine())
    state.apply_entries([
        (1, encode_command(Barrier(ts(10), epoch))),
        (2, encode_command(Prepare(ts(20), epoch, "tx0", ts(20), "t2", [(b"a", b"other")], [], []))),
        (3, encode_command(Decide(ts(30), epoch, "tx1", True, ["t2"], [(b"a", b"1")]))),
    ])
    assert "tx1" not in state.txns.decisions and state.applied_index() == 3
    assert state.store.intent(b"a").txn_id == "tx0" and state.store.read(b"a", ts(19)).value is None


def test_out_of_order_apply_is_a_bug() -> None:
    state = TabletState(DictEngine())
    with pytest.raises(AssertionError):
        state.apply(2, b"")


B0, B1, B2 = Ballot(1, "n1"), Ballot(2, "n3"), Ballot(3, "n2")


def resurrected_tail_log() -> list[bytes]:
    """The review's scenario: A leads at B0 and writes slots 1-3; it is cut off
    and appends W at slots 5-7 to its own log only (timestamps about t0); C
    leads at B1, its Barrier lands at slot 4 (t0 + 1.3 s); C dies; the next
    leader's phase 1 re-proposes A's W at slots 5-7 (highest-ballot values,
    correct Paxos); then its own barrier and a write."""
    t0 = 1_000_000_000
    log = [encode_command(Barrier(ts(t0 - 100), B0))]
    log += [encode_command(WriteBatch(ts(t0 - 90 + i), [(b"k%d" % i, b"old")], B0)) for i in range(2)]
    log.append(encode_command(Barrier(ts(t0 + 1_300_000_000), B1)))
    log += [encode_command(WriteBatch(ts(t0 + i), [(b"tail%d" % i, b"resurrected")], B0)) for i in range(3)]
    log.append(encode_command(Barrier(ts(t0 + 2_000_000_000), B2)))
    log.append(encode_command(WriteBatch(ts(t0 + 2_000_000_001), [(b"new", b"v")], B2)))
    return log


def test_a_deposed_leaders_tail_is_skipped_identically_on_every_replica() -> None:
    replicas = []
    for _ in range(3):
        events: list[tuple[int, bool]] = []
        state = TabletState(DictEngine(), on_applied=lambda index, command, skipped, e=events: e.append((index, skipped)))
        for index, command in enumerate(resurrected_tail_log(), start=1):
            state.apply(index, command)
        replicas.append((state, events))
    for state, events in replicas:
        assert [index for index, skipped in events if skipped] == [5, 6, 7]
        assert state.skipped == 3 and state.applied_index() == 9
        assert state.barrier_epoch == B2
        at = ts(10**12)
        assert [row[0] for row in state.store.scan(b"", None, at).rows] == [b"k0", b"k1", b"new"]
    # Applied timestamps strictly increase; every replica holds the same data.
    first = replicas[0][0].store.scan(b"", None, ts(10**12)).rows
    assert all(state.store.scan(b"", None, ts(10**12)).rows == first for state, _ in replicas)


def test_the_skip_rule_survives_restart_and_snapshot() -> None:
    log = resurrected_tail_log()
    engine = DictEngine()
    state = TabletState(engine)
    for index, command in enumerate(log[:4], start=1):
        state.apply(index, command)
    reopened = TabletState(engine)  # the barrier's epoch is persisted with the apply
    assert reopened.barrier_epoch == B1
    index, chunks = reopened.export_snapshot()
    installed = TabletState(DictEngine())
    installed.install_snapshot(index, chunks)  # and it travels with a snapshot
    for state in (reopened, installed):
        for i, command in enumerate(log[4:], start=5):
            state.apply(i, command)
        assert state.skipped == 3


def test_without_the_skip_rule_the_tail_crashes_the_replica() -> None:
    """The mutant the simulation must catch: applying stale commands trips the
    timestamp invariant (before epochs, on every replica, on every restart)."""
    state = TabletState(DictEngine())
    state.SKIP_STALE_COMMANDS = False
    with pytest.raises(AssertionError, match="not above safe time"):
        for index, command in enumerate(resurrected_tail_log(), start=1):
            state.apply(index, command)


def test_snapshot_round_trip() -> None:
    source = TabletState(DictEngine())
    for i in range(1, 40):
        source.apply(i, encode_command(WriteBatch(ts(i * 10), [(b"key%02d" % (i % 7), b"v%d" % i)])))
    index, chunks = source.export_snapshot()
    target = TabletState(DictEngine())
    target.apply(1, encode_command(WriteBatch(ts(1), [(b"stale", b"gone")])))
    target.install_snapshot(index, chunks)
    assert target.applied_index() == index == 39 and target.safe_ts == source.safe_ts
    assert target.store.read(b"stale", ts(10**6)).value is None
    for at in (ts(55), ts(200), ts(390)):
        assert target.store.scan(b"", None, at).rows == source.store.scan(b"", None, at).rows


def test_commands_carry_their_epoch_and_old_logs_still_decode() -> None:
    import cbor2

    command = WriteBatch(ts(7), [(b"k", None)], B1)
    assert decode_command(encode_command(command)) == command
    legacy = cbor2.dumps([1, ts(7).to_bytes(), [[b"k", b"v"]]], canonical=True)
    assert decode_command(legacy).epoch == Ballot(0, "")


def test_a_prepared_record_is_the_commands_log_encoding_as_applied() -> None:
    """The record of a prepared transaction holds its Prepare's log bytes (the applier passes them
    on rather than encoding the command again), and a reload reads the same Prepare back."""
    engine = DictEngine()
    state = TabletState(engine)
    epoch = Ballot(1, "n1")
    prepare = Prepare(ts(20), epoch, "tx1", ts(19), "t9", [(b"k", b"v")], [b"r"], [(b"a", b"b")])
    logged = encode_command(prepare)
    state.apply_entries([(1, encode_command(Barrier(ts(10), epoch))), (2, logged)])
    assert engine.get(txn_records.PREPARED_PREFIX + b"tx1") == logged
    assert TabletState(engine).txns.prepared["tx1"] == prepare


def test_a_snapshots_transaction_records_travel_in_bounded_chunks_and_replace_the_targets() -> None:
    """Decisions are never deleted, so a snapshot carries all of them: in chunks of at most about
    `snapshot_chunk_bytes`, never in the header (one Paxos message: until 12-05 every record went in
    it, and past 16 MiB, about 270,000 transactions, no follower could install a snapshot)."""
    epoch = Ballot(1, "n1")
    source = TabletState(DictEngine(), snapshot_chunk_bytes=1000)
    entries = [(1, encode_command(Barrier(ts(10), epoch)))]
    entries += [(2 + i, encode_command(Decide(ts(20 + i), epoch, f"tx{i:03d}", i % 2 == 0, ["t2"], [])))
                for i in range(300)]
    entries.append((302, encode_command(Prepare(ts(400), epoch, "held", ts(5), "t9", [(b"h", b"v")], [], []))))
    source.apply_entries(entries)
    index, chunks = source.export_snapshot()
    header = cbor2.loads(chunks[0])
    assert header[0] == state_module.SNAPSHOT_HEADER_VERSION == 4 and len(chunks[0]) < 100
    records = chunks[1:1 + header[5]]
    assert len(records) >= 5, "300 decisions of about 30 bytes make several 1,000-byte chunks"
    assert all(len(chunk) <= 1000 + 100 for chunk in records), [len(chunk) for chunk in records]
    assert sum(len(cbor2.loads(chunk)) for chunk in records) == 2 * 301  # every record, once
    target = TabletState(DictEngine(), snapshot_chunk_bytes=1000)
    target.apply_entries([(1, encode_command(Barrier(ts(10), epoch))),
                          (2, encode_command(Decide(ts(11), epoch, "gone", True, [], []))),
                          (3, encode_command(Prepare(ts(12), epoch, "gone-too", ts(5), "t9", [(b"g", b"v")], [], [])))])
    target.install_snapshot(index, chunks)
    decisions = target.txns.decisions
    assert [decisions[f"tx{i:03d}"].committed for i in range(300)] == [i % 2 == 0 for i in range(300)]
    assert decisions.get("gone") is None and set(target.txns.prepared) == {"held"}
    assert target.engine.contents() == {**source.engine.contents()}  # nothing else left over, nothing missing
    reopened = TabletState(target.engine)  # the prepared record is on disk too, not only in memory
    assert set(reopened.txns.prepared) == {"held"} and reopened.read_safe_ts() < ts(400)


def test_a_snapshot_from_a_build_with_its_records_in_the_header_still_installs() -> None:
    epoch = Ballot(1, "n1")
    source = TabletState(DictEngine())
    source.apply_entries([(1, encode_command(Barrier(ts(10), epoch))),
                          (2, encode_command(Decide(ts(20), epoch, "tx", True, ["t2"], [(b"k", b"v")])))])
    index, chunks = source.export_snapshot()
    header = cbor2.loads(chunks[0])
    flat = [part for chunk in chunks[1:1 + header[5]] for part in cbor2.loads(chunk)]
    old = [cbor2.dumps([3, *header[1:5], flat]), *chunks[1 + header[5]:]]  # version 3: the records in the header
    target = TabletState(DictEngine())
    target.apply_entries([(1, encode_command(Barrier(ts(10), epoch))),
                          (2, encode_command(Decide(ts(11), epoch, "gone", True, [], [])))])
    target.install_snapshot(index, old)
    assert target.txns.decisions["tx"].committed and target.txns.decisions.get("gone") is None
    assert target.store.read(b"k", ts(30)).value == b"v"


@pytest.mark.parametrize("damage", ["count beyond the chunks", "foreign key", "not a flat list", "negative count"])
def test_a_snapshot_with_damaged_transaction_record_chunks_is_refused(damage: str) -> None:
    epoch = Ballot(1, "n1")
    source = TabletState(DictEngine())
    source.apply_entries([(1, encode_command(Barrier(ts(10), epoch))),
                          (2, encode_command(Decide(ts(20), epoch, "tx", True, ["t2"], [])))])
    index, chunks = source.export_snapshot()
    header = cbor2.loads(chunks[0])
    if damage == "count beyond the chunks":
        chunks = [cbor2.dumps([*header[:5], len(chunks)])] + chunks[1:]
    elif damage == "negative count":
        chunks = [cbor2.dumps([*header[:5], -1])] + chunks[1:]
    elif damage == "foreign key":
        chunks[1] = cbor2.dumps([b"m/sneaky", b"v"])
    else:
        chunks[1] = cbor2.dumps({"a": 1})
    target = TabletState(DictEngine())
    with pytest.raises(ValueError):
        target.install_snapshot(index, chunks)
    assert not target.usable or damage == "negative count"  # refused before the marker, or left pending
