"""The `async with` of a transaction (`open_transaction`, txn/client/transaction.py `TransactionBlock`):
what each way of leaving the block sends and raises. A fake one-node cluster (pluggable dialer),
no sockets.

- The block ends normally: one commit request, no abort.
- The block raises: an abort to every tablet it touched, no commit, and the block's own exception
  goes on (the same object).
- The block raises after a leader had already aborted the transaction (its abort reply says
  `already_aborted`: the reads since were not protected by locks): `TxnAborted` with that
  reason, chained from the block's exception, so `run_transaction` retries it."""

from __future__ import annotations

from typing import Any

import pytest

from hlc import HybridClock
from hlc.physical import SystemClock
from txn import api
from txn.client import open_client
from txn.client.errors import TxnAborted
from txn.client.transaction import open_transaction

from tests.txn.fake_node import ADDRESS, TS, TwoTablets


class OneNode(TwoTablets):
    """Reads answer, commits commit, aborts say `already_aborted`."""

    def commit(self, message: api.CommitRequest) -> api.CommitReply:
        return api.CommitReply(TS, 0)

    def kinds(self) -> list[str]:
        return [type(m).__name__ for m in self.received if not isinstance(m, api.TabletMapRequest)]


async def run_block(node: OneNode, fail_with: BaseException | None) -> Any:
    async with open_client([ADDRESS], cluster_id="c1", timeout_s=5.0, dial=node.dial,
                           clock=HybridClock(SystemClock(), 10_000_000)) as client:
        async with open_transaction(client, TS) as tx:
            await tx.get(b"alice")
            await tx.get(b"zed")
            tx.put(b"alice", b"9")
            tx.put(b"zed", b"11")
            if fail_with is not None:
                raise fail_with
        return tx


async def test_a_block_that_ends_commits_once() -> None:
    node = OneNode()
    tx = await run_block(node, None)
    assert tx.state == "committed" and tx.commit_ts == TS
    assert node.kinds() == ["TxnReadRequest", "TxnReadRequest", "CommitRequest"], node.received


async def test_a_block_that_raises_aborts_everywhere_and_its_exception_goes_on() -> None:
    node = OneNode()
    failure = ValueError("the caller's own error")
    with pytest.raises(ValueError) as raised:
        await run_block(node, failure)
    assert raised.value is failure
    assert "CommitRequest" not in node.kinds(), node.received
    assert sorted(m.tablet_id for m in node.received if isinstance(m, api.AbortRequest)) == ["t1", "t2"]


async def test_a_block_that_raises_after_a_wound_is_reported_aborted() -> None:
    node = OneNode(already_aborted="wounded")
    failure = ValueError("a zombie read's inconsistent values")
    with pytest.raises(TxnAborted) as raised:
        await run_block(node, failure)
    assert raised.value.reason == "wounded" and raised.value.__cause__ is failure
    assert "CommitRequest" not in node.kinds(), node.received


async def test_a_txn_aborted_from_the_block_is_not_rewrapped() -> None:
    node = OneNode(already_aborted="wounded")
    failure = TxnAborted("x", "lost_locks", "raised by the block")
    with pytest.raises(TxnAborted) as raised:
        await run_block(node, failure)
    assert raised.value is failure
