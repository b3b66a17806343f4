"""A two-phase commit refused by its participant leaves no abort decision behind (real nodes).

An older transaction holds a shared lock on zed's key (tablet t4); a younger one reads alice
(t1) and writes both. Its coordinator (t1) takes alice's lock and prepares t4, whose prepare
meets the older unprepared holder and votes no at once: the commit is refused `txn_aborted`
with nothing prepared anywhere. The client then frees its locks at both tablets and asks for no
decision (txn/client/transaction.py): the coordinator logs no `Decide(abort)`, where the client
before 12-06 made it log one per refused commit (the mutant fails this test). The older
transaction then commits, and the younger one left nothing.
"""

from __future__ import annotations

import pytest
import trio

from hlc import Timestamp
from tests.e2e.harness import LocalCluster
from tests.e2e.test_metrics import cluster_total, scrape_all
from txn.client import open_client
from txn.client.errors import TxnAborted
from txn.client.transaction import open_transaction

pytestmark = pytest.mark.e2e

ALICE, ZED = b"alice-refused", b"zed-refused"  # tablets t1 and t4 (shared_cluster's layout)


def abort_decisions(cluster: LocalCluster) -> float:
    """Abort decisions t1's replicas logged because an `AbortRequest` named t1 the coordinator (the
    presumed ones are left out: an earlier test's stuck participant may ask t1 at any time)."""
    return cluster_total(scrape_all(cluster), "chronodb_txn_abort_decisions_total", tablet="t1", cause="client")


async def refused_then_older_commits(cluster: LocalCluster) -> dict:
    async with open_client([n.address for n in cluster.config.nodes], timeout_s=20, tls=cluster.tls) as client:
        await client.put(ALICE, b"10")
        await client.put(ZED, b"10")
        assert (await client.tablet_for(ALICE)).id == "t1" and (await client.tablet_for(ZED)).id == "t4"
        older = await client.node_now()
        younger = Timestamp(older.wall + 1_000_000_000, 0)
        # Counted around both transactions, not inside them: the holder's lock must not sit idle
        # (TXN_IDLE_NS) while the nodes are scraped.
        before = await trio.to_thread.run_sync(abort_decisions, cluster)
        async with open_transaction(client, older) as holder:
            assert await holder.get(ZED) == b"10"  # shared lock on zed, unprepared
            with pytest.raises(TxnAborted) as refused:
                async with open_transaction(client, younger) as tx:
                    alice = int(await tx.get(ALICE))
                    tx.put(ALICE, b"%d" % (alice - 1))
                    tx.put(ZED, b"%d" % (int(await tx.get(ZED)) + 1))
            holder.put(ZED, b"20")
        committed = holder.commit_ts
        after = await trio.to_thread.run_sync(abort_decisions, cluster)
        return {"refused": str(refused.value), "decisions": after - before, "committed": committed,
                "alice": (await client.get(ALICE)).value, "zed": (await client.get(ZED)).value}


def test_a_refused_commit_logs_no_abort_decision(shared_cluster: LocalCluster) -> None:
    result = trio.run(refused_then_older_commits, shared_cluster)
    assert "participant t4" in result["refused"], result
    assert result["decisions"] == 0, result
    # The older transaction was not held up by the younger's leftovers; the younger wrote nothing.
    assert result["committed"] is not None, result
    assert (result["alice"], result["zed"]) == (b"10", b"20"), result
