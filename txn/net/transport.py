"""The node's TCP transport on trio: peers, clients, one-way sends and calls.

Role: carries envelopes between nodes (and from clients) over TCP. Inputs:
`send`/`call` from node code, bytes from sockets. Outputs: calls into the
`Handler` (txn/messaging.py), responses to callers, statistics, log lines.

Behaviour:
- One listener serves peers and clients. The first frame each way is a
  `Handshake(protocol_version, cluster_id, speaker)`; a wrong version,
  another cluster, an unknown node id, or silence past the handshake
  deadline is refused with a `HandshakeRefused(reason)` where possible and
  one log line, then the connection closes. Clients say speaker "client"
  and may send cluster_id None to learn it from the reply.
- One connection per pair of nodes, opened lazily by whichever side first
  has traffic and reused both ways (a connection a peer opened to us
  carries our traffic to it too). If both dial at once, both connections
  stay up and are read; each side sends on the first it registered.
- Sends never block: each peer has a bounded queue (frames waiting for a
  connection, or the connection's unsent frames); a full queue drops the
  frame and counts it. A frame over `max_frame_bytes` is never sent (the
  reader would close the connection on it): a one-way message is dropped
  and counted, a call raises PeerUnreachable, a response becomes an error
  reply (txn/net/peer_links.py). A link with traffic re-dials: attempts start at
  least `reconnect_initial_s` apart, doubling to `reconnect_max_s`, and
  each (TCP connect plus the peer's handshake reply) has `connect_timeout_s`;
  calls waiting on a peer whose connection fails or cannot be opened fail
  at once with PeerUnreachable.
- Silent peers: on every node-to-node connection each side sends a bare
  `Keepalive` frame when it has written nothing for `keepalive_interval_s`,
  and closes the connection when it has received nothing for
  `idle_timeout_s` (counted as `silent_closes`, one log line); the next
  traffic re-dials. With the default deadlines (keepalive 0.4 s, idle 1 s)
  these checks end on the node's coarse timer grid (txn/net/coarse_timer.py:
  within 0.1 s of due, woken with the node's other housekeeping). Why not TCP keepalive / TCP_USER_TIMEOUT: a stopped
  peer process (SIGSTOP, a long pause) still has its kernel ACKing, so
  TCP sees nothing wrong; TCP_KEEPIDLE counts whole seconds and
  TCP_USER_TIMEOUT only runs while data is unacknowledged; both are
  Linux-specific. A partition after which the network heals silently
  leaves the old connection stalled in TCP's retransmission backoff (tens
  of seconds): detecting silence here and re-dialing rejoins within about
  `idle_timeout_s + reconnect_max_s` of the heal, whatever the partition's
  length. Client connections get no keepalives (an idle client is silent
  by right; the client bounds each call with its own deadline).
- TLS (txn/net/tls.py), unless the node runs --insecure (`tls=None`): every
  connection, inbound and outbound, is a `TlsStream` (txn/net/tls_stream.py:
  TLS 1.3, both certificates verified against the cluster CA) before the
  first frame. The
  handshake's speaker must be who the certificate names (`check_identity`):
  a dialed peer must present node <peer_id>'s certificate, an inbound node
  id needs that node's certificate, "client" needs a client certificate. A
  client's role (its certificate's OU) is kept per connection and given to
  the node with each request by `role_of(src)`; --insecure makes every
  client an admin. A failed TLS handshake is one log line and a close.
- Each request is served in a task of its own, except one that the
  handler's optional synchronous `answer_now(src, msg)` answers at once
  while none of its connection's requests is in a task: the reading task
  frames and writes that reply itself (a read its replica can serve
  without waiting, txn/node/server.py), a task start and a hop less per
  read. None from `answer_now` means "serve it as usual"; its exception
  becomes an ERROR reply, as a task's would. A request the handler's
  optional `start_now(src, msg, arrived, reply)` takes (a write whose
  locks are free, started there and answered later from the Paxos turn or
  commit-wait release that learns its outcome: txn/tablet/started_writes.py)
  has no task either: its `reply(body)`, called once from any task, frames
  and writes the reply and counts the request served; it stays in flight
  (`max_requests_in_flight`, the input budget) until then, and a reply
  after its connection closed is dropped.
- After the frames of each read are handed over, the handler's optional
  `messages_read()` is called in the reading task (a node runs there the
  Paxos turns those frames owe; its exception is logged, the connection
  carries on).
- Every envelope carries `clock.now()`; the receiver calls
  `clock.update(ts)` first. A ClockOffsetError drops the message, counts it
  per peer and logs once per peer per minute.
- Anything malformed from a peer or client (garbage, truncated frame, huge
  length prefix, wrong shape, unknown type id) logs one line naming the peer
  and the problem and closes that connection only.
- Leaving `open_tcp_transport` cancels everything and closes every socket;
  it takes well under a second.

- What clients can make the node hold (TransportOptions; configured peers
  are exempt once handshaken, and count against the two connection bounds
  before that, since nobody is known yet): `max_connections` inbound
  connections, of which at most
  `max_handshaking` still in their handshake (a newcomer beyond it evicts
  the oldest that sent nothing, else the oldest) with a first frame of at
  most `HANDSHAKE_FRAME_MAX_BYTES`; per client connection
  `max_requests_in_flight` requests and `max_queued_reply_bytes` of unread
  replies (past it the connection is cut off); node-wide
  `max_client_input_bytes` of inbound client frames, incomplete ones and
  requests until their reply is queued (txn/net/input_budget.py: at the
  bound, connections holding something are not read; TCP backpressure);
  and a client frame must complete within `client_frame_timeout_s` of its
  first byte, else one log line and a close.

- Fault injection (`block_peers`/`clear_blocked`, driven by the admin
  `FaultRequest` for `chronodb verify` and `chronodb fault`): every frame
  to a peer in `blocked_outgoing` is dropped at `_enqueue` as if the network
  lost it (the sender is not told; a call waits out its timeout), and every
  frame from a peer in `blocked_incoming` is dropped on arrival after its
  bytes were read. Keepalives still pass, so connections stay up and traffic
  resumes the moment the fault is cleared. Client connections are never
  blocked.

HAZARD: the HLC check assumes peers' clocks are within max_offset of ours;
a peer further ahead is cut off from us until its clock is back in bound.
HAZARD: a peer whose event loop stalls longer than `idle_timeout_s` (GC,
CPU starvation, a slow synced write inline) is taken for silent: its
connection is closed and re-dialed and its pending calls fail. That costs a
reconnect, never correctness, since messages are at-most-once anyway.
"""

from __future__ import annotations

import errno
import fcntl
import itertools
import logging
import sys
import termios
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable, Optional

import attrs
import trio

from hlc import HybridClock, Timestamp
from txn import wire
from txn.net.coarse_timer import sleep_until_coarse, suits
from txn.net.client_connection import ClientConnection, open_client_connection
from txn.net.peer_rules import (
    CLIENT_SPEAKER, ClockVerdict, Identity, Role, absorb_sender_clock, check_hello, check_identity,
)
from txn.net.tls import NodeTls, identity_of, tls_reason
from txn.net.tls_stream import TlsStream
from txn.net.connection import Connection
from txn.net.input_budget import InputBudget
from txn.net.options import TransportOptions
from txn.net.peer_links import KEEPALIVE_FRAME, SILENCE_GRACE_S, PeerLinks, _now_ns, _PeerLink
from txn.net.messaging import (
    AddressInUse,
    ClockRejectionLog,
    Handler,
    PeerCounters,
    PeerUnreachable,
    PendingCalls,
    RemoteError,
    RpcTimeout,
    TransportError,
    TransportStatistics,
    set_request_arrival,
)
from txn.wire import Envelope, HandlerError, Handshake, HandshakeRefused, Kind, ProtocolError
from txn.wire.envelope import Keepalive

__all__ = [
    "AddressInUse", "ClientConnection", "Handler", "PeerUnreachable", "RemoteError", "RpcTimeout", "TcpTransport",
    "TransportError", "TransportOptions", "open_client_connection", "open_tcp_transport",
]


# A Handshake frame is a few dozen bytes; the first frame on an inbound connection may not announce
# more than this (it was the general 16 MiB frame limit, buffered before anyone was authenticated).
HANDSHAKE_FRAME_MAX_BYTES = 4096


@attrs.define(eq=False)
class _HandshakeSlot:
    number: int
    scope: trio.CancelScope
    address: str
    fd: int
    sent_anything: bool = False  # its task saw bytes arrive

    def has_sent(self) -> bool:
        """Whether the peer sent anything yet, asked of the socket too: under a flood the
        connection's own task may not have run since its ClientHello arrived."""
        if self.sent_anything:
            return True
        try:
            waiting = fcntl.ioctl(self.fd, termios.FIONREAD, b"\0\0\0\0")
        except OSError:
            return False
        return int.from_bytes(waiting, sys.byteorder) > 0


class TcpTransport(PeerLinks):
    """A node's transport; build it with `open_tcp_transport`."""

    def __init__(self, *, node_id: str, cluster_id: str, peers: dict[str, tuple[str, int]], clock: HybridClock,
                 handler: Handler, max_frame_bytes: int, logger: logging.Logger,
                 options: TransportOptions, tls: Optional[NodeTls] = None) -> None:
        self.node_id = node_id
        self.cluster_id = cluster_id
        self.clock = clock
        self.handler = handler
        # Optional: a handler's synchronous answer to a request it can serve at once (module docstring).
        self._answer_now: Optional[Callable[[str, Any], Any]] = getattr(handler, "answer_now", None)
        self._start_now: Optional[Callable[[str, Any, Timestamp, Callable[[Any], None]], bool]] = getattr(
            handler, "start_now", None)
        self._messages_read: Callable[[], None] = getattr(handler, "messages_read", lambda: None)
        self.max_frame_bytes = max_frame_bytes
        self.log = logger
        self.options = options
        self.tls = tls
        self._client_roles: dict[str, Role] = {}
        self.tls_refusals = 0
        self.address: tuple[str, int] = ("", 0)
        self._links = {peer: _PeerLink(peer, tuple(addr)) for peer, addr in peers.items() if peer != node_id}
        self._client_counters: dict[str, PeerCounters] = {}
        self._pending = PendingCalls()
        self._pending_dst: dict[int, str] = {}
        self._connections: set[Connection] = set()
        self._client_numbers = itertools.count(1)
        self._clock_log = ClockRejectionLog()
        self._protocol_errors = 0
        self._inbound = 0  # inbound connections open (handshaking ones included)
        self.refused_connections = 0  # closed at accept: max_connections reached
        # Inbound connections still in their (TLS and chronodb) handshake, oldest first: at most
        # max_handshaking; a newcomer beyond it evicts the oldest (one that sent nothing, if any).
        self._handshaking: dict[int, _HandshakeSlot] = {}
        self._handshake_numbers = itertools.count(1)
        self.evicted_handshakes = 0
        self.cut_off_connections = 0  # closed for max_queued_reply_bytes
        self.input_budget = InputBudget(options.max_client_input_bytes)  # client connections' inbound frames
        self._nursery: Optional[trio.Nursery] = None
        self.blocked_incoming: set[str] = set()
        self.blocked_outgoing: set[str] = set()
        self.fault_dropped = 0

    # ---------------------------------------------------------- public API

    def block_peers(self, peers: set[str], *, incoming: bool, outgoing: bool) -> None:
        """Drop frames from (incoming) and/or to (outgoing) these peers until `clear_blocked`."""
        unknown = sorted(set(peers) - set(self._links))
        if unknown:
            raise PeerUnreachable(f"unknown peers {', '.join(unknown)} (known: {', '.join(sorted(self._links))})")
        if incoming:
            self.blocked_incoming |= set(peers)
        if outgoing:
            self.blocked_outgoing |= set(peers)

    def clear_blocked(self) -> None:
        self.blocked_incoming.clear()
        self.blocked_outgoing.clear()

    def add_peer(self, peer_id: str, address: tuple[str, int]) -> None:
        """Learn (or change) a peer's address, e.g. after it bound port 0."""
        link = self._links.get(peer_id)
        if link is None:
            self._links[peer_id] = _PeerLink(peer_id, tuple(address))
        else:
            link.address = tuple(address)

    def send(self, dst: str, msg: Any) -> None:
        """One-way message; never blocks. A full queue drops it (counted)."""
        self._enqueue(self._link(dst), self._frame(Kind.ONE_WAY, 0, msg))

    async def call(self, dst: str, msg: Any, *, timeout_s: float) -> Any:
        """Request/response. Raises RpcTimeout, RemoteError or PeerUnreachable."""
        link = self._link(dst)
        request_id, waiter = self._pending.open()
        self._pending_dst[request_id] = dst
        try:
            frame = self._frame(Kind.REQUEST, request_id, msg)
            if len(frame) - wire.FRAME_HEADER_BYTES > self.max_frame_bytes:
                raise PeerUnreachable(f"{dst}: a request of {len(frame) - wire.FRAME_HEADER_BYTES} bytes exceeds "
                                      f"the frame limit of {self.max_frame_bytes} bytes; not sent")
            if not self._enqueue(link, frame):
                raise PeerUnreachable(f"{dst}: send queue full ({self.options.peer_queue_frames} frames "
                                      f"or {self.options.peer_queue_bytes} bytes)")
            return await self._pending.wait(request_id, waiter, dst, timeout_s)
        finally:
            self._pending.close(request_id)
            self._pending_dst.pop(request_id, None)

    def role_of(self, src: str) -> Optional[Role]:
        """The role of a connected source: PEER for nodes (their certificate was checked at the
        handshake), a client's certificate role, ADMIN for every client when --insecure; None if unknown."""
        if src in self._links:
            return Role.PEER
        return self._client_roles.get(src)

    def statistics(self) -> TransportStatistics:
        peers = {peer: link.counters.snapshot() for peer, link in self._links.items()}
        peers.update((client, counters.snapshot()) for client, counters in self._client_counters.items())
        return TransportStatistics(
            node_id=self.node_id,
            peers=dict(sorted(peers.items())),
            connections=len(self._connections),
            pending_calls=len(self._pending),
            protocol_errors=self._protocol_errors,
        )

    # ---------------------------------------------------- inbound handshake

    async def _accept(self, stream: trio.SocketStream) -> None:
        """Listener handler: handshake, then serve the connection (at most max_connections at once)."""
        address = Connection.describe_address(stream)
        if self._inbound >= self.options.max_connections:
            self.refused_connections += 1
            if self._clock_log.should_log("max_connections", _now_ns()):
                self.log.warning("%s: %s: refused: already %d inbound connections (max_connections; "
                                 "%d refused so far, logged at most once a minute)", self.node_id, address,
                                 self._inbound, self.refused_connections)
            with trio.CancelScope(shield=True), trio.move_on_after(0.2):
                await stream.aclose()
            return
        self._inbound += 1
        try:
            await self._accept_counted(stream, address)
        finally:
            self._inbound -= 1

    async def _accept_counted(self, stream: trio.SocketStream, address: str) -> None:
        slot = self._take_handshake_slot(stream, address)
        try:
            with slot.scope:
                connection, src = await self._handshake_phase(stream, address, slot)
        finally:
            self._handshaking.pop(slot.number, None)
        if slot.scope.cancelled_caught:  # evicted to make room for a newer connection
            with trio.CancelScope(shield=True), trio.move_on_after(0.2):
                await stream.aclose()
            return
        if src is None:
            return
        assert connection is not None
        await self._run_connection(connection, src)

    def _take_handshake_slot(self, stream: trio.SocketStream, address: str) -> _HandshakeSlot:
        """A slot among the `max_handshaking`; if all are taken, the oldest connection that has sent
        nothing yet (else the oldest) is cancelled: a flood of idle connections cannot lock out a
        client that handshakes at once (it was locked out for the 5 s deadline of every flood slot)."""
        if len(self._handshaking) >= self.options.max_handshaking:
            victim = next((s for s in self._handshaking.values() if not s.has_sent()),
                          next(iter(self._handshaking.values())))
            del self._handshaking[victim.number]
            victim.scope.cancel()
            self.evicted_handshakes += 1
            if self._clock_log.should_log("max_handshaking", _now_ns()):
                self.log.warning("%s: %s: closed before its handshake to make room for a newer connection "
                                 "(max_handshaking %d; %d closed so far, logged at most once a minute)",
                                 self.node_id, victim.address, self.options.max_handshaking, self.evicted_handshakes)
        slot = _HandshakeSlot(next(self._handshake_numbers), trio.CancelScope(), address, stream.socket.fileno())
        self._handshaking[slot.number] = slot
        return slot

    async def _handshake_phase(self, stream: trio.SocketStream, address: str,
                               slot: _HandshakeSlot) -> tuple[Optional[Connection], Optional[str]]:
        """TLS (unless --insecure) and the chronodb handshake, all within the handshake deadline.
        Returns the connection and its source, or (None, None) when refused (logged, closed)."""
        with trio.move_on_after(self.options.handshake_timeout_s):
            await trio.lowlevel.wait_readable(stream.socket)
            slot.sent_anything = True
        identity: Optional[Identity] = None
        if self.tls is not None:
            accepted = await self._tls_accept(stream, address)
            if accepted is None:
                return None, None
            stream, identity = accepted  # type: ignore[assignment]
        # The hello is small: a frame announcing more is refused before it is buffered.
        connection = Connection(stream, f"{address} (before handshake)", self.max_frame_bytes,
                                first_frame_max_bytes=HANDSHAKE_FRAME_MAX_BYTES)
        src = await self._handshake_inbound(connection, address, identity)
        if src is None:
            await connection.aclose()
            return None, None
        return connection, src

    async def _tls_accept(self, stream: trio.SocketStream, address: str) -> Optional[tuple[TlsStream, Optional[Identity]]]:
        """The server side of TLS within the handshake deadline; None (logged, closed) if it fails."""
        assert self.tls is not None
        tls_stream = TlsStream(stream, self.tls.server, server_side=True)
        problem = None
        with trio.move_on_after(self.options.handshake_timeout_s) as scope:
            try:
                await tls_stream.do_handshake()
            except trio.BrokenResourceError as error:
                problem = tls_reason(error)
        if scope.cancelled_caught:
            problem = f"no TLS handshake within {self.options.handshake_timeout_s:g}s"
        if problem is None:
            return tls_stream, identity_of(tls_stream.getpeercert())
        self.tls_refusals += 1
        self._protocol_errors += 1
        self.log.warning("%s: %s: TLS handshake refused: %s; closing the connection", self.node_id, address, problem)
        with trio.CancelScope(shield=True), trio.move_on_after(0.2):
            await stream.aclose()
        return None

    async def _handshake_inbound(self, connection: Connection, address: str,
                                 identity: Optional[Identity] = None) -> Optional[str]:
        try:
            with trio.move_on_after(self.options.handshake_timeout_s) as scope:
                hello = await connection.read_message()
            if scope.cancelled_caught:
                self._problem(connection, f"no handshake within {self.options.handshake_timeout_s:g}s")
                return None
            src, problem = self._check_hello(hello, address)
            if problem is None and self.tls is not None:
                problem = check_identity(hello.speaker, identity)
            if problem is None and src.startswith("client:"):
                self._client_roles[src] = identity.role if identity is not None else Role.ADMIN
            if problem is not None:
                self._problem(connection, f"handshake refused: {problem}")
                connection.write_message(HandshakeRefused(problem))
                with trio.move_on_after(0.2):
                    await connection.flush()
                return None
            connection.write_message(Handshake(wire.PROTOCOL_VERSION, self.cluster_id, self.node_id))
        except ProtocolError as error:
            self._problem(connection, str(error))
            return None
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return None
        connection.peer_id = src
        connection.label = f"{'peer ' if src in self._links else ''}{src} ({address})"
        return src

    def _check_hello(self, hello: Any, address: str) -> tuple[str, Optional[str]]:
        problem = check_hello(hello, cluster_id=self.cluster_id, node_id=self.node_id, peers=self._links)
        if problem is not None:
            return "", problem
        if hello.speaker == CLIENT_SPEAKER:
            return f"client:{next(self._client_numbers)}", None
        return hello.speaker, None

    def _problem(self, connection: Connection, problem: str) -> None:
        """The one log line a misbehaving peer or client earns before we close on it."""
        self._protocol_errors += 1
        self.log.warning("%s: %s: %s; closing the connection", self.node_id, connection.label, problem)

    # ------------------------------------------------------ a live connection

    async def _run_connection(self, connection: Connection, src: str) -> None:
        """Serve one handshaken connection until it closes, breaks or misbehaves."""
        link = self._links.get(src)
        if link is not None and (link.connection is None or link.connection.closed):
            link.connection = connection
            self._flush(link, connection)
        counters = link.counters if link is not None else self._client_counters.setdefault(src, PeerCounters())
        frame_timeout_s = None
        if link is None:  # a client: its inbound bytes count against the node-wide budget
            connection.budget = self.input_budget
            connection.recharge()
            frame_timeout_s = self.options.client_frame_timeout_s
        self._connections.add(connection)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write_until_closed, connection, nursery.cancel_scope)
                if link is not None:
                    nursery.start_soon(self._watch_silence, connection, counters, nursery.cancel_scope)
                else:
                    nursery.start_soon(self._watch_client_idle, connection, nursery.cancel_scope)
                try:
                    async for payloads in connection.read_batches(frame_timeout_s):
                        last = len(payloads) - 1
                        try:
                            for i, payload in enumerate(payloads):
                                # A client's requests beyond the bound wait (the rest of the batch here,
                                # then TCP): nothing more is read until some are answered. Not a peer's:
                                # its connection also carries the answers to our own calls.
                                while (link is None
                                       and connection.requests_in_flight >= self.options.max_requests_in_flight):
                                    await connection.request_done.park()
                                self._on_frame(connection, src, counters, payload, nursery, last_in_batch=i == last)
                        finally:
                            self._read_done()  # also for what came before a bad frame
                except ProtocolError as error:
                    self._problem(connection, str(error))
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as error:
                    self.log.debug("%s: %s: connection lost: %s", self.node_id, connection.label, error)
                nursery.cancel_scope.cancel()
        finally:
            self._connections.discard(connection)
            if src not in self._links:
                self._client_counters.pop(src, None)
                self._client_roles.pop(src, None)
            await connection.aclose()
            if link is not None and link.connection is connection:
                link.connection = None
                self._fail_calls_to(src, "connection lost")
                if link.queue:
                    self._start_dialing(link)

    async def _write_until_closed(self, connection: Connection, scope: trio.CancelScope) -> None:
        try:
            await connection.run_writer()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as error:
            self.log.debug("%s: %s: write failed: %s", self.node_id, connection.label, error)
        scope.cancel()

    async def _watch_silence(self, connection: Connection, counters: PeerCounters, scope: trio.CancelScope) -> None:
        """On a node-to-node connection: keep our side audible, and close on a silent peer.

        Peers write at least every keepalive_interval_s (Paxos heartbeats,
        clock probes, else a Keepalive), so nothing for idle_timeout_s means
        a partition or a stalled peer: closing lets the link re-dial as soon
        as the network heals, instead of waiting out TCP's retransmission
        backoff on a connection that will never carry bytes again."""
        interval_s, timeout_s = self.options.keepalive_interval_s, self.options.idle_timeout_s
        # On the node's coarse grid (txn/net/coarse_timer.py) unless a test shrank the deadlines.
        sleep_until = sleep_until_coarse if suits(interval_s) else trio.sleep_until
        while True:
            now_s = trio.current_time()
            if now_s - connection.last_received_s >= timeout_s:
                await trio.sleep(SILENCE_GRACE_S)
                silent_s = trio.current_time() - connection.last_received_s
                if silent_s >= timeout_s:
                    counters.silent_closes += 1
                    self.log.warning("%s: %s: nothing received for %.1fs; closing the connection to re-dial",
                                     self.node_id, connection.label, silent_s)
                    scope.cancel()
                    return
                continue
            if now_s - connection.last_written_s >= interval_s:
                connection.write(KEEPALIVE_FRAME)
            await sleep_until(min(connection.last_received_s + timeout_s, connection.last_written_s + interval_s))

    async def _watch_client_idle(self, connection: Connection, scope: trio.CancelScope) -> None:
        """Close a client connection that sent nothing for client_idle_timeout_s (the client
        re-dials when it next needs us; a connection known dead is safe to replace)."""
        timeout_s = self.options.client_idle_timeout_s
        while True:
            idle_s = trio.current_time() - connection.last_received_s
            if idle_s >= timeout_s and connection.requests_in_flight == 0:
                self.log.info("%s: %s: idle for %.0fs; closing the connection", self.node_id, connection.label, idle_s)
                scope.cancel()
                return
            await trio.sleep(max(timeout_s - idle_s, timeout_s / 10))

    def _on_frame(self, connection: Connection, src: str, counters: PeerCounters, payload: bytes,
                  nursery: trio.Nursery, *, last_in_batch: bool = True) -> None:
        """Decode, check the clock, dispatch. ProtocolError closes the connection."""
        envelope = wire.decode(payload)
        if type(envelope) is Keepalive:
            return  # its bytes already moved connection.last_received_s
        if type(envelope) is not Envelope:
            raise ProtocolError(f"expected an Envelope after the handshake, got {type(envelope).__name__}")
        if src in self.blocked_incoming:
            self.fault_dropped += 1
            return
        verdict, reason = absorb_sender_clock(self.clock, envelope)
        if verdict is ClockVerdict.REJECTED:
            counters.rejected_clock += 1
            if self._clock_log.should_log(src, _now_ns()):
                self.log.warning("%s: %s: rejected a message for its clock: %s "
                                 "(%d rejected from this peer so far; logged at most once a minute)",
                                 self.node_id, connection.label, reason, counters.rejected_clock)
            return
        counters.received += 1
        kind = envelope.kind
        if kind is Kind.REQUEST:
            if connection.requests_in_flight == 0 and self._answered_now(connection, src, envelope, nursery.cancel_scope,
                                                                         alone=last_in_batch):
                return
            connection.requests_in_flight += 1
            connection.request_bytes += len(payload)
            arrived = self.clock.now()
            if self._start_now is not None and self._started_now(connection, src, envelope, len(payload),
                                                                 nursery.cancel_scope, arrived):
                return
            nursery.start_soon(self._serve_request, connection, src, envelope, len(payload), nursery.cancel_scope,
                               arrived)
        elif kind is Kind.ONE_WAY:
            try:
                self.handler.handle_message(src, envelope.body)
            except Exception:
                self.log.exception("%s: handler failed on a message from %s", self.node_id, src)
        else:
            self._pending.resolve(envelope.request_id, kind, envelope.body)

    def _read_done(self) -> None:
        """Tell the handler that one read's frames were handed over (its `messages_read`)."""
        try:
            self._messages_read()
        except Exception:
            self.log.exception("%s: handler failed after a read", self.node_id)

    def _answered_now(self, connection: Connection, src: str, request: Envelope, scope: trio.CancelScope,
                      *, alone: bool) -> bool:
        """Answer a request from the reading task, if the handler's `answer_now` can at once (a
        read its replica serves without waiting); False: it did not. `alone`: the last frame of
        what was read, whose reply may go to the socket at once; earlier ones' replies are queued
        and batched with it (txn/net/connection.py)."""
        if self._answer_now is None:
            return False
        try:
            body, kind = self._answer_now(src, request.body), Kind.RESPONSE
        except Exception as error:  # as from handle_request: RemoteError in the caller
            body, kind = HandlerError(f"{type(error).__name__}: {error}"), Kind.ERROR
        if body is None:
            return False
        self._reply(connection, src, request.request_id, kind, body, scope, alone=alone)
        return True

    def _reply(self, connection: Connection, src: str, request_id: int, kind: Kind, body: Any,
               scope: trio.CancelScope, *, alone: bool) -> None:
        try:
            frame = self._frame(kind, request_id, body)
        except TypeError as error:
            frame = self._frame(Kind.ERROR, request_id, HandlerError(f"unencodable response: {error}"))
        if len(frame) - wire.FRAME_HEADER_BYTES > self.max_frame_bytes:  # the reader would close the connection
            frame = self._frame(Kind.ERROR, request_id, HandlerError(
                f"a response of {len(frame) - wire.FRAME_HEADER_BYTES} bytes exceeds the frame limit of "
                f"{self.max_frame_bytes} bytes"))
        # A client that does not read its replies is cut off. Not a peer: its connection also
        # queues our own Paxos traffic (catch-up of large values), bounded by peer_queue_bytes.
        if src not in self._links and connection.queued_bytes() + len(frame) > self.options.max_queued_reply_bytes:
            self.cut_off_connections += 1
            self._problem(connection, f"{connection.queued_bytes()} bytes of replies wait unread "
                          f"(max_queued_reply_bytes {self.options.max_queued_reply_bytes})")
            scope.cancel()
            return
        connection.write(frame, alone=alone)

    def _started_now(self, connection: Connection, src: str, request: Envelope, request_bytes: int,
                     scope: trio.CancelScope, arrived: Timestamp) -> bool:
        """Start a request from the reading task, if the handler's `start_now` takes it (a write
        whose locks are free): its reply is written later by whichever task the handler answers
        it from, once, and the request then counts as served, as `_serve_request` does. False:
        it did not; the request (counted in flight) still needs its task."""
        replied = False

        def reply(body: Any, kind: Kind = Kind.RESPONSE) -> None:
            nonlocal replied
            if replied:
                return
            replied = True
            try:
                self._reply(connection, src, request.request_id, kind, body, scope,
                            alone=connection.requests_in_flight == 1)
            finally:
                self._request_served(connection, request_bytes)

        try:
            return self._start_now(src, request.body, arrived, reply)  # type: ignore[misc]
        except Exception as error:  # as from handle_request: RemoteError in the caller
            self.log.exception("%s: starting a request from %s failed", self.node_id, src)
            reply(HandlerError(f"{type(error).__name__}: {error}"), Kind.ERROR)
            return True

    async def _serve_request(self, connection: Connection, src: str, request: Envelope, request_bytes: int,
                             scope: trio.CancelScope, arrived: Timestamp) -> None:
        set_request_arrival(arrived)
        try:
            try:
                body, kind = await self.handler.handle_request(src, request.body), Kind.RESPONSE
            except Exception as error:  # becomes RemoteError in the caller
                body, kind = HandlerError(f"{type(error).__name__}: {error}"), Kind.ERROR
            self._reply(connection, src, request.request_id, kind, body, scope, alone=connection.requests_in_flight == 1)
        finally:
            self._request_served(connection, request_bytes)

    @staticmethod
    def _request_served(connection: Connection, request_bytes: int) -> None:
        connection.requests_in_flight -= 1
        connection.request_bytes -= request_bytes
        connection.recharge()  # the request's frame no longer counts against the input budget
        connection.request_done.unpark_all()

    # ------------------------------------------------------------- running

    async def _serve(self, listeners: list[trio.SocketListener], task_status: Any) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(trio.serve_listeners, self._accept, listeners)
            task_status.started()

    def _close(self) -> None:
        # A send after this (a task of the owner still running while it shuts down)
        # queues and is dropped; it must not start a dial in a closing nursery.
        self._nursery = None
        self._pending.fail_all("transport closed")
        for connection in list(self._connections):
            connection.close()


@asynccontextmanager
async def open_tcp_transport(*, node_id: str, cluster_id: str, host: str, port: int,
                             peers: dict[str, tuple[str, int]], clock: HybridClock, handler: Handler,
                             max_frame_bytes: int = wire.MAX_FRAME_BYTES_DEFAULT,
                             logger: Optional[logging.Logger] = None,
                             options: Optional[TransportOptions] = None,
                             tls: Optional[NodeTls] = None) -> AsyncIterator[TcpTransport]:
    """Listen on host:port and serve peers and clients until the block exits.

    `tls` None is --insecure: plain TCP, no authentication, every client admin."""
    transport = TcpTransport(node_id=node_id, cluster_id=cluster_id, peers=peers, clock=clock, handler=handler,
                             max_frame_bytes=max_frame_bytes,
                             logger=logger or logging.getLogger("chronodb.transport"),
                             options=options or TransportOptions(), tls=tls)
    try:
        listeners = await trio.open_tcp_listeners(port, host=host)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise AddressInUse(f"cannot listen on {host}:{port}: the address is already in use "
                               "(another node running?)") from None
        raise TransportError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    transport.address = tuple(listeners[0].socket.getsockname()[:2])  # type: ignore[assignment]
    async with trio.open_nursery() as nursery:
        await nursery.start(transport._serve, listeners)
        try:
            yield transport
        finally:
            transport._close()
            nursery.cancel_scope.cancel()
