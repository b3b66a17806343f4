"""Space stays bounded: a tablet replica's GC loop, with the compactions that return the space.

Role: the background task of one tablet replica that (1) garbage-collects
versions older than `gc_retention` below the replica's safe time, in
bounded chunks, (2) compacts the LevelDB ranges those chunks dropped from,
and (3) compacts the Paxos log's range below its snapshot index once
truncation (automatic in the Paxos core past `truncate_threshold_entries`,
paxos/replica.py) deleted enough of it and what it deleted is still a real
share of the engine's bytes (LevelDB drops most of it by itself). Which
ranges and how often is the pure policy of txn/tablet/compaction.py; this
module only runs it.

Every interval (`gc_retention / 2`, between 0.2 s and 5 s): if the horizon
`safe_ts - gc_retention` is above the store's (`safe_ts`: the replica's
readable safe time, logged or closed: txn/tablet/leader.py), one GC pass at that horizon,
chunk by chunk (a checkpoint between chunks), each closed slice compacted as
it closes; then the log check. A pass that could drop nothing (no version
between the last pass's horizon and this one: mvcc/store.py) reads no
version and only moves the horizon (`gc_passes_skipped`): a store younger
than `gc_retention` costs its GC loop nothing. A pass whose chunks held the
loop d in all is followed by at least d * (1 - GC_DUTY) / GC_DUTY before the
next (`rest_s`), so GC holds the loop at most GC_DUTY of the time however
large the store: a pass reads every version (about 0.4 us each), and a
10-million-version store read every 5 s would take most of a core. The
horizon then lags `gc_retention` by that much more (a minimum kept, not a
maximum), and the log check waits as long. GC and compaction are local to the replica
(never replicated): each replica collects and compacts on its own clock.

Invariants: compaction changes nothing readable (it only rewrites LevelDB
files), so it may run at any point between other requests; GC keeps its own
(mvcc/gc.py: every chunk leaves the store answering every read at or above
the horizon as before). GC's LevelDB calls run inline on the trio loop
(bounded chunks). A compaction runs in a worker thread on a real node
(`offload=True`, from NodeEnvironment.offload_compaction): measured on a
100 MB tablet, one slice held the loop up to 578 ms inline, longer than an
election timeout, while plyvel releases the GIL for the compaction (the loop's
longest gap with the thread: 24 ms). LevelDB is safe for concurrent use, and
compaction changes nothing readable, so requests go on meanwhile. The
simulation keeps it inline (`offload=False`): a thread would escape its
virtual clock and its determinism. The pace in compaction.py bounds the
share of time either way; the counters record the longest call.
"""

from __future__ import annotations

from typing import Callable

import attrs
import trio

from hlc import Timestamp
from paxos.storage import PaxosStorage
from txn.net.coarse_timer import sleep_coarse
from txn.tablet.compaction import CompactionPolicy, Slice, SlicePlanner
from txn.tablet.state import TabletState

GC_INTERVAL_S = 5.0
MIN_GC_INTERVAL_S = 0.2
GC_DUTY = 0.1  # longest share of the loop's time GC passes hold it (the rest between passes)


@attrs.define
class SpaceCounters:
    """What this replica's space loop did since the node started (`chronodb inspect tablet`, `bench space`)."""

    gc_passes: int = 0
    gc_passes_skipped: int = 0  # of gc_passes: nothing could be dropped, so no version was read (mvcc/store.py)
    gc_dropped: int = 0  # versions GC deleted
    gc_held_ns: int = 0  # time GC chunks held the loop, in all
    compactions: int = 0  # LevelDB compaction calls (MVCC slices and log ranges)
    compaction_ns: int = 0  # time they held the loop, in all
    compaction_max_ns: int = 0  # the longest one
    log_compacted_through: int = 0  # the Paxos log is compacted up to this index


class SpaceLoop:
    """GC behind `gc_retention`, and compaction, for one tablet replica."""

    def __init__(
        self, *, state: TabletState, log: PaxosStorage, snapshot_index: Callable[[], int], gc_retention_ns: int,
        monotonic_ns: Callable[[], int], policy: CompactionPolicy | None = None, offload: bool = False,
        safe_ts: Callable[[], Timestamp] | None = None,
    ) -> None:
        """`safe_ts`: the safe time GC stays `gc_retention` behind (default: the state's logged one)."""
        self.offload = offload
        self.state = state
        self.safe_ts = safe_ts or (lambda: state.safe_ts)
        self.log = log
        self.snapshot_index = snapshot_index
        self.gc_retention_ns = gc_retention_ns
        self.monotonic_ns = monotonic_ns
        self.planner = SlicePlanner(policy or CompactionPolicy())
        self.counters = SpaceCounters()
        self._next_compaction_ns = 0
        self.rest_s = 0.0  # after the last pass: the least wait before the next (GC_DUTY)

    @property
    def interval_s(self) -> float:
        return min(GC_INTERVAL_S, max(MIN_GC_INTERVAL_S, self.gc_retention_ns / 2e9))

    async def run(self) -> None:
        while True:
            # With the node's other housekeeping (txn/net/coarse_timer.py); longer after a long pass.
            await sleep_coarse(max(self.interval_s, self.rest_s))
            await self.reclaim()

    def horizon(self) -> Timestamp | None:
        """The horizon GC may move to now, or None if it is not above the store's."""
        horizon_wall = self.safe_ts().wall - self.gc_retention_ns
        if horizon_wall <= 0 or Timestamp(horizon_wall, 0) <= self.state.store.gc_horizon():
            return None
        return Timestamp(horizon_wall, 0)

    async def reclaim(self) -> None:
        """One turn: a GC pass if the horizon can move, then the log's compaction if due and worth it."""
        horizon = self.horizon()
        if horizon is not None:
            await self.gc_pass(horizon)
        snapshot_index, policy = self.snapshot_index(), self.planner.policy
        if policy.log_compaction_due(snapshot_index, self.counters.log_compacted_through):
            if policy.log_compaction_worth(*self.log.truncated_bytes(snapshot_index)):
                await self._compact(lambda: self.log.compact_log(snapshot_index))
                self.counters.log_compacted_through = snapshot_index

    async def gc_pass(self, horizon: Timestamp) -> None:
        """GC the whole store at `horizon` in chunks, compacting each slice that is worth it."""
        store, clock = self.state.store, self.monotonic_ns
        started = clock()
        progress = store.gc(horizon)
        held_ns = clock() - started
        if progress.skipped:
            self.counters.gc_passes += 1
            self.counters.gc_passes_skipped += 1
            self.counters.gc_held_ns += held_ns
            self.rest_s = 0.0
            return
        self.planner.start_pass()
        while True:
            self.counters.gc_dropped += progress.dropped
            due = self.planner.chunk(progress.span_start, progress.span_end, progress.examined, progress.dropped)
            if due is not None:
                await self._compact_slice(due)
            if progress.done:
                break
            await trio.sleep(0)
            started = clock()
            progress = store.gc(horizon, resume_from=progress.resume_from)
            held_ns += clock() - started
        due = self.planner.finish_pass()
        if due is not None:
            await self._compact_slice(due)
        self.counters.gc_passes += 1
        self.counters.gc_held_ns += held_ns
        self.rest_s = held_ns * (1 - GC_DUTY) / GC_DUTY / 1e9

    async def _compact_slice(self, due: Slice) -> None:
        store = self.state.store
        await self._compact(lambda: store.compact(due.start, due.end))

    async def _compact(self, compact: Callable[[], None]) -> None:
        """Wait out the pace, then compact (in a worker thread with `offload`, else inline) and count it."""
        wait_ns = self._next_compaction_ns - self.monotonic_ns()
        if wait_ns > 0:
            await trio.sleep(wait_ns / 1e9)
        started = self.monotonic_ns()
        if self.offload:
            await trio.to_thread.run_sync(compact)  # not abandoned on cancel: the engine outlives the call
        else:
            compact()
        took = self.monotonic_ns() - started
        counters = self.counters
        counters.compactions += 1
        counters.compaction_ns += took
        counters.compaction_max_ns = max(counters.compaction_max_ns, took)
        self._next_compaction_ns = started + took + self.planner.policy.pause_ns(took)
