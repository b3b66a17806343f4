"""The outbound half of the TCP transport: per-peer links, bounded queues, dialing.

Role: `PeerLinks` is the part of `TcpTransport` (txn/net/transport.py, whose
docstring describes the whole) that sends: one `_PeerLink` per peer holds a
bounded queue of frames; a link with traffic dials (TCP, then TLS, then the
handshake) with capped backoff, and calls waiting on a peer whose connection
fails or cannot be opened fail at once with `PeerUnreachable`. Fault
injection drops frames to blocked peers here, at `_enqueue`.

Invariant: `send` never blocks; a full queue drops the frame and counts it.
A frame longer than `max_frame_bytes` (the limit every node's reader holds
frames to, txn/wire/frames.py) is never queued: the peer would close the
connection on its length, and with it every tablet's traffic between the two
nodes, again at each resend. `send` drops it (counted as dropped, one log
line a minute per peer), `call` raises PeerUnreachable at once.
A queue is full at `peer_queue_frames` frames or `peer_queue_bytes` bytes
(whichever comes first; one frame always fits an empty queue): a peer that
stops reading (SIGSTOP, a full socket buffer) costs at most that much memory,
however much the sender retransmits (it grew to 22 GB with a frame count
alone, 4 MiB Accepts to a stopped follower). Paxos and every call tolerate
a dropped frame.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Optional

import attrs
import trio

from txn import wire
from txn.net.connection import Connection
from txn.net.messaging import PeerCounters, PeerUnreachable
from txn.net.peer_rules import check_identity, check_reply
from txn.net.tls import identity_of, tls_reason
from txn.net.tls_stream import TlsStream
from txn.wire import Envelope, Handshake, HandshakeRefused, Kind, ProtocolError
from txn.wire.envelope import Keepalive

# After the silence deadline passes, the reader gets this long to show that
# bytes were merely waiting behind a stall of our own event loop.
SILENCE_GRACE_S = 0.05


KEEPALIVE_FRAME = wire.encode_frame(wire.encode(Keepalive()))


def _now_ns() -> int:
    return round(trio.current_time() * 1e9)


@attrs.define(eq=False)
class _PeerLink:
    """Our side of the connection to one peer node: queue, connection, counters."""

    peer_id: str
    address: tuple[str, int]
    counters: PeerCounters = attrs.field(factory=PeerCounters)
    queue: deque[bytes] = attrs.field(factory=deque)
    connection: Optional[Connection] = None
    queued_bytes: int = 0  # bytes in `queue`
    dialing: bool = False
    wake: trio.Event = attrs.field(factory=trio.Event)


class PeerLinks:
    """Mixin of TcpTransport: the sending side. The attributes it uses are set by TcpTransport.__init__."""

    # ------------------------------------------------------------- sending

    def _link(self, dst: str) -> _PeerLink:
        link = self._links.get(dst)
        if link is None:
            raise PeerUnreachable(f"unknown peer {dst!r} (known: {', '.join(sorted(self._links)) or 'none'})")
        return link

    def connected(self, dst: str) -> bool:
        """Whether a frame to peer `dst` would leave now, over an open connection: else it waits
        for a dial (TCP and, with TLS, a handshake: milliseconds of CPU on both ends)."""
        link = self._links.get(dst)
        return link is not None and link.connection is not None and not link.connection.closed

    def _frame(self, kind: Kind, request_id: int, body: Any) -> bytes:
        return wire.encode_frame(wire.encode(Envelope(self.clock.now(), kind, request_id, body)))

    def _enqueue(self, link: _PeerLink, frame: bytes) -> bool:
        if len(frame) - wire.FRAME_HEADER_BYTES > self.max_frame_bytes:
            link.counters.dropped += 1
            if self._clock_log.should_log(f"oversized:{link.peer_id}", _now_ns()):
                self.log.error("%s: a frame of %d bytes to %s exceeds the frame limit of %d bytes: not sent "
                               "(the peer would close the connection on it); logged at most once a minute",
                               self.node_id, len(frame) - wire.FRAME_HEADER_BYTES, link.peer_id, self.max_frame_bytes)
            return False
        if link.peer_id in self.blocked_outgoing:
            self.fault_dropped += 1
            return True  # lost on the way, as far as the sender can tell
        connection = link.connection
        if connection is not None and not connection.closed:
            if self._queue_full(connection.queued_frames(), connection.queued_bytes(), len(frame)):
                link.counters.dropped += 1
                return False
            connection.write(frame)
        else:
            if self._queue_full(len(link.queue), link.queued_bytes, len(frame)):
                link.counters.dropped += 1
                return False
            link.queue.append(frame)
            link.queued_bytes += len(frame)
            self._start_dialing(link)
        link.counters.sent += 1
        return True

    def _queue_full(self, frames: int, queued_bytes: int, size: int) -> bool:
        return frames >= self.options.peer_queue_frames or (
            frames > 0 and queued_bytes + size > self.options.peer_queue_bytes)

    def _start_dialing(self, link: _PeerLink) -> None:
        if not link.dialing and self._nursery is not None:
            link.dialing = True
            self._nursery.start_soon(self._dial_loop, link)

    async def _dial_loop(self, link: _PeerLink) -> None:
        """Open the link's connection while it has queued traffic, with capped backoff.

        Attempts start at most backoff_s apart (counted from the previous
        attempt's start), so a partition's hung attempts, each bounded by
        connect_timeout_s, follow one another without a further pause."""
        backoff_s = self.options.reconnect_initial_s
        try:
            while link.queue:
                if link.connection is not None and not link.connection.closed:
                    self._flush(link, link.connection)
                    return
                started_s = trio.current_time()
                try:
                    connection = await self._connect(link)
                except (OSError, trio.TooSlowError, PeerUnreachable, ProtocolError, trio.BrokenResourceError) as error:
                    link.counters.connect_failures += 1
                    self.log.debug("%s: cannot connect to peer %s at %s:%s: %s", self.node_id, link.peer_id,
                                   link.address[0], link.address[1], error)
                    self._fail_calls_to(link.peer_id, f"cannot connect: {error or 'timed out'}")
                    await trio.sleep_until(started_s + backoff_s)
                    backoff_s = min(backoff_s * 2, self.options.reconnect_max_s)
                    continue
                if self._nursery is None:  # the transport closed while we dialed
                    connection.close()
                    return
                self._nursery.start_soon(self._run_connection, connection, link.peer_id)
                return
        finally:
            link.dialing = False

    async def _connect(self, link: _PeerLink) -> Connection:
        """Dial and handshake within connect_timeout_s; the caller runs the returned connection."""
        with trio.fail_after(self.options.connect_timeout_s):
            stream: Any = await trio.open_tcp_stream(*link.address)
            if self.tls is not None:
                stream = await self._tls_dial(stream, link)
            connection = Connection(stream, f"peer {link.peer_id} ({link.address[0]}:{link.address[1]})",
                                    self.max_frame_bytes)
            try:
                connection.write_message(Handshake(wire.PROTOCOL_VERSION, self.cluster_id, self.node_id))
                await connection.flush()
                reply = await connection.read_message()
            except BaseException:
                await connection.aclose()
                raise
        try:
            problem = self._check_reply(reply, link.peer_id)
            if problem is not None:
                self.log.warning("%s: %s: %s", self.node_id, connection.label, problem)
                if not isinstance(reply, HandshakeRefused):
                    connection.write_message(HandshakeRefused(problem))
                    with trio.move_on_after(0.2):
                        await connection.flush()
                raise PeerUnreachable(f"{link.peer_id}: {problem}")
        except BaseException:
            await connection.aclose()
            raise
        connection.peer_id = link.peer_id
        return connection

    async def _tls_dial(self, stream: trio.SocketStream, link: _PeerLink) -> TlsStream:
        """TLS over a fresh TCP stream to a peer; its certificate must be node link.peer_id's."""
        assert self.tls is not None
        tls_stream = TlsStream(stream, self.tls.dialer, server_side=False)
        try:
            try:
                await tls_stream.do_handshake()
            except trio.BrokenResourceError as error:
                raise PeerUnreachable(f"{link.peer_id}: TLS handshake failed: {tls_reason(error)}") from None
            problem = check_identity(link.peer_id, identity_of(tls_stream.getpeercert()))
            if problem is not None:
                self.log.warning("%s: peer %s (%s:%s): %s", self.node_id, link.peer_id, *link.address, problem)
                raise PeerUnreachable(f"{link.peer_id}: {problem}")
        except BaseException:
            with trio.CancelScope(shield=True), trio.move_on_after(0.2):
                await stream.aclose()
            raise
        return tls_stream

    def _check_reply(self, reply: Any, peer_id: str) -> Optional[str]:
        return check_reply(reply, cluster_id=self.cluster_id, speaker=peer_id)

    def _flush(self, link: _PeerLink, connection: Connection) -> None:
        while link.queue:
            connection.write(link.queue.popleft())
        link.queued_bytes = 0

    def _fail_calls_to(self, peer_id: str, reason: str) -> None:
        for request_id, dst in list(self._pending_dst.items()):
            if dst == peer_id:
                self._pending.resolve_failure(request_id, reason)

