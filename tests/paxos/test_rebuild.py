"""An acceptor that lost its storage (a corrupt replica rebuilt from nothing) must not vote until fenced.

Script (3 replicas): n1 leads at b1; n1 is cut off and its lease runs out;
n2 is elected at b2 with n3's promise and chooses its start no-op in slot 2
with n3. Then n3 loses its state. n2 is cut off, n1 (still leader at b1, it
never heard of b2) reaches n3 and proposes "v": slot 2 again. A rebuilt n3
that votes at once accepts b1 (its promise of b2 is gone) and "v" is chosen
in slot 2 beside n2's no-op: two values chosen in one slot. The mutant below
(a rebuilt replica that simply starts empty) must show that, so the test can
fail; the real rebuilding replica votes for nothing until, after its wait,
every other replica has told it its promised ballot.
"""

from __future__ import annotations

import random

from paxos.messages import ZERO_BALLOT, Ballot
from paxos.replica import Replica, Role, rebuild_wait_ns
from paxos.storage import PaxosStorage
from paxos.types import Persist, PersistedState
from mvcc.engine import DictEngine
from tests.paxos.script import MS, ScriptCluster, between


LOST_AT_MS = 1250


def cut_off(node: str):  # noqa: ANN201
    return lambda src, dst, msg: node in (src, dst)


def lose_state(c: ScriptCluster, node: str, *, rebuilding: bool) -> Replica:
    core = Replica(node_id=node, peers=c.ids, config=c.config, rng=random.Random(node + "-rebuilt"),
                   persisted=PersistedState(ZERO_BALLOT, 0, (), rebuilding), applied_index=0, now_ns=c.now)
    c.cores[node] = core
    c.applied[node] = []
    c.pending = [item for item in c.pending if node not in item[:2]]
    return core


def slot_2_everywhere(c: ScriptCluster) -> dict[str, bytes]:
    return {node: entries[1].command for node, entries in c.applied.items() if len(entries) >= 2}


def split_brain_after_state_loss(*, rebuilding: bool) -> ScriptCluster:
    c = ScriptCluster()
    c.at(0)
    c.campaign("n1")
    c.deliver(rounds=6)
    n1 = c.cores["n1"]
    assert n1.role is Role.LEADER and n1.has_lease(c.now) and n1.chosen_index == 1
    c.note("n1 is cut off until its lease grants run out; n2 is elected with n3's promise")
    for ms in range(50, 1300, 50):
        c.at(ms)
        c.tick("n1")
        c.drop(cut_off("n1"))
    c.campaign("n2")
    c.deliver(between("n2", "n3"), rounds=8)
    n2 = c.cores["n2"]
    assert n2.role is Role.LEADER and n2.ballot == Ballot(2, "n2") and n2.chosen_index == 2
    assert c.applied["n2"][1].command == b"", "n2's start no-op is chosen in slot 2"
    c.drop(cut_off("n1"))
    c.note("n3 loses its storage; n2 is cut off; n1 (leader at b1, unaware of b2) reaches n3")
    assert c.now == LOST_AT_MS * MS
    lose_state(c, "n3", rebuilding=rebuilding)
    c.at(1400)
    assert n1.role is Role.LEADER and n1.ballot == Ballot(1, "n1")
    c.propose("n1", b"v")
    for ms in range(1400, 2000, 50):
        c.at(ms)
        c.tick("n1")
        c.tick("n3")
        c.drop(cut_off("n2"))
        c.deliver(between("n1", "n3"), rounds=4)
    return c


def test_a_rebuilt_replica_that_votes_at_once_lets_two_values_be_chosen_in_one_slot() -> None:
    """The mutant: the test's scenario does reach the split brain the rebuilding rule prevents."""
    c = split_brain_after_state_loss(rebuilding=False)
    chosen = slot_2_everywhere(c)
    assert chosen["n1"] == b"v" and chosen["n2"] == b"", chosen


def test_a_rebuilding_replica_votes_for_nothing_and_the_slot_keeps_one_value() -> None:
    c = split_brain_after_state_loss(rebuilding=True)
    n1, n3 = c.cores["n1"], c.cores["n3"]
    assert n1.chosen_index == 1, "nothing chosen on the rebuilding replica's word"
    assert n3.rebuilding and n3.counters.get("paxos.rebuild_fenced") is None
    assert n1.progress["n3"].voting is False
    c.note("healed: n2's ballot reaches everyone; n3 catches up, waits, asks for the fence")
    start = 2000
    fenced_at = None
    for ms in range(start, start + 4000, 50):
        c.at(ms)
        for node in c.ids:
            c.tick(node)
        c.deliver(rounds=4)
        if fenced_at is None and not n3.rebuilding:
            fenced_at = ms
    assert fenced_at is not None, "n3 was fenced once healed and past its wait"
    assert fenced_at * MS >= LOST_AT_MS * MS + rebuild_wait_ns(c.config), "not before the wait"
    assert n3.promised >= Ballot(2, "n2"), "the fence is at least the ballot n3's lost promise helped elect"
    assert n3.counters.get("paxos.rebuild_fenced") == 1
    assert "paxos.prevotes" not in n3.counters and "paxos.campaigns" not in n3.counters, "it never campaigned"
    chosen = slot_2_everywhere(c)
    assert set(chosen.values()) == {b""}, f"one value in slot 2: {chosen}"
    c.note("n3 votes again: with n2 cut off, n1 and n3 still choose (n3's vote counts)")
    leader = next(node for node in c.ids if c.cores[node].role is Role.LEADER)
    other = next(node for node in c.ids if node not in (leader, "n3"))
    slot = c.propose(leader, b"after")
    for ms in range(start + 4000, start + 4500, 50):
        c.at(ms)
        c.tick(leader)
        c.drop(cut_off(other))
        c.deliver(rounds=4)
    assert slot is not None and c.cores[leader].chosen_index >= slot, "a majority with the fenced n3 chooses"


def test_a_rebuilding_replica_does_not_fence_while_another_is_rebuilding_too() -> None:
    c = ScriptCluster()
    c.at(0)
    c.campaign("n1")
    c.deliver(rounds=6)
    lose_state(c, "n2", rebuilding=True)
    lose_state(c, "n3", rebuilding=True)
    for ms in range(50, 5000, 50):
        c.at(ms)
        for node in c.ids:
            c.tick(node)
        c.deliver(rounds=4)
    n2, n3 = c.cores["n2"], c.cores["n3"]
    assert n2.applied_index >= 1 and n3.applied_index >= 1, "both caught up"
    assert n2.rebuilding and n3.rebuilding, "neither counts the other's (lost) promise: an operator must act"
    assert c.propose("n1", b"x") is not None
    for ms in range(5000, 5500, 50):
        c.at(ms)
        c.tick("n1")
        c.deliver(rounds=4)
    assert c.cores["n1"].chosen_index < c.cores["n1"].last_index, "no majority of voters: nothing new is chosen"


def test_a_candidate_does_not_count_a_promise_after_its_phase_1_window() -> None:
    c = ScriptCluster()
    c.at(0)
    c.campaign("n1")
    c.deliver(lambda src, dst, msg: type(msg).__name__ in ("PreVote", "PreVoteReply"), rounds=2)
    c.deliver(lambda src, dst, msg: type(msg).__name__ == "Prepare")
    n1 = c.cores["n1"]
    assert n1.role is Role.CANDIDATE
    c.at(c.config.election_timeout_max_ns // MS + 1)
    c.deliver(lambda src, dst, msg: type(msg).__name__ == "Promise")
    assert n1.role is Role.CANDIDATE and n1.counters.get("paxos.late_promise_ignored") == 2


def test_storage_keeps_the_rebuilding_marker_until_the_fence_is_written() -> None:
    engine = DictEngine()
    storage = PaxosStorage(engine)
    assert storage.load().rebuilding is False
    storage.mark_rebuilding()
    assert storage.load().rebuilding is True
    storage.write(Persist(promised=Ballot(3, "n2")))
    assert storage.load().rebuilding is True
    storage.write(Persist(promised=Ballot(4, "n2"), rebuilt=True))
    assert storage.load() == PersistedState(Ballot(4, "n2"), 0, (), False)
