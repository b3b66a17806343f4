"""Bank history checker for `chronodb verify`: money moves, but is never made or lost.

Role: the bank workload runs transfers `("transfer", src, dst, amount)` between
a fixed set of accounts and read-only transactions that read every balance,
`("r", account, balance)`, at one read timestamp. Input: the history, the
total all accounts hold, optionally the account names; output: a `Verdict`.

Checked, for every ok transaction that reads:
- it read every account (`incomplete-read`), and then the balances sum to the
  total (`bank-total-mismatch`): a snapshot taken between a transfer's debit
  and credit would not;
- no balance is negative unless the workload allows overdrafts
  (`negative-balance`): transfers are checked against the balance they read;
- reads at the same read timestamp agree (`bank-snapshot-disagreement`): a
  timestamp names one state of the database.

Pure: no I/O, no clock, no randomness.
"""

from __future__ import annotations

from collections import Counter

from txn.sim.elle_records import (
    BANK_SNAPSHOT_DISAGREEMENT,
    BANK_TOTAL_MISMATCH,
    INCOMPLETE_READ,
    NEGATIVE_BALANCE,
    OK,
    Anomaly,
    Op,
    Verdict,
    ts_of,
)


def check_bank(
    history: list[Op], total: int, accounts: tuple | None = None, allow_negative: bool = False
) -> Verdict:
    """Every bank anomaly in the history; valid iff there is none."""
    anomalies: list[Anomaly] = []
    first_at_ts: dict = {}  # read ts -> (index, balances) of the first read there
    reads = 0
    for index, op in enumerate(history):
        balances = {mop[1]: mop[2] for mop in op.mops if mop[0] == "r"}
        if op.outcome != OK or not balances:
            continue
        reads += 1
        anomalies += _check_balances(index, op, balances, total, accounts, allow_negative)
        anomalies += _check_same_ts(index, op, balances, first_at_ts)
    stats = Counter(op.outcome for op in history)
    stats.update(ops=len(history), reads=reads)
    return Verdict(valid=not anomalies, anomalies=anomalies, stats=stats)


def _check_balances(
    index: int, op: Op, balances: dict, total: int, accounts: tuple | None, allow_negative: bool
) -> list[Anomaly]:
    anomalies = []
    stamps = (ts_of(op),)
    if accounts is not None and set(balances) != set(accounts):
        missing = sorted(set(accounts) - set(balances), key=repr)
        text = f"T{index} at ts={ts_of(op)} read {balances} but not accounts {missing}; its total means nothing."
        return [Anomaly(INCOMPLETE_READ, (index,), (), stamps, text)]
    if sum(balances.values()) != total:
        text = (
            f"Bank total mismatch: T{index} at ts={ts_of(op)} read balances {balances} summing to "
            f"{sum(balances.values())}, but transfers only move money and the accounts hold {total}; "
            "the snapshot saw part of a transfer, or money was made or lost."
        )
        anomalies.append(Anomaly(BANK_TOTAL_MISMATCH, (index,), (), stamps, text))
    negative = {account: balance for account, balance in balances.items() if balance < 0}
    if negative and not allow_negative:
        text = (
            f"Negative balance: T{index} at ts={ts_of(op)} read {negative}; every transfer checks the balance "
            "it debits, so two transfers must have both spent the same money."
        )
        anomalies.append(Anomaly(NEGATIVE_BALANCE, (index,), (), stamps, text))
    return anomalies


def _check_same_ts(index: int, op: Op, balances: dict, first_at_ts: dict) -> list[Anomaly]:
    ts = ts_of(op)
    if ts is None:
        return []
    first = first_at_ts.setdefault(ts, (index, balances))
    if first[1] == balances:
        return []
    text = (
        f"Bank snapshot disagreement: T{first[0]} and T{index} both read at ts={ts} but saw {first[1]} "
        f"and {balances}; one timestamp must name one state."
    )
    return [Anomaly(BANK_SNAPSHOT_DISAGREEMENT, (first[0], index), (), (ts, ts), text)]
