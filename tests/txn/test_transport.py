"""TCP transport on 127.0.0.1 with real sockets: calls, sends, handshake
refusals, every kind of bad input, backoff, timeouts, drops, HLC rejection,
shutdown, keepalives and the silence deadline."""

from __future__ import annotations

import functools
import logging
import socket
import time
from contextlib import AsyncExitStack
from typing import Any

import attrs
import cbor2
import pytest
import trio

from hlc import HybridClock
from hlc.physical import SkewedClock, SystemClock
from txn import wire
from txn.net.messaging import AddressInUse, PeerUnreachable, RemoteError, RpcTimeout, request_arrival
from txn.net.transport import TcpTransport, TransportOptions, open_client_connection, open_tcp_transport
from txn.wire import Handshake, Ping, Pong
from txn.wire.envelope import Keepalive

LOGGER = "chronodb.test.transport"
FAST = TransportOptions(handshake_timeout_s=0.3, connect_timeout_s=1.0, reconnect_initial_s=0.02,
                        reconnect_max_s=0.1, peer_queue_frames=100)
MAX_OFFSET_NS = 50_000_000


def new_clock(offset_ns: int = 0) -> HybridClock:
    return HybridClock(SkewedClock(SystemClock(), offset_ns=offset_ns), MAX_OFFSET_NS)


class Recorder:
    def __init__(self) -> None:
        self.messages: list[tuple[str, Any]] = []
        self.arrived = trio.Event()

    def handle_message(self, src: str, msg: Any) -> None:
        self.messages.append((src, msg))
        self.arrived.set()

    async def handle_request(self, src: str, msg: Any) -> Any:
        if msg.payload == b"boom":
            raise ValueError("kaboom")
        if msg.payload == b"hang":
            await trio.sleep_forever()
        return Pong(src.encode() + b":" + msg.payload)

    async def wait_for(self, count: int) -> None:
        with trio.fail_after(5):
            while len(self.messages) < count:
                self.arrived = trio.Event()
                await self.arrived.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def start(stack: AsyncExitStack, node_id: str, *, cluster_id: str = "c1", port: int = 0,
                peers: dict[str, tuple[str, int]] | None = None, clock: HybridClock | None = None,
                handler: Any = None, options: TransportOptions = FAST,
                max_frame_bytes: int = wire.MAX_FRAME_BYTES_DEFAULT) -> TcpTransport:
    return await stack.enter_async_context(open_tcp_transport(
        node_id=node_id, cluster_id=cluster_id, host="127.0.0.1", port=port, peers=peers or {},
        clock=clock or new_clock(), handler=handler or Recorder(), logger=logging.getLogger(LOGGER),
        options=options, max_frame_bytes=max_frame_bytes))


async def pair(stack: AsyncExitStack, **kwargs: Any) -> tuple[TcpTransport, TcpTransport, Recorder, Recorder]:
    h1, h2 = Recorder(), Recorder()
    t1 = await start(stack, "n1", handler=h1)
    t2 = await start(stack, "n2", peers={"n1": t1.address}, handler=h2, **kwargs)
    t1.add_peer("n2", t2.address)
    return t1, t2, h1, h2


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= logging.WARNING]


async def test_calls_and_one_way_messages_share_one_connection() -> None:
    async with AsyncExitStack() as stack:
        t1, t2, h1, h2 = await pair(stack)
        assert await t2.call("n1", Ping(b"hi"), timeout_s=2) == Pong(b"n2:hi")
        t1.send("n2", Ping(b"one-way"))
        await h2.wait_for(1)
        assert h2.messages == [("n1", Ping(b"one-way"))]
        with pytest.raises(RemoteError, match="ValueError: kaboom"):
            await t1.call("n2", Ping(b"boom"), timeout_s=2)
        assert t1.statistics().connections == 1 and t2.statistics().connections == 1
        assert t1.statistics().peer("n2").received == 2
        with pytest.raises(PeerUnreachable, match="unknown peer 'n9'"):
            t1.send("n9", Ping(b""))


async def test_client_learns_cluster_id_and_calls() -> None:
    async with AsyncExitStack() as stack:
        t1 = await start(stack, "n1")
        async with open_client_connection(*t1.address, cluster_id=None, clock=new_clock(), timeout_s=2) as conn:
            assert conn.cluster_id == "c1"
            reply = await conn.call(Ping(b"x"), timeout_s=2)
            assert reply.payload.startswith(b"client:") and reply.payload.endswith(b":x")
        with pytest.raises(PeerUnreachable, match="wrong cluster"):
            async with open_client_connection(*t1.address, cluster_id="c2", clock=new_clock(), timeout_s=2):
                pass


async def test_node_of_another_cluster_is_refused_on_both_sides(caplog: pytest.LogCaptureFixture) -> None:
    async with AsyncExitStack() as stack:
        t1 = await start(stack, "n1", peers={"n2": ("127.0.0.1", 1)})
        t2 = await start(stack, "n2", cluster_id="other", peers={"n1": t1.address})
        with pytest.raises(PeerUnreachable, match="wrong cluster: this node is in cluster 'c1', 'n2' is in 'other'"):
            await t2.call("n1", Ping(b"x"), timeout_s=2)
        lines = warnings(caplog)
        assert any("n1:" in line and "handshake refused: wrong cluster" in line for line in lines), lines
        assert any("n2: peer n1" in line and "wrong cluster" in line for line in lines), lines


async def raw_connection(address: tuple[str, int], *, handshake: bool = True) -> trio.SocketStream:
    stream = await trio.open_tcp_stream(*address)
    if handshake:
        await stream.send_all(wire.encode_frame(wire.encode(Handshake(wire.PROTOCOL_VERSION, "c1", "client"))))
    return stream


async def read_until_closed(stream: trio.SocketStream) -> bytes:
    received = b""
    with trio.fail_after(3):
        while chunk := await stream.receive_some(65536):
            received += chunk
    return received


BAD_INPUTS = {
    "garbage bytes": (b"\x00\x00\x00\x05\xff\xfe\xfd\xfc\xfb", "not valid CBOR"),
    "truncated frame": (b"\x00\x00\x00\x10abc", "truncated frame: connection closed after 3 of 16 payload bytes"),
    "huge length prefix": (b"\xff\xff\xff\xffxxxx", "frame length 4294967295 bytes exceeds the limit"),
    "wrong-shape CBOR": (wire.encode_frame(cbor2.dumps({"hello": [1, 2]})), "expected [type_id, fields], got dict"),
    "unknown type id": (wire.encode_frame(cbor2.dumps([4242, []])), "unknown type id 4242"),
    "not an envelope": (wire.encode_frame(wire.encode(Ping(b"x"))), "expected an Envelope after the handshake"),
}


@pytest.mark.parametrize("handshake", [True, False], ids=["after-handshake", "instead-of-handshake"])
@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
async def test_bad_input_closes_that_connection_only(case: str, handshake: bool,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    data, problem = BAD_INPUTS[case]
    if not handshake and case == "not an envelope":
        problem = "expected a Handshake first, got Ping"
    caplog.set_level(logging.WARNING, logger=LOGGER)
    async with AsyncExitStack() as stack:
        t1 = await start(stack, "n1")
        good = await stack.enter_async_context(
            open_client_connection(*t1.address, cluster_id="c1", clock=new_clock(), timeout_s=2))
        stream = await raw_connection(t1.address, handshake=handshake)
        await stream.send_all(data)
        if case == "truncated frame":
            await stream.send_eof()
        await read_until_closed(stream)
        lines = warnings(caplog)
        assert len(lines) == 1, lines
        assert problem in lines[0] and "127.0.0.1:" in lines[0] and "closing the connection" in lines[0]
        assert (await good.call(Ping(b"still"), timeout_s=2)).payload.endswith(b":still")
        assert t1.statistics().protocol_errors == 1


async def test_silent_connection_is_closed_after_the_handshake_deadline(caplog: pytest.LogCaptureFixture) -> None:
    async with AsyncExitStack() as stack:
        t1 = await start(stack, "n1")
        stream = await raw_connection(t1.address, handshake=False)
        started = time.monotonic()
        assert await read_until_closed(stream) == b""
        assert 0.25 <= time.monotonic() - started < 2
        lines = warnings(caplog)
        assert len(lines) == 1 and "no handshake within 0.3s" in lines[0] and "127.0.0.1:" in lines[0], lines


async def test_a_peer_link_is_connected_once_its_dial_and_handshake_are_done() -> None:
    """`connected(peer)`: whether a frame leaves at once; the clock watch does not time probes that
    waited for a dial (txn/node/clock_watch.py)."""
    async with AsyncExitStack() as stack:
        t1, t2, _, _ = await pair(stack)
        assert not t2.connected("n1") and not t2.connected("n9")
        t2.send("n1", Ping(b"dial"))
        assert not t2.connected("n1"), "queued while the link dials"
        assert await t2.call("n1", Ping(b"hi"), timeout_s=2) == Pong(b"n2:hi")
        assert t2.connected("n1")


async def test_reconnects_with_backoff_once_the_peer_appears() -> None:
    port = free_port()
    async with AsyncExitStack() as stack:
        t1 = await start(stack, "n1", peers={"n2": ("127.0.0.1", port)})
        t1.send("n2", Ping(b"early"))
        with pytest.raises(PeerUnreachable, match="cannot connect"):
            await t1.call("n2", Ping(b"x"), timeout_s=2)
        await trio.sleep(0.15)
        failures = t1.statistics().peer("n2").connect_failures
        assert failures >= 2
        h2 = Recorder()
        await start(stack, "n2", port=port, peers={"n1": t1.address}, handler=h2)
        await h2.wait_for(1)
        assert h2.messages[0] == ("n1", Ping(b"early"))
        assert await t1.call("n2", Ping(b"later"), timeout_s=2) == Pong(b"n1:later")


async def test_call_timeout_frees_its_state() -> None:
    async with AsyncExitStack() as stack:
        t1, t2, _, _ = await pair(stack)
        with pytest.raises(RpcTimeout, match="no response from n2 within 0.05s"):
            await t1.call("n2", Ping(b"hang"), timeout_s=0.05)
        assert t1.statistics().pending_calls == 0
        assert await t1.call("n2", Ping(b"ok"), timeout_s=2) == Pong(b"n1:ok")


async def test_full_queue_drops_and_counts() -> None:
    options = TransportOptions(handshake_timeout_s=0.3, reconnect_initial_s=5, reconnect_max_s=5, peer_queue_frames=3)
    async with AsyncExitStack() as stack:
        t1 = await start(stack, "n1", peers={"n2": ("127.0.0.1", free_port())}, options=options)
        for i in range(10):
            t1.send("n2", Ping(bytes([i])))
        stats = t1.statistics().peer("n2")
        assert (stats.sent, stats.dropped) == (3, 7)


async def test_clock_rejections_are_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    async with AsyncExitStack() as stack:
        h1 = Recorder()
        t1 = await start(stack, "n1", handler=h1)
        t2 = await start(stack, "n2", peers={"n1": t1.address}, clock=new_clock(offset_ns=10 * MAX_OFFSET_NS))
        t1.add_peer("n2", t2.address)
        for i in range(5):
            t2.send("n1", Ping(bytes([i])))
        with pytest.raises(RpcTimeout):
            await t2.call("n1", Ping(b"x"), timeout_s=0.2)
        assert t1.statistics().peer("n2").rejected_clock == 6
        assert h1.messages == []
        lines = [line for line in warnings(caplog) if "rejected a message for its clock" in line]
        assert len(lines) == 1 and "peer n2" in lines[0], lines


async def test_address_in_use_is_one_clear_error() -> None:
    async with AsyncExitStack() as stack:
        t1 = await start(stack, "n1")
        with pytest.raises(AddressInUse, match=f"cannot listen on 127.0.0.1:{t1.address[1]}: the address is already in use"):
            await start(stack, "n2", port=t1.address[1])


async def test_shutdown_is_quick_with_connections_and_calls_open() -> None:
    async with AsyncExitStack() as outer:
        h1 = Recorder()
        t1 = await start(outer, "n1", handler=h1)
        outcome: list[str] = []
        async with trio.open_nursery() as nursery:
            stack = AsyncExitStack()
            t2 = await start(stack, "n2", peers={"n1": t1.address})
            t1.add_peer("n2", t2.address)
            assert await t2.call("n1", Ping(b"x"), timeout_s=2)

            async def hanging_call() -> None:
                try:
                    await t2.call("n1", Ping(b"hang"), timeout_s=10)
                except PeerUnreachable as error:
                    outcome.append(str(error))

            nursery.start_soon(hanging_call)
            await trio.sleep(0.05)
            started = time.monotonic()
            await stack.aclose()
            assert time.monotonic() - started < 1.0
        assert outcome == ["n1: transport closed"]


QUIET = TransportOptions(handshake_timeout_s=0.3, connect_timeout_s=1.0, reconnect_initial_s=0.02,
                         reconnect_max_s=0.1, keepalive_interval_s=0.05, idle_timeout_s=0.25, peer_queue_frames=100)


async def test_idle_link_stays_up_on_keepalives() -> None:
    async with AsyncExitStack() as stack:
        h1 = Recorder()
        t1 = await start(stack, "n1", handler=h1, options=QUIET)
        t2 = await start(stack, "n2", peers={"n1": t1.address}, options=QUIET)
        t1.add_peer("n2", t2.address)
        assert await t2.call("n1", Ping(b"x"), timeout_s=2) == Pong(b"n2:x")
        await trio.sleep(4 * QUIET.idle_timeout_s)
        for transport, peer in ((t1, "n2"), (t2, "n1")):
            assert transport.statistics().peer(peer).silent_closes == 0
            assert transport.statistics().connections == 1
        assert h1.messages == [], "keepalives reach no handler"


async def test_silent_peer_is_closed_after_the_idle_deadline(caplog: pytest.LogCaptureFixture) -> None:
    async with AsyncExitStack() as stack:
        t1 = await start(stack, "n1", peers={"n2": ("127.0.0.1", free_port())}, options=QUIET)
        stream = await trio.open_tcp_stream(*t1.address)
        await stream.send_all(wire.encode_frame(wire.encode(Handshake(wire.PROTOCOL_VERSION, "c1", "n2"))))
        started = time.monotonic()
        received = await read_until_closed(stream)  # the handshake reply and keepalives, then EOF
        assert QUIET.idle_timeout_s <= time.monotonic() - started < 2
        assert wire.encode_frame(wire.encode(Keepalive())) in received
        assert t1.statistics().peer("n2").silent_closes == 1
        lines = warnings(caplog)
        assert len(lines) == 1 and "n2" in lines[0] and "nothing received for" in lines[0], lines


def test_idle_deadline_must_allow_two_keepalives() -> None:
    with pytest.raises(ValueError, match="at least twice keepalive_interval_s"):
        TransportOptions(keepalive_interval_s=0.6, idle_timeout_s=1.0)


class ArrivalRecorder(Recorder):
    """Records each request's arrival reading, the node's clock when its handler ran, and the
    arrival reading again after other requests' tasks ran."""

    def __init__(self, clock: HybridClock) -> None:
        super().__init__()
        self.clock = clock
        self.seen: list[tuple[Any, Any, Any]] = []

    async def handle_request(self, src: str, msg: Any) -> Any:
        arrived, handled = request_arrival(), self.clock.now()
        await trio.sleep(0.01)  # the other requests' tasks run meanwhile
        self.seen.append((arrived, handled, request_arrival()))
        return Pong(msg.payload)


async def test_a_handler_knows_when_its_request_arrived() -> None:
    """The HLC reading at arrival (after the sender's clock was absorbed), in the request's own task."""
    ahead = new_clock(offset_ns=5_000_000)  # the client's clock, 5 ms ahead: the node absorbs it
    node_clock = new_clock()
    async with AsyncExitStack() as stack:
        handler = ArrivalRecorder(node_clock)
        t1 = await start(stack, "n1", clock=node_clock, handler=handler)
        async with open_client_connection(*t1.address, cluster_id="c1", clock=ahead, timeout_s=2) as conn:
            sent = ahead.now()
            async with trio.open_nursery() as nursery:
                for i in range(3):
                    nursery.start_soon(functools.partial(conn.call, Ping(b"%d" % i), timeout_s=2))
    assert request_arrival() is None  # outside a request
    assert len(handler.seen) == 3
    for arrived, handled, later in handler.seen:
        assert arrived is not None and arrived > sent  # the client's clock was absorbed first
        assert arrived < handled and later == arrived  # taken before the handler ran; each task keeps its own
    assert len({arrived for arrived, _, _ in handler.seen}) == 3


async def test_a_client_connection_keeps_the_newest_absorbed_node_clock_reading() -> None:
    """`node_time`: the node's HLC reading in the newest response and when it arrived (transaction
    priorities come from it); a node more than max_offset ahead of the client is no source."""
    node_clock, runaway = new_clock(), new_clock(offset_ns=10 * MAX_OFFSET_NS)
    async with AsyncExitStack() as stack:
        t1 = await start(stack, "n1", clock=node_clock)
        t2 = await start(stack, "n2", clock=runaway)
        async with open_client_connection(*t1.address, cluster_id="c1", clock=new_clock(), timeout_s=2) as conn:
            assert conn.node_time is None  # no response yet
            for payload in (b"a", b"b"):
                before = node_clock.now()
                await conn.call(Ping(payload), timeout_s=2)
                reading, arrived_s = conn.node_time
                assert before < reading < node_clock.now()  # the node's clock, while it answered
                assert arrived_s <= trio.current_time()
        async with open_client_connection(*t2.address, cluster_id="c1", clock=new_clock(), timeout_s=2) as conn:
            reply = await conn.call(Ping(b"c"), timeout_s=2)
            assert reply.payload.endswith(b":c")  # delivered...
            assert conn.rejected_clock == 1 and conn.node_time is None  # ...but not absorbed, nor kept


async def test_a_client_call_times_out_at_its_deadline_and_the_connection_serves_on() -> None:
    """A client connection's calls are timed by its sweeper task (no cancel scope per call)."""
    async with AsyncExitStack() as stack:
        t1 = await start(stack, "n1")
        async with open_client_connection(*t1.address, cluster_id="c1", clock=new_clock(), timeout_s=2) as conn:
            started = trio.current_time()
            with pytest.raises(RpcTimeout, match="within 0.2s"):
                await conn.call(Ping(b"hang"), timeout_s=0.2)
            assert 0.2 <= trio.current_time() - started < 5
            assert conn.pending_calls() == 0
            reply = await conn.call(Ping(b"x"), timeout_s=2)
            assert reply.payload.endswith(b":x")
            assert conn._pending._sweep_scope is not None, "the sweeper keeps this connection's deadlines"


class AnswersAtOnce(Recorder):
    """A handler that answers "now:..." requests synchronously (`answer_now`), the rest in a task."""

    def answer_now(self, src: str, msg: Any) -> Any:
        if msg.payload == b"now:boom":
            raise ValueError("kaboom at once")
        if msg.payload.startswith(b"now:"):
            return Pong(b"at once:" + msg.payload)
        return None


async def test_a_request_alone_on_its_connection_is_answered_at_once_if_the_handler_can() -> None:
    async with AsyncExitStack() as stack:
        t1 = await start(stack, "n1", handler=AnswersAtOnce())
        async with open_client_connection(*t1.address, cluster_id="c1", clock=new_clock(), timeout_s=2) as conn:
            assert (await conn.call(Ping(b"now:1"), timeout_s=2)).payload == b"at once:now:1"
            assert (await conn.call(Ping(b"later"), timeout_s=2)).payload.endswith(b":later")  # None: a task serves it
            with pytest.raises(RemoteError, match="kaboom at once"):
                await conn.call(Ping(b"now:boom"), timeout_s=2)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(functools.partial(conn.call, Ping(b"hang"), timeout_s=5))
                await trio.sleep(0.2)  # the hanging request is being served
                # Not alone on its connection now: served by a task, as every request was before.
                reply = await conn.call(Ping(b"now:2"), timeout_s=2)
                assert reply.payload.startswith(b"client") and reply.payload.endswith(b":now:2")
                nursery.cancel_scope.cancel()


async def test_requests_read_together_and_answered_at_once_have_their_replies_batched(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Frames read in one batch and answered at once: only the last reply may go to the socket at
    once (`alone`); the others are queued, so the writer sends them together with it."""
    from txn.net.connection import Connection
    flags: list[bool] = []
    write = Connection.write

    def recording_write(self: Connection, frame: bytes, *, alone: bool = False) -> None:
        flags.append(alone)
        write(self, frame, alone=alone)

    async with AsyncExitStack() as stack:
        t1 = await start(stack, "n1", handler=AnswersAtOnce())
        stream = await raw_connection(t1.address)
        with trio.fail_after(3):
            assert await stream.receive_some(65536)  # the handshake reply: written before we record
        monkeypatch.setattr(Connection, "write", recording_write)
        requests = [wire.encode_frame(wire.encode(wire.Envelope(new_clock().now(), wire.Kind.REQUEST, i, Ping(b"now:%d" % i))))
                    for i in (1, 2, 3)]
        await stream.send_all(b"".join(requests))  # one segment: read as one batch
        with trio.fail_after(3):
            while len(flags) < 3:
                await trio.sleep(0.01)
        assert flags == [False, False, True]
        await stream.aclose()


class StartsNow(Recorder):
    """A handler that takes "start:..." requests in `start_now` and answers them when the test says."""

    def __init__(self) -> None:
        super().__init__()
        self.started: list[tuple[bytes, Any, Any]] = []  # payload, arrival, reply
        self.started_event = trio.Event()

    def start_now(self, src: str, msg: Any, arrived: Any, reply: Any) -> bool:
        if msg.payload == b"start:boom":
            raise ValueError("kaboom while starting")
        if not msg.payload.startswith(b"start:"):
            return False
        self.started.append((msg.payload, arrived, reply))
        self.started_event.set()
        return True

    async def wait_started(self, count: int) -> None:
        with trio.fail_after(5):
            while len(self.started) < count:
                self.started_event = trio.Event()
                await self.started_event.wait()


async def test_a_request_the_handler_starts_is_answered_later_by_whoever_replies_once() -> None:
    """`start_now`: no task serves the request; the handler's `reply`, called later from any task
    (here the test's), is the one answer, a second call changes nothing, and the request counts as
    in flight until then: with one allowed per connection, the next is not even read before it."""
    handler = StartsNow()
    async with AsyncExitStack() as stack:
        t1 = await start(stack, "n1", handler=handler, options=attrs.evolve(FAST, max_requests_in_flight=1))
        async with open_client_connection(*t1.address, cluster_id="c1", clock=new_clock(), timeout_s=2) as conn:
            results: dict[bytes, Any] = {}

            async def call(payload: bytes) -> None:
                results[payload] = await conn.call(Ping(payload), timeout_s=5)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(call, b"start:1")
                await handler.wait_started(1)
                nursery.start_soon(call, b"later")
                await trio.sleep(0.2)
                assert results == {}, "the started request holds its connection's one slot: nothing else served"
                payload, arrived, reply = handler.started[0]
                assert arrived is not None and arrived <= t1.clock.now()
                reply(Pong(b"answered:1"))
                reply(Pong(b"a second answer"))  # ignored
                with trio.fail_after(5):
                    while len(results) < 2:
                        await trio.sleep(0.01)
            assert results[b"start:1"].payload == b"answered:1"
            assert results[b"later"].payload.endswith(b":later"), "then the next request was read and served"
            async with trio.open_nursery() as nursery:  # the second answer above did not count it served twice
                nursery.start_soon(call, b"start:2")
                await handler.wait_started(2)
                nursery.start_soon(call, b"later:2")
                await trio.sleep(0.2)
                assert b"later:2" not in results
                handler.started[1][2](Pong(b"answered:2"))
            assert results[b"start:2"].payload == b"answered:2" and results[b"later:2"].payload.endswith(b":later:2")
            with pytest.raises(RemoteError, match="kaboom while starting"):
                await conn.call(Ping(b"start:boom"), timeout_s=2)
            assert (await conn.call(Ping(b"after"), timeout_s=2)).payload.endswith(b":after"), "the connection serves on"


class ReadAware(Recorder):
    """Records each message and each `messages_read` call, in order; the first call raises."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []

    def handle_message(self, src: str, msg: Any) -> None:
        self.events.append("message")
        super().handle_message(src, msg)

    def messages_read(self) -> None:
        self.events.append("read")
        if self.events.count("read") == 1:
            raise RuntimeError("the first one fails")


async def test_the_handler_hears_when_a_reads_messages_were_handed_over() -> None:
    """After the frames of each read, the transport calls `messages_read` (a node runs its Paxos
    turns there, in the reading task); its failure is logged, the connection carries on."""
    async with AsyncExitStack() as stack:
        h1 = ReadAware()
        t1 = await start(stack, "n1", handler=h1)
        t2 = await start(stack, "n2", peers={"n1": t1.address})
        t1.add_peer("n2", t2.address)
        t2.send("n1", Ping(b"first"))
        await h1.wait_for(1)
        for i in range(20):
            t2.send("n1", Ping(bytes([i])))
        await h1.wait_for(21)
        with trio.fail_after(5):
            while h1.events[-1] != "read":
                await trio.sleep(0.01)
        assert h1.events[:2] == ["message", "read"], "told once the first read was handed over"
        assert h1.events.count("read") >= 2, "told again after the first one failed"
        # Each message is followed by a "read" before the connection waits for more bytes.
        assert all("read" in h1.events[i:] for i, event in enumerate(h1.events) if event == "message")


class BigReplies(Recorder):
    async def handle_request(self, src: str, msg: Any) -> Any:
        if msg.payload == b"big":
            return Pong(b"x" * 100_000)
        return await super().handle_request(src, msg)


async def test_a_frame_over_the_limit_is_never_sent_so_the_connection_serves_on(
        caplog: pytest.LogCaptureFixture) -> None:
    """The reader closes a connection on a frame longer than its limit, and with it every tablet's
    traffic between the two nodes (a snapshot header past 16 MiB did that ten times a second,
    tests/e2e/test_snapshot_catch_up.py). So the sender never sends one: a one-way message is
    dropped (counted, logged once), a call fails at once, and an oversized response becomes an
    error reply; the connection serves on."""
    caplog.set_level(logging.ERROR, logger=LOGGER)
    limit = 64 << 10
    async with AsyncExitStack() as stack:
        h1, h2 = BigReplies(), Recorder()
        t1 = await start(stack, "n1", handler=h1, max_frame_bytes=limit)
        t2 = await start(stack, "n2", peers={"n1": t1.address}, handler=h2, max_frame_bytes=limit)
        t1.add_peer("n2", t2.address)
        assert await t1.call("n2", Ping(b"hi"), timeout_s=2) == Pong(b"n1:hi")
        t1.send("n2", Ping(b"x" * 100_000))
        t1.send("n2", Ping(b"y" * 100_000))
        t1.send("n2", Ping(b"small"))
        await h2.wait_for(1)
        assert h2.messages == [("n1", Ping(b"small"))]
        assert t1.statistics().peer("n2").dropped == 2
        with pytest.raises(PeerUnreachable, match="a request of 1000.. bytes exceeds the frame limit of 65536 bytes"):
            await t1.call("n2", Ping(b"z" * 100_000), timeout_s=2)
        with pytest.raises(RemoteError, match="a response of 1000.. bytes exceeds the frame limit of 65536 bytes"):
            await t2.call("n1", Ping(b"big"), timeout_s=2)
        assert await t2.call("n1", Ping(b"after"), timeout_s=2) == Pong(b"n2:after")
        assert t1.statistics().protocol_errors == 0 == t2.statistics().protocol_errors
        assert t1.statistics().connections == 1 == t2.statistics().connections
        errors = [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "to n2 exceeds the frame limit of 65536 bytes: not sent" in errors[0], errors
