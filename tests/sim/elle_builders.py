"""Shorthand for writing list-append and bank histories in tests/sim/test_elle.py.

`txn(a("x", 1), r("x", 1), at=(0, 10))` is an ok transaction invoked at 0 ns
and completed at 10 ns that appended 1 to x, then read x == [1]. A
transaction's index in the history list is its name in anomalies (T0, T1...).
"""

from __future__ import annotations

from hlc.timestamp import Timestamp
from txn.sim.elle_records import Op

EVERYWHERE = (0, 1_000)  # one window all default transactions share: no real-time order


def a(key: str, value: int) -> tuple:
    return ("append", key, value)


def r(key: str, *values: int) -> tuple:
    return ("r", key, list(values))


def ts(wall: int) -> Timestamp:
    return Timestamp(wall, 0)


def txn(*mops: tuple, outcome: str = "ok", at: tuple[int, int] = EVERYWHERE, commit: int | None = None,
        read_at: int | None = None, process: int = 0, realtime: bool = True) -> Op:
    """A transaction; `read_at` makes it read-only at that read timestamp; `realtime=False`
    makes it a read at a past timestamp, outside real-time order."""
    return Op(
        process=process,
        invoke_ns=at[0],
        complete_ns=at[1],
        outcome=outcome,
        mops=mops,
        commit_ts=None if commit is None else ts(commit),
        read_only=read_at is not None,
        read_ts=None if read_at is None else ts(read_at),
        realtime=realtime,
    )


def transfer(src: str, dst: str, amount: int, commit: int) -> Op:
    return txn(("transfer", src, dst, amount), commit=commit)


def balances(read_at: int, **accounts: int) -> Op:
    return txn(*(("r", account, balance) for account, balance in accounts.items()), read_at=read_at)
