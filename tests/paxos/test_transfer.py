"""Leadership transfer: the leader hands over to the preferred leader without two lease holders.

Scripts on the pure cores (tests/paxos/script.py): n1 leads, n2 is the
preferred leader. Once n2 has kept up for `transfer_after_ns`, n1 drains,
gives up its lease, and sends TimeoutNow; the acceptors move their lease
promise to n2, which wins at once (no wait for the lease to run out). At no
instant do two replicas hold the lease; a third replica is still refused; a
stale TimeoutNow or a TimeoutNow from a non-grantee changes nothing.
"""

from __future__ import annotations

import random

from paxos.messages import ZERO_BALLOT, Ballot, TimeoutNow
from paxos.replica import Replica, Role
from paxos.types import PaxosConfig, PersistedState
from tests.paxos.script import MS, ScriptCluster, kind

CONFIG = PaxosConfig(election_timeout_min_ns=300 * MS, election_timeout_max_ns=300 * MS, transfer_after_ns=200 * MS)


class PreferredCluster(ScriptCluster):
    def __init__(self, preferred: str | None = "n2") -> None:
        self.preferred = preferred
        super().__init__(config=CONFIG)

    def _boot(self, node: str) -> Replica:
        return Replica(node_id=node, peers=self.ids, config=self.config, rng=random.Random(node),
                       persisted=PersistedState(ZERO_BALLOT, 0, ()), applied_index=0, now_ns=self.now,
                       preferred_leader=self.preferred)

    def holders(self) -> list[str]:
        return [node for node, core in self.cores.items() if core.has_lease(self.now)]

    def run(self, until_ms: int, step_ms: int = 10) -> None:
        """Tick everyone and deliver everything, checking the lease holders at every step."""
        while self.now < until_ms * MS:
            self.now += step_ms * MS
            for node in self.ids:
                self.tick(node)
            self.deliver(rounds=4)
            assert len(self.holders()) <= 1, (self.now, self.holders())


def elect_n1(cluster: PreferredCluster) -> None:
    cluster.campaign("n1")
    cluster.deliver(rounds=6)
    assert cluster.cores["n1"].role is Role.LEADER and cluster.holders() == ["n1"]


def test_the_leader_hands_over_to_the_caught_up_preferred_leader() -> None:
    cluster = PreferredCluster()
    elect_n1(cluster)
    cluster.propose("n1", b"a")
    cluster.run(150)
    assert cluster.cores["n1"].role is Role.LEADER, "not caught up for transfer_after_ns yet"
    cluster.run(600)
    n1, n2 = cluster.cores["n1"], cluster.cores["n2"]
    assert n2.role is Role.LEADER and n2.has_lease(cluster.now) and n1.role is Role.FOLLOWER
    assert n1.counters["paxos.transfer_handed_over"] == 1 and n2.counters["paxos.leadership_transferred"] == 1
    assert n1.leader_hint == "n2"
    # n2 holds it: it never transfers away from itself, and b"a" survived.
    assert cluster.propose("n2", b"b") is not None
    cluster.run(1500)
    assert n2.role is Role.LEADER and cluster.chosen("n3")[-1:] == [b"b"] and b"a" in cluster.chosen("n2")


def test_no_preferred_leader_no_transfer() -> None:
    cluster = PreferredCluster(preferred=None)
    elect_n1(cluster)
    cluster.run(1500)
    assert cluster.cores["n1"].role is Role.LEADER and "paxos.transfer_started" not in cluster.cores["n1"].counters


def test_proposals_wait_while_draining_and_a_lagging_target_is_abandoned() -> None:
    cluster = PreferredCluster()
    elect_n1(cluster)
    n1 = cluster.cores["n1"]
    assert n1.transfer_leadership("n2", cluster.now) is True or n1.role is Role.FOLLOWER
    cluster.pending.clear()  # the TimeoutNow (if drained at once) is lost: nothing is sent to n2
    # Either it handed over at once (drained) or it is draining; in both cases no new proposals.
    assert n1.propose(b"x", cluster.now) is None
    cluster2 = PreferredCluster(preferred=None)
    elect_n1(cluster2)
    m1 = cluster2.cores["n1"]
    cluster2.propose("n1", b"y")
    cluster2.drop(lambda src, dst, msg: dst == "n2" or src == "n2")  # n2 never sees slot 2
    assert m1.transfer_leadership("n2", cluster2.now)
    for _ in range(40):  # 400 ms, n2 cut off: never drained
        cluster2.now += 10 * MS
        cluster2.tick("n1")
        cluster2.drop(lambda src, dst, msg: dst == "n2" or src == "n2")
        cluster2.deliver(rounds=3)
    assert m1.role is Role.LEADER and m1.transfer_target is None and m1.counters["paxos.transfer_abandoned"] == 1
    assert cluster2.propose("n1", b"z") is not None, "after abandoning, it leads on"


def test_timeout_now_only_moves_the_promise_made_to_its_sender() -> None:
    cluster = PreferredCluster(preferred=None)
    elect_n1(cluster)
    n3 = cluster.cores["n3"]
    ballot = cluster.cores["n1"].ballot
    # From a replica n3 never promised its lease to: ignored (also a forged one: n2 cannot send n1's ballot).
    n3.step("n2", TimeoutNow(Ballot(ballot.round, "n2"), "n2"), cluster.now)
    assert n3.lease_grantee == "n1" and n3.counters["paxos.timeout_now_ignored"] == 1
    n3.step("n2", TimeoutNow(ballot, "n2"), cluster.now)
    assert n3.lease_grantee == "n1" and n3.counters["paxos.hostile.impersonation"] == 1
    # A stale one (an older ballot) is ignored too.
    n3.step("n1", TimeoutNow(Ballot(ballot.round - 1, "n1"), "n2"), cluster.now)
    assert n3.lease_grantee == "n1"
    # The real one moves it; a third replica is still refused until the original grant runs out.
    n3.step("n1", TimeoutNow(ballot, "n2"), cluster.now)
    assert n3.lease_grantee == "n2"
    cluster.flush("n3")


def test_the_old_leader_gives_up_its_lease_before_anyone_is_let_through() -> None:
    cluster = PreferredCluster()
    elect_n1(cluster)
    cluster.run(400)  # caught up long enough: n1 hands over in some tick
    n1 = cluster.cores["n1"]
    timeout_nows = [item for item in cluster.trace if "TimeoutNow" in item]
    assert timeout_nows and n1.role is Role.FOLLOWER and not n1.has_lease(cluster.now)
    # n3 (not the target) cannot campaign while the grant it moved to n2 runs.
    n3 = cluster.cores["n3"]
    n3.campaign(cluster.now)
    assert n3.counters.get("paxos.campaign_deferred_by_lease", 0) >= 1 or n3.role is Role.FOLLOWER
    assert cluster.cores["n2"].role is Role.LEADER
