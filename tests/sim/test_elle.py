"""Trusting the history checkers: each anomaly class injected and caught by name,
serial-model histories always valid, and a weakened checker shown to miss
what the real one catches."""

from __future__ import annotations

import attrs
import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from tests.sim.elle_builders import a, balances, r, transfer, txn
from txn.sim import elle_graph
from txn.sim.elle import check, check_list_append
from txn.sim.elle_bank import check_bank
from txn.sim.elle_model import FATES, TxnPlan, run_serial
from txn.sim.elle_records import RT, RW, WR, WW


def names(history: list) -> set[str]:
    verdict = check_list_append(history)
    assert verdict.valid == (not verdict.anomalies)
    return set(verdict.names())


def the(history: list, name: str):
    """The one anomaly of this class: it must be there, with an explanation."""
    found = [anomaly for anomaly in check_list_append(history).anomalies if anomaly.name == name]
    assert found, f"{name} missed; got {names(history)}"
    assert all(anomaly.explanation for anomaly in found)
    return found[0]


# --- one history per anomaly class -------------------------------------------

G0_HISTORY = [
    txn(a("x", 1), a("y", 2)),
    txn(a("x", 2), a("y", 1)),
    txn(r("x", 1, 2), r("y", 1, 2)),
]
G2_ITEM_HISTORY = [  # write skew: each read the other's key before the other appended
    txn(r("x"), a("y", 1)),
    txn(r("y"), a("x", 1)),
    txn(r("x", 1), r("y", 1)),
]


def test_g0_write_cycle() -> None:
    assert names(G0_HISTORY) == {"G0"}
    anomaly = the(G0_HISTORY, "G0")
    assert sorted(anomaly.txns) == [0, 1]
    assert {edge.kind for edge in anomaly.edges} == {WW}
    assert {edge.key for edge in anomaly.edges} == {"x", "y"}


def test_g1a_aborted_read() -> None:
    history = [txn(a("x", 1), outcome="fail"), txn(r("x", 1))]
    assert names(history) == {"G1a"}
    assert the(history, "G1a").txns == (0, 1)


def test_g1b_intermediate_read() -> None:
    history = [txn(a("x", 1), a("x", 2)), txn(r("x", 1)), txn(r("x", 1, 2))]
    # The reader also closes a cycle T0 -wr-> T1 -rw-> T0: it saw T0 half done.
    assert names(history) == {"G1b", "G-single"}
    assert the(history, "G1b").txns == (0, 1)


def test_a_transaction_reading_its_own_earlier_append_is_not_g1b() -> None:
    assert names([txn(a("x", 1), r("x", 1), a("x", 2)), txn(r("x", 1, 2))]) == set()


def test_g1c_circular_information_flow() -> None:
    history = [txn(a("x", 1), r("y", 1)), txn(a("y", 1), r("x", 1))]
    assert names(history) == {"G1c"}
    assert {edge.kind for edge in the(history, "G1c").edges} == {WR}


def test_g_single_read_skew() -> None:
    history = [txn(a("x", 1), a("y", 1)), txn(r("x"), r("y", 1)), txn(r("x", 1))]
    assert names(history) == {"G-single"}
    kinds = sorted(edge.kind for edge in the(history, "G-single").edges)
    assert kinds == [RW, WR]


def test_g2_item_write_skew() -> None:
    assert names(G2_ITEM_HISTORY) == {"G2-item"}
    assert [edge.kind for edge in the(G2_ITEM_HISTORY, "G2-item").edges] == [RW, RW]


def test_incompatible_order_names_both_reads() -> None:
    history = [txn(a("x", 1)), txn(a("x", 2)), txn(r("x", 1, 2)), txn(r("x", 2, 1))]
    assert names(history) == {"incompatible-order"}
    assert set(the(history, "incompatible-order").txns) == {2, 3}


def test_lost_append_is_flagged_only_against_a_later_read() -> None:
    lost = [txn(a("x", 1), at=(0, 10)), txn(a("x", 2), at=(0, 10)), txn(r("x", 2), at=(20, 30))]
    assert "lost-append" in names(lost)
    assert the(lost, "lost-append").txns == (0, 2)
    concurrent = [txn(a("x", 1), at=(0, 50)), txn(r("x"), at=(10, 20))]
    assert names(concurrent) == set()


def test_duplicate_element() -> None:
    assert "duplicate-element" in names([txn(a("x", 1)), txn(r("x", 1, 1))])


def test_garbage_read() -> None:
    assert names([txn(a("x", 1)), txn(r("x", 1, 7))]) == {"garbage-read"}


def test_stale_read_after_a_completed_append_is_g_single_realtime() -> None:
    stale = [txn(a("x", 1), at=(0, 10)), txn(r("x"), at=(20, 30)), txn(r("x", 1), at=(40, 50))]
    assert names(stale) == {"G-single-realtime"}
    assert {edge.kind for edge in the(stale, "G-single-realtime").edges} == {RW, RT}
    overlapping = [txn(a("x", 1), at=(0, 25)), txn(r("x"), at=(20, 30)), txn(r("x", 1), at=(40, 50))]
    assert names(overlapping) == set()


def test_g2_item_realtime_needs_the_clock() -> None:
    # T0 misses T1's append to x, T2 misses T0's append to y, and T1 ended before T2 began.
    history = [
        txn(r("x"), a("y", 1), at=(0, 100)),
        txn(a("x", 1), at=(0, 10)),
        txn(r("y"), at=(20, 30)),
        txn(r("x", 1), r("y", 1), at=(200, 210)),
    ]
    assert names(history) == {"G2-item-realtime"}
    assert sorted(edge.kind for edge in the(history, "G2-item-realtime").edges) == [RT, RW, RW]
    history[2] = txn(r("y"), at=(5, 30))  # T2 overlaps T1 now: serializable, T2 T0 T1
    assert names(history) == set()


def test_timestamp_order_against_a_ww_edge() -> None:
    history = [txn(a("x", 1), commit=20), txn(a("x", 2), commit=10), txn(r("x", 1, 2))]
    assert names(history) == {"timestamp-order"}
    anomaly = the(history, "timestamp-order")
    assert anomaly.txns == (0, 1)
    assert [edge.kind for edge in anomaly.edges] == [WW]


def test_timestamp_order_against_real_time() -> None:
    history = [txn(a("x", 1), commit=20, at=(0, 10)), txn(a("y", 1), commit=10, at=(20, 30))]
    assert names(history) == {"timestamp-order"}
    assert [edge.kind for edge in the(history, "timestamp-order").edges] == [RT]


def test_snapshot_mismatch_for_a_stale_read_only_transaction() -> None:
    history = [txn(a("x", 1), commit=10), txn(a("x", 2), commit=20), txn(r("x", 1), read_at=25)]
    assert names(history) == {"snapshot-mismatch"}
    assert the(history, "snapshot-mismatch").timestamps[0].wall == 25
    fine = [txn(a("x", 1), commit=10), txn(a("x", 2), commit=20), txn(r("x", 1), read_at=15)]
    assert names(fine) == set()


def test_a_read_at_a_past_timestamp_is_outside_real_time_order() -> None:
    """It may miss an append acknowledged before it began (that is what a past read is
    for), and it is no witness of a lost append; as a strong read it would be both."""
    def history(realtime: bool) -> list:
        return [txn(a("x", 1), at=(0, 10), commit=5), txn(r("x"), at=(20, 30), read_at=3, realtime=realtime)]
    assert names(history(False)) == set()
    assert names(history(True)) == {"lost-append", "timestamp-order"}
    # It is still held to its timestamp: at 7 it must see the append committed at 5.
    late = [txn(a("x", 1), at=(0, 10), commit=5), txn(r("x"), at=(20, 30), read_at=7, realtime=False)]
    assert names(late) == {"snapshot-mismatch"}


def test_real_time_after_a_read_only_transaction_promises_no_timestamp_order() -> None:
    """A strong snapshot reads at now + max_offset: a later commit on a key it did not
    read may sit below it; the transactions before the snapshot are still ordered."""
    history = [txn(r("x"), at=(0, 10), read_at=50), txn(a("y", 1), at=(20, 30), commit=40), txn(r("y", 1), at=(60, 70))]
    assert names(history) == set()
    through = [txn(a("x", 1), at=(0, 10), commit=50), txn(r("y"), at=(20, 30), read_at=60),
               txn(a("z", 1), at=(40, 45), commit=40)]
    anomaly = the(through, "timestamp-order")
    assert anomaly.txns == (0, 2) and [edge.kind for edge in anomaly.edges] == [RT]


def test_real_time_after_a_transaction_that_wrote_nothing_promises_no_timestamp_order() -> None:
    """It commits as a read at its leader's now, with no commit-wait: a later commit on a tablet it
    did not touch may sit below it (`chronodb verify`, a leader's clock 5 ms ahead, within
    max_offset). What came before it is still ordered, against it and past it."""
    assert names([txn(r("x"), at=(0, 10), commit=50), txn(a("y", 1), at=(20, 30), commit=40)]) == set()
    wrote = [txn(r("x"), a("w", 1), at=(0, 10), commit=50), txn(a("y", 1), at=(20, 30), commit=40)]
    assert names(wrote) == {"timestamp-order"}
    into = [txn(a("y", 1), at=(0, 10), commit=60), txn(r("x"), at=(20, 30), commit=50)]
    assert names(into) == {"timestamp-order"}
    through = [txn(a("x", 1), at=(0, 10), commit=50), txn(r("y"), at=(20, 30), commit=60),
               txn(a("z", 1), at=(40, 45), commit=40)]
    anomaly = the(through, "timestamp-order")
    assert anomaly.txns == (0, 2) and [edge.kind for edge in anomaly.edges] == [RT]


def test_info_append_counts_iff_observed() -> None:
    observed = [txn(a("x", 1), outcome="info"), txn(r("x", 1), at=(2_000, 2_010))]
    assert names(observed) == set()
    unobserved = [txn(a("x", 1), outcome="info", at=(0, 10)), txn(r("x"), at=(20, 30))]
    assert names(unobserved) == set()


def test_an_operation_cannot_complete_before_it_is_invoked() -> None:
    with pytest.raises(ValueError, match="completed before it was invoked"):
        txn(a("x", 1), at=(10, 5))


def test_a_failed_transactions_reads_are_not_evidence() -> None:
    assert names([txn(a("x", 1)), txn(r("x", 9), outcome="fail")]) == set()


# --- bank --------------------------------------------------------------------


def test_bank_total_mismatch() -> None:
    history = [transfer("a", "b", 5, commit=10), balances(15, a=5, b=10)]
    verdict = check_bank(history, total=20, accounts=("a", "b"))
    assert verdict.names() == ("bank-total-mismatch",)


def test_bank_negative_balance_unless_allowed() -> None:
    history = [balances(15, a=-5, b=25)]
    assert check_bank(history, total=20).names() == ("negative-balance",)
    assert check_bank(history, total=20, allow_negative=True).valid


def test_bank_reads_at_one_timestamp_agree() -> None:
    history = [balances(15, a=5, b=15), balances(15, a=10, b=10)]
    assert check(history, "bank", total=20).names() == ("bank-snapshot-disagreement",)


def test_bank_incomplete_read() -> None:
    assert check_bank([balances(15, a=20)], total=20, accounts=("a", "b")).names() == ("incomplete-read",)


# --- clean histories from a serial model ---------------------------------------

KEYS = ("x", "y", "z")
SPACING_NS = 100


@st.composite
def plans(draw: st.DrawFn) -> TxnPlan:
    read_only = draw(st.booleans())
    kinds = st.just("r") if read_only else st.sampled_from(("append", "r"))
    mops = draw(st.lists(st.tuples(kinds, st.sampled_from(KEYS)), min_size=1, max_size=4))
    fate = draw(st.sampled_from(FATES))
    lead, lag = draw(st.integers(0, 4 * SPACING_NS)), draw(st.integers(0, 4 * SPACING_NS))
    return TxnPlan(mops, fate, read_only, lead, lag, draw(st.integers(0, 5)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(plans(), max_size=40))
def test_serial_histories_are_valid(drawn: list[TxnPlan]) -> None:
    history = run_serial(drawn, spacing_ns=SPACING_NS)
    verdict = check_list_append(history)
    assert verdict.valid, "\n".join(str(anomaly) for anomaly in verdict.anomalies)
    assert verdict == check_list_append(history)  # deterministic


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(plans(), min_size=1, max_size=30), st.data())
def test_a_stale_snapshot_read_is_always_caught(drawn: list[TxnPlan], data: st.DataObject) -> None:
    tail = [TxnPlan([("append", "x")]), TxnPlan([("r", "x")], read_only=True)]  # one candidate at least
    history = run_serial(drawn + tail, spacing_ns=SPACING_NS)
    writer = {(mop[1], mop[2]): op for op in history for mop in op.mops if mop[0] == "append"}
    candidates = [
        (index, position)
        for index, op in enumerate(history)
        if op.read_only and op.outcome == "ok"
        for position, mop in enumerate(op.mops)
        if mop[2] and writer[(mop[1], mop[2][-1])].outcome == "ok"
    ]
    index, position = data.draw(st.sampled_from(candidates))
    mops = list(history[index].mops)
    kind, key, seen = mops[position]
    mops[position] = (kind, key, seen[:-1])  # forget the newest element
    history[index] = attrs.evolve(history[index], mops=mops)
    assert "snapshot-mismatch" in check_list_append(history).names()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.sampled_from("abc"), st.integers(1, 15)), max_size=30))
def test_serial_bank_histories_are_valid(transfers: list[tuple[str, str, int]]) -> None:
    money = {"a": 10, "b": 10, "c": 10}
    history = []
    for step, (src, dst, amount) in enumerate(transfers):
        if src != dst and money[src] >= amount:
            money[src] -= amount
            money[dst] += amount
            history.append(transfer(src, dst, amount, commit=10 * step))
        history.append(balances(10 * step + 5, **money))
        history.append(balances(10 * step + 5, **money))
    assert check_bank(history, total=30, accounts=("a", "b", "c")).valid


# --- the checker against a weakened one --------------------------------------


def test_a_checker_blind_to_rw_edges_misses_g2_item(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "G2-item" in names(G2_ITEM_HISTORY)
    real_build = elle_graph.build_graph

    def build_without_rw(*args: object):
        graph = real_build(*args)
        for src, dst, why in list(graph.edges(data="why")):
            why.pop(RW, None)
            if not why:
                graph.remove_edge(src, dst)
        return graph

    monkeypatch.setattr(elle_graph, "build_graph", build_without_rw)
    assert check_list_append(G2_ITEM_HISTORY).valid
    assert names(G0_HISTORY) == {"G0"}  # the mutant still sees what needs no rw edge
