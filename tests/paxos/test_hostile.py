"""Hostile peers: forged messages never raise in the core and cannot wedge the group.

Hypothesis forges messages of every Paxos type (random ballots including
rounds near 2**64, random and negative indexes, entries at wrong ballots,
out-of-order snapshot chunks, senders that are not replicas, values of the
wrong type) and feeds them to the cores of a running 3-replica cluster. No
step may raise; afterwards the honest replicas must still elect a leader
and choose a command within a few election timeouts.
"""

from __future__ import annotations

import random
from typing import Any

import attrs
import hypothesis.strategies as st
from hypothesis import HealthCheck, given, settings

from paxos.messages import (
    ZERO_BALLOT, Accept, Accepted, Ballot, Entry, Prepare, PreVote, PreVoteReply, Promise, Reject, SnapshotAck,
    SnapshotChunk,
)
from paxos.replica import MAX_BALLOT_JUMP, Replica
from paxos.types import PaxosConfig, PersistedState
from tests.paxos.script import MS, ScriptCluster

NODES = ("n1", "n2", "n3")
HUGE = (2**62 - 1, 2**62, 2**63 - 1, 2**64 - 1, 2**64, MAX_BALLOT_JUMP + 5, -1, -(2**63))

rounds = st.integers(0, 6) | st.sampled_from(HUGE)
indexes = st.integers(-2, 40) | st.sampled_from(HUGE)
ballots = st.builds(Ballot, rounds, st.sampled_from(NODES + ("", "mallory")))
entries = st.lists(st.builds(Entry, indexes, ballots, st.binary(max_size=4)), max_size=5).map(tuple)
anything = st.none() | st.text(max_size=3) | st.floats(allow_nan=False) | st.just([1, 2])


def with_junk(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly well-typed values, sometimes a value of the wrong type."""
    return strategy | anything


messages = st.one_of(
    st.builds(Prepare, with_junk(ballots), with_junk(indexes)),
    st.builds(Promise, ballots, indexes, entries, indexes, indexes),
    st.builds(Reject, ballots, ballots, st.sampled_from(("ballot", "lease", "behind", "?"))),
    st.builds(Accept, with_junk(ballots), entries, with_junk(indexes), st.integers(-(2**64), 2**64),
              with_junk(st.binary(max_size=80)), with_junk(indexes)),
    st.builds(Accepted, ballots, with_junk(indexes), st.integers(-(2**64), 2**64), indexes, st.booleans()),
    st.builds(SnapshotChunk, ballots, indexes, indexes, st.binary(max_size=4), indexes),
    st.builds(SnapshotAck, ballots, indexes, indexes, with_junk(st.booleans())),
    st.builds(PreVote, ballots, indexes, indexes),
    st.builds(PreVoteReply, ballots, st.booleans(), ballots, st.text(max_size=3)),
    anything,
)
forgeries = st.lists(st.tuples(st.sampled_from(NODES), st.sampled_from(NODES + ("mallory",)), messages), max_size=25)


def elect_somebody(c: ScriptCluster, start_ms: int) -> str:
    """Let time pass (ticks, every message delivered) until a leader holds a lease; its name."""
    for step in range(60):
        c.at(start_ms + 100 * step)
        for node in NODES:
            c.tick(node)
        c.deliver(rounds=8)
        leaders = [node for node in NODES if c.cores[node].has_lease(c.now)]
        if leaders:
            return leaders[0]
    raise AssertionError("no leader 6s after the forgeries stopped")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(forged=forgeries)
def test_forged_messages_never_raise_and_a_leader_is_still_elected(forged: list[tuple[str, str, Any]]) -> None:
    c = ScriptCluster()
    c.at(0)
    c.campaign("n1")
    c.deliver(rounds=6)
    c.propose("n1", b"before")
    c.deliver(rounds=3)
    c.at(10)
    for dst, src, msg in forged:
        if src != dst:
            c.cores[dst].step(src, msg, c.now)  # must not raise
            c.flush(dst)
    c.deliver(rounds=4)  # honest replies to forgeries reach honest replicas
    for node in NODES:
        assert c.cores[node].promised.round < 2**62, "no absurd promise was persisted"
    leader = elect_somebody(c, 100)
    slot = c.propose(leader, b"after")
    assert slot is not None
    for _ in range(10):
        c.deliver(rounds=4)
        c.at(c.now // MS + 50)
        c.tick(leader)
        if c.cores[leader].chosen_index >= slot:
            break
    assert c.cores[leader].chosen_index >= slot, "the new leader can choose commands"


def test_the_reported_attack_is_ignored_and_counted() -> None:
    """Three frames at round 2**64-1 used to leave the tablet leaderless forever."""
    c = ScriptCluster()
    c.at(0)
    c.campaign("n1")
    c.deliver(rounds=6)
    for dst in ("n1", "n2", "n3"):
        src = "n2" if dst != "n2" else "n3"
        c.cores[dst].step(src, Prepare(Ballot(2**64 - 1, src), 1), c.now)
        c.flush(dst)
    for node in NODES:
        core = c.cores[node]
        assert core.promised == Ballot(1, "n1")
        assert core.counters.get("paxos.hostile_messages") == 1
        assert core.counters.get("paxos.hostile.huge_round") == 1
        assert dict(core.status(c.now).counters)["paxos.hostile_messages"] == 1
    c.cores["n2"].step("n1", Prepare(Ballot(MAX_BALLOT_JUMP + 2, "n1"), 1), c.now)
    assert c.cores["n2"].counters.get("paxos.hostile.ballot_jump") == 1
    c.cores["n2"].step("n1", Prepare(Ballot(MAX_BALLOT_JUMP, "n1"), 1), c.now)
    assert c.cores["n2"].counters.get("paxos.hostile_messages") == 2, "a jump within the bound is legitimate"
    c.cores["n2"].step("mallory", Prepare(Ballot(2, "n1"), 1), c.now)
    assert c.cores["n2"].counters.get("paxos.hostile.unknown_sender") == 1


def test_a_promise_with_a_far_slot_cannot_make_the_candidate_write_a_billion_noops() -> None:
    c = ScriptCluster()
    c.at(0)
    c.campaign("n1")
    c.deliver(rounds=3)  # PreVote, reply, Prepare: n1 is a candidate waiting for Promises
    n1 = c.cores["n1"]
    assert n1.role.value == "candidate"
    far = Entry(2**61, Ballot(1, "n1"), b"x")
    n1.step("n2", Promise(n1.ballot, 1, (far,), 0, 0), c.now)
    assert n1.role.value == "candidate" and n1.counters.get("paxos.hostile.slot_gap") == 1
    n1.step("n2", Accept(Ballot(1, "n2"), (Entry(2**40, Ballot(1, "n2"), b"x"),), 0, 0), c.now)
    assert n1.counters.get("paxos.hostile.slot_gap") == 2
    c.deliver(rounds=3)
    assert n1.role.value == "leader" and n1.last_index < 10


def test_every_field_of_a_message_is_checked_for_its_type() -> None:
    """`_hostile` looks at each field (their expected types are worked out once per class): an
    Accept that is well-formed but for one field of the wrong type is refused, whichever field.
    (Annotations as the core sees them unresolved; on a node txn/wire resolves them: same types.)"""
    replica = Replica(node_id="n2", peers=NODES, config=PaxosConfig(), rng=random.Random(1),
                      persisted=PersistedState(ZERO_BALLOT, 0, ()), applied_index=0, now_ns=0)
    ballot = Ballot(1, "n1")
    good = Accept(ballot, (Entry(1, ballot, b"x"),), 0, 0, b"", 0)
    assert replica._hostile("n1", good, 0) == ""
    for field in attrs.fields(Accept):
        bad = attrs.evolve(good, **{field.name: "not-this-type"})
        assert replica._hostile("n1", bad, 0) == "type", field.name
