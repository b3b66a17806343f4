"""The transaction protocol against real nodes, message by message (txn/api/txn.py).

These drive the node's side of 2PC directly, the way the client library
does, to pin what the tablets do at each step: a cross-tablet commit, a
participant left prepared by a vanished client (presumed abort through the
participant's recovery), the inspector's view of both, wound-wait, and the
client's path: one commit request, whose coordinator prepares the other
participants itself (a no vote, and bad parts, refused).
"""

from __future__ import annotations

import functools
import json

import pytest
import trio

from hlc import Timestamp
from tests.e2e.harness import LocalCluster
from tests.e2e.hermitage_steps import cluster_client
from txn import api
from txn.client import open_client
from txn.client.errors import ClientError, ReadFailed, Refused, TxnAborted


async def _txn_call(client, key: bytes, build):
    tablet = await client.tablet_for(key)
    return tablet, await client._send(tablet, build(tablet), leader=True, is_write=False, timeout_s=20)


def _addresses(cluster: LocalCluster) -> list[tuple[str, int]]:
    return [n.address for n in cluster.config.nodes]


async def cross_tablet_then_stuck(cluster: LocalCluster) -> dict:
    async with open_client(_addresses(cluster), timeout_s=20, tls=cluster.tls) as client:
        await client.put(b"alice", b"100")
        await client.put(b"zoe", b"0")
        priority = (await client._send(await client.tablet_for(b"alice"), lambda t: api.TimestampRequest(),
                                       leader=False, is_write=False, timeout_s=5)).now
        ta, read = await _txn_call(client, b"alice", lambda tab: lambda t: api.TxnReadRequest(tab.id, "x1", priority, b"alice", t))
        assert read.value == b"100"
        tz, _ = await _txn_call(client, b"zoe", lambda tab: lambda t: api.TxnReadRequest(tab.id, "x1", priority, b"zoe", t))
        assert ta.id != tz.id, "alice and zoe must be on different tablets for this test"
        _, vote_a = await _txn_call(client, b"alice", lambda tab: lambda t: api.PrepareRequest(
            tab.id, "x1", priority, ta.id, (api.KeyWrite(b"alice", b"90"),), (b"alice",), (), t))
        _, vote_z = await _txn_call(client, b"zoe", lambda tab: lambda t: api.PrepareRequest(
            tab.id, "x1", priority, ta.id, (api.KeyWrite(b"zoe", b"10"),), (b"zoe",), (), t))
        assert vote_z.prepare_ts >= vote_a.prepare_ts or vote_a.prepare_ts >= vote_z.prepare_ts
        _, commit = await _txn_call(client, b"alice", lambda tab: lambda t: api.CommitRequest(
            tab.id, "x1", priority, (api.ParticipantVote(ta.id, vote_a.prepare_ts), api.ParticipantVote(tz.id, vote_z.prepare_ts)), t))
        assert commit.commit_ts >= max(vote_a.prepare_ts, vote_z.prepare_ts)
        alice, zoe = await client.get(b"alice"), await client.get(b"zoe", timeout_s=20)
        # All or nothing, at one timestamp, on both tablets.
        assert (alice.value, zoe.value) == (b"90", b"10")
        assert alice.version_ts == zoe.version_ts == commit.commit_ts
        # A reader before the commit timestamp sees neither write.
        before = Timestamp(commit.commit_ts.wall - 1, 0)
        assert (await client.get(b"alice", at=before)).value == b"100"
        assert (await client.get(b"zoe", at=before)).value == b"0"
        # A client that prepares at zoe's tablet and vanishes: its coordinator
        # (alice's tablet) never heard of it.
        _, stuck = await _txn_call(client, b"zoe", lambda tab: lambda t: api.PrepareRequest(
            tab.id, "x2", priority, ta.id, (api.KeyWrite(b"zoe", b"999"),), (), (), t))
        return {"commit_ts": commit.commit_ts, "stuck_ts": stuck.prepare_ts, "coordinator": ta.id, "participant": tz.id}


async def read_after_presumed_abort(cluster: LocalCluster) -> bytes | None:
    async with open_client(_addresses(cluster), timeout_s=30, tls=cluster.tls) as client:
        # The strong read meets x2's intent and waits until recovery resolves it.
        return (await client.get(b"zoe", timeout_s=30)).value


def test_cross_tablet_commit_and_presumed_abort(shared_cluster: LocalCluster) -> None:
    facts = trio.run(cross_tablet_then_stuck, shared_cluster)
    # x2 stays prepared on the participant until its recovery asks the coordinator
    # (RECOVERY_AFTER_S, 5 s), so right away the inspector shows it there.
    shown_early = json.loads(shared_cluster.cli("inspect", "txn", "x2", "--json").stdout)
    early = [r for r in shown_early["replicas"] if r.get("tablet") == facts["participant"]]
    assert early and (any(r["prepared_ts"] for r in early) or shown_early["decision"] == "aborted"), shown_early
    assert trio.run(read_after_presumed_abort, shared_cluster) == b"10"
    shown = json.loads(shared_cluster.cli("inspect", "txn", "x2", "--json").stdout)
    assert shown["decision"] == "aborted" and shown["coordinator"] == facts["coordinator"], shown
    assert all(not r.get("prepared_ts") for r in shown["replicas"] if r.get("up", True)), json.dumps(shown)
    committed = json.loads(shared_cluster.cli("inspect", "txn", "x1", "--json").stdout)
    assert committed["decision"] == "committed" and committed["commit_ts"] == str(facts["commit_ts"])


async def client_transfer(cluster: LocalCluster) -> str:
    """A cross-tablet transaction through the client: the coordinator (alice's tablet) does not prepare."""
    async with open_client(_addresses(cluster), timeout_s=20, tls=cluster.tls) as client:
        async with client.transaction() as txn:
            txn.put(b"alice-2", b"1")
            txn.put(b"zoe-2", b"2")
        assert txn.commit_ts is not None
        return txn.txn_id


def test_the_inspector_counts_the_coordinators_own_writes(shared_cluster: LocalCluster) -> None:
    txn_id = trio.run(client_transfer, shared_cluster)
    shown = json.loads(shared_cluster.cli("inspect", "txn", txn_id, "--json").stdout)
    assert shown["decision"] == "committed", shown
    # The serving leader answered the commit after applying the decision; its record holds one write.
    leader = [r for r in shown["replicas"] if r.get("tablet") == shown["coordinator"] and r.get("serving")]
    assert len(leader) == 1 and leader[0]["writes"] == 1 and not leader[0]["prepared_ts"], json.dumps(shown)
    text = shared_cluster.cli("inspect", "txn", txn_id).stdout
    assert "decision committed (1 writes)" in text, text


async def wound_wait(cluster: LocalCluster) -> tuple[object, object]:
    async with open_client(_addresses(cluster), timeout_s=20, tls=cluster.tls) as client:
        old, young = Timestamp(1, 0), Timestamp(2, 0)
        await _txn_call(client, b"kite", lambda tab: lambda t: api.TxnReadRequest(tab.id, "young", young, b"kite", t))
        # The older transaction's exclusive lock wounds the younger reader...
        _, vote = await _txn_call(client, b"kite", lambda tab: lambda t: api.PrepareRequest(
            tab.id, "old", old, tab.id, (api.KeyWrite(b"kite", b"v"),), (), (), t))
        # ...which learns it on its next request, with the reason.
        tablet = await client.tablet_for(b"kite")
        try:
            await client._send(tablet, lambda t: api.TxnReadRequest(tablet.id, "young", young, b"kite2", t),
                               leader=True, is_write=False, timeout_s=5)
            wounded = None
        except Exception as error:  # the client reports the ErrorReply
            wounded = error
        await client._send(tablet, lambda t: api.AbortRequest(tablet.id, "old", tablet.id, t), leader=True, is_write=False, timeout_s=10)
        return vote, wounded


def test_an_older_transaction_wounds_a_younger_reader(shared_cluster: LocalCluster) -> None:
    vote, wounded = trio.run(wound_wait, shared_cluster)
    assert isinstance(vote, api.PrepareReply)
    assert wounded is not None and "wounded" in str(wounded), wounded


async def transfer_seen_by_the_client(cluster: LocalCluster) -> tuple[list[str], dict, object]:
    sent: list[str] = []

    async def record(message, send):
        if getattr(message, "txn_id", None) is not None:
            sent.append(type(message).__name__)
        return await send()

    async with cluster_client(cluster, gate=record, timeout_s=20) as client:
        await client.put(b"alice-3", b"100")
        await client.put(b"zoe-3", b"0")
        priority = (await client.node_timestamp()).now  # (the gated connections keep no node time)
        sent.clear()
        async with client.transaction(priority=priority) as txn:
            a = int(await txn.get(b"alice-3"))
            z = int(await txn.get(b"zoe-3"))
            txn.put(b"alice-3", b"%d" % (a - 7))
            txn.put(b"zoe-3", b"%d" % (z + 7))
        alice, zoe = await client.get(b"alice-3"), await client.get(b"zoe-3", timeout_s=20)
        versions = {"alice": (alice.value, alice.version_ts), "zoe": (zoe.value, zoe.version_ts)}
        return sent, versions, txn.commit_ts


def test_the_coordinator_prepares_the_other_participant(shared_cluster: LocalCluster) -> None:
    """A cross-tablet commit is one request from the client: its coordinator's leader sends the
    participant's `PrepareRequest` itself, node to node, and decides from its vote."""
    sent, versions, commit_ts = trio.run(transfer_seen_by_the_client, shared_cluster)
    assert sent == ["TxnReadRequest", "TxnReadRequest", "CommitRequest"], sent
    assert versions == {"alice": (b"93", commit_ts), "zoe": (b"7", commit_ts)}, versions


async def commit_with_parts(cluster: LocalCluster, txn_id: str, parts_for, *,
                            hold_zoe_for: str | None = None) -> tuple[object, bytes | None]:
    """A commit of alice-4 (coordinator) and zoe-4 with `parts_for(coordinator, participant)` as its
    parts; with `hold_zoe_for`, an older transaction holds a read lock on zoe-4 meanwhile."""
    async with open_client(_addresses(cluster), timeout_s=20, tls=cluster.tls) as client:
        now = (await client._send(await client.tablet_for(b"alice-4"), lambda t: api.TimestampRequest(),
                                  leader=False, is_write=False, timeout_s=5)).now
        ta, tz = await client.tablet_for(b"alice-4"), await client.tablet_for(b"zoe-4")
        if hold_zoe_for is not None:
            await _txn_call(client, b"zoe-4", lambda tab: lambda t: api.TxnReadRequest(tab.id, hold_zoe_for, Timestamp(1, 0), b"zoe-4", t))
        try:
            outcome: object = await client._send(ta, lambda t: api.CommitRequest(
                ta.id, txn_id, now, (), t, (api.KeyWrite(b"alice-4", b"a"),), (), (), parts_for(ta.id, tz.id)),
                leader=True, is_write=True, timeout_s=20)
        except ClientError as error:
            outcome = error
        if hold_zoe_for is not None:
            await _txn_call(client, b"zoe-4", lambda tab: lambda t: api.AbortRequest(tab.id, hold_zoe_for, None, t))
        await client._send(ta, lambda t: api.AbortRequest(ta.id, txn_id, ta.id, t), leader=True, is_write=False, timeout_s=10)
        # Nothing of the transaction is visible, and its coordinator holds no lock of it: a plain write goes through.
        await client.put(b"alice-4", b"after", timeout_s=20)
        return outcome, (await client.get(b"zoe-4", timeout_s=20)).value


def test_a_participant_that_votes_no_aborts_the_commit(shared_cluster: LocalCluster) -> None:
    zoe = lambda ta, tz: (api.ParticipantPart(tz, (api.KeyWrite(b"zoe-4", b"z"),), (), ()),)
    outcome, zoe_value = trio.run(functools.partial(commit_with_parts, shared_cluster, "x4", zoe, hold_zoe_for="old-4"))
    # An older transaction's lock at the participant: the prepare votes no at once (conflict).
    assert isinstance(outcome, TxnAborted) and outcome.reason == "conflict", outcome
    assert "participant" in str(outcome), outcome
    assert zoe_value is None


@pytest.mark.parametrize("parts", ["coordinator", "twice", "empty", "unknown"])
def test_a_commit_with_bad_parts_is_refused(shared_cluster: LocalCluster, parts: str) -> None:
    def build(ta, tz):
        zoe = api.ParticipantPart(tz, (api.KeyWrite(b"zoe-4", b"z"),), (), ())
        return {"coordinator": (api.ParticipantPart(ta, (api.KeyWrite(b"alice-4", b"b"),), (), ()),),
                "twice": (zoe, zoe), "empty": (api.ParticipantPart(tz, (), (), ()),),
                # Refused as it arrives: thousands of made-up tablets would each become a prepare task.
                "unknown": tuple(api.ParticipantPart(f"no-such-{i}", (), (b"k",), ()) for i in range(1000))}[parts]
    outcome, zoe_value = trio.run(commit_with_parts, shared_cluster, f"x4-{parts}", build)
    assert isinstance(outcome, Refused) and outcome.reply.code is api.ErrorCode.BAD_REQUEST, outcome
    if parts == "unknown":
        assert "not a tablet of this cluster" in outcome.reply.message, outcome.reply.message
    assert zoe_value is None


async def requests_with_long_ids(cluster: LocalCluster) -> dict[str, object]:
    """A transactional read, a commit and an abort naming a 129-byte transaction id, and a
    read naming a 128-byte one (then aborted); then a plain write, which must go through."""
    outcomes: dict[str, object] = {}
    long_id, longest_id = "t" * 129, "t" * 128
    async with open_client(_addresses(cluster), timeout_s=20, tls=cluster.tls) as client:
        tablet = await client.tablet_for(b"ids-1")
        requests = {
            "read": lambda t: api.TxnReadRequest(tablet.id, long_id, Timestamp(1, 0), b"ids-1", t),
            "commit": lambda t: api.OnePhaseCommitRequest(tablet.id, long_id, Timestamp(1, 0), (api.KeyWrite(b"ids-1", b"x"),),
                                                          (), (), t),
            "abort": lambda t: api.AbortRequest(tablet.id, long_id, None, t),
            "longest": lambda t: api.TxnReadRequest(tablet.id, longest_id, Timestamp(1, 0), b"ids-1", t),
        }
        for name, build in requests.items():
            try:
                outcomes[name] = await client._send(tablet, build, leader=True, is_write=False, timeout_s=20)
            except ClientError as error:
                outcomes[name] = error
        await client._send(tablet, lambda t: api.AbortRequest(tablet.id, longest_id, None, t), leader=True, is_write=False,
                           timeout_s=10)
        await client.put(b"ids-1", b"after", timeout_s=20)
        outcomes["value"] = (await client.get(b"ids-1", timeout_s=20)).value
    return outcomes


def test_a_transaction_id_over_128_bytes_is_refused(shared_cluster: LocalCluster) -> None:
    outcomes = trio.run(requests_with_long_ids, shared_cluster)
    for name in ("read", "commit", "abort"):
        refused = outcomes[name]
        assert isinstance(refused, Refused), (name, refused)  # ReadFailed, for a request sent as a read
        assert refused.reply.code is api.ErrorCode.BAD_REQUEST and "exceeds 128 bytes" in refused.reply.message, (name, refused)
    assert isinstance(outcomes["longest"], api.TxnReadReply), outcomes["longest"]
    assert outcomes["value"] == b"after"
