"""The TCP transport's deadlines and bounds, as one value: `TransportOptions`.

Role: what `open_tcp_transport` (txn/net/transport.py) is configured with;
tests shrink the deadlines. Pure (attrs only), so the cluster configuration
(txn/api/cluster.py, cluster.toml's `[limits]`) takes its defaults from here
and these stay the one place the default values are written.

Invariant: `idle_timeout_s` is at least twice `keepalive_interval_s`, so a
peer that keeps its side audible is never taken for silent.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class TransportOptions:
    """Deadlines and bounds; tests shrink them."""

    handshake_timeout_s: float = 5.0  # inbound: a dialer's (peer's or client's) first frame
    connect_timeout_s: float = 1.0  # outbound: TCP connect plus the peer's handshake reply
    reconnect_initial_s: float = 0.05
    reconnect_max_s: float = 0.5
    keepalive_interval_s: float = 0.4
    idle_timeout_s: float = 1.0
    peer_queue_frames: int = 10_000
    peer_queue_bytes: int = 32 << 20  # frames to one peer not yet sent, the batch being sent included
    # Bounds on what one client (or anything that is not a configured peer) may cost:
    max_connections: int = 1024  # inbound connections at once; more are closed at accept, one log line each
    # Of those, still in their TLS or chronodb handshake: a newcomer beyond it evicts the oldest
    # (one that sent nothing first), so idle connections cannot lock new clients out.
    max_handshaking: int = 128
    client_idle_timeout_s: float = 600.0  # a client connection with nothing received this long is closed
    max_queued_reply_bytes: int = 64 << 20  # replies waiting to be sent on one connection: more and it is cut off
    max_requests_in_flight: int = 256  # per connection; beyond it the connection is not read (TCP backpressure)
    # Node-wide, across client connections: bytes of incomplete frames, of frames read and not yet
    # dispatched, and of requests being served (until the reply is queued). At the bound no client
    # connection is read (TCP backpressure) until some are freed; see txn/net/input_budget.py.
    max_client_input_bytes: int = 64 << 20
    client_frame_timeout_s: float = 30.0  # a client frame still incomplete this long after its first byte: closed

    def __attrs_post_init__(self) -> None:
        if not 0 < 2 * self.keepalive_interval_s <= self.idle_timeout_s:
            raise ValueError(f"idle_timeout_s ({self.idle_timeout_s:g}) must be at least twice "
                             f"keepalive_interval_s ({self.keepalive_interval_s:g})")
