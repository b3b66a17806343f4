"""The client's transaction decisions without a cluster: read-your-writes, the commit plan, retries, ids."""

from __future__ import annotations

import random

import pytest

from hlc import Timestamp
from txn import api
from txn.client import Client, ClientError, OutcomeUnknown, TxnAborted
from txn.client.transaction import Snapshot, Transaction, apply_ops, run_with_retries
from txn.client.txn_plan import (
    ReadRow, ReadSet, merge_rows, node_now_estimate, plan_commit, retry_delay_s, scanned_range, stale_ts,
    strong_snapshot_ts,
)
from hlc import HybridClock
from hlc.physical import SystemClock

TS = Timestamp(100, 0)


def row(key: bytes, value: bytes, wall: int = 100) -> api.Row:
    return api.Row(key, value, Timestamp(wall, 0))


# ---- read-your-writes --------------------------------------------------------------

def test_merge_overlays_puts_and_hides_deletes_in_key_order():
    rows = [row(b"a", b"1"), row(b"c", b"3"), row(b"e", b"5")]
    writes = {b"d": b"new", b"c": None, b"a": b"mine", b"z": b"out of range"}
    merged = merge_rows(rows, writes, b"a", b"f")
    assert [(r.key, r.value) for r in merged] == [(b"a", b"mine"), (b"d", b"new"), (b"e", b"5")]
    # Own writes carry no version timestamp; the leader's rows keep theirs.
    assert merged[0].version_ts is None and merged[2].version_ts == Timestamp(100, 0)


def test_merge_respects_range_bounds_and_unbounded_end():
    writes = {b"a": b"x", b"m": b"y", b"\xff\xff": b"z"}
    assert [r.key for r in merge_rows([], writes, b"b", b"m")] == []
    assert [r.key for r in merge_rows([], writes, b"m", None)] == [b"m", b"\xff\xff"]


def test_delete_of_a_key_the_leader_does_not_have_is_harmless():
    assert merge_rows([row(b"a", b"1")], {b"b": None}, b"", None) == [ReadRow(b"a", b"1", Timestamp(100, 0))]


def test_scanned_range_short_page_covers_all_full_page_stops_after_last_row():
    rows = [row(b"a", b"1"), row(b"b", b"2")]
    assert scanned_range(b"", b"k", rows, page=5) == api.KeyRange(b"", b"k")
    assert scanned_range(b"", None, rows, page=2) == api.KeyRange(b"", b"b\x00")
    assert scanned_range(b"x", None, [], page=2) == api.KeyRange(b"x", None)


def test_read_row_unpacks_as_a_triple():
    key, value, version_ts = ReadRow(b"k", b"v", TS)
    assert (key, value, version_ts) == (b"k", b"v", TS)


# ---- participants and coordinator --------------------------------------------------------

def kw(key: bytes, value: bytes | None = b"v") -> api.KeyWrite:
    return api.KeyWrite(key, value)


def test_one_tablet_read_and_written_is_one_phase():
    reads = {"t1": ReadSet([b"a"], [])}
    plan = plan_commit([("t1", kw(b"b"))], reads, ["t1"])
    assert plan.one_phase and plan.coordinator == "t1"
    assert plan.participants[0].writes == (kw(b"b"),) and plan.participants[0].read_keys == (b"a",)


def test_coordinator_is_the_first_written_keys_tablet_even_if_another_was_read_first():
    reads = {"t0": ReadSet([b"x"], []), "t2": ReadSet([], [api.KeyRange(b"p", b"q")])}
    writes = [("t2", kw(b"p")), ("t1", kw(b"g")), ("t2", kw(b"q", None))]
    plan = plan_commit(writes, reads, ["t0", "t2"])
    assert not plan.one_phase
    assert plan.coordinator == "t2"
    assert [p.tablet_id for p in plan.participants] == ["t2", "t1", "t0"]
    by_id = {p.tablet_id: p for p in plan.participants}
    assert by_id["t2"].writes == (kw(b"p"), kw(b"q", None)) and by_id["t2"].read_ranges == (api.KeyRange(b"p", b"q"),)
    assert by_id["t1"].writes == (kw(b"g"),) and by_id["t1"].read_keys == ()
    assert by_id["t0"].writes == () and by_id["t0"].read_keys == (b"x",)


def test_read_only_on_several_tablets_still_prepares_all_with_the_first_read_as_coordinator():
    reads = {"t3": ReadSet([b"z"], []), "t1": ReadSet([b"a"], [])}
    plan = plan_commit([], reads, ["t3", "t1"])
    assert not plan.one_phase and plan.coordinator == "t3"
    assert [p.tablet_id for p in plan.participants] == ["t3", "t1"]


def test_nothing_touched_plans_nothing():
    plan = plan_commit([], {}, [])
    assert plan.participants == () and plan.coordinator is None and not plan.one_phase


def test_read_set_deduplicates_in_first_read_order():
    read_set = ReadSet()
    for key in (b"b", b"a", b"b"):
        read_set.add_key(key)
    read_set.add_range(api.KeyRange(b"a", None))
    read_set.add_range(api.KeyRange(b"a", None))
    assert read_set.keys == [b"b", b"a"] and read_set.ranges == [api.KeyRange(b"a", None)]


# ---- read timestamps from a node's clock --------------------------------------------------

def test_strong_snapshot_adds_max_offset_to_the_nodes_now():
    reply = api.TimestampReply(Timestamp(1_000_000_000, 3), 10_000_000)
    assert strong_snapshot_ts(reply) == Timestamp(1_010_000_000, 3)


def test_node_now_is_the_newest_replys_reading_advanced_by_the_time_since_it_arrived():
    older, newer = (Timestamp(5_000_000_000, 3), 10.0), (Timestamp(4_000_000_000, 7), 10.5)
    # The newest by arrival wins, even with the lower reading (another node's clock).
    assert node_now_estimate([older, None, newer], 10.5, 1.0) == Timestamp(4_000_000_000, 7)
    assert node_now_estimate([newer, older], 10.75, 1.0) == Timestamp(4_250_000_000, 0)
    assert node_now_estimate([newer], 11.5, 1.0) == Timestamp(5_000_000_000, 0)  # exactly fresh_s old: still used


def test_node_now_is_unknown_without_a_fresh_reply():
    reading = (Timestamp(4_000_000_000, 0), 10.0)
    assert node_now_estimate([], 10.0, 1.0) is None
    assert node_now_estimate([None, None], 10.0, 1.0) is None
    assert node_now_estimate([reading], 11.001, 1.0) is None  # too old: ask a node
    assert node_now_estimate([reading], 9.0, 1.0) is None  # "arrived later than now": not trusted


def test_stale_is_relative_to_the_nodes_clock_and_never_negative():
    reply = api.TimestampReply(Timestamp(5_000_000_000, 7), 10_000_000)
    assert stale_ts(reply, 2_000_000_000) == Timestamp(3_000_000_000, 0)
    assert stale_ts(reply, 9_000_000_000) == Timestamp(0, 0)


# ---- retries ------------------------------------------------------------------------------------

async def test_retries_keep_the_first_priority_and_back_off():
    seen: list[Timestamp] = []
    slept: list[float] = []

    async def attempt(priority: Timestamp) -> str:
        seen.append(priority)
        if len(seen) < 3:
            raise TxnAborted(f"c-{len(seen)}", "wounded", "an older transaction needed the lock")
        return "done"

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    result = await run_with_retries(attempt, TS, max_attempts=5, delay_s=lambda n: n / 100, sleep=sleep)
    assert result == "done"
    assert seen == [TS, TS, TS]
    assert slept == [0.01, 0.02]


async def test_retries_stop_after_max_attempts_with_the_last_abort():
    calls = []

    async def attempt(priority: Timestamp) -> None:
        calls.append(priority)
        raise TxnAborted(f"c-{len(calls)}", "conflict", "no")

    with pytest.raises(TxnAborted) as raised:
        await run_with_retries(attempt, TS, max_attempts=3, delay_s=lambda n: 0, sleep=_no_sleep)
    assert len(calls) == 3 and raised.value.txn_id == "c-3"


async def test_outcome_unknown_is_never_retried():
    calls = []

    async def attempt(priority: Timestamp) -> None:
        calls.append(priority)
        raise OutcomeUnknown("commit sent, no answer", txn_id="c-1")

    with pytest.raises(OutcomeUnknown):
        await run_with_retries(attempt, TS, max_attempts=10, delay_s=lambda n: 0, sleep=_no_sleep)
    assert calls == [TS]


async def _no_sleep(seconds: float) -> None:
    pass


def test_retry_delay_is_capped_exponential_with_bounded_jitter():
    rng = random.Random(1)
    delays = [retry_delay_s(n, rng) for n in range(1, 12)]
    assert 0.005 <= delays[0] <= 0.01
    assert 0.01 <= delays[1] <= 0.02
    assert all(0.25 <= d <= 0.5 for d in delays[7:])


# ---- a transaction's client-side state (no request is sent for these) ---------------------------

def client_with(seed: str) -> Client:
    return Client([("127.0.0.1", 1)], cluster_id=None, clock=HybridClock(SystemClock(), 10_000_000), timeout_s=1.0,
                  rng=random.Random(seed))


def test_txn_ids_are_unique_per_client_and_deterministic_for_a_seeded_rng():
    a, b = client_with("s/client/0"), client_with("s/client/0")
    ids = [a.next_txn_id() for _ in range(3)]
    assert ids == [b.next_txn_id() for _ in range(3)]
    assert len(set(ids)) == 3 and ids[0].endswith("-1") and ids[2].endswith("-3")
    assert client_with("s/client/1").next_txn_id() != ids[0]


async def test_reads_of_own_writes_are_answered_from_the_buffer():
    tx = Transaction(client_with("x"), "x-1", TS)
    tx.put(b"k", b"v1")
    tx.put(b"k", b"v2")
    tx.delete(b"gone")
    assert await tx.get(b"k") == b"v2"
    assert await tx.get(b"gone") is None
    assert tx.reads == [ReadRow(b"k", b"v2", None), ReadRow(b"gone", None, None)]
    assert tx._read_sets == {}  # nothing was read from a leader, so nothing to lock


async def test_a_finished_transaction_refuses_more_work():
    tx = Transaction(client_with("x"), "x-1", TS)
    await tx.abort()  # touched nothing: sends nothing
    with pytest.raises(ClientError, match="aborted"):
        tx.put(b"k", b"v")


async def test_apply_ops_refuses_writes_in_a_snapshot_and_malformed_operations():
    with pytest.raises(ClientError, match="read-only"):
        await apply_ops(Snapshot(client_with("x"), TS), [("put", b"k", b"v")])
    tx = Transaction(client_with("x"), "x-1", TS)
    with pytest.raises(ClientError, match="bad operation"):
        await apply_ops(tx, [("put", b"k")])
    await apply_ops(tx, [("put", b"a", b"1"), ("delete", b"b"), ("get", b"a")])
    assert tx.reads == [ReadRow(b"a", b"1", None)]
