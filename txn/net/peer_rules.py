"""The rules every path applies to what arrives: handshakes and the sender's clock.

Role: one pure statement of two rules that the TCP transport, the client's
connection and the simulated network all apply (before, each wrote its own):

- `check_hello` / `check_reply`: which handshakes a node accepts and which
  handshake replies a dialer accepts (protocol version, cluster id, speaker);
  each returns None or a one-line reason that names the problem.
- `absorb_sender_clock`: every envelope carries its sender's HLC reading. It
  is absorbed into the receiver's clock (`HybridClock.update`) unless it is
  more than max_offset ahead, in which case the message is REJECTED (dropped
  and counted) - except that a body whose class sets `hlc_exempt` (clock
  probes, admin requests), and any response reaching a client, is delivered
  WITHOUT being absorbed: a skewed node must still measure its own skew, an
  operator must reach it, and a client (which assigns no timestamps) must not
  carry a runaway clock to healthy nodes.
- `check_identity`: over TLS, the speaker a handshake claims must be who the
  verified certificate names: a node id only with that node's certificate,
  "client" only with a client certificate (so a client certificate cannot
  speak as a node, nor a node's be borrowed by a client). `Role` and
  `Identity` are what the transport hands the node with each request.

Pure: no I/O. The clock passed in is the receiver's `HybridClock`.
"""

from __future__ import annotations

import enum
from typing import Any, Optional

import attrs

from hlc.clock import ClockOffsetError, HybridClock
from txn.wire.codec import PROTOCOL_VERSION
from txn.wire.envelope import Envelope, Handshake, HandshakeRefused

CLIENT_SPEAKER = "client"


class Role(enum.StrEnum):
    """Who may do what (txn/api/permissions.py says what each may send)."""

    READER = "reader"
    WRITER = "writer"
    ADMIN = "admin"
    PEER = "peer"  # another node of the cluster (a node certificate)


@attrs.frozen
class Identity:
    """Who a verified certificate names: node `name` (role PEER) or client `name` with its role."""

    name: str
    role: Role

    def __str__(self) -> str:
        return f"node {self.name}" if self.role is Role.PEER else f"client {self.name} ({self.role.value})"


def check_identity(speaker: str, identity: Optional[Identity]) -> Optional[str]:
    """Does the certificate's identity allow speaking as `speaker`? None if so."""
    if identity is None:
        return "the certificate names no chronodb node or client"
    if speaker == CLIENT_SPEAKER:
        if identity.role is Role.PEER:
            return f"the certificate is {identity}'s, not a client's"
        return None
    if identity.role is not Role.PEER:
        return f"a client certificate ({identity}) cannot speak as node {speaker!r}"
    if identity.name != speaker:
        return f"the certificate is {identity}'s, not node {speaker!r}'s"
    return None


class ClockVerdict(enum.Enum):
    ABSORBED = "absorbed"  # the receiver's HLC now is at least the sender's
    DELIVERED_UNABSORBED = "delivered_unabsorbed"  # from too far ahead, but exempt: deliver, do not absorb
    REJECTED = "rejected"  # from too far ahead: drop and count


def absorb_sender_clock(clock: HybridClock, envelope: Envelope, *, receiver_is_client: bool = False) -> tuple[ClockVerdict, str]:
    """Apply the clock rule to one envelope: (verdict, reason when not absorbed)."""
    try:
        clock.update(envelope.ts)
    except ClockOffsetError as error:
        if receiver_is_client or getattr(envelope.body, "hlc_exempt", False):
            return ClockVerdict.DELIVERED_UNABSORBED, str(error)
        return ClockVerdict.REJECTED, str(error)
    return ClockVerdict.ABSORBED, ""


def check_hello(hello: Any, *, cluster_id: str, node_id: str, peers: Any) -> Optional[str]:
    """A node's check of the first frame on an inbound connection; None accepts it.

    A client may send cluster_id None (it learns the id from the reply); a peer
    must name this cluster and be one of `peers`."""
    if hello is None:
        return "connection closed before the handshake"
    if not isinstance(hello, Handshake):
        return f"expected a Handshake first, got {type(hello).__name__}"
    if hello.protocol_version != PROTOCOL_VERSION:
        return f"protocol version {hello.protocol_version} unsupported (this node speaks {PROTOCOL_VERSION})"
    if hello.speaker == CLIENT_SPEAKER:
        if hello.cluster_id is not None and hello.cluster_id != cluster_id:
            return f"wrong cluster: this node is in cluster {cluster_id!r}, the client asked for {hello.cluster_id!r}"
        return None
    if hello.cluster_id != cluster_id:
        return f"wrong cluster: this node is in cluster {cluster_id!r}, {hello.speaker!r} is in {hello.cluster_id!r}"
    if hello.speaker not in peers:
        return f"unknown node id {hello.speaker!r} (not a peer of {node_id})"
    return None


def check_reply(reply: Any, *, cluster_id: Optional[str], speaker: Optional[str]) -> Optional[str]:
    """A dialer's check of the handshake reply; None accepts it.

    `cluster_id` None (a client that does not know it yet) accepts any cluster
    that names itself; `speaker` None accepts any node."""
    if reply is None:
        return "connection closed during the handshake"
    if isinstance(reply, HandshakeRefused):
        return f"refused by the peer: {reply.reason}"
    if not isinstance(reply, Handshake) or reply.cluster_id is None:
        return f"expected a Handshake reply, got {reply}"
    if reply.protocol_version != PROTOCOL_VERSION:
        return f"protocol version {reply.protocol_version} unsupported (this side speaks {PROTOCOL_VERSION})"
    if cluster_id is not None and reply.cluster_id != cluster_id:
        return f"wrong cluster: the peer is in cluster {reply.cluster_id!r}, expected {cluster_id!r}"
    if speaker is not None and reply.speaker != speaker:
        return f"expected node {speaker!r} at that address, found {reply.speaker!r}"
    return None
