"""The pure parts of `chronodb verify`'s list-append and bank workloads: how a list and a
balance are stored, how a transaction is recorded (one record per attempt, outcomes), its
history line, its form for Elle, and the liveness rule."""

from __future__ import annotations

import json
import random

import attrs
import pytest

from hlc import Timestamp
from tools.verify_list_append import MOPS_MAX, plan_mops
from tools.verify_txn import (
    AT, BALANCES, READ_ONLY, STALE, STRONG, TRANSFER, TXN, TxnRecord, check_txn_liveness, decode_balance, decode_list,
    encode_list, listed, record_from_json, record_to_json, to_elle_op,
)
from tools.verify_txn_run import run_recorded
from tools.verify_workloads import Recorder, spread_keys
from txn.client import NoLeader, OutcomeUnknown, TxnAborted
from txn.sim.bank_checkers import encode_value
from txn.sim.elle import check_list_append
from txn.sim.elle_records import Anomaly


def ts(n: int) -> Timestamp:
    return Timestamp(1_000 + n, 3)


def test_lists_round_trip_and_a_missing_key_is_the_empty_list() -> None:
    for values in [(), (7,), (1, 22, 333)]:
        assert decode_list(encode_list(values)) == values
    assert decode_list(None) == () and decode_list(b"") == ()
    assert encode_list((1, 2, 3)) == b"1,2,3"


def test_a_list_that_does_not_parse_keeps_its_garbage_for_the_checker() -> None:
    assert decode_list(b"1,x,3") == (1, "x", 3)
    history = [to_elle_op(TxnRecord(0, TXN, 0, 10, "ok", [("r", "k", decode_list(b"1,x"))], commit_ts=ts(1))),
               to_elle_op(TxnRecord(1, TXN, 0, 10, "ok", [("append", "k", 1)], commit_ts=ts(0)))]
    assert "garbage-read" in check_list_append(history).names()


def test_balances_decode_and_never_raise() -> None:
    assert decode_balance(encode_value(42, "abc-7")) == (42, "abc-7")
    assert decode_balance(None) == (None, "")
    balance, writer = decode_balance(b"no-slash")
    assert balance is None and writer.startswith("garbage")


def test_records_round_trip_through_history_lines() -> None:
    records = [
        TxnRecord(3, TXN, 100, 250, "ok", [("r", "k", (1, 2)), ("append", "k", 9)], txn_id="t-1", attempt=2,
                  commit_ts=ts(5)),
        TxnRecord(4, READ_ONLY, 110, 120, "ok", [("r", "k", ())], mode=AT, read_ts=ts(2)),
        TxnRecord(5, TRANSFER, 130, 190, "info", [("transfer", "a", "b", 3)], txn_id="t-2", attempt=1,
                  seen=[("a", 10, "t-0", ts(1)), ("b", None, "", None)], writes=[("a", 7), ("b", 3)], error="lost"),
        TxnRecord(6, BALANCES, 140, 160, "fail", mode=STRONG, error="NoLeader: none"),
    ]
    for index, record in enumerate(records):
        line = json.loads(json.dumps(record_to_json(index, record, 100)))
        assert line["invoke_ns"] == record.invoke_ns - 100
        assert record_from_json(line) == attrs.evolve(record, invoke_ns=record.invoke_ns - 100,
                                                      complete_ns=record.complete_ns - 100)


def test_only_strong_snapshots_are_in_real_time_order() -> None:
    rw = to_elle_op(TxnRecord(0, TXN, 0, 1, "ok", [("append", "k", 1)], commit_ts=ts(1)))
    assert (rw.read_only, rw.realtime, rw.commit_ts, rw.read_ts) == (False, True, ts(1), None)
    for mode, realtime in [(STRONG, True), (AT, False), (STALE, False)]:
        op = to_elle_op(TxnRecord(0, READ_ONLY, 0, 1, "ok", [("r", "k", ())], mode=mode, read_ts=ts(2)))
        assert (op.read_only, op.realtime, op.commit_ts, op.read_ts) == (True, realtime, None, ts(2))


def test_liveness_needs_a_committed_read_write_transaction_per_tablet_after_the_heal() -> None:
    groups = {"t1": ["a1"], "t2": ["c1"], "t3": ["k1"]}
    history = [
        TxnRecord(0, TXN, 5, 9, "ok", [("append", "a1", 1)]),  # before the heal
        TxnRecord(0, TXN, 20, 29, "ok", [("r", "c1", ())]),
        TxnRecord(0, READ_ONLY, 20, 29, "ok", [("r", "k1", ())], mode=STRONG),  # a snapshot is not enough
        TxnRecord(0, TRANSFER, 20, 29, "fail", [("transfer", "a1", "k1", 1)]),
    ]
    assert [a.explanation.split()[1] for a in check_txn_liveness(history, 10, groups)] == ["t1", "t3"]
    history.append(TxnRecord(0, TRANSFER, 30, 39, "ok", [("transfer", "a1", "k1", 0)]))
    assert check_txn_liveness(history, 10, groups) == []


def test_listed_keeps_the_first_of_each_class_and_counts_all() -> None:
    anomalies = [Anomaly("x", (i,)) for i in range(30)] + [Anomaly("y", (1,))]
    kept, counts = listed(anomalies, limit=25)
    assert len(kept) == 26 and counts == {"x": 30, "y": 1}


def test_keys_are_dealt_over_the_default_tablets_and_plans_stay_in_bounds() -> None:
    assert [key[0] for key in spread_keys("s", "la", 6)] == ["a", "c", "k", "u", "a", "c"]
    rng = random.Random(1)
    plans = [plan_mops(rng, ["x", "y"]) for _ in range(200)]
    assert all(1 <= len(plan) <= MOPS_MAX and {kind for kind, _ in plan} <= {"append", "r"} for plan in plans)
    assert {len(plan) for plan in plans} == set(range(1, MOPS_MAX + 1))


# --- one record per attempt, with the outcome rules -----------------------------------------


class FakeTx:
    def __init__(self, number: int) -> None:
        self.txn_id = f"c-{number}"
        self.commit_ts: Timestamp | None = None
        self.state = "active"
        self.aborted_earlier: str | None = None


class FakeClient:
    """`run_transaction` as the real one behaves: again after TxnAborted, then the final fate."""

    def __init__(self, fates: list[str]) -> None:
        self.fates = fates

    async def run_transaction(self, fn, *, max_attempts: int):
        for number, fate in enumerate(self.fates, 1):
            tx = FakeTx(number)
            await fn(tx)
            if fate == "abort":
                tx.state = "aborted"
                if number == max_attempts:
                    raise TxnAborted(tx.txn_id, "wounded", "older")
                continue
            if fate == "unknown":
                raise OutcomeUnknown("no answer", ts=ts(9), txn_id=tx.txn_id)
            if fate == "noleader":
                raise NoLeader("no leader")
            if fate == "boom":
                raise RuntimeError("unforeseen")
            tx.commit_ts, tx.state = ts(number), "committed"
            return None
        raise AssertionError("fates ran out")


async def record(fates: list[str], max_attempts: int = 4) -> list[TxnRecord]:
    counter = iter(range(100))

    async def body(tx, attempt) -> None:
        attempt.mops.append(("append", "k", next(counter)))

    return await run_recorded(FakeClient(fates), Recorder(0), 7, TXN, body, max_attempts=max_attempts)  # type: ignore[arg-type]


@pytest.mark.parametrize("fates, outcome", [
    (["ok"], "ok"), (["abort", "abort", "ok"], "ok"), (["abort", "unknown"], "info"), (["noleader"], "fail"),
    (["abort", "boom"], "info"), (["abort", "abort"], "fail"),
])
async def test_every_attempt_is_recorded_and_only_the_last_can_have_happened(fates: list[str], outcome: str) -> None:
    records = await record(fates, max_attempts=len(fates))
    assert len(records) == len(fates)
    assert [r.outcome for r in records[:-1]] == ["fail"] * (len(fates) - 1)
    assert all(r.error.startswith("aborted, run again") for r in records[:-1])
    last = records[-1]
    assert last.outcome == outcome and last.attempt == len(fates) and last.txn_id == f"c-{len(fates)}"
    assert [r.mops for r in records] == [(("append", "k", i),) for i in range(len(fates))]  # a fresh element each
    assert all(r.invoke_ns <= r.complete_ns for r in records)
    assert all(a.complete_ns <= b.invoke_ns for a, b in zip(records, records[1:]))
    expected_ts = {"ok": ts(len(fates)), "info": ts(9) if fates[-1] == "unknown" else None, "fail": None}[outcome]
    assert last.commit_ts == expected_ts and all(r.commit_ts is None for r in records[:-1])
