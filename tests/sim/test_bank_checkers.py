"""The bank checkers (txn/sim/bank_checkers.py) on synthetic histories: a valid one passes, and each
violation is caught: a wrong total, an aborted transfer visible, a committed transfer partly
visible, visible before its commit, or missing after it, an unknown transfer half applied, a lost
update, a stale strong snapshot, and transactions left prepared or intents left after healing."""

from __future__ import annotations

from hlc import Timestamp
from txn.sim.bank_checkers import (
    ABORTED, COMMITTED, UNKNOWN, BankRead, Leftover, Transfer, check_bank, check_quiescent, encode_value,
)

ACCOUNTS = (b"a1", b"d1")
TOTAL = 200


def ts(wall: int) -> Timestamp:
    return Timestamp(wall, 0)


def v(balance: int, txn: str) -> bytes:
    return encode_value(balance, txn)


OPEN = Transfer("open", 0, 10, COMMITTED, ts(10), [], [(b"a1", v(100, "open")), (b"d1", v(100, "open"))])
T1 = Transfer("t1", 20, 30, COMMITTED, ts(30), [(b"a1", v(100, "open")), (b"d1", v(100, "open"))],
              [(b"a1", v(90, "t1")), (b"d1", v(110, "t1"))])
VERSIONS = {
    b"a1": ((ts(10), v(100, "open")), (ts(30), v(90, "t1"))),
    b"d1": ((ts(10), v(100, "open")), (ts(30), v(110, "t1"))),
}


def snap(at: int, a1: tuple[bytes, int] | None, d1: tuple[bytes, int] | None, *, start: int = 100,
         strong: bool = False) -> BankRead:
    rows = [(account, got[0] if got else None, ts(got[1]) if got else None) for account, got in ((b"a1", a1), (b"d1", d1))]
    return BankRead(ts(at), start, start + 5, strong, rows)


def check(transfers, reads, versions=VERSIONS) -> list[str]:
    return check_bank(transfers, reads, versions, ACCOUNTS, TOTAL)


def test_a_valid_history_passes() -> None:
    reads = [snap(5, None, None), snap(10, (v(100, "open"), 10), (v(100, "open"), 10)),
             snap(29, (v(100, "open"), 10), (v(100, "open"), 10)), snap(30, (v(90, "t1"), 30), (v(110, "t1"), 30)),
             snap(40, (v(90, "t1"), 30), (v(110, "t1"), 30), strong=True)]
    assert check([OPEN, T1], reads) == []


def test_a_wrong_total_is_caught() -> None:
    reads = [snap(30, (v(90, "t1"), 30), (v(100, "open"), 10))]
    problems = check([OPEN, T1], reads)
    assert any("summing to 190" in p for p in problems)
    assert any("partially visible" in p for p in problems)


def test_an_aborted_transfer_visible_is_caught() -> None:
    aborted = Transfer("t2", 40, 50, ABORTED, None, [], [(b"a1", v(80, "t2")), (b"d1", v(120, "t2"))])
    versions = dict(VERSIONS, a1=VERSIONS[b"a1"] + ((ts(45), v(80, "t2")),))
    problems = check([OPEN, T1, aborted], [], {b"a1": versions["a1"], b"d1": VERSIONS[b"d1"]})
    assert any("reported aborted" in p for p in problems)
    reads = [snap(50, (v(80, "t2"), 45), (v(120, "t2"), 45))]
    assert any("reported aborted" in p for p in check([OPEN, T1, aborted], reads))


def test_a_committed_transfer_visible_before_its_commit_is_caught() -> None:
    reads = [snap(29, (v(90, "t1"), 30), (v(110, "t1"), 30))]
    problems = check([OPEN, T1], reads)
    assert any("visible before its commit timestamp" in p for p in problems)


def test_a_committed_transfer_missing_after_its_commit_is_caught() -> None:
    reads = [snap(35, (v(100, "open"), 10), (v(100, "open"), 10))]
    assert any("is not visible in the snapshot at" in p for p in check([OPEN, T1], reads))
    versions = {b"a1": VERSIONS[b"a1"][:1], b"d1": VERSIONS[b"d1"]}
    assert any("is not stored" in p for p in check([OPEN, T1], [], versions))


def test_an_unknown_transfer_half_applied_is_caught() -> None:
    unknown = Transfer("t1", 20, 30, UNKNOWN, None, T1.reads, T1.writes)
    assert check([OPEN, unknown], [snap(35, (v(90, "t1"), 30), (v(110, "t1"), 30))]) == []
    assert check([OPEN, unknown], [], {b"a1": VERSIONS[b"a1"][:1], b"d1": VERSIONS[b"d1"][:1]}) == []  # never happened
    half = {b"a1": VERSIONS[b"a1"], b"d1": VERSIONS[b"d1"][:1]}
    assert any("is not stored" in p for p in check([OPEN, unknown], [], half))
    split = {b"a1": VERSIONS[b"a1"], b"d1": ((ts(10), v(100, "open")), (ts(31), v(110, "t1")))}
    assert any("several timestamps" in p for p in check([OPEN, unknown], [], split))
    reads = [snap(35, (v(90, "t1"), 30), (v(100, "open"), 10))]
    assert any("unknown-outcome transfer t1" in p and "partially visible" in p
               for p in check([OPEN, unknown], reads, half))


def test_a_lost_update_is_caught() -> None:
    # t2 read d1 before t1 wrote it, and committed after t1: t1's credit is lost.
    t2 = Transfer("t2", 20, 40, COMMITTED, ts(40), [(b"a1", v(90, "t1")), (b"d1", v(100, "open"))],
                  [(b"a1", v(80, "t2")), (b"d1", v(110, "t2"))])
    versions = {b"a1": VERSIONS[b"a1"] + ((ts(40), v(80, "t2")),), b"d1": VERSIONS[b"d1"] + ((ts(40), v(110, "t2")),)}
    problems = check([OPEN, T1, t2], [snap(45, (v(80, "t2"), 40), (v(110, "t2"), 40))], versions)
    assert any("lost update" in p for p in problems)
    assert any("summing to 190" in p for p in problems)


def test_an_invented_value_is_caught() -> None:
    versions = {b"a1": VERSIONS[b"a1"] + ((ts(50), v(5, "ghost")),), b"d1": VERSIONS[b"d1"]}
    assert any("never written" in p for p in check([OPEN, T1], [], versions))


def test_a_stale_strong_snapshot_is_caught() -> None:
    reads = [snap(25, (v(100, "open"), 10), (v(100, "open"), 10), start=40, strong=True)]
    assert any("strong snapshot" in p for p in check([OPEN, T1], reads))


def test_leftovers_after_healing_are_caught() -> None:
    assert check_quiescent([], 4.5) == []
    problems = check_quiescent([Leftover("n1#0/t2", ("t9",), ((b"d1", "t9"),))], 4.5)
    assert any("still prepared" in p for p in problems) and any("intents remain" in p for p in problems)
