"""A leader's read of one key waits only for commands that change that key (txn/tablet/leader.py).

Real node processes over TCP, max_offset 2 s, so a write's commit-wait is
long enough to read beside it. A write to one key of a tablet is sent; then a
transactional read and a strong read of ANOTHER key of the same tablet. Each
read's timestamp is above the write's (so the write was pending at the
leader when the read was served: a later write would have been assigned a
timestamp above the read's), and each answer arrives before the write's
commit-wait could have ended (its timestamp's wall time plus max_offset, on
this machine's clock, which the nodes share). Before the rule, both reads
waited out the other key's commit-wait. A read of the written key itself
still waits for it, and sees it.
"""

from __future__ import annotations

import time

import trio

from tests.e2e.harness import LocalCluster
from txn import api
from txn.client import open_client

MAX_OFFSET_NS = 2_000_000_000
WRITTEN, OTHER = b"alice", b"anna"  # one tablet (the default split's first: below "b")


async def reads_beside_a_write_in_commit_wait(cluster: LocalCluster) -> dict:
    addresses = [n.address for n in cluster.config.nodes]
    async with open_client(addresses, timeout_s=30, tls=cluster.tls, max_offset_ns=MAX_OFFSET_NS) as client:
        tablet = await client.tablet_for(WRITTEN)
        assert (await client.tablet_for(OTHER)).id == tablet.id, "the two keys must share a tablet"
        await client.put(OTHER, b"before")
        facts: dict = {}
        async with trio.open_nursery() as nursery:
            async def write() -> None:
                facts["write"] = await client.put(WRITTEN, b"new")

            nursery.start_soon(write)
            await trio.sleep(0.2)  # the write reaches the leader (checked below by the timestamps)
            priority = (await client.node_timestamp()).now
            txn_read = await client._send(
                tablet, lambda t: api.TxnReadRequest(tablet.id, "per-key", priority, OTHER, t),
                leader=True, is_write=False, timeout_s=30)
            facts["txn_read"], facts["txn_read_done_ns"] = txn_read, time.time_ns()
            strong = await client.get(OTHER, timeout_s=30)
            facts["strong"], facts["strong_done_ns"] = strong, time.time_ns()
        await client._send(tablet, lambda t: api.AbortRequest(tablet.id, "per-key", None, t), leader=True, is_write=True,
                           timeout_s=30)
        facts["written_key"] = await client.get(WRITTEN, timeout_s=30)
        return facts


def test_a_read_of_one_key_does_not_wait_out_another_keys_commit_wait(make_cluster) -> None:
    cluster = make_cluster(max_offset_ns=MAX_OFFSET_NS)
    facts = trio.run(reads_beside_a_write_in_commit_wait, cluster)
    write_ts = facts["write"].ts
    commit_wait_over_ns = write_ts.wall + MAX_OFFSET_NS
    reads = [("transactional", facts["txn_read"].value, facts["txn_read"].read_ts, facts["txn_read_done_ns"]),
             ("strong", facts["strong"].value, facts["strong"].ts, facts["strong_done_ns"])]
    for kind, value, read_ts, done_ns in reads:
        assert value == b"before"
        assert read_ts > write_ts, f"the write was not pending when the {kind} read was served: the test shows nothing"
        assert done_ns < commit_wait_over_ns, (
            f"the {kind} read of {OTHER!r} ended {(done_ns - write_ts.wall) / 1e9:.2f} s after the write to "
            f"{WRITTEN!r} was stamped: it waited out that write's commit-wait")
    assert facts["written_key"].value == b"new" and facts["written_key"].version_ts == write_ts
