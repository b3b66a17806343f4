"""Fault injection in the TCP transport (`FaultRequest`): frames to and from
blocked peers are dropped both ways or one way, client connections are never
blocked, and clearing the fault lets traffic through again at once."""

from __future__ import annotations

from contextlib import AsyncExitStack

import pytest
import trio

from tests.txn.test_transport import pair
from txn.net.messaging import PeerUnreachable, RpcTimeout
from txn.wire import Ping, Pong


async def test_blocking_both_ways_drops_sends_and_calls_until_cleared() -> None:
    async with AsyncExitStack() as stack:
        t1, t2, h1, h2 = await pair(stack)
        assert await t1.call("n2", Ping(b"a"), timeout_s=5) == Pong(b"n1:a")
        t1.block_peers({"n2"}, incoming=True, outgoing=True)
        t1.send("n2", Ping(b"lost"))
        with pytest.raises(RpcTimeout):
            await t1.call("n2", Ping(b"b"), timeout_s=0.3)
        with pytest.raises(RpcTimeout):  # n2's call reaches n1, whose answer n1 never sends
            await t2.call("n1", Ping(b"c"), timeout_s=0.3)
        t2.send("n1", Ping(b"lost too"))
        await trio.sleep(0.2)
        assert h2.messages == [] and h1.messages == []
        assert t1.fault_dropped >= 3
        t1.clear_blocked()
        assert await t1.call("n2", Ping(b"d"), timeout_s=5) == Pong(b"n1:d")
        t2.send("n1", Ping(b"arrives"))
        await h1.wait_for(1)


async def test_one_way_block_drops_only_that_direction() -> None:
    async with AsyncExitStack() as stack:
        t1, t2, h1, h2 = await pair(stack)
        t1.block_peers({"n2"}, incoming=True, outgoing=False)  # n1 hears nothing from n2
        t1.send("n2", Ping(b"out"))
        await h2.wait_for(1)  # n1 -> n2 still flows
        t2.send("n1", Ping(b"in"))
        await trio.sleep(0.2)
        assert h1.messages == []


async def test_unknown_peer_is_refused() -> None:
    async with AsyncExitStack() as stack:
        t1, _, _, _ = await pair(stack)
        with pytest.raises(PeerUnreachable):
            t1.block_peers({"n9"}, incoming=True, outgoing=True)
        assert not t1.blocked_incoming and not t1.blocked_outgoing
