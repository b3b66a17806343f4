"""Pre-vote: a partitioned replica that keeps timing out cannot depose a healthy leader.

Script: 3 replicas, n1 leads with a lease; n3 is cut off for several election
timeouts (it keeps trying to campaign), then healed. With pre-vote, n1 stays
leader at the same ballot and n3 never raised a promise. The same script on
a core without pre-vote (the mutant below) must fail, so the test can fail.
"""

from __future__ import annotations

import random

import pytest

from paxos.messages import ZERO_BALLOT, Ballot
from paxos.replica import Replica
from paxos.types import PersistedState
from tests.paxos.script import ScriptCluster


class NoPreVoteReplica(Replica):
    """The core before pre-vote: an election timeout goes straight to phase 1."""

    def pre_vote(self, now: int) -> None:
        self.start_phase_1(now)


class ClusterOf(ScriptCluster):
    def __init__(self, replica_class: type[Replica]) -> None:
        self.replica_class = replica_class
        super().__init__()

    def _boot(self, node: str) -> Replica:
        return self.replica_class(node_id=node, peers=self.ids, config=self.config, rng=random.Random(node),
                                  persisted=PersistedState(ZERO_BALLOT, 0, ()), applied_index=0, now_ns=self.now)


def cut_off(node: str):  # noqa: ANN201
    return lambda src, dst, msg: node in (src, dst)


def partition_and_heal(replica_class: type[Replica]) -> ClusterOf:
    c = ClusterOf(replica_class)
    c.at(0)
    c.campaign("n1")
    c.deliver(rounds=6)
    n1, n3 = c.cores["n1"], c.cores["n3"]
    assert n1.role.value == "leader" and n1.has_lease(c.now)
    ballot = n1.ballot
    c.note("n3 is partitioned away for 3s (ten election timeouts); n1 and n2 carry on")
    for ms in range(50, 3050, 50):
        c.at(ms)
        for node in ("n1", "n2", "n3"):
            c.tick(node)
        c.drop(cut_off("n3"))
        c.deliver(rounds=2)
        assert n1.role.value == "leader" and n1.ballot == ballot and n1.has_lease(c.now), f"n1 lost its lease at {ms}ms"
    assert n3.counters.get("paxos.prevotes", 0) + n3.counters.get("paxos.campaigns", 0) >= 5, "n3 kept trying"
    c.at(3050).note("healed just as n3's election timer fires again: its attempt and n1's heartbeats cross")
    c.campaign("n3")
    for ms in range(3050, 3550, 50):
        c.at(ms)
        for node in ("n3", "n1", "n2"):
            c.tick(node)
        c.deliver(rounds=4)
        assert n1.role.value == "leader" and n1.ballot == ballot, f"n1 stepped down at {ms}ms"
    return c


def test_healed_replica_does_not_depose_the_leader() -> None:
    c = partition_and_heal(Replica)
    n1, n2, n3 = (c.cores[node] for node in ("n1", "n2", "n3"))
    assert n1.ballot == Ballot(1, "n1") and n1.has_lease(c.now)
    assert "paxos.stepped_down" not in n1.counters
    assert n1.counters.get("paxos.became_leader") == 1, "one election only"
    assert n3.promised == n2.promised == Ballot(1, "n1"), "n3's attempts raised no promise anywhere"
    assert "paxos.campaigns" not in n3.counters, "n3 never reached phase 1"
    assert n3.leader_hint == "n1" and n3.chosen_index == n1.chosen_index
    assert n3.counters.get("paxos.prevotes", 0) >= 5
    refused = n1.counters.get("paxos.prevote_refused", 0) + n2.counters.get("paxos.prevote_refused", 0)
    assert refused >= 1, "after healing, n3's pre-vote was refused by lease holders"


def test_the_script_catches_a_core_without_pre_vote() -> None:
    with pytest.raises(AssertionError, match="n1 stepped down|n1 lost its lease"):
        partition_and_heal(NoPreVoteReplica)
