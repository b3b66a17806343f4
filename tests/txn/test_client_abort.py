"""After a refused two-phase commit the client frees its locks and asks for no abort decision.

The coordinator's leader prepares the other participants while it serves the commit request
(txn/tablet/transactions.py); once it answered `txn_aborted` nothing is left to decide, and a
participant it did prepare learns the abort from its coordinator when the client's abort reaches
it (presumed abort). Naming the coordinator in the aborts (`AbortRequest.coordinator_tablet`)
made it log an abort decision for every refused commit: under 24 clients on 30 accounts a
tablet, about as many Paxos writes and decision records as committed transfers. A fake
two-tablet cluster (pluggable dialer), no sockets."""

from __future__ import annotations

import pytest

from hlc import HybridClock
from hlc.physical import SystemClock
from txn import api
from txn.client import open_client
from txn.client.errors import TxnAborted
from txn.client.transaction import open_transaction

from tests.txn.fake_node import ADDRESS, TS, TwoTablets


class RefusingCoordinator(TwoTablets):
    """Reads answer, every commit is refused `txn_aborted`."""

    def commit(self, message: api.CommitRequest) -> api.ErrorReply:
        return api.ErrorReply(api.ErrorCode.TXN_ABORTED, "participant t2: wounded", None, None,
                              api.AbortReason.WOUNDED)


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
