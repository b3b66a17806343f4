"""Forgetting commit decisions: the leader's bookkeeping (txn/tablet/forgetting.py), the `Forget`
command (txn/tablet/commands.py), its apply (txn/tablet/txn_records.py) and the cluster's
`decision_retention` (txn/api/cluster.py)."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given, strategies as st

from hlc import Timestamp
from mvcc.engine import DictEngine
from paxos.messages import Ballot
from txn.api.cluster import DEFAULT_DECISION_RETENTION_NS, ClusterConfig, ConfigError, from_toml, to_toml, validate
from txn.node.config import generate
from txn.tablet.commands import KIND_FORGET, CommandError, Decide, Forget, decode_command, describe_command, encode_command
from txn.tablet.forgetting import ForgetQueue
from txn.tablet.state import TabletState
from txn.tablet import txn_records
from txn.tablet.txn_records import DECISION_PREFIX

EPOCH = Ballot(1, "n1")


# ---- ForgetQueue -------------------------------------------------------------------

def test_a_commit_is_due_a_retention_after_its_last_participant_acknowledged() -> None:
    queue = ForgetQueue(10.0)
    queue.decided("x1", ("t2", "t3"), now_s=0.0)
    queue.acknowledged("x1", "t2", now_s=1.0)
    queue.acknowledged("x1", "t9", now_s=2.0)  # not a participant of x1: changes nothing
    assert queue.take_due(100.0, 10) == [] and queue.waiting == {"x1": {"t3"}}
    queue.acknowledged("x1", "t3", now_s=5.0)
    assert queue.take_due(14.9, 10) == []
    assert queue.take_due(15.0, 10) == ["x1"]
    assert queue.take_due(100.0, 10) == [], "handed out once"


def test_a_commit_without_other_participants_is_due_a_retention_after_its_decision() -> None:
    queue = ForgetQueue(2.0)
    queue.decided("x1", (), now_s=3.0)
    assert queue.take_due(4.9, 10) == [] and queue.take_due(5.0, 10) == ["x1"]


def test_a_decision_given_up_at_a_participant_is_never_due() -> None:
    queue = ForgetQueue(0.0)
    queue.decided("x1", ("t2", "t3"), now_s=0.0)
    queue.acknowledged("x1", "t2", now_s=0.0)
    queue.given_up("x1")
    queue.acknowledged("x1", "t3", now_s=0.0)  # too late: it was dropped
    assert queue.take_due(1e9, 10) == [] and not queue.waiting


def test_due_decisions_come_oldest_first_within_the_limit_and_come_back_when_put_back() -> None:
    queue = ForgetQueue(1.0)
    for number in range(5):
        queue.decided(f"x{number}", (), now_s=float(number))
    assert queue.take_due(3.0, 10) == ["x0", "x1", "x2"]
    queue.put_back(["x1", "x2"], now_s=3.0)
    assert queue.take_due(3.0, 1) == ["x1"]
    assert queue.take_due(10.0, 10) == ["x2", "x3", "x4"]


def test_what_finds_no_room_is_not_tracked_but_counted() -> None:
    queue = ForgetQueue(0.0, max_waiting=1, max_due=1)
    queue.decided("x1", ("t2",), now_s=0.0)
    queue.decided("x2", ("t2",), now_s=0.0)  # no room to wait
    queue.decided("x3", (), now_s=0.0)
    queue.decided("x4", (), now_s=0.0)  # no room to be due
    assert queue.untracked == 2 and set(queue.waiting) == {"x1"}
    assert queue.take_due(0.0, 10) == ["x3"]


def test_a_negative_retention_is_refused() -> None:
    with pytest.raises(ValueError):
        ForgetQueue(-1.0)


# ---- the Forget command --------------------------------------------------------------------

@given(st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=20))
def test_forget_round_trip(txn_ids: list[str]) -> None:
    command = Forget(Timestamp(7, 1), EPOCH, txn_ids)
    assert decode_command(encode_command(command)) == command
    assert describe_command(encode_command(command)).startswith("Forget ")


@pytest.mark.parametrize("body", [[], "x1", [1], [b"x1"], None])
def test_a_malformed_forget_is_refused(body: object) -> None:
    data = cbor2.dumps([KIND_FORGET, Timestamp(5, 0).to_bytes(), [], 1, "n1", body], canonical=True)
    with pytest.raises(CommandError):
        decode_command(data)


# ---- applying it -----------------------------------------------------------------------------

def decided_state() -> tuple[DictEngine, TabletState]:
    engine = DictEngine()
    state = TabletState(engine)
    state.apply_entries([
        (1, encode_command(Decide(Timestamp(10, 0), EPOCH, "c1", True, ["t2"], [(b"a", b"1")]))),
        (2, encode_command(Decide(Timestamp(11, 0), EPOCH, "a1", False, []))),
        (3, encode_command(Decide(Timestamp(12, 0), EPOCH, "c2", True, ["t2"], [(b"b", b"2")]))),
    ])
    return engine, state


def test_a_forget_deletes_commit_records_only_and_keeps_the_data() -> None:
    engine, state = decided_state()
    state.apply(4, encode_command(Forget(Timestamp(13, 0), EPOCH, ["c1", "a1", "unknown"])))
    assert engine.get(DECISION_PREFIX + b"c1") is None and state.txns.decisions.get("c1") is None
    assert state.txns.decisions.get("a1") is not None, "an abort record stays"
    assert state.txns.decisions.get("c2") is not None, "a commit not named stays"
    assert state.decisions_forgotten == 1
    assert state.store.read(b"a", Timestamp(20, 0)).value == b"1", "the transaction's writes stay"
    reopened = TabletState(engine)
    assert reopened.txns.decisions.get("c1") is None and reopened.txns.decisions.get("c2") is not None


def test_a_forget_sees_a_decision_staged_earlier_in_the_same_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Applied together (one engine write per turn), a Forget after a Decide finds the decision
    through the batch's overlay, with no cache to help (here: none at all); and a Decide of that
    id after the Forget is recorded anew."""
    monkeypatch.setattr(txn_records, "DECISION_CACHE_MAX", 0)
    engine = DictEngine()
    state = TabletState(engine)
    state.apply_entries([
        (1, encode_command(Decide(Timestamp(10, 0), EPOCH, "c1", True, ["t2"]))),
        (2, encode_command(Forget(Timestamp(11, 0), EPOCH, ["c1"]))),
        (3, encode_command(Decide(Timestamp(12, 0), EPOCH, "c1", False, []))),
    ])
    assert state.decisions_forgotten == 1
    record = state.txns.decisions.get("c1")
    assert record is not None and not record.committed, "the Decide after the Forget was first again"


# ---- the cluster's decision_retention ---------------------------------------------------------

def test_decision_retention_round_trips_defaults_and_must_be_positive() -> None:
    config = generate(nodes=3, tablets=2)
    assert config.decision_retention_ns == DEFAULT_DECISION_RETENTION_NS
    text = to_toml(config)
    assert 'decision_retention = "30s"' in text
    assert from_toml(text.replace('decision_retention = "30s"', 'decision_retention = "2m"')).decision_retention_ns == 120 * 10**9
    without = "\n".join(line for line in text.splitlines() if not line.startswith("decision_retention"))
    assert from_toml(without).decision_retention_ns == DEFAULT_DECISION_RETENTION_NS
    with pytest.raises(ConfigError, match="decision_retention"):
        validate(ClusterConfig(config.cluster_id, config.max_offset_ns, config.nodes, config.tablets,
                               decision_retention_ns=0))
