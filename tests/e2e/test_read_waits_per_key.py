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
still waits for it, and sees it. An attempt whose write reached the leader
only after the reads (a loaded box) shows nothing, and is made again with
other keys.
"""

from __future__ import annotations

import time

import trio

from tests.e2e.harness import LocalCluster
from txn import api
from txn.client import open_client

MAX_OFFSET_NS = 2_000_000_000
ATTEMPTS = 5  # a write that reached the leader only after the reads (a loaded box) shows nothing: again


async def reads_beside_a_write_in_commit_wait(cluster: LocalCluster) -> dict:
    """The first attempt whose write was pending at the leader when both reads were served."""
    addresses = [n.address for n in cluster.config.nodes]
    async with open_client(addresses, timeout_s=30, tls=cluster.tls, max_offset_ns=MAX_OFFSET_NS) as client:
        for attempt in range(ATTEMPTS):
            written, other = b"alice-%d" % attempt, b"anna-%d" % attempt  # below "b": the default split's first tablet
            tablet = await client.tablet_for(written)
            assert (await client.tablet_for(other)).id == tablet.id, "the two keys must share a tablet"
            await client.put(other, b"before")
            facts: dict = {"written": written, "other": other}
            txn_id = f"per-key-{attempt}"
            async with trio.open_nursery() as nursery:
                async def write() -> None:
                    facts["write"] = await client.put(written, b"new")

                nursery.start_soon(write)
                await trio.sleep(0.2)  # the write reaches the leader first (checked by the timestamps)
                priority = (await client.node_timestamp()).now
                txn_read = await client._send(
                    tablet, lambda t: api.TxnReadRequest(tablet.id, txn_id, priority, other, t),
                    leader=True, is_write=False, timeout_s=30)
                facts["txn_read"], facts["txn_read_done_ns"] = txn_read, time.time_ns()
                strong = await client.get(other, timeout_s=30)
                facts["strong"], facts["strong_done_ns"] = strong, time.time_ns()
            await client._send(tablet, lambda t: api.AbortRequest(tablet.id, txn_id, None, t), leader=True,
                               is_write=True, timeout_s=30)
            facts["written_key"] = await client.get(written, timeout_s=30)
            write_ts = facts["write"].ts
            if txn_read.read_ts > write_ts and strong.ts > write_ts:
                return facts
    raise AssertionError(f"in {ATTEMPTS} attempts the write never reached the leader before the reads")


def test_a_read_of_one_key_does_not_wait_out_another_keys_commit_wait(make_cluster) -> None:
    cluster = make_cluster(max_offset_ns=MAX_OFFSET_NS)
    facts = trio.run(reads_beside_a_write_in_commit_wait, cluster)
    write_ts = facts["write"].ts
    commit_wait_over_ns = write_ts.wall + MAX_OFFSET_NS
    reads = [("transactional", facts["txn_read"].value, facts["txn_read_done_ns"]),
             ("strong", facts["strong"].value, facts["strong_done_ns"])]
    for kind, value, done_ns in reads:
        assert value == b"before"
        assert done_ns < commit_wait_over_ns, (
            f"the {kind} read of {facts['other']!r} ended {(done_ns - write_ts.wall) / 1e9:.2f} s after the write to "
            f"{facts['written']!r} was stamped: it waited out that write's commit-wait")
    assert facts["written_key"].value == b"new" and facts["written_key"].version_ts == write_ts
