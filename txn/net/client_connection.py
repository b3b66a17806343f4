"""A client's connection to one node: handshake as "client", then calls.

Role: the transport half of the client library (txn/client.py routes,
retries and speaks the client messages; this module only carries them).
Inputs: `call(msg, timeout_s=...)`. Outputs: the node's response, or
RpcTimeout / RemoteError / PeerUnreachable.

Invariants:
- The handshake says speaker "client" and the cluster id the client expects;
  None asks the node for its cluster id, which then is `conn.cluster_id`.
  A node of another cluster or protocol version is refused with its reason.
- Every request carries `clock.now()`; every response is passed through
  `clock.update()` first. A response from a node whose clock is more than
  max_offset ahead is still delivered, but NOT absorbed: a client assigns no
  timestamps, and absorbing a runaway clock would make every healthy node
  reject the client's later requests. (Such a node fences itself; its answer,
  usually "unavailable", is what the caller needs to move on.)
- `node_time` is the newest absorbed response's node clock reading and the
  trio time it arrived: the client's transaction priorities are taken from it
  without a request of their own (txn/client/txn_plan.py `node_now_estimate`).
  A reading more than max_offset ahead of the client (a runaway node, or the
  client's own clock far behind) is not kept; with none fresh the client asks.
- A request whose frame is over the frame limit (the node's, which is the
  client's too) is not sent: `FrameTooLarge`, which is not a transport error,
  since nothing was delivered.
- A lost connection fails every waiting call at once; later calls raise
  PeerUnreachable (open a new connection to retry).
- A call's timeout is kept by the connection's sweeper task
  (`PendingCalls.sweep`), not a cancel scope per call: RpcTimeout at the
  deadline, as before, for less of the client's CPU per call.
- With `tls` (txn/net/tls.py; None is --insecure) the connection is TLS 1.3
  with the client's certificate; the node's certificate must be verified by
  the cluster CA and name a node, the very node whose id the handshake
  reply gives. Under TLS 1.3 a node refusing our certificate says so only
  after our side of the TLS handshake is done, so that refusal surfaces
  while reading the handshake reply; either way it is a PeerUnreachable
  whose text names the TLS reason.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Optional

import attrs
import trio

from hlc import HybridClock, Timestamp
from txn import wire
from txn.net.connection import Connection
from txn.net.messaging import FrameTooLarge, PeerUnreachable, PendingCalls
from txn.net.peer_rules import CLIENT_SPEAKER, ClockVerdict, Identity, Role, absorb_sender_clock, check_reply
from txn.net.tls import ClientTls, identity_of, tls_reason
from txn.net.tls_stream import TlsStream
from txn.wire import Envelope, Handshake, Kind, ProtocolError



@attrs.define(eq=False)
class ClientConnection:
    """An open, handshaken connection from a client to one node."""

    connection: Connection
    clock: HybridClock
    cluster_id: str
    node_id: str
    _pending: PendingCalls = attrs.field(factory=PendingCalls)
    _broken: Optional[str] = None
    rejected_clock: int = 0
    node_time: Optional[tuple[Timestamp, float]] = None

    @property
    def broken(self) -> Optional[str]:
        """Why the connection is known dead (nothing more can be sent on it), or None."""
        return self._broken

    async def call(self, msg: Any, *, timeout_s: float) -> Any:
        if self._broken is not None:
            raise PeerUnreachable(f"{self.node_id}: {self._broken}")
        request_id, waiter = self._pending.open()
        payload = wire.encode(Envelope(self.clock.now(), Kind.REQUEST, request_id, msg))
        limit = self.connection.decoder.max_frame_bytes
        if len(payload) > limit:
            self._pending.close(request_id)
            raise FrameTooLarge(f"a {type(msg).__name__} of {len(payload)} bytes exceeds the {limit}-byte frame limit: not sent")
        # Alone: no other call waits, and the last read answered at most one, so no other caller
        # was just woken to send behind this one (after a burst of replies, the first new request
        # sees no other pending; sent at once it would go without the ones about to follow it).
        alone = len(self._pending) == 1 and self.connection.frames_last_read <= 1
        self.connection.write(wire.encode_frame(payload), alone=alone)
        return await self._pending.wait_swept(request_id, waiter, self.node_id, timeout_s)

    def pending_calls(self) -> int:
        return len(self._pending)

    async def _read(self) -> None:
        try:
            async for payloads in self.connection.read_batches():
                for payload in payloads:
                    self._on_frame(payload)
            self._broken = "the node closed the connection"
        except ProtocolError as error:
            self._broken = f"protocol error from the node: {error}"
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as error:
            self._broken = f"connection lost: {error}"
        self._pending.fail_all(self._broken)

    def _on_frame(self, payload: bytes) -> None:
        envelope = wire.decode(payload)
        if type(envelope) is not Envelope or envelope.kind not in (Kind.RESPONSE, Kind.ERROR):
            raise ProtocolError(f"expected a response envelope, got {envelope}")
        verdict, _ = absorb_sender_clock(self.clock, envelope, receiver_is_client=True)
        if verdict is ClockVerdict.DELIVERED_UNABSORBED:
            self.rejected_clock += 1  # delivered, not absorbed (see the module docstring)
        else:
            self.node_time = (envelope.ts, trio.current_time())
        self._pending.resolve(envelope.request_id, envelope.kind, envelope.body)

    async def _write(self) -> None:
        try:
            await self.connection.run_writer()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as error:
            self._broken = f"connection lost: {error}"
            self._pending.fail_all(self._broken)


async def _handshake(connection: Connection, cluster_id: Optional[str], where: str,
                     server: Optional[Identity]) -> Handshake:
    connection.write_message(Handshake(wire.PROTOCOL_VERSION, cluster_id, CLIENT_SPEAKER))
    await connection.flush()
    reply = await connection.read_message()
    problem = check_reply(reply, cluster_id=cluster_id, speaker=None if server is None else server.name)
    if problem is not None:
        if server is None and reply is None:
            problem += " (does the node require TLS? this client connected without it)"
        raise PeerUnreachable(f"{where}: {problem}")
    return reply


async def _start_tls(stream: trio.SocketStream, tls: ClientTls, where: str) -> tuple[TlsStream, Identity]:
    """TLS client handshake; the node's certificate must name a node."""
    tls_stream = TlsStream(stream, tls.context, server_side=False)
    try:
        await tls_stream.do_handshake()
    except trio.BrokenResourceError as error:
        raise PeerUnreachable(f"{where}: TLS handshake failed: {tls_reason(error)}") from None
    identity = identity_of(tls_stream.getpeercert())
    if identity is None or identity.role is not Role.PEER:
        raise PeerUnreachable(f"{where}: TLS: the server's certificate is not a chronodb node's ({identity})")
    return tls_stream, identity


@asynccontextmanager
async def open_client_connection(host: str, port: int, *, cluster_id: Optional[str], clock: HybridClock,
                                 timeout_s: float,
                                 max_frame_bytes: int = wire.MAX_FRAME_BYTES_DEFAULT,
                                 tls: Optional[ClientTls] = None) -> AsyncIterator[ClientConnection]:
    """Connect (TLS unless `tls` is None) and handshake within timeout_s; PeerUnreachable says why not."""
    where = f"{host}:{port}"
    try:
        with trio.fail_after(timeout_s):
            stream: Any = await trio.open_tcp_stream(host, port)
    except (OSError, trio.TooSlowError) as error:
        raise PeerUnreachable(f"cannot connect to {where}: {error or 'timed out'}") from None
    connection = Connection(stream, where, max_frame_bytes)
    try:
        try:
            with trio.fail_after(timeout_s):
                server = None
                if tls is not None:
                    stream, server = await _start_tls(stream, tls, where)
                    connection.stream = stream
                reply = await _handshake(connection, cluster_id, where, server)
        except trio.TooSlowError:
            raise PeerUnreachable(f"{where} did not answer the handshake within {timeout_s:g}s") from None
        except trio.BrokenResourceError as error:
            raise PeerUnreachable(f"{where}: handshake failed: {tls_reason(error)}") from None
        except ConnectionResetError as error:
            # Under TLS the node resets a connection whose certificate it refused (before or
            # after our handshake frame, depending on timing): say what to suspect.
            hint = " (our certificate refused? signed by another cluster's CA?)" if tls is not None else ""
            raise PeerUnreachable(f"{where}: handshake failed: {error}{hint}") from None
        except (ProtocolError, OSError) as error:
            raise PeerUnreachable(f"{where}: handshake failed: {error}") from None
        client = ClientConnection(connection, clock, reply.cluster_id, reply.speaker)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client._read)
            nursery.start_soon(client._write)
            nursery.start_soon(client._pending.sweep)  # every call's deadline, without a scope per call
            try:
                yield client
            finally:
                client._broken = client._broken or "connection closed by the client"
                client._pending.fail_all(client._broken)
                nursery.cancel_scope.cancel()
    finally:
        await connection.aclose()
