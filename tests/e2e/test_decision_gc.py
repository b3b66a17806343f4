"""A coordinator forgets commit records once every participant resolved them (txn/tablet/forgetting.py).

Real node processes over TCP, with `decision_retention` at 1 s. Twenty
cross-tablet transfers commit; each one's record vanishes from every replica
of the coordinator tablet (a `Forget` its leader logged; each replica's
`chronodb_txn_decisions_forgotten_total` counts at least twenty deletions,
so the records were there), while the balances stay exact and no replica is
left with anything prepared. An abort record the coordinator logged for a client
that gave up stays: abort records are never forgotten (a client's own
prepare and its later vote-carrying commit must still find it). The metric
counts what each replica deleted, and `inspect txn` says what a missing
record may mean.
"""

from __future__ import annotations

import time
import urllib.request

import trio
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.harness import LocalCluster
from tools.status import ask_nodes
from txn import api
from txn.client import open_client

RETENTION_NS = 1_000_000_000
TRANSFERS = 20
FORGET_DEADLINE_S = 60.0  # retention 1 s, a recovery round 0.5 s: seconds on a loaded box


async def transfers(cluster: LocalCluster) -> dict:
    addresses = [n.address for n in cluster.config.nodes]
    async with open_client(addresses, timeout_s=30, tls=cluster.tls) as client:
        alice, zoe = await client.tablet_for(b"alice"), await client.tablet_for(b"zoe")
        assert alice.id != zoe.id, "alice and zoe must be on different tablets for this test"
        await client.put(b"alice", b"100")
        await client.put(b"zoe", b"0")
        committed: list[str] = []
        for _ in range(TRANSFERS):
            attempts: list[str] = []

            async def move_one(tx) -> None:
                attempts.append(tx.txn_id)
                a = int(await tx.get(b"alice"))
                z = int(await tx.get(b"zoe"))
                tx.put(b"alice", b"%d" % (a - 1))  # alice's tablet coordinates: its key is written first
                tx.put(b"zoe", b"%d" % (z + 1))

            await client.run_transaction(move_one, max_attempts=20)
            committed.append(attempts[-1])
        # A client that gave up: its coordinator logs an abort record, which stays.
        await client._send(alice, lambda t: api.AbortRequest(alice.id, "gave-up-1", alice.id, t), leader=True,
                           is_write=True, timeout_s=30)
        return {"coordinator": alice.id, "committed": committed}


async def records(cluster: LocalCluster, txn_ids: list[str]) -> dict[str, list[tuple[str, str | None, bool]]]:
    """txn_id -> (tablet, its decision, prepared?) on every replica of every tablet."""
    found: dict[str, list[tuple[str, str | None, bool]]] = {}
    for txn_id in txn_ids:
        replies = await ask_nodes(cluster.config, {n.id: api.InspectTxnRequest(txn_id) for n in cluster.config.nodes},
                                  tls=cluster.tls)
        assert all(isinstance(reply, api.InspectTxnReply) for reply in replies.values()), replies
        found[txn_id] = [(info.tablet_id, info.decision, info.prepared_ts is not None)
                         for reply in replies.values() for info in reply.tablets]
    return found


def decisions(found: list[tuple[str, str | None, bool]], tablet_id: str) -> list[str | None]:
    return [decision for tablet, decision, _ in found if tablet == tablet_id]


def forgotten_counts(cluster: LocalCluster, tablet_id: str) -> list[float]:
    """Each node's chronodb_txn_decisions_forgotten for `tablet_id`."""
    counts = []
    for node in cluster.config.nodes:
        host, port = cluster.metrics_address(node.id)
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=30) as response:
            text = response.read().decode()
        counts.extend(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
                      if sample.name == "chronodb_txn_decisions_forgotten_total" and sample.labels.get("tablet") == tablet_id)
    return counts


async def balances(cluster: LocalCluster) -> tuple[bytes | None, bytes | None]:
    async with open_client([n.address for n in cluster.config.nodes], timeout_s=30, tls=cluster.tls) as client:
        return (await client.get(b"alice")).value, (await client.get(b"zoe")).value


def test_commit_records_are_forgotten_once_resolved_and_abort_records_stay(make_cluster) -> None:
    cluster = make_cluster(decision_retention_ns=RETENTION_NS)
    facts = trio.run(transfers, cluster)
    coordinator, committed = facts["coordinator"], facts["committed"]

    deadline = time.monotonic() + FORGET_DEADLINE_S
    while True:
        left = trio.run(records, cluster, committed)
        if all(decisions(found, coordinator) == [None] * 3 for found in left.values()):
            break
        held = {txn_id: decisions(found, coordinator) for txn_id, found in left.items()
                if decisions(found, coordinator) != [None] * 3}
        assert time.monotonic() < deadline, f"commit records still held after {FORGET_DEADLINE_S} s: {held}"
        time.sleep(0.5)
    assert not any(prepared for found in left.values() for _, _, prepared in found), left
    # Each replica of the coordinator tablet deleted them itself, by the Forget commands it applied.
    counts = forgotten_counts(cluster, coordinator)
    assert len(counts) == 3 and all(count >= TRANSFERS for count in counts), counts

    kept = trio.run(records, cluster, ["gave-up-1"])
    assert decisions(kept["gave-up-1"], coordinator) == ["aborted"] * 3, kept
    assert trio.run(balances, cluster) == (b"%d" % (100 - TRANSFERS), b"%d" % TRANSFERS)

    text = cluster.cli("inspect", "txn", committed[0]).stdout
    assert "no decision recorded" in text and "forgotten" in text, text
