"""After a refused two-phase commit the client frees its locks and asks for no abort decision.

The coordinator's leader prepares the other participants while it serves the commit request
(txn/tablet/transactions.py); once it answered `txn_aborted` nothing is left to decide, and a
participant it did prepare learns the abort from its coordinator when the client's abort reaches
it (presumed abort). Naming the coordinator in the aborts (`AbortRequest.coordinator_tablet`)
made it log an abort decision for every refused commit: under 24 clients on 30 accounts a
tablet, about as many Paxos writes and decision records as committed transfers. A fake
two-tablet cluster (pluggable dialer), no sockets."""

from __future__ import annotations

from typing import Any

import pytest

from hlc import HybridClock, Timestamp
from hlc.physical import SystemClock
from txn import api
from txn.client import open_client
from txn.client.errors import TxnAborted
from txn.client.transaction import open_transaction

from tests.txn.fake_node import FakeNode

ADDRESS = ("127.0.0.1", 7001)
ALICE = api.TabletInfo("t1", b"", b"m", ("n1",), "n1")
ZED = api.TabletInfo("t2", b"m", None, ("n1",), "n1")
TS = Timestamp(1_800_000_000_000_000_000, 0)


class RefusingCoordinator(FakeNode):
    """One node leading both tablets: reads answer, every commit is refused `txn_aborted`."""

    def __init__(self) -> None:
        self.received: list[Any] = []

    def answer(self, message: Any) -> Any:
        self.received.append(message)
        if isinstance(message, api.TabletMapRequest):
            return api.TabletMapReply("c1", 10_000_000, [api.NodeInfo("n1", *ADDRESS)], [ALICE, ZED])
        if isinstance(message, api.TxnReadRequest):
            return api.TxnReadReply(b"10", TS, TS, "n1", 7)
        if isinstance(message, api.CommitRequest):
            return api.ErrorReply(api.ErrorCode.TXN_ABORTED, "participant t2: wounded", None, None,
                                  api.AbortReason.WOUNDED)
        if isinstance(message, api.AbortRequest):
            return api.AbortReply(None)
        raise AssertionError(f"unexpected {message!r}")


async def test_a_refused_commit_frees_every_tablet_and_asks_no_decision() -> None:
    node = RefusingCoordinator()
    async with open_client([ADDRESS], cluster_id="c1", timeout_s=5.0, dial=node.dial,
                           clock=HybridClock(SystemClock(), 10_000_000)) as client:
        with pytest.raises(TxnAborted):
            async with open_transaction(client, TS) as tx:
                alice, zed = int(await tx.get(b"alice")), int(await tx.get(b"zed"))
                tx.put(b"alice", b"%d" % (alice - 1))
                tx.put(b"zed", b"%d" % (zed + 1))
    commits = [m for m in node.received if isinstance(m, api.CommitRequest)]
    assert len(commits) == 1 and commits[0].tablet_id == "t1" and commits[0].parts, node.received
    aborts = [m for m in node.received if isinstance(m, api.AbortRequest)]
    # Both touched tablets are told (their locks), after the commit's answer, and neither is asked
    # to log an abort decision.
    assert sorted(m.tablet_id for m in aborts) == ["t1", "t2"], node.received
    assert all(m.coordinator_tablet is None for m in aborts), aborts
    assert node.received.index(aborts[0]) > node.received.index(commits[0])
