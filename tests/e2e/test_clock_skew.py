"""Clock skew injected into running nodes: within the bound nothing breaks and
every ack waits out commit-wait; beyond it the node fences itself, the others
keep serving, nothing is lost, and clearing the skew brings it back.

No assertion here depends on how fast a busy machine runs: waits poll with a
generous deadline (WAIT_S), and latency figures (how long commit-wait takes)
are measured by `chronodb bench kv` and checked exactly in virtual time by
tests/hlc/test_commit_wait.py."""

from __future__ import annotations

import itertools
import json
import time

from hlc import Timestamp
from tests.e2e.harness import LocalCluster
from txn.client import NoLeader, OutcomeUnknown

MAX_OFFSET_NS = 10_000_000
WAIT_S = 60.0


def skew_show(cluster: LocalCluster) -> dict[str, dict]:
    """Every node's clock report; asks again while a node is too busy to answer in time."""
    def answered():
        result = cluster.cli("skew", "--show", "--json")
        nodes = {node["id"]: node for node in json.loads(result.stdout)["nodes"]}
        return nodes if result.returncode == 0 and not any("error" in node for node in nodes.values()) else None
    return wait_for(answered, WAIT_S, "every node to report its clock")


def wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_skew_below_the_bound_keeps_real_time_order(fresh_cluster: LocalCluster) -> None:
    skewed = "n2"
    result = fresh_cluster.cli("skew", skewed, "--offset", f"{MAX_OFFSET_NS // 2}ns", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["nodes"][0]["offset_ns"] == MAX_OFFSET_NS // 2

    def every_node_measured_the_skew_and_serves():
        # Cristian's estimate: the true offset (the injected one, seen from n2 as minus the others')
        # lies within the error bound. With the bound below 2.5ms no sample taken before the skew
        # (offset ~0) passes, so a broken estimate never does. The fencing rule is conservative: a
        # node whose samples are too wide to rule out being the farther clock of a pair beyond the
        # limit fences until precise ones come (a loaded machine slows round trips; once n3 saw n2
        # at +7.4ms±3.1). So this waits for every node to see the skew precisely and to serve; a
        # rule that fences at half the bound never gets there.
        shown = skew_show(fresh_cluster)
        for node, peer in itertools.permutations(fresh_cluster.node_ids, 2):
            expected = MAX_OFFSET_NS // 2 * ((peer == skewed) - (node == skewed))
            offset = shown[node]["peer_offsets_ns"].get(peer)
            error = shown[node]["peer_offset_errors_ns"].get(peer)
            if offset is None or error >= MAX_OFFSET_NS // 4 or abs(offset - expected) > error + 1_000_000:
                return None
        return None if any(node["fenced"] for node in shown.values()) else shown

    wait_for(every_node_measured_the_skew_and_serves, WAIT_S, "every node to measure the skew and serve")

    clients = [fresh_cluster.client(home=n) for n in fresh_cluster.node_ids]
    keys = [b"\x10skew", b"\x50skew", b"\x90skew", b"\xd0skew"]  # tablets led by different nodes
    previous = Timestamp.MIN
    unknown: list[str] = []
    for i in range(30):
        while True:
            try:
                result = clients[i % 3].put(keys[i % 4], b"%d" % i)
                break
            except (OutcomeUnknown, NoLeader) as error:
                # A leadership moved under the write: on a loaded box a node may fence itself when its
                # clock samples are too wide to rule a conflict out (ARCHITECTURE.md, known limits).
                # Not an ordering fault; the same put again (a committed first attempt is below it).
                unknown.append(f"write {i}: {error}")
                assert len(unknown) <= 3, f"leaderships kept moving under the skew: {unknown}"
        acked_ns = time.time_ns()
        assert result.ts > previous, f"write {i} at {result.ts} not after {previous}"
        previous = result.ts
        # Commit-wait: the leader acks once its clock passed ts.wall + max_offset. Its clock
        # runs at most the skew (max_offset / 2) ahead of real time, which this process reads.
        assert result.commit_wait_ns >= 0
        assert acked_ns >= result.ts.wall + MAX_OFFSET_NS - MAX_OFFSET_NS // 2, (i, result, acked_ns)
        assert clients[(i + 1) % 3].get(keys[i % 4]).version_ts == result.ts
    wait_for(every_node_measured_the_skew_and_serves, WAIT_S, "every node to still serve under the skew")


def test_skew_beyond_the_bound_fences_and_clear_restores(fresh_cluster: LocalCluster) -> None:
    client = fresh_cluster.client(timeout_s=15)
    acked = {}
    for i in range(20):
        key = bytes([i * 13 % 256]) + b"fence"
        acked[key] = client.put(key, b"before-%d" % i).ts
    victim = "n3"
    assert fresh_cluster.cli("skew", victim, "--offset", "50ms").returncode == 0
    state = wait_for(lambda: (s := skew_show(fresh_cluster)) and s[victim]["fenced"] and s, WAIT_S, "fencing")
    assert "beyond" in state[victim]["fence_reason"]
    assert not state["n1"]["fenced"] and not state["n2"]["fenced"]
    # The fenced node still answers status (asked again if too busy to answer in time).
    wait_for(lambda: json.loads(fresh_cluster.cli("status", "--json").stdout)["nodes"][2]["up"], WAIT_S,
             "the fenced node to answer status")
    # The others take over every tablet and keep serving.
    wait_for(lambda: all(t["leader"] in ("n1", "n2") for t in json.loads(fresh_cluster.cli("status", "--json").stdout)["tablets"]),
             WAIT_S, "leaders away from the fenced node")
    for i in range(20):
        key = bytes([i * 13 % 256]) + b"fence"
        acked[key] = client.put(key, b"during-%d" % i).ts
    # Clearing the skew brings it back.
    assert fresh_cluster.cli("skew", victim, "--clear").returncode == 0
    wait_for(lambda: not skew_show(fresh_cluster)[victim]["fenced"], WAIT_S, "unfencing")
    for key, ts in acked.items():
        assert client.get(key).version_ts == ts
    shown = skew_show(fresh_cluster)
    assert shown[victim]["offset_ns"] == 0
    # Each node reports what it refused per peer. n3's Paxos messages stamped from the future are
    # refused only between the skew and n3's fence (one probe round at most; a fenced node sends no
    # Paxos traffic), and under load that window may carry none: the refusal itself is checked
    # deterministically in tests/txn/test_transport.py (rejected_clock).
    assert sorted(shown["n1"]["rejected_messages"]) == ["n2", "n3"], shown["n1"]


def test_jepsen_vocabulary_and_the_hlc_never_goes_back(fresh_cluster: LocalCluster) -> None:
    def hlc_of(node_id: str) -> Timestamp:
        report = json.loads(fresh_cluster.cli("inspect", "node", node_id, "--json").stdout)
        return Timestamp.parse(report["hlc_now"])

    before = hlc_of("n1")
    assert fresh_cluster.cli("skew", "n1", "--offset", "-30ms").returncode == 0
    after = hlc_of("n1")
    assert after > before  # the physical clock went back 30ms; the HLC did not
    assert fresh_cluster.cli("skew", "n2", "--bump", "2ms").returncode == 0
    assert fresh_cluster.cli("skew", "n2", "--bump", "1ms").returncode == 0
    assert skew_show(fresh_cluster)["n2"]["offset_ns"] == 3_000_000
    # A strobe far longer than the test certainly still runs when asked; --clear ends it.
    assert fresh_cluster.cli("skew", "n3", "--strobe", "4ms", "--period", "100ms", "--for", "1h").returncode == 0
    shown = skew_show(fresh_cluster)["n3"]
    assert shown["strobing"] and shown["offset_ns"] in (0, 4_000_000), shown
    assert fresh_cluster.cli("skew", "n3", "--clear").returncode == 0
    shown = skew_show(fresh_cluster)["n3"]
    assert not shown["strobing"] and shown["offset_ns"] == 0, shown
    # A short strobe ends by itself and puts the clock back.
    assert fresh_cluster.cli("skew", "n3", "--strobe", "4ms", "--period", "100ms", "--for", "1s").returncode == 0
    wait_for(lambda: not skew_show(fresh_cluster)["n3"]["strobing"], WAIT_S, "the strobe to end")
    assert skew_show(fresh_cluster)["n3"]["offset_ns"] == 0
    assert fresh_cluster.cli("skew", "--reset").returncode == 0
    assert all(node["offset_ns"] == 0 and node["drift_ppm"] == 0 for node in skew_show(fresh_cluster).values())
    bad = fresh_cluster.cli("skew", "n1", "--strobe", "4ms")
    assert bad.returncode == 2 and "--period" in bad.stderr
    unknown = fresh_cluster.cli("skew", "n9", "--offset", "1ms")
    assert unknown.returncode == 2 and "no node 'n9'" in unknown.stderr
    # Everything still works after the skew is gone.
    assert fresh_cluster.client().put(b"after-skew", b"ok").ts > before
