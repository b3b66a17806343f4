"""The lock table and wound-wait, pure (txn/tablet/locks.py)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hlc import Timestamp
from txn.api.errors import AbortReason
from txn.tablet.locks import LockMode, LockTable, Outcome

OLD, MID, YOUNG = Timestamp(1, 0), Timestamp(2, 0), Timestamp(3, 0)
S, X, B = LockMode.SHARED, LockMode.EXCLUSIVE, LockMode.BLIND


def test_shared_locks_share_and_exclusive_excludes() -> None:
    table = LockTable()
    assert table.lock_key("a", OLD, b"k", S, 0).outcome is Outcome.GRANTED
    assert table.lock_key("b", YOUNG, b"k", S, 0).outcome is Outcome.GRANTED
    decision = table.lock_key("c", YOUNG, b"k", X, 0)
    assert decision.outcome is Outcome.WAIT and set(decision.blockers) == {"a", "b"}


def test_single_writes_share_a_key_and_exclude_every_transaction_lock() -> None:
    table = LockTable()
    assert table.lock_key("w1", MID, b"k", B, 0).outcome is Outcome.GRANTED
    assert table.lock_key("w2", MID, b"k", B, 0).outcome is Outcome.GRANTED
    for mode in (S, X):
        decision = table.lock_key("txn", YOUNG, b"k", mode, 0)
        assert decision.outcome is Outcome.WAIT and set(decision.blockers) == {"w1", "w2"}, mode
    decision = table.lock_range("scan", YOUNG, b"a", b"z", 0)
    assert decision.outcome is Outcome.WAIT and set(decision.blockers) == {"w1", "w2"}
    # And the other way round: a single write waits for an older transaction's read, write or scan.
    table = LockTable()
    table.lock_key("reader", OLD, b"r", S, 0)
    table.lock_key("writer", OLD, b"x", X, 0)
    table.lock_range("scan", OLD, b"m", b"n", 0)
    for key, holder in ((b"r", "reader"), (b"x", "writer"), (b"m1", "scan")):
        decision = table.lock_key("w", YOUNG, key, B, 0)
        assert decision.outcome is Outcome.WAIT and decision.blockers == (holder,), key


def test_an_older_writer_wounds_a_younger_reader_and_the_victim_learns_it() -> None:
    table = LockTable()
    table.lock_key("young", YOUNG, b"k", S, 0)
    decision = table.lock_key("old", OLD, b"k", X, 0)
    assert decision.outcome is Outcome.GRANTED and decision.wounded == ("young",)
    later = table.lock_key("young", YOUNG, b"other", S, 1)
    assert later.outcome is Outcome.ABORTED and later.reason is AbortReason.WOUNDED


def test_a_younger_writer_waits_for_an_older_reader() -> None:
    table = LockTable()
    table.lock_key("old", OLD, b"k", S, 0)
    decision = table.lock_key("young", YOUNG, b"k", X, 0)
    assert decision.outcome is Outcome.WAIT and decision.blockers == ("old",) and not decision.wounded
    table.release("old")
    assert table.lock_key("young", YOUNG, b"k", X, 1).outcome is Outcome.GRANTED


def test_nobody_wounds_a_prepared_transaction() -> None:
    table = LockTable()
    table.lock_key("young", YOUNG, b"k", X, 0)
    table.mark_prepared("young")
    decision = table.lock_key("old", OLD, b"k", S, 0)
    assert decision.outcome is Outcome.WAIT and not decision.wounded


def test_range_locks_conflict_with_writes_inside_them_only() -> None:
    table = LockTable()
    assert table.lock_range("scan", OLD, b"b", b"d", 0).outcome is Outcome.GRANTED
    assert table.lock_key("w1", YOUNG, b"c", X, 0).outcome is Outcome.WAIT  # a phantom would appear in the scan
    assert table.lock_key("w2", YOUNG, b"d", X, 0).outcome is Outcome.GRANTED  # end is exclusive
    assert table.lock_key("w3", YOUNG, b"a", X, 0).outcome is Outcome.GRANTED
    assert table.lock_range("scan2", MID, b"a", None, 0).outcome is Outcome.GRANTED and \
        set(table.aborted) == {"w2", "w3"}  # the older scan wounded the younger writers in its range


def test_a_released_or_aborted_range_lock_blocks_nothing_and_a_new_leader_keeps_prepared_ranges() -> None:
    table = LockTable()
    assert table.lock_range("scan", OLD, b"b", b"d", 0).outcome is Outcome.GRANTED
    table.release("scan")
    assert table.lock_key("w1", YOUNG, b"c", X, 0).outcome is Outcome.GRANTED
    assert table.lock_range("scan2", YOUNG, b"x", None, 0).outcome is Outcome.GRANTED
    assert table.lock_key("w2", OLD, b"y", X, 0).outcome is Outcome.GRANTED  # wounded scan2: its range is gone
    assert table.is_aborted("scan2") and table.lock_key("w3", MID, b"z", X, 0).outcome is Outcome.GRANTED
    table.rebuild([("p", OLD, [], [], [(b"m", b"n")])], 0)
    assert table.lock_key("w4", YOUNG, b"m", X, 0).outcome is Outcome.WAIT  # a prepared scan's range survives
    table.clear()
    assert table.lock_key("w5", YOUNG, b"m", X, 0).outcome is Outcome.GRANTED


def test_holds_checks_the_read_locks_a_prepare_relies_on() -> None:
    table = LockTable()
    table.lock_key("t", OLD, b"k", S, 0)
    table.lock_range("t", OLD, b"a", b"c", 0)
    assert table.holds("t", [b"k"], [(b"a", b"c")])
    assert not table.holds("t", [b"k", b"z"], [])
    fresh = LockTable()  # a new leader: the locks are gone
    assert not fresh.holds("t", [b"k"], [])
    assert fresh.holds("t", [], [])  # nothing read here: nothing to lose


def test_a_new_leader_rebuilds_prepared_locks_only() -> None:
    table = LockTable()
    table.rebuild([("p", OLD, [b"w"], (b"r",), ((b"x", b"y"),))], now_ns=0)
    assert table.txns["p"].prepared
    assert table.lock_key("other", Timestamp(0, 0), b"w", S, 0).outcome is Outcome.WAIT  # older, but p is prepared
    assert table.lock_key("other", Timestamp(0, 0), b"r", S, 0).outcome is Outcome.GRANTED
    assert table.lock_key("other", Timestamp(0, 0), b"x1", X, 0).outcome is Outcome.WAIT


def test_idle_unprepared_holders_expire() -> None:
    table = LockTable()
    table.lock_key("idle", OLD, b"k", X, 0)
    table.lock_key("prepared", OLD, b"p", X, 0)
    table.mark_prepared("prepared")
    assert table.expire(now_ns=11, idle_ns=10) == ["idle"]
    assert table.is_aborted("idle") is AbortReason.TIMED_OUT and "prepared" in table.txns


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.sampled_from([b"a", b"b", b"c"]), st.sampled_from([S, X, B])),
                max_size=40))
def test_wound_wait_never_lets_a_transaction_wait_for_a_younger_unprepared_one(requests) -> None:
    """No deadlock: every wait edge points from younger to older (or to a prepared holder)."""
    table = LockTable()
    for txn, key, mode in requests:
        name = f"t{txn}"
        decision = table.lock_key(name, Timestamp(txn, 0), key, mode, 0)
        for blocker in decision.blockers:
            holder = table.txns[blocker]
            assert holder.prepared or (holder.priority, blocker) < (Timestamp(txn, 0), name)
        for victim in decision.wounded:
            assert victim not in table.txns and table.is_aborted(victim) is AbortReason.WOUNDED
        # Exclusive locks exclude every other holder on a key.
        for held_key, holders in table.by_key.items():
            if any(mode is X for mode in holders.values()):
                assert len(holders) == 1, (held_key, holders)
            # A single write's lock is shared with single writes only.
            if any(mode is B for mode in holders.values()):
                assert all(mode is B for mode in holders.values()), (held_key, holders)
