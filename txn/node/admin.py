"""Admin answers of a node: skew injection and the inspector's views.

Role: `SkewRequest` drives the node's `SkewedClock` (offset, drift, bump,
strobe, clear; not persisted: a restart runs on the true clock again);
`Inspect{Key,Tablet,Log}Request` read one replica's state for
`chronodb inspect`. Every admin request is `hlc_exempt`, so an operator can
reach a node whose clock ran off.

Invariants: answers are read-only views except skew; a bad request is a
`bad_request` failure, never an exception that reaches the transport.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from hlc.physical import SkewedClock
from txn import api
from txn.api.errors import failure

if TYPE_CHECKING:
    from txn.node.server import Node

MAX_LOG_ENTRIES = 1000

log = logging.getLogger("chronodb.node")


class NodeAdmin:
    def __init__(self, node: "Node") -> None:
        self.node = node
        self.strobe_scope: trio.CancelScope | None = None

    # ---- skew injection ----------------------------------------------------

    def skewed_clock(self) -> SkewedClock:
        physical = self.node.clock.physical
        if not isinstance(physical, SkewedClock):
            raise failure(api.ErrorCode.BAD_REQUEST, f"node {self.node.node_id} runs on a clock that cannot be skewed")
        return physical

    def skew(self, request: api.SkewRequest) -> api.NodeClockReply:
        physical = self.skewed_clock()
        action = request.action
        if action is not api.SkewAction.SHOW and self.strobe_scope is not None:
            self.strobe_scope.cancel()
            self.strobe_scope = None
        try:
            if action is api.SkewAction.SET:
                if request.offset_ns is not None:
                    physical.set_offset(request.offset_ns)
                if request.drift_ppm is not None:
                    physical.set_drift(request.drift_ppm)
            elif action is api.SkewAction.BUMP:
                physical.bump(request.offset_ns or 0)
            elif action is api.SkewAction.CLEAR:
                physical.clear()
            elif action is api.SkewAction.STROBE:
                self._start_strobe(request)
        except ValueError as error:  # out of the clock's bounds
            raise failure(api.ErrorCode.BAD_REQUEST, str(error)) from None
        if action is not api.SkewAction.SHOW:
            log.warning("node %s: clock skew %s: offset %dns, drift %dppm", self.node.node_id, action,
                        physical.offset_ns, physical.drift_ppm)
        return self.clock_report()

    def _start_strobe(self, request: api.SkewRequest) -> None:
        if not (request.offset_ns and request.period_ns and request.duration_ns) or request.period_ns <= 0:
            raise failure(api.ErrorCode.BAD_REQUEST, "strobe needs an offset, a positive period and a duration")
        physical = self.skewed_clock()
        physical.check_offset(physical.offset_ns + request.offset_ns)  # ValueError: out of bounds, before any task starts
        assert self.node.nursery is not None
        self.strobe_scope = trio.CancelScope()
        self.node.nursery.start_soon(self._strobe, self.strobe_scope, request.offset_ns, request.period_ns, request.duration_ns)

    async def _strobe(self, scope: trio.CancelScope, offset_ns: int, period_ns: int, duration_ns: int) -> None:
        physical = self.skewed_clock()
        base = physical.offset_ns
        with scope:
            with trio.move_on_after(duration_ns / 1e9):
                high = True
                while True:
                    physical.set_offset(base + offset_ns if high else base)
                    high = not high
                    await trio.sleep(period_ns / 1e9)
            physical.set_offset(base)
        if self.strobe_scope is scope:
            self.strobe_scope = None

    def clock_report(self) -> api.NodeClockReply:
        node = self.node
        physical = node.clock.physical
        rejected = {}
        if node.transport is not None:
            rejected = {peer: stats.rejected_clock for peer, stats in node.transport.statistics().peers.items()}
        offsets = {peer: (offset, error) for peer, offset, error in node.watch.offsets()}
        peers = tuple(api.PeerClock(peer, *offsets.get(peer, (0, -1)), rejected.get(peer, 0)) for peer in node.peers)
        return api.NodeClockReply(
            node.node_id, getattr(physical, "offset_ns", 0), getattr(physical, "drift_ppm", 0),
            self.strobe_scope is not None, node.fenced, node.watch.reason, physical.now_ns(), node.clock.now(), peers,
        )

    # ---- fault injection (partitions) ------------------------------------------

    def fault(self, request: api.FaultRequest) -> api.FaultReply:
        transport = self.node.transport
        if not hasattr(transport, "block_peers"):
            raise failure(api.ErrorCode.BAD_REQUEST, f"node {self.node.node_id}'s transport cannot inject faults")
        if request.action is api.FaultAction.BLOCK:
            unknown = sorted(set(request.peers) - set(self.node.peers))
            if unknown or not request.peers or not (request.incoming or request.outgoing):
                raise failure(api.ErrorCode.BAD_REQUEST, f"block needs peers among {', '.join(self.node.peers)} "
                              f"and a direction (unknown: {', '.join(unknown) or 'none'})")
            transport.block_peers(set(request.peers), incoming=request.incoming, outgoing=request.outgoing)
        elif request.action is api.FaultAction.CLEAR:
            transport.clear_blocked()
        if request.action is not api.FaultAction.SHOW:
            log.warning("node %s: fault %s: dropping traffic from [%s] and to [%s]", self.node.node_id, request.action,
                        ",".join(sorted(transport.blocked_incoming)), ",".join(sorted(transport.blocked_outgoing)))
        return api.FaultReply(self.node.node_id, sorted(transport.blocked_incoming), sorted(transport.blocked_outgoing),
                              transport.fault_dropped)

    # ---- inspection ------------------------------------------------------------

    def inspect_key(self, request: api.InspectKeyRequest) -> api.InspectKeyReply:
        replica = self.node.replica(request.tablet_id)
        store = replica.state.store
        versions = sorted((api.VersionInfo(v.ts, v.value) for v in store.versions(request.key)), key=lambda v: v.ts)
        intent = store.intent(request.key)
        return api.InspectKeyReply(
            self.node.node_id, request.tablet_id, replica.state.applied_index(), versions,
            intent.txn_id if intent else None, intent.ts if intent else None,
        )

    def inspect_tablet(self, request: api.InspectTabletRequest) -> api.InspectTabletReply:
        replica = self.node.replica(request.tablet_id)
        stats = replica.state.store.statistics()
        size = getattr(replica.engine, "size_on_disk", lambda: 0)()
        space = replica.space.counters
        return api.InspectTabletReply(
            self.node.node_id, replica.status(), stats.keys, stats.versions, stats.tombstones, stats.intents,
            stats.approximate_bytes, stats.oldest_version_ts, stats.newest_version_ts, size,
            space.gc_passes, space.gc_dropped, space.compactions, space.compaction_max_ns, space.gc_passes_skipped,
        )

    def inspect_log(self, request: api.InspectLogRequest) -> api.InspectLogReply:
        replica = self.node.replica(request.tablet_id)
        status = replica.paxos.status()
        start = max(request.from_index, status.first_index)
        stop = min(request.to_index, status.last_index, start + MAX_LOG_ENTRIES - 1)
        entries = replica.paxos.entries(start, stop) if stop >= start else []
        return api.InspectLogReply(
            self.node.node_id, status.first_index, status.last_index,
            tuple(api.LogEntryInfo(index, str(ballot), command) for index, ballot, command in entries),
        )

    def inspect_txn(self, request: api.InspectTxnRequest) -> api.InspectTxnReply:
        return api.InspectTxnReply(self.node.node_id, tuple(
            txn_on_tablet(replica.tablet.id, replica.state.txns, request.txn_id, replica._is_serving(), replica.txns.locks)
            for replica in self.node.replicas.values()
        ))


def txn_on_tablet(tablet_id: str, records, txn_id: str, serving: bool, locks=None) -> api.TxnOnTablet:
    """What one replica knows of a transaction (also used offline by the inspector, without locks)."""
    prepare = records.prepared.get(txn_id)
    decision = records.decisions.get(txn_id)
    held = locks.txns.get(txn_id) if locks is not None and serving else None
    aborted = locks.is_aborted(txn_id) if locks is not None and serving else None
    return api.TxnOnTablet(
        tablet_id, serving, prepare.ts if prepare else None, prepare.coordinator if prepare else None,
        len(prepare.writes) if prepare else decision.writes if decision is not None else 0,
        None if decision is None else ("committed" if decision.committed else "aborted"),
        decision.commit_ts if decision is not None and decision.committed else None,
        len(held.keys) if held else 0, len(held.ranges) if held else 0, str(aborted) if aborted else None,
    )
