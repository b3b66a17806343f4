"""Unit tests of the pure pieces: quorum arithmetic, message lines, config checks, restart rules."""

from __future__ import annotations

import random

import pytest

from paxos.messages import ZERO_BALLOT, Accept, Ballot, Entry, Prepare, Reject, describe
from paxos.quorum import majority, quorum_floor
from paxos.replica import Replica
from paxos.types import PaxosConfig, PersistedState

MS = 1_000_000


def test_majority_and_quorum_floor() -> None:
    assert [majority(n) for n in (1, 2, 3, 4, 5)] == [1, 2, 2, 3, 3]
    assert quorum_floor([7, 3, 5], 3, 0) == 5
    assert quorum_floor([7, 3, 5, 1, 9], 5, 0) == 5
    assert quorum_floor([7], 3, -1) == -1, "one report of three is no majority"


def test_ballots_order_by_round_then_node() -> None:
    assert ZERO_BALLOT < Ballot(1, "n1") < Ballot(1, "n2") < Ballot(2, "n1")


def test_message_lines() -> None:
    entry = Entry(7, Ballot(3, "n1"), b"put k v")
    assert describe("n1", "n2", Accept(Ballot(3, "n1"), (entry,), 6, 0)) == "n1->n2 Accept b=3.n1 slot=7 commit=6"
    assert str(Accept(Ballot(3, "n1"), (), 6, 0)) == "Heartbeat b=3.n1 commit=6"
    assert str(Reject(Ballot(2, "n3"), Ballot(3, "n1"), "lease")) == "Reject b=2.n3 promised=3.n1 lease"


def test_config_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        PaxosConfig(heartbeat_ns=400 * MS)
    with pytest.raises(ValueError):
        PaxosConfig(max_batch_entries=0)


def make(persisted: PersistedState, applied: int = 0, now: int = 0) -> Replica:
    return Replica(node_id="n2", peers=("n1", "n2", "n3"), config=PaxosConfig(), rng=random.Random(1),
                   persisted=persisted, applied_index=applied, now_ns=now)


def test_a_follower_does_not_take_proposals() -> None:
    replica = make(PersistedState(ZERO_BALLOT, 0, ()))
    assert replica.propose(b"x", 0) is None


def test_a_restarted_replica_refuses_phase_1_for_one_lease() -> None:
    replica = make(PersistedState(Ballot(4, "n1"), 0, (Entry(1, Ballot(4, "n1"), b"a"),)), now=10 * MS)
    replica.step("n3", Prepare(Ballot(5, "n3"), 1), 20 * MS)
    assert [str(out.message) for out in replica.ready(20 * MS).messages] == ["Reject b=5.n3 promised=4.n1 lease"]
    later = 10 * MS + PaxosConfig().lease_ns + PaxosConfig().drift_allowance_ns
    replica.step("n3", Prepare(Ballot(5, "n3"), 1), later)
    ready = replica.ready(later)
    assert ready.persist.promised == Ballot(5, "n3"), "the promise is persisted before the reply goes out"
    assert [str(out.message) for out in ready.messages] == ["Promise b=5.n3 chosen=0 accepted=[1@4.n1:a]"]


def test_a_fresh_replica_has_promised_nothing_and_waits_for_no_lease() -> None:
    replica = make(PersistedState(ZERO_BALLOT, 0, ()))
    replica.step("n3", Prepare(Ballot(1, "n3"), 1), 0)
    assert [type(out.message).__name__ for out in replica.ready(0).messages] == ["Promise"]


def test_a_replica_whose_state_machine_lost_truncated_slots_needs_a_snapshot() -> None:
    replica = make(PersistedState(Ballot(1, "n1"), 10, ()), applied=4)
    assert replica.need_snapshot and replica.chosen_index == 10
    replica.campaign(10 * 1_000 * MS)
    assert replica.role.value == "follower", "it cannot lead without the slots it lost"


def test_a_state_machine_beyond_its_log_finishes_the_truncation() -> None:
    """An install synced before its log truncation (the old driver order): slots 6..20 are in the
    state machine but not the log; the core truncates through 20 rather than keep a hole."""
    ballot = Ballot(1, "n1")
    entries = tuple(Entry(i, ballot, b"c%d" % i) for i in (1, 2, 3, 4, 5, 22))
    replica = make(PersistedState(ballot, 0, entries), applied=20)
    assert (replica.first_index, replica.last_index, replica.chosen_index, replica.need_snapshot) == (21, 22, 20, False)
    assert [e.index for e in replica.entries(1, 22)] == [22]
    assert replica.ready(0).persist.truncate_through == 20
    # An ordinary log (every slot above the snapshot index present) is left alone.
    normal = make(PersistedState(ballot, 0, entries[:5]), applied=3)
    assert (normal.first_index, normal.ready(0).persist.truncate_through) == (1, None)


def test_a_half_installed_state_machine_needs_a_snapshot_even_with_a_whole_log() -> None:
    ballot = Ballot(1, "n1")
    entries = tuple(Entry(i, ballot, b"c%d" % i) for i in (1, 2, 3))
    replica = make(PersistedState(ballot, 0, entries), applied=0)
    assert not replica.need_snapshot
    pending = Replica(node_id="n2", peers=("n1", "n2", "n3"), config=PaxosConfig(), rng=random.Random(1),
                      persisted=PersistedState(ballot, 0, entries), applied_index=7, now_ns=0, install_pending=True)
    assert pending.need_snapshot and pending.applied_index == 0
    pending.step("n1", Accept(ballot, (), 3, 0), 0)
    assert pending.chosen_index == 3 and not pending.ready(0).apply, "nothing is applied onto a half-installed store"
