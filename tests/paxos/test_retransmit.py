"""Resends to a follower that makes no progress back off and carry one Accept at a time.

A stopped follower (SIGSTOP, or a partition) used to get a full window of
Accepts again every heartbeat: with 4 MiB values that is 32 MiB per 50 ms
encoded and queued for a peer that reads nothing (a leader grew to 22 GB).
Now: one resend after a heartbeat without progress, then after 2, 4 ... 16
heartbeats, each a single Accept; once the follower answers with progress,
the full window again.
"""

from __future__ import annotations

from paxos.messages import Accept
from paxos.replica import MAX_RETRANSMIT_HEARTBEATS, Role
from tests.paxos.script import ScriptCluster


def accepts_with_entries_to(node: str, pending: list) -> int:
    return sum(1 for src, dst, msg in pending if dst == node and isinstance(msg, Accept) and msg.entries)


def test_a_stopped_follower_gets_few_resends_and_catches_up_when_it_returns() -> None:
    c = ScriptCluster()
    c.at(0)
    c.campaign("n1")
    c.deliver(rounds=6)
    n1, n3 = c.cores["n1"], c.cores["n3"]
    assert n1.role is Role.LEADER
    sent_to_n3 = 0
    for i in range(40):
        c.propose("n1", b"v%d" % i)
    seconds = 4
    for ms in range(50, seconds * 1000 + 50, 50):
        c.at(ms)
        c.tick("n1")
        sent_to_n3 += accepts_with_entries_to("n3", c.pending)
        c.drop(lambda src, dst, msg: "n3" in (src, dst))  # n3 is stopped
        c.deliver(rounds=3)
    assert n1.chosen_index >= 41, "n1 and n2 choose on"
    resends = n1.counters.get("paxos.retransmit", 0)
    # 1, 2, 4, 8, 16, 16 ... heartbeats apart: about 8 resends in 4 s (80 heartbeats), not 80.
    assert 4 <= resends <= 10, resends
    assert sent_to_n3 <= resends + 8, f"one Accept per resend (and the first window): {sent_to_n3}"
    assert n1.progress["n3"].retransmit_after == MAX_RETRANSMIT_HEARTBEATS
    c.note("n3 is back: within the longest backoff it is probed, answers, and gets the full window")
    start = seconds * 1000 + 50
    caught_up_at = None
    for ms in range(start, start + 3000, 50):
        c.at(ms)
        c.tick("n1")
        c.tick("n3")
        c.deliver(rounds=4)
        if caught_up_at is None and n3.chosen_index >= 41:
            caught_up_at = ms
    assert caught_up_at is not None and caught_up_at - start <= (MAX_RETRANSMIT_HEARTBEATS + 4) * 50, caught_up_at
    assert not n1.progress["n3"].probing and n1.progress["n3"].retransmit_after == 1
