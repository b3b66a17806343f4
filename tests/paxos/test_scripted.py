"""Scripted interactions on the tricky paths, each printing its message trace.

The transcript of each script is compared with tests/paxos/testdata/<name>.txt;
`pytest tests/paxos --rewrite` regenerates them (review the diff). The
assertions after each script say what the trace must show, so a wrong
rewrite still fails.
"""

from __future__ import annotations

import pathlib

import pytest

from paxos.messages import Ballot, Entry
from paxos.types import PaxosConfig
from tests.paxos.script import MS, ScriptCluster, between, both, kind

TESTDATA = pathlib.Path(__file__).parent / "testdata"


def check_transcript(request: pytest.FixtureRequest, name: str, cluster: ScriptCluster) -> None:
    text = "\n".join(cluster.trace) + "\n"
    print(text)
    path = TESTDATA / f"{name}.txt"
    if request.config.getoption("--rewrite"):
        TESTDATA.mkdir(exist_ok=True)
        path.write_text(text)
    assert path.read_text() == text, f"transcript changed; rerun with --rewrite and review {path}"


def elect_n1(cluster: ScriptCluster) -> None:
    cluster.campaign("n1")
    cluster.deliver(rounds=5)  # PreVote, its reply, Prepare, Promise, then the leader's first Accepts and their replies
    assert cluster.cores["n1"].role.value == "leader"


def test_recovering_an_accepted_value_in_phase_1(request: pytest.FixtureRequest) -> None:
    c = ScriptCluster()
    c.at(0)
    elect_n1(c)
    c.deliver(rounds=2)
    c.at(10).note("n1 proposes x; only n2 hears the Accept, then n1 goes silent")
    slot = c.propose("n1", b"x")
    c.deliver(both(kind("Accept"), lambda s, d, m: d == "n2"))
    c.drop()
    assert c.cores["n2"].log[slot] == Entry(slot, Ballot(1, "n1"), b"x")
    c.at(1100).note("the lease n3 granted has run out: n3 campaigns, n2 promises with x")
    c.tick("n3")
    c.deliver(between("n2", "n3"), rounds=6)
    c.drop()
    n3 = c.cores["n3"]
    assert n3.role.value == "leader" and n3.counters.get("paxos.recovered_accepted_value") == 1
    assert n3.log[slot] == Entry(slot, n3.ballot, b"x")
    c.deliver(between("n2", "n3"), rounds=4)
    assert n3.chosen_index >= slot and c.chosen("n3")[slot - 1] == b"x"
    check_transcript(request, "recover_accepted_value", c)


def test_deposed_leaders_late_accepts_are_refused(request: pytest.FixtureRequest) -> None:
    c = ScriptCluster()
    c.at(0)
    elect_n1(c)
    c.deliver(rounds=2)
    c.at(1100).note("n1 is cut off; after its lease, n2 takes over with a higher ballot")
    c.drop()
    c.tick("n2")
    c.deliver(between("n2", "n3"), rounds=5)
    c.drop(lambda s, d, m: "n1" in (s, d))
    assert c.cores["n2"].role.value == "leader"
    assert c.cores["n1"].role.value == "leader", "n1 has heard nothing yet"
    c.at(1200).note("n1, still believing it leads, proposes late; its Accepts reach n3")
    slot = c.propose("n1", b"late")
    assert slot is not None
    assert not c.cores["n1"].has_lease(c.now), "n1's lease ran out while cut off"
    c.deliver(both(kind("Accept"), lambda s, d, m: s == "n1" and d == "n3"))
    c.deliver(lambda s, d, m: d == "n1")
    assert c.cores["n1"].role.value == "follower"
    assert c.cores["n3"].log.get(slot) is None or c.cores["n3"].log[slot].command != b"late"
    c.drop(lambda s, d, m: s == "n1")
    c.deliver(between("n2", "n3"), rounds=3)
    assert b"late" not in c.chosen("n2") + c.chosen("n3")
    check_transcript(request, "deposed_leader_late_accepts", c)


def test_lease_expiry_across_a_partition(request: pytest.FixtureRequest) -> None:
    c = ScriptCluster()
    c.at(0)
    elect_n1(c)
    c.deliver(rounds=2)
    n1, n2 = c.cores["n1"], c.cores["n2"]
    assert n1.has_lease(c.now)
    expiry = n1.lease_expiry_ns
    c.at(50).note("heartbeat at 50ms; n3 receives it 10ms late; then n1 is partitioned away")
    c.tick("n1")
    c.deliver(lambda s, d, m: d == "n2")
    c.at(60)
    c.deliver()
    c.deliver()
    assert n1.lease_expiry_ns == 50 * MS + c.config.lease_ns > expiry
    c.at(600).note("n2's election timeout would have fired, but it lies past the lease n2 granted: it waits")
    c.tick("n1")
    c.drop()
    c.tick("n2")
    assert n2.role.value == "follower" and n2.election_deadline_ns > n2.lease_granted_until_ns == 1060 * MS
    assert n2.counters.get("paxos.prevotes") is None  # it asked nobody
    c.at(1000).note("n1 still holds its lease until 1050ms (sent at 50ms + 1s)")
    assert n1.has_lease(c.now)
    c.at(1050)
    assert not n1.has_lease(c.now), "the lease ends at the earliest expiry of its majority"
    c.tick("n1")
    c.drop()
    c.at(1065).note("n2's own grant ran out at 1060ms; n3's (received at 60ms) lasts to 1070ms: it refuses n2's pre-vote")
    c.campaign("n2")
    c.deliver(between("n2", "n3"), rounds=2)
    assert n2.role.value == "follower" and n2.promised == Ballot(1, "n1"), "a refused pre-vote raises no ballot"
    assert c.cores["n3"].counters.get("paxos.prevote_refused") == 1
    c.at(1400).note("now n2 wins and acquires its own lease; n1 never held one at the same time")
    c.tick("n2")
    c.deliver(between("n2", "n3"), rounds=6)
    assert n2.role.value == "leader" and n2.has_lease(c.now) and not n1.has_lease(c.now)
    assert n2.lease_acquired_ns == 1400 * MS
    check_transcript(request, "lease_expiry_partition", c)


def test_lost_snapshot_chunk_is_resent_and_install_resumes(request: pytest.FixtureRequest) -> None:
    c = ScriptCluster(config=PaxosConfig(heartbeat_ns=50 * MS, election_timeout_min_ns=300 * MS, election_timeout_max_ns=300 * MS,
                                         truncate_threshold_entries=4, truncate_keep_entries=1))
    c.at(0)
    elect_n1(c)
    c.deliver(rounds=2)
    c.note("n3 misses ten slots while n1 truncates its log")
    for number in range(10):
        c.propose("n1", f"v{number}".encode())
        c.deliver(lambda s, d, m: "n3" not in (s, d), rounds=2)
        c.drop(lambda s, d, m: "n3" in (s, d))
    n1, n3 = c.cores["n1"], c.cores["n3"]
    assert n1.first_index > 2, "n1 truncated its log"
    c.trace.clear()
    n3_only = lambda s, d, m: "n3" in (s, d)  # noqa: E731
    c.at(50).note("heartbeat: n3 answers with its match, far below n1's log start")
    c.tick("n1")
    c.drop(lambda s, d, m: "n2" in (s, d))
    c.deliver(n3_only, rounds=2)
    c.at(100).note("no progress for a heartbeat: resend from n3's match, which needs a snapshot")
    c.tick("n1")
    c.drop(lambda s, d, m: "n2" in (s, d))
    c.deliver(n3_only, rounds=2)
    c.drop(kind("SnapshotChunk"))
    c.at(150).note("the first chunk was lost; one heartbeat without progress...")
    c.tick("n1")
    c.drop(lambda s, d, m: "n2" in (s, d))
    c.deliver(n3_only)
    c.at(200).note("...and it is sent again; the install resumes where it stopped")
    c.tick("n1")
    c.drop(lambda s, d, m: "n2" in (s, d))
    c.deliver(n3_only, rounds=6)
    seqs = [line.split("seq=")[1].split()[0] for line in c.trace if "SnapshotChunk" in line]
    assert seqs == ["0/3", "0/3", "1/3", "2/3"], seqs
    assert "drop n1->n3 SnapshotChunk b=1.n1 index=11 seq=0/3 7B" in c.trace
    assert n3.counters.get("paxos.snapshot_installed") == 1
    assert [install.chunks for install in c.installed["n3"]] == [(b"chunk-a", b"chunk-b", b"chunk-c")]
    assert n3.first_index == c.installed["n3"][0].index + 1
    assert n3.chosen_index == n1.chosen_index
    check_transcript(request, "snapshot_chunk_lost", c)
