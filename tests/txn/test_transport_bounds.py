"""What one client may cost a node's transport (txn/net/transport.py), over real TCP on
127.0.0.1: replies it does not read, requests it piles up, connections it opens,
connections it leaves idle, bytes of frames it holds (node-wide, with others), frames it
never finishes, and scans built at once (txn/node/server.py). Each bound closes or slows
that client only."""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from typing import Any

import attrs
import pytest
import trio

from tests.txn.test_transport import FAST, LOGGER, MAX_OFFSET_NS, raw_connection, read_until_closed, start, warnings
from txn import api, wire
from txn.api.cluster import ClusterConfig, NodeConfig, TabletConfig
from txn.net.connection import CLIENT_RECEIVE_BYTES
from txn.node.server import SCAN_SLOTS, Node
from txn.net.transport import open_client_connection
from txn.wire import Envelope, Handshake, Kind, Ping, Pong
from tests.txn.test_transport import new_clock


def request_frame(request_id: int, payload: bytes) -> bytes:
    return wire.encode_frame(wire.encode(Envelope(new_clock().now(), Kind.REQUEST, request_id, Ping(payload))))


class Counting:
    """Echoes; "hang" requests wait forever and are counted while they run."""

    def __init__(self) -> None:
        self.hanging = 0
        self.most_hanging = 0

    def handle_message(self, src: str, msg: Any) -> None:
        pass

    async def handle_request(self, src: str, msg: Any) -> Any:
        if msg.payload.startswith(b"hang"):
            self.hanging += 1
            self.most_hanging = max(self.most_hanging, self.hanging)
            try:
                await trio.sleep_forever()
            finally:
                self.hanging -= 1
        return Pong(msg.payload)


async def still_serves(address: tuple[str, int]) -> None:
    async with open_client_connection(*address, cluster_id="c1", clock=new_clock(), timeout_s=5) as good:
        assert (await good.call(Ping(b"still"), timeout_s=5)).payload == b"still"


async def test_a_client_that_does_not_read_its_replies_is_cut_off(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    options = attrs.evolve(FAST, max_queued_reply_bytes=1 << 20)
    async with AsyncExitStack() as stack:
        t1 = await start(stack, "n1", handler=Counting(), options=options)
        stream = await raw_connection(t1.address)
        payload = b"x" * (64 << 10)
        with trio.move_on_after(30):  # the node cuts us off long before 400 replies (25 MiB) pile up
            try:
                for request_id in range(1, 401):
                    await stream.send_all(request_frame(request_id, payload))
            except trio.BrokenResourceError:
                pass  # cut off
        with trio.fail_after(30):
            while t1.cut_off_connections == 0:
                await trio.sleep(0.05)
        assert any("bytes of replies wait unread" in line and "max_queued_reply_bytes" in line for line in warnings(caplog))
        await still_serves(t1.address)


async def test_a_client_cannot_have_more_requests_in_flight_than_the_bound() -> None:
    handler = Counting()
    async with AsyncExitStack() as stack:
        t1 = await start(stack, "n1", handler=handler, options=attrs.evolve(FAST, max_requests_in_flight=3))
        stream = await raw_connection(t1.address)
        await stream.send_all(b"".join(request_frame(i, b"hang") for i in range(1, 11)))
        with trio.fail_after(10):
            while handler.hanging < 3:
                await trio.sleep(0.01)
        await trio.sleep(0.3)
        assert handler.most_hanging == 3  # the other seven wait unread
        await still_serves(t1.address)  # another connection has its own bound


async def test_connections_beyond_the_bound_are_refused_at_accept(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    async with AsyncExitStack() as stack:
        t1 = await start(stack, "n1", handler=Counting(), options=attrs.evolve(FAST, max_connections=2))
        first = await raw_connection(t1.address)
        second = await raw_connection(t1.address)
        await trio.sleep(0.1)
        third = await raw_connection(t1.address)
        assert await read_until_closed(third) == b""
        assert t1.refused_connections == 1
        assert any("max_connections" in line for line in warnings(caplog))
        await first.aclose()
        with trio.fail_after(10):
            while True:
                try:
                    await still_serves(t1.address)
                    break
                except Exception:  # the first connection's close may not have been seen yet
                    await trio.sleep(0.05)
        await second.aclose()


async def test_idle_connections_cannot_lock_out_a_client_that_handshakes(caplog: pytest.LogCaptureFixture) -> None:
    """Connections that never send a byte hold handshake slots only until newer ones need them: with
    8 such connections against max_connections 6 and max_handshaking 3, a client still gets in at
    once (before: it was refused at accept until the flood's handshake deadlines ran out)."""
    caplog.set_level(logging.WARNING, logger=LOGGER)
    options = attrs.evolve(FAST, max_connections=6, max_handshaking=3, handshake_timeout_s=60.0)
    async with AsyncExitStack() as stack:
        t1 = await start(stack, "n1", handler=Counting(), options=options)
        idle = [await raw_connection(t1.address, handshake=False) for _ in range(8)]
        for stream in idle:
            stack.push_async_callback(stream.aclose)
        with trio.fail_after(10):
            while t1.evicted_handshakes < 5:
                await trio.sleep(0.01)
        await still_serves(t1.address)  # its connection evicted the oldest idle one; it handshakes at once
        assert t1.refused_connections == 0
        assert await read_until_closed(idle[0]) == b"", "the oldest idle connection was closed"
        assert any("max_handshaking 3" in line for line in warnings(caplog))


async def test_a_first_frame_larger_than_a_handshake_is_refused_before_it_is_buffered(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    async with AsyncExitStack() as stack:
        t1 = await start(stack, "n1", handler=Counting(), options=FAST)
        stream = await raw_connection(t1.address, handshake=False)
        await stream.send_all((1 << 20).to_bytes(4, "big") + b"x" * 1000)  # announces 1 MiB
        assert await read_until_closed(stream) == b""
        assert any("handshake frame length 1048576 bytes exceeds the limit of 4096 bytes" in line
                   for line in warnings(caplog))
        await still_serves(t1.address)


async def test_an_idle_client_connection_is_closed() -> None:
    async with AsyncExitStack() as stack:
        t1 = await start(stack, "n1", handler=Counting(), options=attrs.evolve(FAST, client_idle_timeout_s=0.5))
        stream = await raw_connection(t1.address)
        reply = await read_until_closed(stream)  # the handshake reply, then the close
        assert wire.FrameDecoder().feed(reply)  # it did answer the handshake first
        await still_serves(t1.address)


async def test_frames_to_a_peer_that_stops_reading_are_bounded_in_bytes() -> None:
    """A follower that stops reading (SIGSTOP) while we keep sending large frames: the
    queue stops at peer_queue_bytes and drops the rest (it grew without bound in bytes)."""
    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        address = listeners[0].socket.getsockname()[:2]
        accepted = trio.Event()

        async def stopped_peer() -> None:
            stream = await listeners[0].accept()
            decoder = wire.FrameDecoder(1 << 20)
            while not (frames := decoder.feed(await stream.receive_some(65536))):
                pass
            await stream.send_all(wire.encode_frame(wire.encode(Handshake(wire.PROTOCOL_VERSION, "c1", "n1"))))
            accepted.set()
            await trio.sleep_forever()  # never reads again

        nursery.start_soon(stopped_peer)
        options = attrs.evolve(FAST, peer_queue_bytes=2 << 20, peer_queue_frames=10_000)
        async with AsyncExitStack() as stack:
            t2 = await start(stack, "n2", peers={"n1": address}, options=options)
            payload = b"y" * (256 << 10)
            t2.send("n1", Ping(payload))
            with trio.fail_after(10):
                await accepted.wait()
            link = t2._links["n1"]
            for _ in range(400):  # 100 MiB offered
                t2.send("n1", Ping(payload))
                await trio.sleep(0)
            await trio.sleep(0.2)
            assert link.connection is not None and not link.connection.closed
            frame = len(payload) + 100
            assert link.connection.queued_bytes() <= options.peer_queue_bytes + frame, link.connection.queued_bytes()
            assert link.counters.dropped >= 300, link.counters.dropped
        nursery.cancel_scope.cancel()


# ------------------------------------------------------------------ what clients' inbound bytes may cost


def frame_start(announced_bytes: int, sent_bytes: int) -> bytes:
    """The first `sent_bytes` of a frame that announces `announced_bytes` of payload."""
    return announced_bytes.to_bytes(wire.FRAME_HEADER_BYTES, "big") + b"z" * sent_bytes


async def send_quietly(stream: trio.SocketStream, data: bytes) -> None:
    """Send what the node will take (it may stop reading, or close on us)."""
    try:
        await stream.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


async def test_bytes_held_in_client_frames_are_bounded_node_wide_and_small_requests_still_pass() -> None:
    """Six clients each send half of a 4 MiB frame (12 MiB in all): the node stops reading them at
    the 1 MiB budget (the oldest frame may finish: 2 MiB), and a new client's small call passes."""
    budget = 1 << 20
    options = attrs.evolve(FAST, max_client_input_bytes=budget, client_frame_timeout_s=60)
    async with AsyncExitStack() as stack:
        t1 = await start(stack, "n1", handler=Counting(), options=options)
        streams = [await raw_connection(t1.address) for _ in range(6)]
        async with trio.open_nursery() as nursery:
            for stream in streams:
                nursery.start_soon(send_quietly, stream, frame_start(4 << 20, 2 << 20))
            await trio.sleep(1.0)  # long enough to read 12 MiB on loopback many times over
            held = t1.input_budget.peak_bytes
            slack = len(streams) * CLIENT_RECEIVE_BYTES + (2 << 20) + 64  # a chunk each, the oldest frame
            assert t1.input_budget.waits > 0 and held <= budget + slack, (held, budget + slack)
            await still_serves(t1.address)
            for stream in streams:
                await stream.aclose()
            nursery.cancel_scope.cancel()
        with trio.fail_after(10):
            while t1.input_budget.held_bytes:  # the closed connections gave back what they held
                await trio.sleep(0.02)


async def test_a_request_counts_against_the_budget_until_its_reply_is_queued() -> None:
    """Ten unanswered 64 KiB requests on one connection, a 256 KiB budget: the node stops reading
    after about four (their frames still count: no reply is queued), though 256 may be in flight."""
    handler = Counting()
    options = attrs.evolve(FAST, max_client_input_bytes=256 << 10)
    async with AsyncExitStack() as stack:
        t1 = await start(stack, "n1", handler=handler, options=options)
        stream = await raw_connection(t1.address)
        frames = b"".join(request_frame(i, b"hang" + b"h" * (64 << 10)) for i in range(1, 11))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_quietly, stream, frames)
            with trio.fail_after(10):
                while handler.hanging < 3:
                    await trio.sleep(0.01)
            await trio.sleep(0.5)
            assert handler.most_hanging <= 5, handler.most_hanging
            await still_serves(t1.address)  # a connection holding nothing may always read a request
            nursery.cancel_scope.cancel()
        await stream.aclose()


async def test_a_client_frame_not_completed_in_time_closes_its_connection(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    options = attrs.evolve(FAST, client_frame_timeout_s=0.5)
    async with AsyncExitStack() as stack:
        t1 = await start(stack, "n1", handler=Counting(), options=options)
        stream = await raw_connection(t1.address)
        await stream.send_all(frame_start(1000, 10))  # then nothing more: a slowloris
        with trio.fail_after(10):
            await read_until_closed(stream)
        assert any("frame incomplete 0.5s after its first byte (10 of 1000 payload bytes in)" in line
                   for line in warnings(caplog)), warnings(caplog)
        await still_serves(t1.address)
        with trio.fail_after(10):
            while t1.input_budget.held_bytes:
                await trio.sleep(0.02)


class ScanReplica:
    """A tablet replica whose scans wait for `release`, counted while they run."""

    def __init__(self) -> None:
        self.running = 0
        self.most_running = 0
        self.release = trio.Event()

    async def scan(self, request: Any) -> Any:
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await self.release.wait()
        finally:
            self.running -= 1
        return api.ScanReply(new_clock().now(), (), "n1", False)


async def test_a_node_builds_at_most_scan_slots_scan_replies_at_once() -> None:
    """Pipelined scans on one connection (up to 256 in flight) wait their turn for a scan slot:
    the cut-off for unread replies only sees a reply once it is built."""
    config = ClusterConfig("c1", MAX_OFFSET_NS, [NodeConfig("n1", "127.0.0.1", 1)],
                           [TabletConfig("t1", b"", None, ["n1"], "n1")])
    node = Node(config, "n1", new_clock(), monitor_clocks=False)
    replica = ScanReplica()
    node.replicas["t1"] = replica  # type: ignore[assignment]
    scan = api.ScanRequest("t1", b"", None, api.ReadMode.STRONG, None, 1000, 5_000_000_000)
    async with AsyncExitStack() as stack:
        t1 = await start(stack, "n1", handler=node)
        async with open_client_connection(*t1.address, cluster_id="c1", clock=new_clock(), timeout_s=5) as client:
            replies = []

            async def one() -> None:
                replies.append(await client.call(scan, timeout_s=20))

            async with trio.open_nursery() as nursery:
                for _ in range(3 * SCAN_SLOTS):
                    nursery.start_soon(one)
                with trio.fail_after(10):
                    while replica.running < SCAN_SLOTS:
                        await trio.sleep(0.01)
                await trio.sleep(0.3)
                assert replica.most_running == SCAN_SLOTS
                replica.release.set()
            assert len(replies) == 3 * SCAN_SLOTS and all(isinstance(r, api.ScanReply) for r in replies)
