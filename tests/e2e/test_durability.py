"""The durable watermark and the commit counters, on a real cluster.

Writes acknowledged by a leader count as distributed commits and move the
tablet's durable watermark (an index fsynced on a majority) past them; a
write whose majority cannot fsync in time (both followers SIGSTOPped) is
answered outcome unknown and counted as not durable.
"""

from __future__ import annotations

import json
import signal

import pytest

from hlc import Timestamp
from tests.e2e.harness import LocalCluster
from txn.client import NoLeader, OutcomeUnknown

pytestmark = pytest.mark.e2e


def tablet_json(cluster: LocalCluster, tablet_id: str) -> dict:
    result = cluster.cli("status", "--json")
    assert result.returncode in (0, 1), result.stderr
    return next(t for t in json.loads(result.stdout)["tablets"] if t["id"] == tablet_id)


def write_with_followers_stopped(cluster: LocalCluster) -> str:
    """Write to t1's leader while both its followers are SIGSTOPped; say how it ended."""
    leader = cluster.client(timeout_s=10.0).put(b"a-warm", b"v").node  # the leader as of now
    # Each SyncClient call is a fresh client that loads the tablet map again: it must ask the
    # leader first, not a stopped follower that would use up the deadline connecting.
    client = cluster.client(home=leader, timeout_s=3.0)
    followers = [n for n in cluster.config.tablets[0].replicas if n != leader]
    for node_id in followers:
        cluster.processes[node_id].send_signal(signal.SIGSTOP)
    try:
        client.put(b"a-unknown", b"v")
    except OutcomeUnknown:
        return "outcome unknown"
    except NoLeader as error:
        return f"not delivered: {error}"
    finally:
        for node_id in followers:
            cluster.processes[node_id].send_signal(signal.SIGCONT)
    raise AssertionError("a write without a majority was acknowledged")


def test_watermark_and_counters(fresh_cluster: LocalCluster) -> None:
    cluster = fresh_cluster
    client = cluster.client()
    before = tablet_json(cluster, "t1")  # keys below b"b"
    stamps = [client.put(f"a{i}".encode(), b"v").ts for i in range(5)]
    after = tablet_json(cluster, "t1")
    assert after["distributed_commits"] - before["distributed_commits"] == 5
    assert after["not_durable_commits"] == before["not_durable_commits"] == 0
    assert after["durable_index"] >= before["durable_index"] + 5
    assert Timestamp.parse(after["durable_ts"]) >= stamps[-1]
    for record in after["replica_indexes"]:
        assert record["applied_index"] <= record["chosen_index"] and record["durable_index"] >= record["chosen_index"]

    inspect = cluster.cli("inspect", "tablets", "--json")
    assert inspect.returncode == 0, inspect.stderr
    t1 = next(t for t in json.loads(inspect.stdout)["tablets"] if t["id"] == "t1")
    assert all(r["durable_index"] is not None and r["durable_ts"] for r in t1["replicas"])

    # Both followers of t1 stop: the leader cannot get a majority fsync; the write is outcome unknown.
    # The lease outlives the stop by up to a second, so the write must arrive within it: if it
    # does not (a lease moving, a loaded machine), the leader refuses it unproposed (NoLeader,
    # nothing counted) and the scenario runs again.
    attempts: list[str] = []
    while len(attempts) < 5 and "outcome unknown" not in attempts:
        attempts.append(write_with_followers_stopped(cluster))
        cluster.wait_healthy()
    assert attempts[-1] == "outcome unknown", attempts
    final = tablet_json(cluster, "t1")
    assert final["not_durable_commits"] == 1, final
