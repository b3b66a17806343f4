"""The closed token (paxos/replica.py, "Closed token"): the leader application's side transport.

A token the leader sets rides on every Accept, heartbeats included, and each
follower that accepts it keeps it for its application; a new leadership
starts without one; a token over `MAX_CLOSED_BYTES` from a peer is dropped
with its message; a follower that promised a newer ballot ignores an old
leader's token with the rest of its Accept.
"""

from __future__ import annotations

from paxos.messages import Accept, Ballot
from paxos.replica import MAX_CLOSED_BYTES, Role
from tests.paxos.script import MS, ScriptCluster


def led_by_n1() -> ScriptCluster:
    c = ScriptCluster()
    c.at(0)
    c.campaign("n1")
    c.deliver(rounds=8)
    assert c.cores["n1"].role is Role.LEADER
    return c


def test_the_token_rides_on_heartbeats_to_every_follower() -> None:
    c = led_by_n1()
    c.propose("n1", b"w")
    c.deliver(rounds=4)
    index = c.cores["n1"].applied_index
    c.cores["n1"].set_closed(b"C1", index)
    assert all(c.cores[n].closed_in == (b"", 0) for n in ("n2", "n3")), "nothing sent yet"
    c.at(c.config.heartbeat_ns // MS + 10)  # a heartbeat is due
    c.tick("n1")
    c.deliver(rounds=2)
    assert c.cores["n2"].closed_in == c.cores["n3"].closed_in == (b"C1", index)
    c.cores["n1"].set_closed(b"C2", index + 5)  # beyond the log: refused, the old token stays
    assert c.cores["n1"].closed_out == (b"C1", index)


def test_a_new_leadership_starts_without_a_token() -> None:
    c = led_by_n1()
    c.cores["n1"].set_closed(b"C1", c.cores["n1"].applied_index)
    c.at(2000)
    c.campaign("n2")
    c.deliver(rounds=8)
    assert c.cores["n2"].role is Role.LEADER and c.cores["n1"].role is Role.FOLLOWER
    assert c.cores["n1"].closed_out == (b"", 0) and c.cores["n2"].closed_out == (b"", 0)
    c.cores["n1"].set_closed(b"C9", 0)  # not the leader: ignored
    assert c.cores["n1"].closed_out == (b"", 0)


def test_an_oversized_or_outdated_token_is_not_taken() -> None:
    c = led_by_n1()
    core = c.cores["n2"]
    ballot = core.promised
    core.step("n1", Accept(ballot, (), core.chosen_index, c.now, b"x" * (MAX_CLOSED_BYTES + 1), 0), c.now)
    assert core.closed_in == (b"", 0), "a token over the bound is dropped with its message"
    core.step("n1", Accept(Ballot(ballot.round - 1, "n1"), (), 0, c.now, b"old", 0), c.now)
    assert core.closed_in == (b"", 0), "an Accept below the promise is rejected, token and all"
    core.step("n1", Accept(ballot, (), core.chosen_index, c.now + MS, b"ok", 0), c.now + MS)
    assert core.closed_in == (b"ok", 0)
