"""A fake node for client tests: the client's pluggable dialer gets connections whose calls the
test's `answer(message)` answers, in the caller's task after a checkpoint. No sockets.

`TwoTablets` is a node leading two tablets (keys below b"m" on t1, the rest on t2) that answers
the map, reads and aborts; a test subclass says how it answers a commit."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import trio

from hlc import HybridClock, Timestamp
from txn import api


class FakeNode:
    """Subclasses answer each request (`answer`); `dial` is what `open_client(dial=...)` takes."""

    def answer(self, message: Any) -> Any:
        raise NotImplementedError

    def dial(self, address: tuple[str, int], cluster_id: str | None, clock: HybridClock) -> Any:
        return self._connection()

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator["FakeConnection"]:
        yield FakeConnection(self)


class FakeConnection:
    cluster_id = "c1"
    broken = None
    node_time = None

    def __init__(self, node: FakeNode) -> None:
        self.node = node

    async def call(self, message: Any, *, timeout_s: float) -> Any:
        await trio.sleep(0)
        return self.node.answer(message)


ADDRESS = ("127.0.0.1", 7001)
ALICE = api.TabletInfo("t1", b"", b"m", ("n1",), "n1")
ZED = api.TabletInfo("t2", b"m", None, ("n1",), "n1")
TS = Timestamp(1_800_000_000_000_000_000, 0)


class TwoTablets(FakeNode):
    """One node leading t1 and t2: every read answers b"10"; an abort's reply says
    `already_aborted`; `commit` answers a CommitRequest. Keeps every request in `received`."""

    def __init__(self, already_aborted: str | None = None) -> None:
        self.already_aborted = already_aborted
        self.received: list[Any] = []

    def commit(self, message: api.CommitRequest) -> Any:
        raise NotImplementedError

    def answer(self, message: Any) -> Any:
        self.received.append(message)
        if isinstance(message, api.TabletMapRequest):
            return api.TabletMapReply("c1", 10_000_000, [api.NodeInfo("n1", *ADDRESS)], [ALICE, ZED])
        if isinstance(message, api.TxnReadRequest):
            return api.TxnReadReply(b"10", TS, TS, "n1", 7)
        if isinstance(message, api.CommitRequest):
            return self.commit(message)
        if isinstance(message, api.AbortRequest):
            return api.AbortReply(self.already_aborted)
        raise AssertionError(f"unexpected {message!r}")
