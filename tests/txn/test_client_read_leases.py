"""A transaction's reads of one tablet must all come under one leader's lease.

Shared locks live in the serving leader's memory; a new lease starts without
them. A transaction that read a key under one lease and then read again
under another (re-taking the lock there) would pass the commit's check of
the locks it holds now, although another transaction may have written the
key in between: `chronodb verify --workload list-append --nemesis
kill,partition` found that as G-single (a key read twice in one attempt,
before and after a writer's commit). The client aborts such an attempt
(`lost_locks`). A fake one-node cluster (pluggable dialer), no sockets."""

from __future__ import annotations

from typing import Any

import pytest

from hlc import HybridClock, Timestamp
from hlc.physical import SystemClock
from txn import api
from txn.client import open_client
from txn.client.errors import ClientError, TxnAborted
from txn.client.transaction import open_transaction

from tests.txn.fake_node import FakeNode

ADDRESS = ("127.0.0.1", 7001)
TABLET = api.TabletInfo("t1", b"", None, ("n1",), "n1")
TS = Timestamp(1_800_000_000_000_000_000, 0)


class FakeLeader(FakeNode):
    def __init__(self) -> None:
        self.lease = 111
        self.received: list[str] = []

    def answer(self, message: Any) -> Any:
        self.received.append(type(message).__name__)
        if isinstance(message, api.TabletMapRequest):
            return api.TabletMapReply("c1", 10_000_000, [api.NodeInfo("n1", *ADDRESS)], [TABLET])
        if isinstance(message, api.TxnReadRequest):
            return api.TxnReadReply(b"v", TS, TS, "n1", self.lease)
        if isinstance(message, api.TxnScanRequest):
            return api.TxnScanReply((), TS, "n1", False, self.lease)
        if isinstance(message, api.OnePhaseCommitRequest):
            return api.CommitReply(TS, 0)
        if isinstance(message, api.AbortRequest):
            return api.AbortReply(None)
        raise AssertionError(f"unexpected {message!r}")


def client_of(leader: FakeLeader) -> Any:
    return open_client([ADDRESS], cluster_id="c1", timeout_s=5.0, dial=leader.dial,
                       clock=HybridClock(SystemClock(), 10_000_000))


async def test_reads_under_one_lease_commit() -> None:
    leader = FakeLeader()
    async with client_of(leader) as client:
        async with open_transaction(client, TS) as tx:
            assert await tx.get(b"k") == b"v"
            assert await tx.get(b"j") == b"v"
            tx.put(b"k", b"w")
        assert tx.state == "committed"
    assert "OnePhaseCommitRequest" in leader.received and "AbortRequest" not in leader.received


@pytest.mark.parametrize("second", ["get", "scan"])
async def test_a_read_under_a_new_lease_aborts_the_attempt_as_lost_locks(second: str) -> None:
    leader = FakeLeader()
    async with client_of(leader) as client:
        tx_seen = []
        with pytest.raises(TxnAborted) as raised:
            async with open_transaction(client, TS) as tx:
                tx_seen.append(tx)
                await tx.get(b"k")
                leader.lease = 222  # the same node leads again under a new lease: its locks were cleared
                if second == "get":
                    await tx.get(b"k")  # the same key read again (locked again, under the new lease)
                else:
                    await tx.scan(b"", None)
                tx.put(b"k", b"w")
        assert raised.value.reason == "lost_locks"
        [tx] = tx_seen
        assert tx.state == "aborted"
        with pytest.raises(ClientError):
            await tx.commit()  # nothing of it may commit, even if the caller caught the error
    assert "OnePhaseCommitRequest" not in leader.received and "AbortRequest" in leader.received


async def test_a_node_that_says_no_lease_is_not_held_against_the_reads() -> None:
    leader = FakeLeader()
    leader.lease = 0
    async with client_of(leader) as client:
        async with open_transaction(client, TS) as tx:
            await tx.get(b"k")
            await tx.get(b"k")
            tx.put(b"k", b"w")
        assert tx.state == "committed"
