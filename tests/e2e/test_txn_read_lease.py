"""A transaction whose tablet changed leaders between two of its reads does not commit.

Real nodes: a transaction reads a key (a shared lock at the tablet's leader),
the leader is killed (SIGKILL: its lock table dies with it), another client
writes the key under the new leader, and the transaction reads the key again
(a lock again, at the new leader). Before 12-05 it could then commit its own
write on top of the stale first read, since the commit checks the locks held
now (`chronodb verify --workload list-append --nemesis kill,partition` found it
as G-single). The reads' replies name their leases, and the client aborts the
attempt as `lost_locks` (txn/client/transaction.py `_lost_locks`)."""

from __future__ import annotations

import pytest
import trio

from tests.e2e.harness import LocalCluster
from txn.client import open_client
from txn.client.errors import TxnAborted
from txn.client.transaction import open_transaction

KEY = b"a-lease-key"


def test_a_read_after_the_leader_changed_aborts_the_transaction(fresh_cluster: LocalCluster) -> None:
    cluster = fresh_cluster
    addresses = [n.address for n in cluster.config.nodes]

    def client():
        return open_client(addresses, cluster_id=cluster.config.cluster_id, timeout_s=30.0, tls=cluster.tls)

    async def scenario() -> tuple[str, str, bytes | None]:
        async with client() as reader:
            await reader.put(KEY, b"v1")
            tablet = await reader.tablet_for(KEY)
            with pytest.raises(TxnAborted) as raised:
                async with open_transaction(reader) as tx:
                    assert await tx.get(KEY) == b"v1"
                    first_leader = reader.leaders[tablet.id]
                    await trio.to_thread.run_sync(cluster.kill, first_leader)
                    # A client dialing after the kill: its write cannot be left unknown on a dead connection.
                    async with client() as writer:
                        await writer.put(KEY, b"v2")  # under the new leader: the first read's lock is gone
                    assert await tx.get(KEY) == b"v2", "unreachable: the attempt must abort here"
                    tx.put(KEY, b"v1+stale")
            assert tx.state == "aborted"
            return first_leader, raised.value.reason, (await reader.get(KEY)).value

    first_leader, reason, final = trio.run(scenario)
    assert reason == "lost_locks"
    assert final == b"v2", "nothing of the aborted transaction was written"
