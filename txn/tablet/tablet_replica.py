"""A tablet replica at work: Paxos driver + tablet state + the leader's timestamp rules.

Role: serves one tablet's writes and reads on one node. Writes go through the
Paxos log; reads come from the local MVCC store once the replica can prove
that nothing more can appear at or below the read timestamp.

Leader (lease holder) rules, after Spanner section 4.1 with an HLC:
- `floor` is the largest timestamp this replica assigned to a write or served
  a read at; a new write gets `max(hlc.now(), floor.next())`, so timestamps
  strictly increase in proposal order, hence in slot order.
- A write is acknowledged only when its batch is chosen and applied AND
  commit-wait has passed (`physical > ts.wall + max_offset`); the two run
  concurrently, so commit-wait costs only what the Paxos round does not hide.
- A strong read picks T = max(hlc.now(), floor), raises floor to T (so every
  later write is above T), waits for this leader's pending writes at or below
  T, then reads at T.
- A new leader serves only after (a) 2 * max_offset of its own monotonic time
  has passed since it acquired the lease and (b) its Barrier command, whose
  timestamp is taken after (a), is applied. Leases are disjoint in time, so
  the predecessor stopped assigning before this lease began; any timestamp it
  assigned or served was at most its HLC, which is at most some physical clock
  plus max_offset; after (a) this node's physical clock is above that (given
  clock offsets <= max_offset). (b) makes every earlier slot applied here.
  HAZARD: both rest on clock offsets staying within max_offset.

Any replica serves a read at T once its safe time (largest applied command
timestamp) is >= T; the leader proposes a `SafeTimeAdvance` when it has
written nothing for `safe_time_interval_ns`, so followers can serve recent
reads. A read whose T is beyond what any clock can reach within the request's
deadline (T.wall > physical + max_offset + timeout) is refused.
"""

from __future__ import annotations

import collections
import logging
from typing import Callable

import attrs
import trio

from hlc import HybridClock, Timestamp
from mvcc.engine import Engine
from mvcc.store import BelowGcHorizon
from paxos.driver import PaxosDriver
from paxos.storage import PaxosStorage
from paxos.types import NotLeader, PaxosConfig, ProposalLost
from txn import api
from txn.api.errors import RequestFailed, failure
from txn.tablet.commands import Barrier, SafeTimeAdvance, WriteBatch, encode_command
from txn.api.cluster import TabletConfig
from txn.tablet.state import TabletState

DEFAULT_SAFE_TIME_INTERVAL_NS = 100_000_000
GC_INTERVAL_S = 5.0
PREFERRED_CAMPAIGN_WINDOW_NS = 5_000_000_000
PREFERRED_CAMPAIGN_INTERVAL_NS = 200_000_000

log = logging.getLogger("chronodb.replica")




@attrs.define(eq=False)
class ServingState:
    """What the leader proved before serving, for the lease it proved it under."""

    lease_acquired_ns: int
    barrier_ts: Timestamp


class TabletReplica:
    def __init__(
        self, *, node_id: str, tablet: TabletConfig, engine: Engine, clock: HybridClock,
        max_offset_ns: int, send: Callable[[str, object], None], monotonic_ns: Callable[[], int],
        paxos_config: PaxosConfig, seed: int | str, gc_retention_ns: int,
        safe_time_interval_ns: int = DEFAULT_SAFE_TIME_INTERVAL_NS,
    ) -> None:
        self.node_id = node_id
        self.tablet = tablet
        self.engine = engine
        self.clock = clock
        self.max_offset_ns = max_offset_ns
        self.monotonic_ns = monotonic_ns
        self.gc_retention_ns = gc_retention_ns
        self.safe_time_interval_ns = safe_time_interval_ns
        self.state = TabletState(engine, on_applied=self._on_applied)
        self.floor = self.state.safe_ts
        self.pending: set[Timestamp] = set()
        self.serving: ServingState | None = None
        self.last_write_ns = 0
        self.follower_reads = 0
        self.marks: collections.Counter[str] = collections.Counter()  # coverage marks for the simulation
        self.fenced = False
        self._applied_event = trio.Event()
        self.paxos = PaxosDriver(
            node_id=node_id, peers=tuple(tablet.replicas), storage=PaxosStorage(engine),
            state_machine=self.state, send=send, now_ns=monotonic_ns, seed=seed,
            config=paxos_config, preferred_leader=(node_id == tablet.preferred_leader),
        )

    # ---- background work -------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.paxos.run)
            nursery.start_soon(self._leadership_loop)
            nursery.start_soon(self._safe_time_loop)
            nursery.start_soon(self._gc_loop)
            task_status.started()

    def _on_applied(self, index: int, command: object) -> None:
        if isinstance(command, (WriteBatch, SafeTimeAdvance, Barrier)):
            self.pending.discard(command.ts)
            if command.ts > self.floor:
                self.floor = command.ts
        self._applied_event.set()
        self._applied_event = trio.Event()

    async def _leadership_loop(self) -> None:
        """Establish serving after each newly acquired lease (see module docstring)."""
        started_ns = last_campaign_ns = self.monotonic_ns()
        while True:
            status = self.paxos.status()
            now_ns = self.monotonic_ns()
            if (self.paxos.preferred_leader and status.leader_hint is None and not status.is_leader
                    and now_ns - started_ns < PREFERRED_CAMPAIGN_WINDOW_NS
                    and now_ns - last_campaign_ns >= PREFERRED_CAMPAIGN_INTERVAL_NS):
                # At start-up the preferred leader's first Prepare often reaches
                # peers that are not listening yet; ask again (not too often: a
                # campaign restarts phase 1) until a leader exists, so leadership
                # is spread as cluster.toml intends.
                last_campaign_ns = now_ns
                self.paxos.campaign()
            if status.lease_holder and (self.serving is None or self.serving.lease_acquired_ns != status.lease_acquired_ns):
                self.serving = None
                self.pending.clear()
                await self._become_serving(status.lease_acquired_ns)
                continue
            if not status.lease_holder and self.serving is not None:
                log.info("tablet %s: %s stops serving as leader", self.tablet.id, self.node_id)
                self.serving = None
            with trio.move_on_after(0.05):
                await self.paxos.wait_status_change()

    async def _become_serving(self, lease_acquired_ns: int) -> None:
        wait_ns = lease_acquired_ns + 2 * self.max_offset_ns - self.monotonic_ns()
        if wait_ns > 0:
            await trio.sleep(wait_ns / 1e9)
        ts = self._assign_ts()
        try:
            await self.paxos.propose(encode_command(Barrier(ts)), timeout_s=2.0)
        except (NotLeader, ProposalLost, trio.TooSlowError) as error:
            log.info("tablet %s: barrier at %s failed (%r); will retry", self.tablet.id, ts, error)
            self.pending.discard(ts)
            await trio.sleep(0.05)
            return
        status = self.paxos.status()
        if status.lease_holder and status.lease_acquired_ns == lease_acquired_ns:
            self.serving = ServingState(lease_acquired_ns, ts)
            log.info("tablet %s: %s serves as leader from %s", self.tablet.id, self.node_id, ts)

    async def _safe_time_loop(self) -> None:
        interval_s = self.safe_time_interval_ns / 1e9
        while True:
            await trio.sleep(interval_s)
            idle = self.monotonic_ns() - self.last_write_ns >= self.safe_time_interval_ns
            if idle and self._is_serving():
                ts = self._assign_ts()
                try:
                    await self.paxos.propose(encode_command(SafeTimeAdvance(ts)), timeout_s=1.0)
                except (NotLeader, ProposalLost, trio.TooSlowError):
                    self.pending.discard(ts)

    async def _gc_loop(self) -> None:
        interval_s = min(GC_INTERVAL_S, max(0.2, self.gc_retention_ns / 2e9))
        while True:
            await trio.sleep(interval_s)
            safe = self.state.safe_ts
            horizon_wall = safe.wall - self.gc_retention_ns
            if horizon_wall <= 0 or Timestamp(horizon_wall, 0) <= self.state.store.gc_horizon():
                continue
            horizon = Timestamp(horizon_wall, 0)
            resume = None
            while True:
                progress = self.state.store.gc(horizon, resume_from=resume)
                if progress.done:
                    break
                resume = progress.resume_from
                await trio.sleep(0)

    # ---- leader checks -----------------------------------------------------

    def _assign_ts(self) -> Timestamp:
        ts = max(self.clock.now(), self.floor.next())
        self.floor = ts
        self.pending.add(ts)
        return ts

    def _is_serving(self) -> bool:
        serving = self.serving
        if serving is None or self.fenced:
            return False
        # Read the core directly: status() builds a whole snapshot, and this
        # runs several times per request.
        return self.paxos.core.lease_acquired_ns == serving.lease_acquired_ns and self.paxos.has_lease()

    def leader_hint(self) -> str | None:
        if self._is_serving():
            return self.node_id
        hint = self.paxos.status().leader_hint
        return None if hint == self.node_id else hint

    def _not_leader(self) -> RequestFailed:
        hint = self.leader_hint()
        return failure(api.ErrorCode.NOT_LEADER, f"{self.node_id} is not the serving leader of tablet {self.tablet.id}", leader_hint=hint)

    # ---- writes ------------------------------------------------------------

    async def write(self, writes: tuple[api.KeyWrite, ...], timeout_ns: int) -> api.WriteReply:
        for item in writes:
            if not self.tablet.contains(item.key):
                raise failure(api.ErrorCode.BAD_REQUEST, f"key {item.key!r} is outside tablet {self.tablet.id}")
        if not self._is_serving():
            raise self._not_leader()
        ts = self._assign_ts()
        self.last_write_ns = self.monotonic_ns()
        command = encode_command(WriteBatch(ts, [(w.key, w.value) for w in writes]))
        chosen_at_ns = 0
        problem: RequestFailed | None = None
        # Commit-wait runs beside the Paxos round. The failure is raised only
        # after the nursery has closed, so it is not wrapped in an ExceptionGroup.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.clock.commit_wait, ts)
            try:
                await self.paxos.propose(command, timeout_s=max(timeout_ns, 1) / 1e9)
                chosen_at_ns = self.clock.physical.now_ns()
            except NotLeader as error:
                self.pending.discard(ts)
                problem = failure(api.ErrorCode.NOT_LEADER, "leadership moved before the write was proposed", leader_hint=error.leader_hint)
            except ProposalLost as error:
                if error.known_not_chosen:
                    self.pending.discard(ts)
                    problem = failure(api.ErrorCode.NOT_LEADER, "leadership moved; the write was not committed")
                else:
                    problem = failure(api.ErrorCode.OUTCOME_UNKNOWN, f"leadership moved while the write at {ts} was being replicated")
            except trio.TooSlowError:
                problem = failure(api.ErrorCode.OUTCOME_UNKNOWN, f"the write at {ts} was not confirmed within the deadline")
            if problem is not None:
                nursery.cancel_scope.cancel()
        if problem is not None:
            raise problem
        commit_wait_ns = max(0, self.clock.physical.now_ns() - chosen_at_ns)
        return api.WriteReply(ts, commit_wait_ns)

    # ---- reads -------------------------------------------------------------

    async def read_ts(self, mode: str, ts: Timestamp | None, timeout_ns: int) -> Timestamp:
        """Choose the read timestamp and wait until this replica can serve it."""
        if mode != api.ReadMode.STRONG and ts is None:
            raise failure(api.ErrorCode.BAD_REQUEST, f"bad read mode {mode!r} (timestamp {ts})")
        if self.fenced:
            raise failure(api.ErrorCode.UNAVAILABLE, f"{self.node_id} is fenced: its clock is out of bounds", leader_hint=self.leader_hint())
        with trio.move_on_after(max(timeout_ns, 0) / 1e9) as scope:
            if mode == api.ReadMode.STRONG or (mode == api.ReadMode.MAX_STALE and self._is_serving()):
                if not self._is_serving():
                    raise self._not_leader()
                return await self._leader_read_ts(max(self.clock.now(), self.floor))
            assert ts is not None
            self._refuse_future(ts, timeout_ns)
            if self._is_serving() and ts <= self.clock.now():
                return await self._leader_read_ts(ts)
            while self.state.safe_ts < ts:
                if self._is_serving() and ts <= self.clock.now():
                    return await self._leader_read_ts(ts)
                with trio.move_on_after(0.01):
                    await self._applied_event.wait()
            if not self._is_serving():
                self.follower_reads += 1
            return self.state.safe_ts if mode == api.ReadMode.MAX_STALE else ts
        assert scope.cancelled_caught
        raise failure(api.ErrorCode.TIMEOUT, f"replica {self.node_id} of tablet {self.tablet.id} could not serve a read at {ts} in time (safe time {self.state.safe_ts})", leader_hint=self.leader_hint())

    def _refuse_future(self, ts: Timestamp, timeout_ns: int) -> None:
        reachable = self.clock.physical.now_ns() + self.max_offset_ns + max(timeout_ns, 0)
        if ts.wall > reachable:
            raise failure(api.ErrorCode.FUTURE_READ, f"read timestamp {ts} is beyond every clock within the deadline (now {self.clock.now()})")

    async def _leader_read_ts(self, ts: Timestamp) -> Timestamp:
        """Serve at `ts` as leader: raise the floor, wait for own pending writes <= ts."""
        serving = self.serving
        if ts > self.floor:
            self.floor = ts
        while any(p <= ts for p in self.pending):
            await self._applied_event.wait()
        if not self._is_serving() or self.serving is not serving:
            raise self._not_leader()
        return ts

    async def read(self, request: api.ReadRequest) -> api.ReadReply:
        if not self.tablet.contains(request.key):
            raise failure(api.ErrorCode.BAD_REQUEST, f"key {request.key!r} is outside tablet {self.tablet.id}")
        ts = await self.read_ts(request.mode, request.ts, request.timeout_ns)
        try:
            result = self.state.store.read(request.key, ts)
        except BelowGcHorizon as error:
            raise failure(api.ErrorCode.BELOW_GC_HORIZON, str(error), horizon=error.horizon) from None
        return api.ReadReply(ts, result.value, result.version_ts, self.node_id)

    async def scan(self, request: api.ScanRequest) -> api.ScanReply:
        start = max(request.start, self.tablet.start)
        ends = [e for e in (request.end, self.tablet.end) if e is not None]
        end = min(ends) if ends else None
        ts = await self.read_ts(request.mode, request.ts, request.timeout_ns)
        if end is not None and start >= end:
            return api.ScanReply(ts, (), self.node_id)
        try:
            result = self.state.store.scan(start, end, ts, limit=max(1, request.limit))
        except BelowGcHorizon as error:
            raise failure(api.ErrorCode.BELOW_GC_HORIZON, str(error), horizon=error.horizon) from None
        rows = tuple(api.Row(key, value, version_ts) for key, value, version_ts in result.rows)
        return api.ScanReply(ts, rows, self.node_id)

    # ---- status --------------------------------------------------------------

    def status(self) -> api.TabletStatus:
        paxos = self.paxos.status()
        return api.TabletStatus(
            id=self.tablet.id, is_leader=paxos.is_leader, lease_holder=paxos.lease_holder,
            serving=self._is_serving(), leader_hint=self.leader_hint(), ballot=str(paxos.ballot),
            first_index=paxos.first_index, last_index=paxos.last_index, chosen_index=paxos.chosen_index,
            applied_index=paxos.applied_index, snapshot_index=paxos.snapshot_index,
            pending_proposals=paxos.pending_proposals, safe_ts=self.state.safe_ts,
            gc_horizon=self.state.store.gc_horizon(),
            lease_remaining_ns=max(0, paxos.lease_expiry_ns - self.monotonic_ns()) if paxos.lease_holder else 0,
            follower_reads=self.follower_reads,
        )
