"""A follower that missed more than the log keeps catches up by snapshot, on real nodes, also
when the coordinator tablet holds more transaction decisions than one frame can carry.

Decisions are never deleted (ARCHITECTURE.md, known limits), so a busy coordinator tablet
holds hundreds of thousands. Until 12-05 a snapshot carried them all in its header, one Paxos
message: past the 16 MiB frame bound (about 270,000 decisions of 63 bytes) the follower's
transport refused the frame and closed the connection, the leader sent it again, and the
follower never caught up. Here n1's and n2's t1 replicas are given 300,000 decision records
(18.9 MB of them) before the cluster starts. n3 stays down from the start (so t1's leader is
one that holds them) while enough writes go to t1 that the leader truncates its log past n3.
Started, n3 must install the snapshot, so hold every decision (it had none of them), and
keep up.
"""

from __future__ import annotations

import time

import trio

from hlc import Timestamp
from mvcc.engine import Batch
from tests.e2e.harness import LocalCluster
from txn.client import open_client
from txn.node.rebuild import TabletEngines
from txn.tablet.txn_records import DECISION_PREFIX, DecisionRecord, encode_decision

DECISIONS = 300_000
WRITES = 3_200  # past truncate_threshold_entries (2,000) + truncate_keep_entries (1,000) of t1's log
WRITERS = 32
CATCH_UP_S = 120.0


def give_decisions(cluster: LocalCluster, tablet_id: str, node_ids: list[str]) -> int:
    """Put DECISIONS decision records in the nodes' replicas of `tablet_id` (nodes stopped);
    returns their bytes as a snapshot carries them (key and value)."""
    value = encode_decision(DecisionRecord(True, Timestamp(1_700_000_000_000_000_000, 0), ("t3",), 1))
    total = 0
    for node_id in node_ids:
        engines = TabletEngines.open_all(cluster.data_dir, cluster.config, node_id)
        try:
            engine = engines.engines[tablet_id]
            for start in range(0, DECISIONS, 10_000):
                batch = Batch()
                for i in range(start, start + 10_000):
                    key = DECISION_PREFIX + f"client-token-0123456789abcdef-{i:07d}".encode()
                    batch.put(key, value)
                    total += len(key) + len(value)
                engine.apply(batch, sync=True)
        finally:
            engines.close()
    return total // len(node_ids)


async def write_many(cluster: LocalCluster) -> None:
    addresses = [n.address for n in cluster.config.nodes]
    async with open_client(addresses, cluster_id=cluster.config.cluster_id, timeout_s=10.0, tls=cluster.tls) as client:
        async def writer(number: int) -> None:
            for i in range(number, WRITES, WRITERS):
                await client.put(f"0s{i:05d}".encode(), b"v%d" % i)  # first byte < 0x40: t1

        async with trio.open_nursery() as nursery:
            for number in range(WRITERS):
                nursery.start_soon(writer, number)


def applied(cluster: LocalCluster, node_id: str, tablet_id: str) -> int | None:
    status = cluster.statuses().get(node_id)
    if status is None:
        return None
    return {s.id: s.applied_index for s in status.tablets}.get(tablet_id)


def test_a_follower_catches_up_by_snapshot_past_one_frame_of_decisions(fresh_cluster: LocalCluster) -> None:
    cluster = fresh_cluster
    cluster.stop_all()
    carried = give_decisions(cluster, "t1", ["n1", "n2"])
    assert carried > 16 << 20, "more than one frame's worth of decisions"
    cluster.start("n1")  # n3 stays down: t1 is led by n1 or n2, which hold the decisions
    cluster.start("n2")
    deadline = time.monotonic() + 60
    while cluster.leaders().get("t1") not in ("n1", "n2"):
        assert time.monotonic() < deadline, f"no leader of t1 on n1 or n2:\n{cluster.logs_tail()}"
        time.sleep(0.2)
    trio.run(write_many, cluster)
    leader = cluster.leaders()["t1"]
    assert leader is not None and leader != "n3"
    target = applied(cluster, leader, "t1")
    assert target is not None and target >= WRITES
    cluster.start("n3")
    deadline = time.monotonic() + CATCH_UP_S
    while (applied(cluster, "n3", "t1") or 0) < target:
        assert time.monotonic() < deadline, (
            f"n3 did not catch up with t1 ({applied(cluster, 'n3', 't1')} of {target} applied):\n{cluster.logs_tail()}")
        time.sleep(0.5)
    # It installed a snapshot (the log no longer held what it missed), decisions included.
    rows = cluster.client(home="n3", timeout_s=15).scan(b"0s", b"0t")
    assert len(rows.rows) == WRITES
    cluster.kill("n3")
    engines = TabletEngines.open_all(cluster.data_dir, cluster.config, "n3")
    try:
        engine = engines.engines["t1"]
        held = sum(1 for _ in engine.iterate(DECISION_PREFIX, DECISION_PREFIX[:-1] + b"0"))
    finally:
        engines.close()
    assert held == DECISIONS
