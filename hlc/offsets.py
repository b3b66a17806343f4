"""Clock-offset monitoring: estimate each peer's clock offset and decide fencing.

Role: pure bookkeeping (no I/O). The node feeds round trips to each peer
here (a clock probe's, or a Paxos heartbeat's: txn/node/clock_watch.py):
local physical time at send and at receive, and the peer's physical time
when it answered. Cristian's estimate:

    offset = remote - (send + receive) / 2      error bound = (receive - send) / 2

so the true offset lies in [offset - error, offset + error] (if the reply's
clock reading happened between send and receive, which it must). A sample
whose error alone exceeds the limit says nothing and is ignored.

Samples (DESIGN.md contract 6, ARCHITECTURE.md "Clock-offset monitoring and
fencing"). Per peer the monitor keeps the samples of the last
`STALE_AFTER_NS` and bounds the offset by their intersection, each widened
by `DRIFT_PPM` of its age: at least as tight as the smallest-error sample
(NTP's min-RTT filter), so a load spike that slows most probes does not
starve the estimate. A new sample whose interval is disjoint from an older
one proves that a clock stepped: the older samples are dropped at once.

The rule. Each evaluation, from the fresh estimate of each peer, this
node knows every measured clock relative to its own (itself exactly 0, peer
p in [o_p - e_p, o_p + e_p]); a peer without a fresh sample may be anywhere.
1. No samples: fewer fresh peers than it takes, with this node, to form a
   majority of the cluster => fenced (NO_SAMPLES; WAITING at boot).
2. Conflict: this node and peer p conflict when their distance may exceed
   the limit L = fence_fraction * max_offset (|o_p| + e_p > L). The loser of
   a conflict is the clock farther from the median of all the cluster's
   clocks; distances within `tie_fraction * max_offset` of each other are a
   tie, lost by the larger node id. This node fences itself (SKEWED) if, for
   some clocks within its error bounds, it is the loser of a conflict.
3. A fenced node serves again after `recover_after` consecutive evaluations
   that would not fence it (one at boot: until the node first serves and
   `BOOT_GRACE_NS` after, when its samples are the widest).

When. The node evaluates every round (`evaluate`: samples age, drift
widens them, they go stale), and also as soon as a sample arrives that
could fence it (`record` says ALARM: a step, or a sample alone beyond the
limit; `check` may only fence, but at boot, where any sample may be the
first that lets the node serve). Any other sample narrows bounds, which
cannot newly fence (the rule is monotone in them).

Guarantee: if every node's bounds contain the true offsets, both nodes of a
conflict whose true distance exceeds L see it, both bound the same true
median (unknown clocks are unbounded), and the true loser is among the
possible losers of each, so it fences: at an evaluation, no two serving
nodes that measure each other are more than L apart (tests/hlc/test_offsets.py
checks this with hypothesis).

HAZARD: the rule trusts Cristian's error bound (a reply's clock was read
between send and receive), that two clocks drift apart by less than
DRIFT_PPM, and by less than max_offset - L within the detection window;
a step smaller than the older samples' error bounds goes unseen (the
estimate is off by up to the step) until they leave the window; a clock that jumps is trusted for up to the
detection window (ARCHITECTURE.md). A node blind to a peer (no fresh usable
sample for STALE_AFTER_NS) cannot see a conflict with it; the rule assumes
that a peer that measures this node is measured by it in return.
"""

from __future__ import annotations

import enum
from typing import ClassVar, Mapping

import attrs

# 0.9: measurements on a loaded machine are good to about 0.05 max_offset, so
# clocks at +-0.7 max_offset (1.4 apart) stay clear of a conflict with the
# middle one; the remaining 0.1 max_offset is the drift margin of the window.
FENCE_FRACTION = 0.9
TIE_FRACTION = 0.45  # half the limit: a clock within L/4 of the median never ties with one beyond L
RECOVER_AFTER = 3
STALE_AFTER_NS = 5_000_000_000
BOOT_GRACE_NS = 2_000_000_000  # after first serving, a fence still costs no rejoin streak
DRIFT_PPM = 100  # assumed bound on how fast two clocks drift apart (quartz: 50 ppm each)
UNBOUNDED_NS = 1 << 62  # a clock without a fresh sample: anywhere


@attrs.frozen
class OffsetSample:
    offset_ns: int
    error_ns: int
    at_ns: int  # local physical time of the receive

    @property
    def low_ns(self) -> int:
        return self.offset_ns - self.error_ns

    @property
    def high_ns(self) -> int:
        return self.offset_ns + self.error_ns


@attrs.define(eq=False)
class PeerOffset:
    samples: list[OffsetSample] = attrs.Factory(list)  # the freshness window, oldest first

    def add(self, sample: OffsetSample) -> bool:
        """Keep `sample`; True if it proved a step (it dropped older samples)."""
        # Disjoint intervals cannot both hold the same offset: the clock stepped.
        kept = [s for s in self.samples if s.low_ns <= sample.high_ns and sample.low_ns <= s.high_ns]
        stepped = len(kept) < len(self.samples)
        self.samples = kept
        self.samples.append(sample)
        return stepped

    def estimate(self, now_ns: int) -> OffsetSample | None:
        """The intersection of the freshness window's samples, each widened by the drift since it was taken.

        Every sample bounds the same offset (older ones up to the drift since),
        so the offset lies in all of them at once: a few fast round trips in
        the window bound it however slow the rest were (NTP's min-RTT filter,
        tightened). If they do not intersect the drift bound did not hold:
        the newest sample alone stands."""
        self.samples = [s for s in self.samples if now_ns - s.at_ns < STALE_AFTER_NS]
        if not self.samples:
            return None
        widened = [(s.low_ns - drift_ns(now_ns - s.at_ns), s.high_ns + drift_ns(now_ns - s.at_ns)) for s in self.samples]
        low, high = max(w[0] for w in widened), min(w[1] for w in widened)
        newest = self.samples[-1]
        if low > high:
            return newest
        return OffsetSample((low + high) // 2, (high - low + 1) // 2, newest.at_ns)


def drift_ns(elapsed_ns: int) -> int:
    """How far two clocks may drift apart in `elapsed_ns` (at most DRIFT_PPM)."""
    return max(0, elapsed_ns) * DRIFT_PPM // 1_000_000


class Sampled(enum.Enum):
    """What one round trip did to the monitor (`OffsetMonitor.record`)."""

    DROPPED = "dropped"  # an unknown peer, or too slow a round trip to tell anything
    NARROWED = "narrowed"  # overlaps every older sample, within the limit alone: no judgement can newly fence on it
    ALARM = "alarm"  # a step (disjoint from older samples) or, alone, beyond the limit: judge now


class FenceCause(enum.StrEnum):
    """Why a node is, or is not, fenced (the state; `reason` is its text)."""

    WAITING = "waiting"  # at boot: not enough peers measured yet
    NO_SAMPLES = "no_samples"  # too few fresh usable samples to judge this clock
    SKEWED = "skewed"  # this clock loses, or may lose, a conflict with a peer
    WITHIN_BOUNDS = "within_bounds"  # serving
    NO_PEERS = "no_peers"  # a one-node cluster: nothing to compare with
    MONITORING_OFF = "monitoring_off"  # a test or simulation turned monitoring off


@attrs.frozen
class FenceState:
    fenced: bool
    cause: FenceCause
    reason: str
    peer_offsets_ns: tuple[tuple[str, int, int], ...]  # (peer, offset, error)


# ---- the rule (pure functions of one node's view) ------------------------------


def median_bounds(bounds: Mapping[str, tuple[int, int]], cluster_size: int) -> tuple[int, int]:
    """Bounds on the median of all the cluster's clocks; clocks missing from `bounds` are unbounded.

    The median is monotone in every clock, so its least value is the median
    of the lower bounds and its greatest the median of the upper bounds."""
    unknown = cluster_size - len(bounds)
    lows = [-UNBOUNDED_NS] * unknown + sorted(low for low, _ in bounds.values())
    highs = sorted(high for _, high in bounds.values()) + [UNBOUNDED_NS] * unknown
    middle = (cluster_size - 1) // 2, cluster_size // 2  # one index when odd, two when even
    return (lows[middle[0]] + lows[middle[1]]) // 2, (highs[middle[0]] + highs[middle[1]] + 1) // 2


def distance_bounds(clock: tuple[int, int], median: tuple[int, int]) -> tuple[int, int]:
    """Bounds on |clock - median| for clock and median anywhere in their bounds."""
    low = max(0, clock[0] - median[1], median[0] - clock[1])
    return low, max(clock[1] - median[0], median[1] - clock[0])


def may_lose(me: str, peer: str, bounds: Mapping[str, tuple[int, int]], cluster_size: int, tie_ns: int) -> bool:
    """Whether `me` is the loser of its conflict with `peer` for some clocks within `bounds`."""
    median = median_bounds(bounds, cluster_size)
    mine, theirs = distance_bounds(bounds[me], median), distance_bounds(bounds[peer], median)
    farther_low, farther_high = mine[0] - theirs[1], mine[1] - theirs[0]  # bounds on my distance minus theirs
    may_be_farther = farther_high > tie_ns
    may_tie = farther_low <= tie_ns and farther_high >= -tie_ns
    return may_be_farther or (may_tie and me > peer)


def conflicts_lost(me: str, measured: Mapping[str, OffsetSample], cluster_size: int, limit_ns: int,
                   tie_ns: int) -> list[str]:
    """The peers `me` conflicts with and may lose to, from its fresh samples (offsets relative to `me`)."""
    bounds = {me: (0, 0)} | {peer: (s.low_ns, s.high_ns) for peer, s in measured.items()}
    return sorted(
        peer for peer, sample in measured.items()
        if abs(sample.offset_ns) + sample.error_ns > limit_ns and may_lose(me, peer, bounds, cluster_size, tie_ns)
    )


# ---- the monitor -------------------------------------------------------------------


class OffsetMonitor:
    # Mutation point: False is the old bug (a node that stops measuring its
    # peers keeps serving); tests and simulations build that mutant with it.
    FENCE_WITHOUT_SAMPLES: ClassVar[bool] = True

    def __init__(self, node_id: str, peers: list[str] | tuple[str, ...], max_offset_ns: int, *,
                 fence_fraction: float = FENCE_FRACTION, tie_fraction: float = TIE_FRACTION,
                 recover_after: int = RECOVER_AFTER) -> None:
        self.node_id = node_id
        self.peers = tuple(peers)
        assert node_id not in self.peers, (node_id, self.peers)
        self.max_offset_ns = max_offset_ns
        self.limit_ns = int(max_offset_ns * fence_fraction)
        self.tie_ns = int(max_offset_ns * tie_fraction)
        self.recover_after = recover_after
        self.by_peer: dict[str, PeerOffset] = {peer: PeerOffset() for peer in self.peers}
        self.enabled = True
        self.fenced = True
        self.cause = FenceCause.WAITING
        self.reason = "waiting for first clock measurements"
        self.fence_events = 0
        self.good_streak = 0
        # Boot lasts until this node first serves, and BOOT_GRACE_NS after. Its first samples are the
        # widest (TLS handshakes, a cluster's processes starting together on a busy box): one of them
        # may fence it for a moment, and that must not cost it the streak (leaderships would move).
        self.boot_ends_ns: int | None = None
        self.now_ns = 0  # local physical time of the latest input

    def record(self, peer: str, send_ns: int, remote_ns: int, receive_ns: int) -> Sampled:
        """Take one round trip, and say whether it calls for a judgement before the next round.

        A sample that overlaps every older one only narrows the peer's
        estimate (the intersection), and narrower bounds never make this
        node a possible loser where wider ones did not (the median, the
        distances and `may_lose` are monotone in the bounds); if it is also
        within the limit alone, no conflict with that peer can come of it.
        Anything else, a step above all, is judged at once (`check`): the
        rounds then only age samples out, and a clock that jumps is seen
        with the first round trip after it, not a round later."""
        if peer not in self.by_peer or receive_ns < send_ns:
            return Sampled.DROPPED
        error = (receive_ns - send_ns) // 2
        if error > self.limit_ns:
            return Sampled.DROPPED  # too slow a round trip to tell anything
        self.now_ns = max(self.now_ns, receive_ns)
        sample = OffsetSample(remote_ns - (send_ns + receive_ns) // 2, error, receive_ns)
        stepped = self.by_peer[peer].add(sample)
        return Sampled.ALARM if stepped or abs(sample.offset_ns) + error > self.limit_ns else Sampled.NARROWED

    def fresh(self, now_ns: int) -> dict[str, OffsetSample]:
        """The fresh estimate of each peer that has one."""
        best = {peer: state.estimate(now_ns) for peer, state in sorted(self.by_peer.items())}
        return {peer: sample for peer, sample in best.items() if sample is not None}

    def evaluate(self, now_ns: int) -> FenceState:
        """Update and return the fencing decision at local physical time `now_ns`."""
        self.now_ns = max(self.now_ns, now_ns)
        if not self.peers:
            self.fenced, self.cause, self.reason = False, FenceCause.NO_PEERS, "no peers"
        elif self.enabled:
            self._apply(*self._judge(self.fresh(self.now_ns)))
        return FenceState(self.fenced, self.cause, self.reason, self.offsets())

    @property
    def booting(self) -> bool:
        """Before this node first served, and BOOT_GRACE_NS after (as of the latest input)."""
        return self.boot_ends_ns is None or self.now_ns < self.boot_ends_ns

    def wants_check(self, sampled: Sampled) -> bool:
        """Whether the sample `record` just took calls for a judgement before the next round: an
        ALARM while serving (it may fence), or any sample while booting (it may be the first
        that lets this node serve)."""
        return sampled is Sampled.ALARM and not self.fenced or self.booting and sampled is not Sampled.DROPPED

    def check(self, now_ns: int) -> FenceState:
        """A judgement between rounds (`wants_check`): it may fence this node, and, but at boot,
        it never counts toward the streak of rounds that unfences it (that stays time-based)."""
        self.now_ns = max(self.now_ns, now_ns)
        if self.enabled and self.peers and (self.booting or not self.fenced):
            cause, reason = self._judge(self.fresh(self.now_ns))
            if cause is not FenceCause.WITHIN_BOUNDS or self.booting:
                self._apply(cause, reason)
        return FenceState(self.fenced, self.cause, self.reason, self.offsets())

    def _judge(self, fresh: dict[str, OffsetSample]) -> tuple[FenceCause, str]:
        """The cause this evaluation alone gives (WITHIN_BOUNDS: it would serve)."""
        # This node plus the peers it measured must be a majority of the
        # cluster, so one node down does not keep the rest fenced.
        needed = (len(self.peers) + 1) // 2
        if len(fresh) < needed and (self.FENCE_WITHOUT_SAMPLES or self.cause is FenceCause.WAITING):
            cause = FenceCause.WAITING if self.cause is FenceCause.WAITING else FenceCause.NO_SAMPLES
            return cause, f"fresh clock samples from {len(fresh)} of {len(self.peers)} peers; {needed} needed"
        lost = conflicts_lost(self.node_id, fresh, len(self.peers) + 1, self.limit_ns, self.tie_ns)
        if lost:
            shown = ", ".join(f"{p} {fresh[p].offset_ns / 1e6:+.3f}ms±{fresh[p].error_ns / 1e6:.3f}" for p in lost)
            return FenceCause.SKEWED, (f"clock offset beyond {self.limit_ns / 1e6:g}ms from {shown};"
                                       " this clock is farther from the median (or tied with a smaller id)")
        return FenceCause.WITHIN_BOUNDS, "clock within bounds"

    def _apply(self, cause: FenceCause, reason: str) -> None:
        if cause is not FenceCause.WITHIN_BOUNDS:
            if not self.fenced:
                self.fence_events += 1
            self.good_streak = 0
            self.fenced, self.cause, self.reason = True, cause, reason
            return
        self.good_streak += 1
        # Rejoin after a streak of good evaluations (just one at boot: nothing to flap from yet).
        streak = 1 if self.booting else self.recover_after
        if not self.fenced or self.good_streak >= streak:
            self.fenced, self.cause, self.reason = False, cause, reason
            if self.boot_ends_ns is None:
                self.boot_ends_ns = self.now_ns + BOOT_GRACE_NS

    def turn_off(self) -> None:
        """Never fence (tests and simulations whose clocks stay within bounds by construction)."""
        self.enabled = False
        self.boot_ends_ns = 0
        self.fenced, self.cause, self.reason = False, FenceCause.MONITORING_OFF, "clock monitoring off"

    def offsets(self) -> tuple[tuple[str, int, int], ...]:
        """(peer, offset, error) of the fresh estimate of each peer, as of the latest input."""
        return tuple((peer, s.offset_ns, s.error_ns) for peer, s in self.fresh(self.now_ns).items())
