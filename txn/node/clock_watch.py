"""Clock watch: probe every peer's clock, estimate offsets, fence this node when they run off.

Role: the node's half of DESIGN.md contract 6. Every `PROBE_INTERVAL_S` it
sends each peer a `ClockProbe` (hlc_exempt: answered and delivered even when
the clocks are far apart) and feeds the round trip to the pure
`hlc.offsets.OffsetMonitor`, which decides whether this node is fenced. The
node reads `fenced` on every request and every Paxos message: a fenced node
drops all Paxos traffic in and out (to the others it looks partitioned, so
it neither grants nor takes leases) and refuses reads and writes.

Inputs: `call(peer, message, timeout_s)` of the node's transport, the node's
`HybridClock`. Outputs: `fenced`, `cause`/`reason`, `offsets()`, and a log
line on every change.

The rule (hlc/offsets.py): fenced without fresh samples from enough peers to
form a majority with this node, or when this clock may lose a conflict (a
peer possibly farther than 0.9 max_offset, and this clock farther from the
median); serving again after 3 good rounds.

HAZARD: a clock that steps is trusted until the next usable probe, a drift
for up to the 5 s freshness window (the detection window in ARCHITECTURE.md);
probes share the event loop with the node's work, so under load fewer of
them are usable and the window stretches toward its 5 s bound.
"""

from __future__ import annotations

import collections
import logging
from typing import Awaitable, Callable

import trio

from hlc import HybridClock
from hlc.offsets import FenceCause, FenceState, OffsetMonitor
from txn import api
from txn.net.messaging import TransportError

PROBE_INTERVAL_S = 0.2
PROBE_TIMEOUT_S = 0.5

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

    @property
    def fenced(self) -> bool:
        return self.monitor.fenced

    @property
    def reason(self) -> str:
        return self.monitor.reason

    async def probe_loop(self, call: Call) -> None:
        while True:
            async with trio.open_nursery() as nursery:
                for peer in self.peers:
                    nursery.start_soon(self._probe, call, peer)
            self.update_fence()
            await trio.sleep(PROBE_INTERVAL_S)

    async def _probe(self, call: Call, peer: str) -> None:
        physical = self.clock.physical
        sent_ns = physical.now_ns()
        try:
            reply = await call(peer, api.ClockProbe(), PROBE_TIMEOUT_S)
        except TransportError:
            return
        if isinstance(reply, api.ClockProbeReply):
            self.monitor.record(peer, sent_ns, reply.physical_ns, physical.now_ns())

    def update_fence(self) -> FenceState:
        was_fenced, was_cause = self.fenced, self.monitor.cause
        state = self.monitor.evaluate(self.clock.physical.now_ns())
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
