"""Clock watch: probe every peer's clock, estimate offsets, fence this node when they run off.

Role: the node's half of DESIGN.md contract 6. It feeds round trips to each
peer to the pure `hlc.offsets.OffsetMonitor`, which decides whether this
node is fenced. It judges the clock every `PROBE_INTERVAL_S` (samples age
and go stale), and at once on a sample that could fence it (a step, or one
alone beyond the limit: `Sampled.ALARM`; a probe of that peer, sent at
once, confirms or narrows it: `CONFIRM_GAP_S`) and, at boot, on every
sample (`OffsetMonitor.wants_check`). The node
reads `fenced` on every request and every Paxos message: a fenced node
drops all Paxos traffic in and out (to the others it looks partitioned, so
it neither grants nor takes leases) and refuses reads and writes.

Two sources of round trips: a Paxos `Accepted` echoes the leader's send time
of the Accept it answers and carries the follower's physical clock
(`record_round_trip`, from txn/node/server.py), so a leader measures its
followers on every heartbeat for free; and a `ClockProbe` (hlc_exempt:
answered and delivered even when the clocks are far apart; answered from the
peer's reading task, txn/node/server.py `answer_now`), sent each round
only to the peers no Paxos round trip measured within the last 500 ms (a
quiet leader heartbeats every 400 ms). Every peer is still measured, at
least every 1.0 s (500 ms, then the next round, then half a grain), as the
rule's mutual-measurement assumption needs;
the probes an idle cluster sends fall from two per peer per round to those
its leaders' heartbeats do not cover. A probe's round trip ends where its
reply was read and handed over (`response_taken_at`, txn/net/messaging.py),
not when the probing task runs again a pass later. Rounds (the judgement) end on the
node's coarse timer grid (txn/net/coarse_timer.py), with its other
housekeeping; the probes go out half a grain later, off it. In a node
process the grid lies on the wall clock, so every node's quiet heartbeats
and housekeeping fall in the same instants, and a round trip timed there
waits behind all of them (a few ms on two cores: the precise samples
the rule needs would not come from there; ARCHITECTURE.md).

Inputs: `call(peer, message, timeout_s)` and `connected(peer)` of the node's
transport (a probe that waited for its link's dial, TCP and TLS handshakes
in its round trip, is not a sample), the node's `HybridClock`,
`record_round_trip(...)`. Outputs: `fenced`, `cause`/`reason`, `offsets()`,
counters of samples by source (`samples`), and a log line on every change.

The rule (hlc/offsets.py): fenced without fresh samples from enough peers to
form a majority with this node, or when this clock may lose a conflict (a
peer possibly farther than 0.9 max_offset, and this clock farther from the
median); serving again after 3 good rounds (1.2 s).

HAZARD: a clock that steps is trusted until the next usable sample, a drift
for up to the 5 s freshness window (the detection window in ARCHITECTURE.md);
probes share the event loop with the node's work, so under load fewer of
them are usable and the window stretches toward its 5 s bound.
"""

from __future__ import annotations

import collections
import functools
import logging
import math
from typing import Awaitable, Callable

import trio

from hlc import HybridClock
from hlc.offsets import FenceCause, FenceState, OffsetMonitor, Sampled
from txn import api
from txn.net.coarse_timer import GRAIN_S, sleep_coarse
from txn.net.messaging import TransportError, response_taken_at

PROBE_INTERVAL_S = 0.4  # a grain: rounds only age samples out; an alarming sample is judged when it comes
# A reply later than twice the fence limit (18 ms with the default max_offset) is too slow to use
# (hlc/offsets.py drops it): waiting longer only keeps the next probe of that peer back. 0.5 s
# let two lost probes in a row hide a step for over 2 s (cluster simulation, seed 166).
PROBE_TIMEOUT_S = 0.1
PROBE_OFF_GRID_S = GRAIN_S / 2  # a probe goes out this long after the round that found it due
# An alarming sample (a step, or alone beyond the limit) is confirmed by a probe of that peer at once,
# at most this often per peer. A wide sample (seen at boot: +4.7 ms +-5.2 fenced a node) stays in the
# 5 s window, and only a precise one intersecting it narrows the estimate. Waiting for the next round
# let a peer that stopped answering in between keep this node fenced for the whole window: with the
# peer gone, 6 s in which the tablets they shared could elect no leader (tests/e2e/test_paused_leader.py).
# That one was a probe over a link still dialing (now not a sample: `probe_loop`); others come from a
# stalled loop or a busy peer.
CONFIRM_GAP_S = PROBE_INTERVAL_S
# Only precise Paxos round trips are used: at most this fraction of max_offset as error (half the
# round trip; 2 ms with the default 10 ms), nor one that claims to end before it began (the echoed
# send time is the peer's word). A wide sample taken just after a clock step can overlap the older,
# precise ones and pin the estimate between the old offset and the new (the step hazard of
# hlc/offsets.py): seen when every node's heartbeats went out at the same instants (a wall-clock
# timer grid, tried and not kept: ARCHITECTURE.md), whose round trips took a few ms; a node fenced
# after a 5 ms skew of another. A tenth of max_offset cost idle nodes probes again (~0.2% of a
# core): a fifth drops few heartbeat samples. Probes keep the monitor's own bound.
# The monotonic clock times the round trip and the physical one dates its end: RATE_MARGIN_PPM
# widens it for their rates differing.
PAXOS_MAX_ERROR_FRACTION = 0.2
RATE_MARGIN_PPM = 1_000
# A peer a Paxos round trip measured this recently (trio's monotonic clock: a stepping physical clock
# must not stop the probes) is not probed: longer than a quiet leader's heartbeat interval (400 ms,
# paxos/types.py; both on the grid), shorter than it plus a round (one lost sample: probed at once).
PAXOS_SAMPLE_FRESH_S = 0.5
# At most one Paxos sample per peer this often: a loaded leader receives thousands of Accepteds a
# second, and the monitor keeps every sample of its 5 s window (each new one is checked against them
# all: 20,000 samples made one record cost 7 ms). Half a busy heartbeat interval: every heartbeat passes.
PAXOS_SAMPLE_GAP_S = 0.05

log = logging.getLogger("chronodb.node")

Call = Callable[[str, object, float], Awaitable[object]]


class ClockWatch:
    def __init__(self, node_id: str, peers: list[str], clock: HybridClock, max_offset_ns: int, *, enabled: bool = True) -> None:
        self.node_id = node_id
        self.peers = peers
        self.clock = clock
        self.monitor = OffsetMonitor(node_id, peers, max_offset_ns)
        if not enabled:
            self.monitor.turn_off()
        self.on_change: Callable[[bool], None] = lambda fenced: None
        self.marks: collections.Counter[str] = collections.Counter()  # coverage marks for the simulation
        # Usable samples by source (probe, paxos), and paxos_dropped: heartbeat round trips too slow to use.
        self.samples: collections.Counter[str] = collections.Counter()
        self._sampled_s: dict[str, float] = {}  # peer -> trio time of its last usable Paxos sample
        self._probing: set[str] = set()  # peers with a probe under way (one at a time per peer)
        self._confirmed_s: dict[str, float] = {}  # peer -> trio time of its last confirmation probe
        self._probes: trio.Nursery | None = None  # the probe loop's, while it runs
        self._call: Call | None = None
        self._connected: Callable[[str], bool] = lambda peer: True
        self.paxos_round_trip_limit_ns = int(2 * PAXOS_MAX_ERROR_FRACTION * max_offset_ns)

    @property
    def fenced(self) -> bool:
        return self.monitor.fenced

    @property
    def reason(self) -> str:
        return self.monitor.reason

    async def probe_loop(self, call: Call, connected: Callable[[str], bool] = lambda peer: True) -> None:
        """Probe rounds until cancelled. `connected(peer)`: whether a message to `peer` leaves at
        once (the transport's); a probe that must wait for a dial is sent, to open the link, but
        its round trip, which then holds the handshake, is not a sample: another probe follows
        at once over the open link (as a confirmation does: `_confirm`)."""
        self._connected = connected
        try:
            async with trio.open_nursery() as probes:
                self._probes, self._call = probes, call
                while True:
                    now_s = trio.current_time()
                    for peer in self.peers:
                        if now_s - self._sampled_s.get(peer, -math.inf) >= PAXOS_SAMPLE_FRESH_S and peer not in self._probing:
                            self._probing.add(peer)
                            probes.start_soon(self._probe, call, peer)
                    self.update_fence()
                    await sleep_coarse(PROBE_INTERVAL_S)  # with the node's other housekeeping (txn/net/coarse_timer.py)
        finally:
            self._probes = self._call = None

    async def _probe(self, call: Call, peer: str, *, off_grid: bool = True) -> None:
        physical = self.clock.physical
        try:
            if off_grid:  # where every node's heartbeats and housekeeping are not (module docstring)
                await trio.sleep(PROBE_OFF_GRID_S)
            sent_ns = physical.now_ns()
            over_open_link = self._connected(peer)
            try:
                reply = await call(peer, api.ClockProbe(), PROBE_TIMEOUT_S)
            except TransportError:
                return
        finally:
            self._probing.discard(peer)  # before the judgement below, which may confirm with another probe
        if not over_open_link:
            self.samples["probe_dialed"] += 1  # its round trip held the dial (and TLS handshake): not a sample
            self.marks["clock.probe_dialed"] += 1
            self._confirm(peer)  # the link is open now: a probe over it at once, not a round later
            return
        if isinstance(reply, api.ClockProbeReply):
            sampled = self.monitor.record(peer, sent_ns, reply.physical_ns, self._taken_ns(sent_ns, physical.now_ns()))
            if sampled is not Sampled.DROPPED:
                self.samples["probe"] += 1
                self._judge_alarm(sampled, peer)

    @staticmethod
    def _taken_ns(sent_ns: int, now_ns: int) -> int:
        """The physical time the probe's reply was taken from the network (`response_taken_at`),
        from `now_ns`: earlier by the time this task then waited for its turn, so that wait is
        not in the sample's error bound. The trio clock times the wait; RATE_MARGIN_PPM covers
        its rate and the physical clock's differing. Never later than now, never before the
        probe was sent (a stamp from outside the round trip is not this reply's: now is used)."""
        waited_s = trio.current_time() - response_taken_at()
        if not 0 <= waited_s * 1e9 <= now_ns - sent_ns:  # NaN compares false: no stamp
            return now_ns
        waited_ns = int(waited_s * 1e9)
        return now_ns - waited_ns + waited_ns * RATE_MARGIN_PPM // 1_000_000

    def record_round_trip(self, peer: str, elapsed_ns: int, peer_physical_ns: int) -> None:
        """A round trip that was not a probe: sent `elapsed_ns` ago (monotonic), answered by `peer` when its
        physical clock read `peer_physical_ns`, received now. Too long (or negative) a round trip is dropped,
        and so is any within PAXOS_SAMPLE_GAP_S of this peer's last usable one (the hot path: every Accepted)."""
        if trio.current_time() - self._sampled_s.get(peer, -math.inf) < PAXOS_SAMPLE_GAP_S:
            return
        if not 0 <= elapsed_ns <= self.paxos_round_trip_limit_ns:
            self.samples["paxos_dropped"] += 1
            return
        received_ns = self.clock.physical.now_ns()
        sent_ns = received_ns - elapsed_ns - elapsed_ns * RATE_MARGIN_PPM // 1_000_000
        sampled = self.monitor.record(peer, sent_ns, peer_physical_ns, received_ns)
        if sampled is not Sampled.DROPPED:
            self._sampled_s[peer] = trio.current_time()
            self.samples["paxos"] += 1
            self.marks["clock.paxos_sample"] += 1
            self._judge_alarm(sampled, peer)

    def _judge_alarm(self, sampled: Sampled, peer: str) -> None:
        """A sample that could fence this node (or, at boot, let it serve) is judged at once, not at the
        next round; an alarming one is also confirmed at once by a probe of its peer (CONFIRM_GAP_S)."""
        if self.monitor.wants_check(sampled):
            self.marks["clock.alarm_judged" if sampled is Sampled.ALARM else "clock.boot_judged"] += 1
            self._report(self.fenced, self.monitor.cause, self.monitor.check(self.clock.physical.now_ns()))
        if sampled is Sampled.ALARM:
            self._confirm(peer)

    def _confirm(self, peer: str) -> None:
        """Probe `peer` now (to confirm an alarm, or after a probe that dialed), unless a probe of it is
        under way or one was sent so within CONFIRM_GAP_S (a peer that really is skewed alarms on every
        sample: one extra probe per gap at most)."""
        now_s = trio.current_time()
        if (self._probes is None or self._call is None or peer in self._probing
                or now_s - self._confirmed_s.get(peer, -math.inf) < CONFIRM_GAP_S):
            return
        self._confirmed_s[peer] = now_s
        self._probing.add(peer)
        self.marks["clock.confirm_probes"] += 1
        self._probes.start_soon(functools.partial(self._probe, self._call, peer, off_grid=False))

    def update_fence(self) -> FenceState:
        """A round's judgement: fences, or counts toward serving again."""
        was_fenced, was_cause = self.fenced, self.monitor.cause
        return self._report(was_fenced, was_cause, self.monitor.evaluate(self.clock.physical.now_ns()))

    def _report(self, was_fenced: bool, was_cause: FenceCause, state: FenceState) -> FenceState:
        if state.fenced != was_fenced:
            self.marks["node.fenced" if state.fenced else "node.unfenced"] += 1
            if state.fenced:
                log.warning("node %s FENCED: %s; not serving, not granting or taking leases", self.node_id, state.reason)
            elif was_cause is FenceCause.WAITING:
                log.info("node %s measured its peers' clocks (%s): serving", self.node_id, self.offsets_text())
            else:
                log.warning("node %s unfenced: %s (%s); serving again", self.node_id, state.reason, self.offsets_text())
        self.on_change(state.fenced)
        return state

    def offsets(self) -> tuple[tuple[str, int, int], ...]:
        return self.monitor.offsets()

    def offsets_text(self) -> str:
        return ", ".join(f"{peer} {offset / 1e6:+.3f}ms±{error / 1e6:.3f}" for peer, offset, error in self.offsets())
