"""Accept batches stay under `max_message_bytes` (normal replication and catch-up).

Two 9 MiB commands in one catch-up Accept once exceeded a follower's 16 MiB
frame limit and were resent forever; the leader now splits batches by the
sum of command sizes, always sending at least one entry.
"""

from __future__ import annotations

import pytest

from paxos.messages import Accept
from paxos.types import PaxosConfig
from tests.paxos.script import MS, ScriptCluster

LIMIT = 100


def cluster() -> ScriptCluster:
    c = ScriptCluster(config=PaxosConfig(heartbeat_ns=50 * MS, election_timeout_min_ns=300 * MS, election_timeout_max_ns=300 * MS,
                                         max_message_bytes=LIMIT, max_in_flight=64))
    c.at(0)
    c.campaign("n1")
    c.deliver(rounds=8)
    assert c.cores["n1"].role.value == "leader" and not c.pending
    return c


def accepts_to(c: ScriptCluster, dst: str) -> list[Accept]:
    return [msg for src, to, msg in c.pending if to == dst and isinstance(msg, Accept) and msg.entries]


def check_bounded(batches: list[Accept]) -> None:
    for accept in batches:
        size = sum(len(entry.command) for entry in accept.entries)
        assert size <= LIMIT or len(accept.entries) == 1, (size, str(accept))


def test_normal_replication_splits_by_bytes() -> None:
    c = cluster()
    commands = [bytes([65 + i]) * 40 for i in range(5)] + [b"z" * 300, b"y" * 10]
    n1 = c.cores["n1"]
    slots = [n1.propose(command, c.now) for command in commands]  # one ready(): one batching decision
    c.flush("n1")
    batches = accepts_to(c, "n2")
    check_bounded(batches)
    sent = [entry.command for accept in batches for entry in accept.entries]
    assert sent == commands, "every slot sent once, in order"
    assert [len(accept.entries) for accept in batches] == [2, 2, 1, 1, 1]
    assert n1.counters.get("paxos.accept_split_by_size", 0) >= 3
    c.deliver(rounds=4)
    assert n1.chosen_index == slots[-1] and c.chosen("n1")[-len(commands):] == commands
    c.at(50)
    c.tick("n1")  # the heartbeat carries the commit index to the followers
    c.deliver(rounds=2)
    assert c.chosen("n2")[-len(commands):] == commands


def test_catch_up_splits_by_bytes() -> None:
    c = cluster()
    commands = [bytes([97 + i]) * 60 for i in range(6)]
    for command in commands:
        c.propose("n1", command)
        c.deliver(lambda s, d, m: "n3" not in (s, d), rounds=2)
        c.drop(lambda s, d, m: "n3" in (s, d))
    n1, n3 = c.cores["n1"], c.cores["n3"]
    assert n3.chosen_index < n1.chosen_index
    c.trace.clear()
    for ms in (50, 100, 150):  # heartbeats: n3 reports its match, no progress, the leader resends from it
        c.at(ms)
        c.tick("n1")
        c.flush("n1")
        batches = accepts_to(c, "n3")
        check_bounded(batches)
        c.deliver(rounds=3)
    assert n1.counters.get("paxos.catch_up", 0) >= 1
    assert n3.chosen_index == n1.chosen_index and c.chosen("n3")[-len(commands):] == commands
    resent = [line for line in c.trace if line.startswith("n1->n3 Accept")]
    assert len(resent) >= len(commands), resent  # 60-byte commands: one per Accept under a 100-byte limit


def test_config_refuses_a_zero_limit() -> None:
    with pytest.raises(ValueError, match="max_message_bytes"):
        PaxosConfig(max_message_bytes=0)
