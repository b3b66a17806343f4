"""The simulated network under the autojump clock: exact virtual times,
partitions (symmetric and one-way), crash and restart, FIFO links, HLC
rejection, calls and their timeouts."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from hlc import HybridClock
from hlc.physical import VirtualClock
from txn.net.messaging import PeerUnreachable, RemoteError, RpcTimeout, request_arrival
from txn.net.simnet import SimNetConfig, SimNetwork
from txn.wire import Ping, Pong

MS = 1_000_000


class Recorder:
    def __init__(self) -> None:
        self.got: list[tuple[int, str, bytes]] = []

    def handle_message(self, src: str, msg: Any) -> None:
        self.got.append((round(trio.current_time() * 1000), src, msg.payload))

    async def handle_request(self, src: str, msg: Any) -> Any:
        if msg.payload == b"boom":
            raise KeyError("nope")
        await trio.sleep(0.002)
        return Pong(msg.payload)


FIXED = SimNetConfig(latency_ns_min=3 * MS, latency_ns_max=3 * MS)


async def test_delivery_partition_heal_and_one_way(autojump_clock: Any) -> None:
    net = SimNetwork(1, FIXED)
    a, b = Recorder(), Recorder()
    ta, tb = net.endpoint("a", a), net.endpoint("b", b)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(net.pump)
        ta.send("b", Ping(b"1"))
        await trio.sleep(0.01)
        net.partition(["a"], ["b"], one_way=True)
        ta.send("b", Ping(b"2"))
        tb.send("a", Ping(b"3"))
        await trio.sleep(0.01)
        net.heal()
        ta.send("b", Ping(b"4"))
        await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert b.got == [(3, "a", b"1"), (23, "a", b"4")]
    assert a.got == [(13, "b", b"3")]
    assert any("lost (partition)" in line for line in net.trace())


async def test_calls_errors_and_timeouts(autojump_clock: Any) -> None:
    net = SimNetwork(2, FIXED)
    ta = net.endpoint("a", Recorder())
    net.endpoint("b", Recorder())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(net.pump)
        start = trio.current_time()
        assert await ta.call("b", Ping(b"x"), timeout_s=1) == Pong(b"x")
        assert trio.current_time() - start == pytest.approx(0.008)
        with pytest.raises(RemoteError, match="KeyError"):
            await ta.call("b", Ping(b"boom"), timeout_s=1)
        net.partition(["a"], ["b"])
        with pytest.raises(RpcTimeout):
            await ta.call("b", Ping(b"x"), timeout_s=0.05)
        assert ta.statistics().pending_calls == 0
        nursery.cancel_scope.cancel()


async def test_crash_drops_queued_traffic_and_restart_reconnects(autojump_clock: Any) -> None:
    net = SimNetwork(3, FIXED)
    a, b = Recorder(), Recorder()
    ta = net.endpoint("a", a)
    tb = net.endpoint("b", b)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(net.pump)
        ta.send("b", Ping(b"queued"))
        await trio.sleep(0.001)
        net.crash("b")
        await trio.sleep(0.01)
        with pytest.raises(PeerUnreachable):
            await tb.call("a", Ping(b""), timeout_s=1)
        net.restart("b")
        b2 = Recorder()
        assert net.endpoint("b", b2) is tb
        ta.send("b", Ping(b"after"))
        await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert b.got == [] and [payload for _, _, payload in b2.got] == [b"after"]
    assert any("lost (receiver crashed)" in line for line in net.trace())


async def test_fifo_links_keep_order_and_duplicates_arrive_twice(autojump_clock: Any) -> None:
    net = SimNetwork(4, SimNetConfig(latency_ns_min=1 * MS, latency_ns_max=50 * MS, reorder=False,
                                     duplicate_rate=0.3))
    b = Recorder()
    ta = net.endpoint("a", Recorder())
    net.endpoint("b", b)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(net.pump)
        for i in range(40):
            ta.send("b", Ping(bytes([i])))
        await trio.sleep(0.2)
        nursery.cancel_scope.cancel()
    firsts = list(dict.fromkeys(payload for _, _, payload in b.got))
    assert firsts == [bytes([i]) for i in range(40)]
    assert len(b.got) > 40, "some messages were duplicated"


async def test_clock_rejection_is_counted(autojump_clock: Any) -> None:
    net = SimNetwork(5, FIXED)
    b = Recorder()
    ahead = HybridClock(VirtualClock(offset_ns=100 * MS), max_offset_ns=10 * MS)
    ta = net.endpoint("a", Recorder(), ahead)
    tb = net.endpoint("b", b, HybridClock(VirtualClock(), max_offset_ns=10 * MS))
    logged: list[str] = []
    net.log = logged.append
    async with trio.open_nursery() as nursery:
        nursery.start_soon(net.pump)
        for _ in range(3):
            ta.send("b", Ping(b"x"))
        await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert b.got == []
    assert tb.statistics().peer("a").rejected_clock == 3
    assert len(logged) == 1


def test_config_refuses_sub_millisecond_latency() -> None:
    with pytest.raises(ValueError, match="1 ms"):
        SimNetConfig(latency_ns_min=10)


async def test_a_handler_knows_when_its_request_arrived(autojump_clock: Any) -> None:
    net = SimNetwork(1, FIXED)
    clock_b = HybridClock(VirtualClock(), max_offset_ns=10 * MS)
    seen: list[tuple[Any, Any]] = []

    class Arrivals(Recorder):
        async def handle_request(self, src: str, msg: Any) -> Any:
            seen.append((request_arrival(), clock_b.now()))
            return await super().handle_request(src, msg)

    ta = net.endpoint("a", Recorder(), HybridClock(VirtualClock(), max_offset_ns=10 * MS))
    net.endpoint("b", Arrivals(), clock_b)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(net.pump)
        sent_ns = VirtualClock().now_ns()  # b's clock (no offset) when a sends
        assert await ta.call("b", Ping(b"x"), timeout_s=1) == Pong(b"x")
        nursery.cancel_scope.cancel()
    [(arrived, handled)] = seen
    assert arrived is not None and arrived < handled
    assert arrived.wall == sent_ns + 3 * MS  # when it was delivered (FIXED latency)
