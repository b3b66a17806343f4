"""The bank checker of `chronodb verify` on synthetic histories: a clean one is valid, and
each anomaly injected into it is caught and named."""

from __future__ import annotations

import pytest

from hlc import Timestamp
from tools.verify_bank_check import check_bank_history
from tools.verify_txn import AT, BALANCES, OPEN, STRONG, TRANSFER, TxnRecord

ACCOUNTS = ("a", "b")


def ts(n: int) -> Timestamp:
    return Timestamp(1_000 + n, 0)


def opening(commit: int = 10) -> TxnRecord:
    return TxnRecord(-1, OPEN, 0, 5, "ok", [("open", a, 100) for a in ACCOUNTS], txn_id="o", attempt=1,
                     commit_ts=ts(commit), writes=[(a, 100) for a in ACCOUNTS])


def transfer(txn_id: str, moved: int, seen: list[tuple[int, str, int]], commit: int | None, at: tuple[int, int],
             outcome: str = "ok", writes: tuple[int, int] | None = None) -> TxnRecord:
    """a -> b; `seen`: (balance, writer, version ts) of a and b as read under the locks; moving 0 writes nothing."""
    (a_bal, _, _), (b_bal, _, _) = seen
    written = writes or (a_bal - moved, b_bal + moved)
    return TxnRecord(0, TRANSFER, at[0], at[1], outcome, [("transfer", "a", "b", moved)], txn_id=txn_id, attempt=1,
                     commit_ts=None if commit is None else ts(commit),
                     seen=[(acct, bal, w, ts(t)) for acct, (bal, w, t) in zip(ACCOUNTS, seen)],
                     writes=list(zip(ACCOUNTS, written)) if moved else [])


def snapshot(read_at: int, a: tuple[int, str, int], b: tuple[int, str, int], at: tuple[int, int],
             mode: str = STRONG) -> TxnRecord:
    seen = [(acct, bal, w, ts(t)) for acct, (bal, w, t) in zip(ACCOUNTS, (a, b))]
    return TxnRecord(1, BALANCES, at[0], at[1], "ok", [("r", acct, bal) for acct, bal, _, _ in seen], mode=mode,
                     read_ts=ts(read_at), seen=seen)


def clean() -> list[TxnRecord]:
    return [
        opening(10),
        transfer("t1", 30, [(100, "o", 10), (100, "o", 10)], 20, (10, 20)),
        snapshot(25, (70, "t1", 20), (130, "t1", 20), (30, 40)),
        snapshot(15, (100, "o", 10), (100, "o", 10), (41, 45), mode=AT),
        transfer("t2", 5, [(70, "t1", 20), (130, "t1", 20)], None, (50, 60), outcome="fail"),  # aborted, unseen
        transfer("t3", 10, [(70, "t1", 20), (130, "t1", 20)], None, (61, 70), outcome="info"),  # unknown, seen at 32
        snapshot(35, (60, "t3", 32), (140, "t3", 32), (71, 80)),
        snapshot(31, (70, "t1", 20), (130, "t1", 20), (81, 85), mode=AT),
    ]


def names(history: list[TxnRecord]) -> tuple[str, ...]:
    return check_bank_history(history, ACCOUNTS, 200).names()


def test_clean_history_is_valid() -> None:
    verdict = check_bank_history(clean(), ACCOUNTS, 200)
    assert verdict.valid, [str(a) for a in verdict.anomalies]
    assert verdict.stat("unknown_writes_seen") == 1


def replace(index: int, record: TxnRecord):
    return lambda h: h[:index] + [record] + h[index + 1:]


@pytest.mark.parametrize("expected, edit", [
    # half a transfer visible: the total is off, and b is not the newest version at 25
    ({"bank-total-mismatch", "snapshot-mismatch"}, replace(2, snapshot(25, (70, "t1", 20), (100, "o", 10), (30, 40)))),
    ({"G1a", "snapshot-mismatch"}, replace(6, snapshot(35, (65, "t2", 33), (135, "t2", 33), (71, 80)))),
    ({"negative-balance", "garbage-read"},
     replace(2, snapshot(25, (-10, "t1", 20), (210, "t1", 20), (30, 40)))),
    ({"wrong-version-ts", "snapshot-mismatch"}, replace(2, snapshot(25, (70, "t1", 21), (130, "t1", 21), (30, 40)))),
    # a strong snapshot invoked after t1 was acknowledged, reading below t1's commit
    ({"timestamp-order"}, replace(2, snapshot(15, (100, "o", 10), (100, "o", 10), (30, 40)))),
    # t1 read the opening's versions, yet overwrote another transfer's
    ({"lost-update"}, lambda h: h[:1] + [transfer("t0", 1, [(100, "o", 10), (100, "o", 10)], 12, (6, 9))]
     + h[1:2] + [snapshot(11, (100, "o", 10), (100, "o", 10), (7, 8), mode=AT)]),
    # a transfer invoked after t1 was acknowledged commits below it
    ({"timestamp-order"}, lambda h: h + [transfer("t4", 0, [(60, "t3", 32), (140, "t3", 32)], 19, (90, 95))]),
    ({"inconsistent-unknown-write", "snapshot-mismatch"},
     lambda h: h + [snapshot(36, (60, "t3", 33), (140, "t3", 32), (90, 95))]),
    ({"incomplete-read", "snapshot-mismatch"}, lambda h: h + [TxnRecord(1, BALANCES, 90, 95, "ok", [("r", "a", 60), ("r", "b", None)],
                                                   mode=STRONG, read_ts=ts(40),
                                                   seen=[("a", 60, "t3", ts(32)), ("b", None, "", None)])]),
])
def test_each_anomaly_is_caught_and_named(expected: set[str], edit) -> None:
    verdict = check_bank_history(edit(clean()), ACCOUNTS, 200)
    assert set(verdict.names()) == expected, [str(a) for a in verdict.anomalies]
    assert all(anomaly.explanation for anomaly in verdict.anomalies)


def test_a_transfer_that_moved_nothing_holds_no_later_commit_below_it() -> None:
    """It wrote nothing, so it committed as a read at its leader's now without commit-wait: a
    transfer invoked after it may commit below it (above every commit that wrote)."""
    zero = transfer("t4", 0, [(60, "t3", 32), (140, "t3", 32)], 50, (90, 95))
    later = transfer("t5", 10, [(60, "t3", 32), (140, "t3", 32)], 45, (100, 110))
    verdict = check_bank_history(clean() + [zero, later], ACCOUNTS, 200)
    assert verdict.valid, [str(a) for a in verdict.anomalies]
    below_a_write = transfer("t5", 10, [(60, "t3", 32), (140, "t3", 32)], 19, (100, 110))  # below t1 (20)
    assert set(names(clean() + [zero, below_a_write])) >= {"timestamp-order"}


def test_reads_of_failed_transactions_are_not_evidence() -> None:
    history = clean()
    history[4] = transfer("t2", 5, [(999, "nobody", 1), (130, "t1", 20)], None, (50, 60), outcome="fail")
    assert names(history) == ()
