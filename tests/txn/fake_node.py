"""A fake node for client tests: the client's pluggable dialer gets connections whose calls the
test's `answer(message)` answers, in the caller's task after a checkpoint. No sockets."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import trio

from hlc import HybridClock


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
