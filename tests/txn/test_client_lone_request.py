"""A client's request goes at once only when it is alone (txn/net/client_connection.py).

Alone: no other call of the connection waits, and the last read answered at
most one call. After a read that answered several, the first new request
also finds no other call waiting, but the callers just answered are about to
send theirs: sent at once, it would leave without them (64 clients' reads
at 12-04: 10-13% fewer a second). The node's end here is a memory stream the
test reads and answers by hand, so which replies arrive together is exact.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from tests.txn.test_transport import new_clock
from txn import wire
from txn.net.client_connection import ClientConnection
from txn.net.connection import Connection
from txn.wire import Envelope, FrameDecoder, Kind, Ping, Pong


class NodeEnd:
    """The node's side of the stream: reads requests, answers them when told, several in one write if asked."""

    def __init__(self, stream: trio.testing.MemoryReceiveStream | Any) -> None:
        self.stream = stream
        self.decoder = FrameDecoder(1 << 20)
        self.requests: list[int] = []

    async def read_requests(self, count: int) -> None:
        while len(self.requests) < count:
            for payload in self.decoder.feed(await self.stream.receive_some(1 << 16)):
                envelope = wire.decode(payload)
                assert envelope.kind is Kind.REQUEST
                self.requests.append(envelope.request_id)

    async def answer(self, how_many: int) -> None:
        """Answer the oldest `how_many` requests read, in one write (read together by the client)."""
        answered, self.requests = self.requests[:how_many], self.requests[how_many:]
        clock = new_clock()
        await self.stream.send_all(b"".join(
            wire.encode_frame(wire.encode(Envelope(clock.now(), Kind.RESPONSE, request_id, Pong(b""))))
            for request_id in answered))


async def test_a_request_after_a_read_that_answered_several_is_not_sent_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    client_stream, node_stream = trio.testing.memory_stream_pair()
    connection = Connection(client_stream, "test", max_frame_bytes=1 << 20)
    client = ClientConnection(connection, new_clock(), "cluster", "n1")
    node = NodeEnd(node_stream)
    flags: list[bool] = []
    write = Connection.write

    def recording_write(self: Connection, frame: bytes, *, alone: bool = False) -> None:
        flags.append(alone)
        write(self, frame, alone=alone)

    monkeypatch.setattr(Connection, "write", recording_write)

    async def call() -> None:
        assert isinstance(await client.call(Ping(b""), timeout_s=10), Pong)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client._read)
            nursery.start_soon(client._write)

            async with trio.open_nursery() as calls:  # a lone call, answered alone
                calls.start_soon(call)
                await node.read_requests(1)
                await node.answer(1)
            assert flags == [True]

            async with trio.open_nursery() as calls:  # two calls at once, answered in one read
                calls.start_soon(call)
                calls.start_soon(call)
                await node.read_requests(2)
                await node.answer(2)
            assert flags[1:] == [True, False]  # the first alone (the read before answered one), the second not

            async with trio.open_nursery() as calls:  # no other call waits, but the last read answered two
                calls.start_soon(call)
                await node.read_requests(1)
                await node.answer(1)
            assert flags[3:] == [False]

            async with trio.open_nursery() as calls:  # the last read answered one: alone again
                calls.start_soon(call)
                await node.read_requests(1)
                await node.answer(1)
            assert flags[4:] == [True]
            nursery.cancel_scope.cancel()
