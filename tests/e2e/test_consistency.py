"""External consistency and follower reads against a real cluster."""

from __future__ import annotations

import time

from hlc import Timestamp
from tests.e2e.harness import LocalCluster


def test_sequential_writes_through_different_nodes_get_increasing_timestamps(shared_cluster: LocalCluster) -> None:
    clients = [shared_cluster.client(home=node_id) for node_id in shared_cluster.node_ids]
    # Keys in every tablet, so the timestamps come from different leaders' clocks.
    keys = [b"\x10ext", b"\x50ext", b"\x90ext", b"\xd0ext"]
    previous = Timestamp.MIN
    for i in range(24):
        writer = clients[i % len(clients)]
        reader = clients[(i + 1) % len(clients)]
        key = keys[i % len(keys)]
        result = writer.put(key, f"{i}".encode())
        assert result.ts > previous, f"write {i} at {result.ts} not after {previous}"
        previous = result.ts
        seen = reader.get(key)  # a strong read started after the ack
        assert seen.value == f"{i}".encode() and seen.version_ts == result.ts
        assert seen.ts >= result.ts


def follower_reads(cluster: LocalCluster, timeout_s: float = 60.0) -> int:
    """The cluster's follower-read count, asking again while a busy node misses the status deadline."""
    deadline = time.monotonic() + timeout_s
    while None in (replies := cluster.statuses()).values():
        assert time.monotonic() < deadline, f"nodes did not answer status: {replies}"
        time.sleep(0.2)
    return sum(t.follower_reads for reply in replies.values() for t in reply.tablets)


def test_stale_reads_are_served_by_followers(shared_cluster: LocalCluster) -> None:
    client = shared_cluster.client()
    old = client.put(b"follower-key", b"old")
    time.sleep(0.2)
    new = client.put(b"follower-key", b"new")
    # A read in the past, between the two writes: the value is "old" however long the
    # reads below take (a read 1s stale would see "new" on a machine slower than that).
    between = Timestamp((old.ts.wall + new.ts.wall) // 2, 0)
    assert old.ts < between < new.ts
    leaders = shared_cluster.leaders()
    before = follower_reads(shared_cluster)
    served = []
    for node_id in shared_cluster.node_ids:
        result = shared_cluster.client(home=node_id).get(b"follower-key", at=between)
        assert result.value == b"old" and result.version_ts == old.ts and result.ts == between
        served.append(result.served_by)
    after = follower_reads(shared_cluster)
    tablet = next(t for t in shared_cluster.config.tablets if t.contains(b"follower-key"))
    assert any(node != leaders[tablet.id] for node in served), served
    assert after > before


def test_one_client_shared_by_many_tasks(shared_cluster: LocalCluster) -> None:
    """Connections opened lazily from worker tasks are owned by the client's own
    nursery (a regression: they were once entered by whichever task came first)."""
    import trio

    from txn.client import open_client

    async def main() -> list[bytes | None]:
        addresses = [n.address for n in shared_cluster.config.nodes]
        async with open_client(addresses, cluster_id=shared_cluster.config.cluster_id, tls=shared_cluster.tls) as client:
            results: list[bytes | None] = [None] * 32

            async def worker(i: int) -> None:
                key = bytes([i * 8]) + b"shared"  # spread over every tablet and leader
                await client.put(key, b"v%d" % i)
                results[i] = (await client.get(key)).value

            async with trio.open_nursery() as nursery:
                for i in range(32):
                    nursery.start_soon(worker, i)
        return results

    assert trio.run(main) == [b"v%d" % i for i in range(32)]
