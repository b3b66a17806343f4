"""Clock-offset monitoring: estimate each peer's clock offset and decide fencing.

Role: pure bookkeeping (no I/O). The node sends a probe to each peer every
interval and feeds the round trip here: local physical time at send and at
receive, and the peer's physical time when it answered. Cristian's estimate:

    offset = remote - (send + receive) / 2      error bound = (receive - send) / 2

so the true offset lies in [offset - error, offset + error] (if the reply's
clock reading happened between send and receive, which it must).

Fencing (DESIGN.md contract 6): a node whose offset from a majority of its
peers exceeds `fence_fraction * max_offset` (default 80%) fences itself: it
stops serving and stops granting and taking leases. "Exceeds" uses the lower
bound |offset| - error, so a slow network cannot fence a good clock; a
measurement whose error bound alone exceeds the limit says nothing and is
ignored. A fenced node rejoins after `recover_after` consecutive good
measurements from enough peers that, with itself, they are a majority of the
cluster. At boot it is fenced ("waiting") until it has one good measurement
from that many peers.

HAZARD: this is the only defence of external consistency against a clock
drifting past max_offset; it reacts within a few probe intervals, so the
bound must leave room for the drift during that time.
"""

from __future__ import annotations

import enum

import attrs

FENCE_FRACTION = 0.8
RECOVER_AFTER = 3
STALE_AFTER_NS = 5_000_000_000


@attrs.frozen
class OffsetSample:
    offset_ns: int
    error_ns: int
    at_ns: int  # local physical time of the receive


@attrs.define(eq=False)
class PeerOffset:
    last: OffsetSample | None = None
    good_streak: int = 0
    bad: bool = False


class FenceCause(enum.StrEnum):
    """Why a node is, or is not, fenced (the state; `reason` is its text)."""

    WAITING = "waiting"  # at boot: not enough peers measured yet
    SKEWED = "skewed"  # offset beyond the limit from a majority of peers
    WITHIN_BOUNDS = "within_bounds"  # serving
    NO_PEERS = "no_peers"  # a one-node cluster: nothing to compare with
    MONITORING_OFF = "monitoring_off"  # a test or simulation turned monitoring off


@attrs.frozen
class FenceState:
    fenced: bool
    cause: FenceCause
    reason: str
    peer_offsets_ns: tuple[tuple[str, int, int], ...]  # (peer, offset, error)


class OffsetMonitor:
    def __init__(self, peers: list[str] | tuple[str, ...], max_offset_ns: int, *,
                 fence_fraction: float = FENCE_FRACTION, recover_after: int = RECOVER_AFTER) -> None:
        self.peers = tuple(peers)
        self.max_offset_ns = max_offset_ns
        self.limit_ns = int(max_offset_ns * fence_fraction)
        self.recover_after = recover_after
        self.by_peer: dict[str, PeerOffset] = {peer: PeerOffset() for peer in self.peers}
        self.fenced = True
        self.cause = FenceCause.WAITING
        self.reason = "waiting for first clock measurements"
        self.fence_events = 0

    def record(self, peer: str, send_ns: int, remote_ns: int, receive_ns: int) -> None:
        if peer not in self.by_peer or receive_ns < send_ns:
            return
        error = (receive_ns - send_ns) // 2
        offset = remote_ns - (send_ns + receive_ns) // 2
        if error > self.limit_ns:
            return  # too slow a round trip to tell anything
        state = self.by_peer[peer]
        state.last = OffsetSample(offset, error, receive_ns)
        state.bad = abs(offset) - error > self.limit_ns
        state.good_streak = 0 if state.bad else state.good_streak + 1

    def evaluate(self, now_ns: int) -> FenceState:
        """Update and return the fencing decision at local physical time `now_ns`."""
        if not self.peers:
            self.fenced, self.cause, self.reason = False, FenceCause.NO_PEERS, "no peers"
            return FenceState(self.fenced, self.cause, self.reason, ())
        majority = len(self.peers) // 2 + 1  # a majority of the peers
        # To serve, this node plus the peers it measured good must be a
        # majority of the cluster, so one node down does not keep the rest fenced.
        needed_good = (len(self.peers) + 1) // 2
        fresh = {p: s for p, s in self.by_peer.items() if s.last is not None and now_ns - s.last.at_ns < STALE_AFTER_NS}
        bad = sorted(p for p, s in fresh.items() if s.bad)
        if len(bad) >= majority:
            if not self.fenced:
                self.fence_events += 1
            self.fenced = True
            self.cause = FenceCause.SKEWED
            self.reason = f"clock offset beyond {self.limit_ns / 1e6:g}ms from {', '.join(bad)}"
        elif self.fenced:
            # Rejoin after a streak of good measurements (just one at boot).
            streak = self.recover_after if self.cause is FenceCause.SKEWED else 1
            good = [p for p, s in fresh.items() if not s.bad and s.good_streak >= streak]
            if len(good) >= needed_good:
                self.fenced, self.cause, self.reason = False, FenceCause.WITHIN_BOUNDS, "clock within bounds"
        return FenceState(self.fenced, self.cause, self.reason, self.offsets())

    def turn_off(self) -> None:
        """Never fence (tests and simulations whose clocks stay within bounds by construction)."""
        self.fenced, self.cause, self.reason = False, FenceCause.MONITORING_OFF, "clock monitoring off"

    def offsets(self) -> tuple[tuple[str, int, int], ...]:
        return tuple(
            (peer, state.last.offset_ns, state.last.error_ns)
            for peer, state in sorted(self.by_peer.items()) if state.last is not None
        )
