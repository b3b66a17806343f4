"""A tablet replica at work: the trio driver of Paxos + tablet state + the leader core.

Role: serves one tablet's writes and reads on one node. Writes go through the
Paxos log; reads come from the local MVCC store once the replica can prove
that nothing more can appear at or below the read timestamp and that every
write at or below it has finished commit-wait. The rules themselves live in
the pure core, txn/tablet/leader.py (`TabletLeaderCore`); this module only
proposes, waits and answers.

Tasks per replica: the Paxos driver's owner task; the leadership loop (new
lease -> wait out the predecessor -> barrier -> serving); one commit-wait
timer (the core's `next_wake_ns`, on the physical clock; woken early only
by a batch of applies that puts a release ahead of the one it sleeps
toward, never by the tablet's other changes: a follower's timer sleeps
through its applies); the safe-time log
loop (an idle serving leader proposes a `SafeTimeAdvance` every
`SAFE_TIME_LOG_INTERVAL_NS`, so that a restart finds a recent safe time);
the space loop (GC behind
`gc_retention`, then LevelDB compaction of what GC and log truncation freed:
txn/tablet/space.py); and the started writes' sweeper (below). Request
tasks only call the core synchronously and wait on `_changed`. A single
write whose locks are free has no task: `start_write` proposes it at once
and txn/tablet/started_writes.py answers it from the Paxos turn or
commit-wait release that learns its outcome, or at its deadline. Closed timestamps are taken at the heartbeat's pace:
just before the Paxos driver builds a leader's heartbeats
(`_close_for_heartbeat`), a serving leader with nothing unapplied closes a
timestamp, which Paxos carries to the followers on that heartbeat and the
Accepts after it, so they can serve recent reads (txn/tablet/leader.py,
"Closed timestamps"; every 100 ms, or every 400 ms while the tablet is
quiet); GC stays `gc_retention` behind the readable safe time.

Outcomes a writer can get: acknowledged (applied and commit-wait over);
`not_leader` (definitely not committed: never proposed, another value won
the slot, or skipped at apply because a newer leadership's barrier came
first); `outcome_unknown` (proposed, fate not learned in time).

HAZARD: the core's rules rest on clock offsets within max_offset.
"""

from __future__ import annotations

import collections
import functools
import logging
import math
from typing import Awaitable, Callable

import trio

from hlc import HybridClock, Timestamp
from mvcc.engine import Batch, Engine
from mvcc.store import BelowGcHorizon
from paxos.driver import PaxosDriver
from paxos.storage import PaxosStorage
from paxos.types import NotLeader, PaxosConfig, ProposalLost
from txn import api
from txn.api.cluster import DEFAULT_DECISION_RETENTION_NS, TabletConfig
from txn.api.errors import RequestFailed, failure
from txn.api.limits import MAX_SCAN_REPLY_BYTES, MAX_SCAN_ROWS, scan_page
from txn.net.coarse_timer import coarse_deadline, grid_point_at_or_before_ns, sleep_coarse
from txn.net.messaging import request_arrival
from txn.net.precise_timer import PreciseTimer, open_precise_timer
from txn.tablet.commands import Barrier, Prepare, SafeTimeAdvance, WriteBatch, encode_command
from txn.tablet.leader import PendingCommand, Serving, TabletLeaderCore, WriteState
from txn.tablet.locks import LockMode
from txn.tablet.space import SpaceLoop
from txn.tablet.started_writes import Answer, StartedWrites
from txn.tablet.state import TabletState
from txn.tablet.transactions import TabletTransactions

# An idle leader logs its safe time this often (a synced proposal on every replica), for restarts;
# reads of recent timestamps and GC use the closed timestamps on heartbeats instead.
SAFE_TIME_LOG_INTERVAL_NS = 5_000_000_000
SAFE_TIME_LOG_CHECK_S = 1.0
PREFERRED_CAMPAIGN_WINDOW_NS = 5_000_000_000
PREFERRED_CAMPAIGN_INTERVAL_NS = 200_000_000
BARRIER_TIMEOUT_S = 2.0
POLL_S = 0.05
# The event loop's timeouts are whole milliseconds (epoll), rounded up: a timer sleeps about
# 0.8 ms past its deadline on average. A precise commit-wait timer sleeps until this long
# before a release and then on a timerfd until it is due (txn/net/precise_timer.py; where
# there is none, it yields until then). Real nodes only: the simulation's virtual clock
# drives no kernel timer, and would never move on while a task keeps yielding.
TIMER_RESOLUTION_S = 0.001
# A lone command in commit-wait (one client, or a quiet tablet) spends this much before its
# release yielding instead of asleep on the timerfd: a process woken from idle on these VMs runs
# 0.08-0.2 ms after its timer expires, all of it on that write's latency (ARCHITECTURE.md, one
# client's latency). At most this much CPU per lone write; with more than one waiting (load),
# the timer sleeps to the release as before, so a busy node never spins.
LONE_SPIN_NS = 150_000
# How long the commit-wait timer and the leadership loop sleep when no deadline of theirs is
# near: every change they act on wakes them (`_notify`, the driver's status events); this bound
# only caps the cost of a wake-up missed by mistake. Was POLL_S: 40 wake-ups/s per idle tablet.
IDLE_WAIT_S = 1.0

log = logging.getLogger("chronodb.replica")


def _ignore(_: int) -> None:
    pass


class TabletReplica:
    def __init__(
        self, *, node_id: str, tablet: TabletConfig, engine: Engine, clock: HybridClock,
        max_offset_ns: int, send: Callable[[str, object], None], monotonic_ns: Callable[[], int],
        paxos_config: PaxosConfig, seed: int | str, gc_retention_ns: int,
        offload_compaction: bool = False,
        precise_commit_wait: bool = False,
        write_synced: Callable[[Engine, Batch], Awaitable[None]] | None = None,
        decision_retention_ns: int = DEFAULT_DECISION_RETENTION_NS,
    ) -> None:
        self.node_id = node_id
        self.precise_commit_wait = precise_commit_wait
        self.tablet = tablet
        self.engine = engine
        self.clock = clock
        self.max_offset_ns = max_offset_ns
        self.monotonic_ns = monotonic_ns
        self.gc_retention_ns = gc_retention_ns
        self.state = TabletState(engine, on_applied=self._on_applied, on_batch_applied=self._on_batch_applied)
        self.leader = TabletLeaderCore(max_offset_ns, self.state.safe_ts)
        self.last_write_ns = 0
        self.last_safe_time_logged_ns = 0
        self.follower_reads = 0
        # A leader's closed timestamp (txn/tablet/leader.py) this replica has applied far enough
        # to serve reads at: as a follower, reads at or below it need no logged safe time.
        self.closed_ts = Timestamp.MIN
        self._closed_waiting: tuple[Timestamp, int] | None = None  # received, index not applied yet
        # Writes this replica answered as leader (txn/api/metrics.py): acknowledged
        # after a majority fsynced them, or outcome_unknown for want of that.
        self.distributed_commits = 0
        self.not_durable_commits = 0
        self.fenced = False
        self.rebuild_reason = ""  # why this replica was rebuilt from nothing (txn/node/rebuild.py)
        self.marks: collections.Counter[str] = collections.Counter()  # coverage marks for the simulation
        # Told how long each successful proposal took, from propose to chosen and
        # applied here, in ns of monotonic_ns (the node's metrics: txn/node/metrics.py).
        self.observe_proposal_ns: Callable[[int], None] = _ignore
        self._changed = trio.Event()
        # The commit-wait timer's own wake-up (`_commit_wait_releases`): set only when an apply
        # puts a release ahead of the one the timer sleeps toward (`_timer_wake_ns`, None: it
        # sleeps idle), not on every change of the tablet. A follower's timer never wakes for it.
        self._timer_event = trio.Event()
        self._timer_wake_ns: int | None = None
        self.txns = TabletTransactions(self, decision_retention_s=decision_retention_ns / 1e9)
        self.started_writes = StartedWrites(self)
        self.paxos = PaxosDriver(
            node_id=node_id, peers=tuple(tablet.replicas), storage=PaxosStorage(engine),
            state_machine=self.state, send=send, now_ns=monotonic_ns, seed=seed,
            config=paxos_config, preferred_leader_id=tablet.preferred_leader, on_closed=self._on_closed,
            before_heartbeat=self._close_for_heartbeat,
            # Quiet heartbeats on the node's housekeeping grid (core time is trio's clock in ns).
            quiet_heartbeat_at=grid_point_at_or_before_ns,
            # The log's synced writes off the event loop (paxos/driver.py), where the node says how.
            write_synced=None if write_synced is None else functools.partial(write_synced, engine),
        )
        self.space = SpaceLoop(
            state=self.state, log=self.paxos.storage, snapshot_index=lambda: self.paxos.core.first_index - 1,
            gc_retention_ns=gc_retention_ns, monotonic_ns=monotonic_ns, offload=offload_compaction,
            safe_ts=lambda: self.readable_safe_ts,
        )

    @property
    def floor(self) -> Timestamp:
        return self.leader.floor

    @property
    def pending(self) -> list[Timestamp]:
        return sorted(self.leader.pending)

    def _physical_ns(self) -> int:
        return self.clock.physical.now_ns()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # ---- background work -------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.paxos.run)
            nursery.start_soon(self._leadership_loop)
            nursery.start_soon(self._commit_wait_timer)
            nursery.start_soon(self.started_writes.run)
            nursery.start_soon(self._safe_time_log_loop)
            nursery.start_soon(self.space.run)
            await nursery.start(self.txns.run)
            task_status.started()

    def _on_applied(self, index: int, command: object, skipped: bool) -> None:
        if command is not None and hasattr(command, "ts"):
            if skipped and isinstance(command, Prepare):
                self.marks["tablet.prepare_failed"] += 1
            elif skipped:
                self.marks["tablet.stale_command_skipped"] += 1
                log.warning("tablet %s: %s skipped %s at slot %d (from a deposed leadership or not above safe time %s)",
                            self.tablet.id, self.node_id, command, index, self.state.safe_ts)
            self.leader.applied(command.ts, skipped=skipped, physical_now_ns=self._physical_ns(),  # type: ignore[attr-defined]
                                release=False)
        else:
            self.leader.snapshot_installed(self.state.safe_ts)  # a no-op, or a snapshot install

    def _on_batch_applied(self) -> None:
        """After the last slot of an engine write (a Paxos turn's worth) or an install: finish what
        commit-wait released, use a closed timestamp now applied far enough, wake the waiters.
        Once per batch, not per slot: each `_notify` makes an Event, and each release a pass over
        the pending commands."""
        self._released(self.leader.tick(self._physical_ns()))
        self._promote_closed()
        self._notify()
        wake_ns = self.leader.next_wake_ns()
        if wake_ns is not None and (self._timer_wake_ns is None or wake_ns < self._timer_wake_ns):
            self._timer_wake_ns = wake_ns  # told once: what follows in this sleep is later
            self._timer_event.set()
            self._timer_event = trio.Event()

    @property
    def readable_safe_ts(self) -> Timestamp:
        """Safe time for reads here: the logged safe time or a usable closed timestamp, whichever is higher
        (before holding below prepared transactions and the commit-wait horizon)."""
        return max(self.state.safe_ts, self.closed_ts)

    def _on_closed(self, token: bytes, index: int) -> None:
        """The leader closed a timestamp: usable here once slot `index` is applied."""
        try:
            closed = Timestamp.from_bytes(token)
        except ValueError:
            self.marks["tablet.bad_closed_token"] += 1
            return
        # A peer's value, and GC follows it: a leader's C is its HLC, within 2 x max_offset of our
        # clock. Anything beyond is cut to that bound (a lower closed timestamp is as true).
        bound = Timestamp(self._physical_ns() + 2 * self.max_offset_ns, 0)
        if closed > bound:
            self.marks["tablet.closed_token_clamped"] += 1
            closed = bound
        self._closed_waiting = (closed, index)
        if self._promote_closed():
            self._notify()

    def _promote_closed(self) -> bool:
        waiting = self._closed_waiting
        if waiting is None or waiting[1] > self.state.applied_index() or not self.state.usable:
            return False
        self._closed_waiting = None
        if waiting[0] <= self.closed_ts:
            return False
        self.closed_ts = waiting[0]
        return True

    async def _commit_wait_timer(self) -> None:
        """One timer for every commit-wait of this tablet (the physical clock decides)."""
        precise = open_precise_timer() if self.precise_commit_wait else None
        try:
            await self._commit_wait_releases(precise)
        finally:
            if precise is not None:
                precise.close()

    async def _commit_wait_releases(self, precise: PreciseTimer | None) -> None:
        while True:
            woken = self._timer_event
            released = self.leader.tick(self._physical_ns())
            if released:
                self._released(released)
                self._notify()
                continue
            wake_ns = self.leader.next_wake_ns()
            self._timer_wake_ns = wake_ns
            if wake_ns is None:
                # Nothing in commit-wait: the next apply that starts one wakes the timer
                # (`_on_batch_applied`). The timeout is only a fallback: on the node's coarse
                # grid (txn/net/coarse_timer.py).
                with trio.move_on_at(coarse_deadline(trio.current_time() + IDLE_WAIT_S)):
                    await woken.wait()
                continue
            delay_ns = max(0, wake_ns - self._physical_ns())
            delay_s = min(POLL_S, delay_ns / 1e9)
            if self.precise_commit_wait:
                if delay_s <= TIMER_RESOLUTION_S:
                    # Due within the loop's resolution: on the timerfd, or yielding until it is (a
                    # lone command's last LONE_SPIN_NS, or without a timerfd).
                    spin_ns = LONE_SPIN_NS if self.leader.waiting() == 1 else 0
                    if precise is not None and delay_ns > spin_ns:
                        await precise.sleep(delay_ns - spin_ns)
                    else:
                        await trio.lowlevel.checkpoint()
                    continue
                delay_s -= TIMER_RESOLUTION_S
            with trio.move_on_after(delay_s):
                await woken.wait()

    async def _leadership_loop(self) -> None:
        """Follow the lease: wait out the predecessor, propose the barrier, serve (txn/tablet/leader.py)."""
        started_ns = last_campaign_ns = self.monotonic_ns()
        rebuilding = self.paxos.core.rebuilding
        while True:
            status = self.paxos.status()
            now_ns = self.monotonic_ns()
            if rebuilding and not status.rebuilding:
                rebuilding = False
                log.warning("tablet %s on %s: rebuilt from its peers; votes again (applied index %d)",
                            self.tablet.id, self.node_id, status.applied_index)
            if (self.paxos.preferred_leader and status.leader_hint is None and not status.is_leader
                    and now_ns - started_ns < PREFERRED_CAMPAIGN_WINDOW_NS
                    and now_ns - last_campaign_ns >= PREFERRED_CAMPAIGN_INTERVAL_NS):
                # At start-up the preferred leader's first Prepare often reaches
                # peers that are not listening yet; ask again (not too often: a
                # campaign restarts phase 1) until a leader exists, so leadership
                # is spread as cluster.toml intends.
                last_campaign_ns = now_ns
                self.paxos.campaign()
            if status.lease_holder and self.leader.lease_id != status.lease_acquired_ns:
                # The lease began at lease_acquired_ns on the monotonic clock; the
                # wait is measured on the physical clock from that moment.
                start_physical_ns = self._physical_ns() - max(0, now_ns - status.lease_acquired_ns)
                self.leader.lease_acquired(status.lease_acquired_ns, start_physical_ns)
                self.txns.stopped_serving()
                self._notify()
            elif not status.lease_holder and self.leader.lease_id is not None:
                if self.leader.is_serving:
                    log.info("tablet %s: %s stops serving as leader", self.tablet.id, self.node_id)
                self.leader.lease_lost()
                self.txns.stopped_serving()
                self._notify()
            if self.leader.barrier_due(self._physical_ns()) and not self.fenced:
                await self._propose_barrier()
                continue
            # Lease, role and ballot changes come as status events; polled are only the
            # preferred leader's start-up campaign and the wait-out of rule (a).
            deadline_s = trio.current_time() + POLL_S
            if now_ns - started_ns >= PREFERRED_CAMPAIGN_WINDOW_NS:
                deadline_s = coarse_deadline(trio.current_time() + IDLE_WAIT_S)  # a fallback: with the housekeeping
            if self.leader.serving is Serving.WAITING_OUT_PREDECESSOR:
                remaining_ns = self.leader.lease_start_physical_ns + 2 * self.max_offset_ns - self._physical_ns()
                deadline_s = trio.current_time() + min(POLL_S, max(remaining_ns + 1, 0) / 1e9)
            with trio.move_on_at(deadline_s):
                await self.paxos.wait_status_change()

    async def _propose_barrier(self) -> None:
        lease_id = self.leader.lease_id
        command = self.leader.assign(self.clock.now(), commit_wait=False)
        self.leader.barrier_proposed(command)
        try:
            await self._propose(command, Barrier(command.ts, self.paxos.core.ballot), BARRIER_TIMEOUT_S)
        except (NotLeader, ProposalLost, trio.TooSlowError) as error:
            log.info("tablet %s: barrier at %s failed (%r); will retry", self.tablet.id, command.ts, error)
            self.leader.barrier_failed()
            await trio.sleep(POLL_S)
            return
        if self.leader.is_serving and self.leader.lease_id == lease_id:
            # Every earlier slot is applied now: the prepared transactions' locks are complete.
            self.txns.became_serving()
            self._notify()
            log.info("tablet %s: %s serves as leader from %s", self.tablet.id, self.node_id, command.ts)
        elif command.state is WriteState.SKIPPED:
            self.leader.barrier_failed()

    async def _propose(self, pending: PendingCommand, command: object, timeout_s: float) -> None:
        """Propose a command the core assigned; tells the core what Paxos said when that is definite."""
        started_ns = self.monotonic_ns()
        try:
            # on_not_chosen: also when this task is gone (a client whose connection closed cancels
            # its write): a record left PROPOSED held every strong read on this leader until the
            # lease changed (the probe test saw scans time out for 85 s).
            await self.paxos.propose(encode_command(command), timeout_s=timeout_s,  # type: ignore[arg-type]
                                     on_not_chosen=functools.partial(self.leader.not_chosen, pending))
        except NotLeader:
            self.leader.not_chosen(pending)
            raise
        except ProposalLost as error:
            if error.known_not_chosen:
                self.leader.not_chosen(pending)
            raise
        self.observe_proposal_ns(self.monotonic_ns() - started_ns)

    def _close_for_heartbeat(self) -> None:
        """The Paxos driver is about to build this leader's heartbeats: close a timestamp for them to carry
        (and the Accepts after them). Called from the driver's task, so it never raises."""
        if not self._is_serving():
            return
        closed = self.leader.close(self.clock.now())
        if closed is not None:
            self.paxos.set_closed(closed.to_bytes(), self.state.applied_index())
            self.closed_ts = closed  # true here too (every command at or below it is applied): GC follows it

    async def _safe_time_log_loop(self) -> None:
        while True:
            await sleep_coarse(SAFE_TIME_LOG_CHECK_S)  # with the node's other housekeeping (txn/net/coarse_timer.py)
            if not self._is_serving():
                continue
            now_ns = self.monotonic_ns()
            if now_ns - max(self.last_write_ns, self.last_safe_time_logged_ns) >= SAFE_TIME_LOG_INTERVAL_NS:
                self.last_safe_time_logged_ns = now_ns
                pending = self.leader.assign(self.clock.now(), commit_wait=False)
                try:
                    await self._propose(pending, SafeTimeAdvance(pending.ts, self.paxos.core.ballot), 1.0)
                except (NotLeader, ProposalLost, trio.TooSlowError):
                    pass

    # ---- leader checks -----------------------------------------------------

    def _is_serving(self) -> bool:
        if not self.leader.is_serving or self.fenced:
            return False
        # Read the core directly: status() builds a whole snapshot, and this
        # runs several times per request.
        return self.paxos.core.lease_acquired_ns == self.leader.lease_id and self.paxos.has_lease()

    def leader_hint(self) -> str | None:
        if self._is_serving():
            return self.node_id
        hint = self.paxos.status().leader_hint
        return None if hint == self.node_id else hint

    def _not_leader(self) -> RequestFailed:
        hint = self.leader_hint()
        return failure(api.ErrorCode.NOT_LEADER, f"{self.node_id} is not the serving leader of tablet {self.tablet.id}", leader_hint=hint)

    async def _wait_changed(self, changed: trio.Event, deadline_s: float = math.inf) -> None:
        with trio.move_on_at(min(trio.current_time() + POLL_S, deadline_s)):
            await changed.wait()

    # ---- writes ------------------------------------------------------------

    def start_write(self, writes: tuple[api.KeyWrite, ...], timeout_ns: int, arrived: Timestamp | None,
                    answer: Answer) -> bool:
        """Start a single write batch without waiting for anything: True if its locks were all free,
        so that it is proposed now and `answer` will be called exactly once with its outcome, from
        whichever task learns it (txn/tablet/started_writes.py); False if a lock is held (or the
        Paxos inbox is full): nothing was done, `write` waits for them. `arrived`: the request's
        arrival (`_start_ts`). Raises RequestFailed for what `write` refuses at once."""
        for item in writes:
            if not self.tablet.contains(item.key):
                raise failure(api.ErrorCode.BAD_REQUEST, f"key {item.key!r} is outside tablet {self.tablet.id}")
        if not self._is_serving():
            raise self._not_leader()
        if not self.paxos.has_room():
            return False
        txn_id = self.txns.plain_write_id()
        priority = self.clock.now()
        keys = frozenset(w.key for w in writes)
        try:
            for key in sorted(keys):
                if not self.txns.lock_now(txn_id, priority, key=key, mode=LockMode.BLIND):
                    self.txns._release(txn_id)
                    return False
        except RequestFailed as failed:
            self.txns._release(txn_id)
            if failed.reply.code == api.ErrorCode.TXN_ABORTED:
                raise failure(api.ErrorCode.TIMEOUT, "an older transaction took the write's lock: not committed") from None
            raise
        pending = self.leader.assign(arrived if arrived is not None else self.clock.now(), commit_wait=True, keys=keys)
        self.last_write_ns = self.monotonic_ns()
        command = encode_command(WriteBatch(pending.ts, [(w.key, w.value) for w in writes], self.paxos.core.ballot))
        if not self.started_writes.start(pending, txn_id, command, timeout_ns, answer):
            self.txns._release(txn_id)
            return False
        return True

    async def write(self, writes: tuple[api.KeyWrite, ...], timeout_ns: int) -> api.WriteReply:
        """A single write batch: a one-tablet transaction of its own (young: it waits for lock holders).
        Started without waiting (`start_write`) when its locks are free, then only its answer awaited."""
        outcome: list[api.WriteReply | RequestFailed] = []
        answered = trio.Event()

        def answer(result: api.WriteReply | RequestFailed) -> None:
            outcome.append(result)
            answered.set()

        if self.start_write(writes, timeout_ns, request_arrival(), answer):
            await answered.wait()  # answered by its deadline at the latest (or when the replica stops)
            if isinstance(outcome[0], RequestFailed):
                raise outcome[0]
            return outcome[0]
        txn_id = self.txns.plain_write_id()
        try:
            deadline_s = trio.current_time() + max(timeout_ns, 1) / 1e9
            try:
                for key in sorted({w.key for w in writes}):
                    # The deadline applies only if it must wait: no cancel scope for a free lock. BLIND:
                    # other single writes to the key do not hold this one up (txn/tablet/locks.py).
                    await self.txns._lock(txn_id, self.clock.now(), key=key, mode=LockMode.BLIND, deadline_s=deadline_s)
            except trio.TooSlowError:
                raise failure(api.ErrorCode.TIMEOUT, f"the write waited too long for locks on tablet {self.tablet.id}: not committed") from None
            return await self._write_locked(writes, timeout_ns)
        except RequestFailed as failed:
            if failed.reply.code == api.ErrorCode.TXN_ABORTED:  # wounded by an older transaction before proposing
                raise failure(api.ErrorCode.TIMEOUT, "an older transaction took the write's lock: not committed") from None
            raise
        finally:
            self.txns._release(txn_id)

    def _start_ts(self) -> Timestamp:
        """Where a client commit's timestamp starts (Spanner's start rule): the HLC reading taken when
        its request arrived (txn/net/messaging.py), not its later turn, so the time it waited for a
        task and its locks is time its commit-wait need not wait again; `hlc.now()` outside a
        request. The core's floor keeps it above everything assigned or served since (module
        docstring of txn/tablet/leader.py)."""
        arrived = request_arrival()
        return arrived if arrived is not None else self.clock.now()

    async def _write_locked(self, writes: tuple[api.KeyWrite, ...], timeout_ns: int) -> api.WriteReply:
        """Propose a write whose exclusive locks are held; answer after commit-wait."""
        if not self._is_serving():
            raise self._not_leader()
        pending = self.leader.assign(self._start_ts(), commit_wait=True, keys=frozenset(w.key for w in writes))
        ts = pending.ts
        self.last_write_ns = self.monotonic_ns()
        command = WriteBatch(ts, [(w.key, w.value) for w in writes], self.paxos.core.ballot)
        try:
            await self._propose(pending, command, max(timeout_ns, 1) / 1e9)
        except NotLeader as error:
            raise failure(api.ErrorCode.NOT_LEADER, "leadership moved before the write was proposed", leader_hint=error.leader_hint) from None
        except ProposalLost as error:
            if error.known_not_chosen:
                raise failure(api.ErrorCode.NOT_LEADER, "leadership moved; the write was not committed") from None
            self.not_durable_commits += 1
            raise failure(api.ErrorCode.OUTCOME_UNKNOWN, f"leadership moved while the write at {ts} was being replicated") from None
        except trio.TooSlowError:
            self.not_durable_commits += 1
            raise failure(api.ErrorCode.OUTCOME_UNKNOWN, f"the write at {ts} was not confirmed within the deadline") from None
        if pending.state is WriteState.SKIPPED:
            raise failure(api.ErrorCode.NOT_LEADER, f"the write at {ts} came after a newer leader's barrier and was skipped: not committed")
        applied_at_ns = pending.applied_at_ns or self._physical_ns()
        await self._commit_waited(pending)
        self.marks["tablet.write_acknowledged"] += 1
        self.distributed_commits += 1
        return api.WriteReply(ts, max(0, self._physical_ns() - applied_at_ns))

    async def _commit_waited(self, pending: PendingCommand) -> None:
        """Wait until an applied command's commit-wait is over (bounded by max_offset of physical time).

        Woken by its own release (`_released`), not by every change of the tablet: with `_changed`
        each apply and release woke every writer in commit-wait (8 clients: 7.8 request task steps
        per write). A record the core dropped at a lease change (UNKNOWN) but that Paxos then
        applied waits on the clock directly."""
        while pending.state is not WriteState.DONE:
            if pending.state is WriteState.UNKNOWN:
                remaining_ns = pending.release_after_ns - self._physical_ns()
                if remaining_ns < 0:
                    return
                await trio.sleep(min(POLL_S, (remaining_ns + 1) / 1e9))
                continue
            waiter = pending.waiter = trio.Event()
            with trio.move_on_after(POLL_S):  # only a bound on a wake-up missed by mistake
                await waiter.wait()

    @staticmethod
    def _released(commands: list[PendingCommand]) -> None:
        """Wake the task waiting out each command's commit-wait (`_commit_waited`), if one waits."""
        for command in commands:
            if command.waiter is not None:
                command.waiter.set()  # type: ignore[attr-defined]

    async def _read_resolved(self, key: bytes, ts: Timestamp):
        """The store's read at ts, once no other transaction's intent at or below ts is on the key."""
        while True:
            changed = self._changed
            result = self._store_read(key, ts)
            if result.intent is None:
                return result
            self.marks["tablet.read_waited_for_intent"] += 1
            await self._wait_changed(changed)

    def _store_read(self, key: bytes, ts: Timestamp):
        try:
            return self.state.store.read(key, ts)
        except BelowGcHorizon as error:
            raise failure(api.ErrorCode.BELOW_GC_HORIZON, str(error), horizon=error.horizon) from None

    async def _scan_resolved(self, start: bytes, end: bytes | None, ts: Timestamp, limit: int) -> tuple[tuple[api.Row, ...], bool]:
        """Rows of [start, end) at ts, at most `limit` and within one reply's bounds
        (txn/api/limits.py), once no intent in them is unresolved; and whether cut short."""
        if end is not None and start >= end:
            return (), False
        while True:
            changed = self._changed
            try:
                # max_bytes: read no more rows than one reply may carry (1,000 rows of 4 MiB is 4 GB).
                result = self.state.store.scan(start, end, ts, limit=max(1, min(limit, MAX_SCAN_ROWS)),
                                               max_bytes=MAX_SCAN_REPLY_BYTES)
            except BelowGcHorizon as error:
                raise failure(api.ErrorCode.BELOW_GC_HORIZON, str(error), horizon=error.horizon) from None
            if not result.intents:
                return scan_page([api.Row(key, value, version_ts) for key, value, version_ts in result.rows], limit)
            self.marks["tablet.read_waited_for_intent"] += 1
            await self._wait_changed(changed)

    # ---- reads -------------------------------------------------------------

    async def read_ts(self, mode: api.ReadMode, ts: Timestamp | None, timeout_ns: int, key: bytes | None = None) -> Timestamp:
        """Choose the read timestamp and wait until this replica can serve it (`key`: a read of that key
        alone, which as leader waits only for commands that change it: txn/tablet/leader.py)."""
        if mode == api.ReadMode.STALE:  # `read` turns it into AT; scans and exports take timestamps
            raise failure(api.ErrorCode.BAD_REQUEST, "read mode stale is for single-key reads (a ReadRequest)")
        if mode != api.ReadMode.STRONG and ts is None:
            raise failure(api.ErrorCode.BAD_REQUEST, f"read mode {mode} needs a timestamp")
        if self.fenced:
            raise failure(api.ErrorCode.UNAVAILABLE, f"{self.node_id} is fenced: its clock is out of bounds", leader_hint=self.leader_hint())
        if not self.state.usable:
            raise failure(api.ErrorCode.UNAVAILABLE, f"replica {self.node_id} of tablet {self.tablet.id} is waiting for a "
                          "snapshot (an install was interrupted)", leader_hint=self.leader_hint())
        with trio.move_on_after(max(timeout_ns, 0) / 1e9) as scope:
            if mode == api.ReadMode.STRONG or (mode == api.ReadMode.MAX_STALE and self._is_serving()):
                if not self._is_serving():
                    raise self._not_leader()
                return await self._leader_read_ts(self.leader.strong_read_ts(self.clock.now()), key)
            assert ts is not None
            self._refuse_future(ts, timeout_ns)
            while True:
                changed = self._changed
                if self._is_serving() and ts <= self.clock.now():
                    return await self._leader_read_ts(ts, key)
                ahead_ns = ts.wall - self._physical_ns()
                if self._is_serving() and 0 <= ahead_ns <= 2 * self.max_offset_ns:
                    # A strong snapshot's T (a node's now + max_offset): the leader
                    # serves it once its own clock has passed T.
                    await trio.sleep(ahead_ns / 1e9 + 0.0001)
                    continue
                visible = self._visible_ts()
                if ts <= visible:
                    if not self._is_serving():
                        self._count_replica_read(ts)
                    return visible if mode == api.ReadMode.MAX_STALE else ts
                await self._wait_changed(changed)
        assert scope.cancelled_caught
        raise failure(api.ErrorCode.TIMEOUT, f"replica {self.node_id} of tablet {self.tablet.id} could not serve a read at {ts} in time (safe time {self.readable_safe_ts})", leader_hint=self.leader_hint())

    def _visible_ts(self) -> Timestamp:
        """The highest timestamp this replica may serve without a leader's pending records."""
        return self.leader.replica_visible_ts(self.state.read_safe_ts(self.closed_ts), self._physical_ns())

    def _count_replica_read(self, ts: Timestamp) -> None:
        self.follower_reads += 1
        if ts > self.state.safe_ts:
            self.marks["tablet.read_at_closed_ts"] += 1

    def _ts_ready_now(self, mode: api.ReadMode, ts: Timestamp | None, key: bytes | None = None) -> Timestamp | None:
        """The read timestamp if this replica can serve the read at once, else None (then `read_ts`
        decides: it waits, refuses or redirects). Only `read_ts`'s no-wait cases, by its rules: a
        serving leader's strong read, or its read at or below its own clock, with none of its
        commands at or below the timestamp unfinished (with `key`: none that changes it); another
        replica's read at a timestamp at or below what it may serve. Saves the request its cancel
        scopes and awaits (a hot path)."""
        if self.fenced or not self.state.usable or ts is None and mode != api.ReadMode.STRONG:
            return None
        serving = self._is_serving()
        if mode == api.ReadMode.STRONG:
            if not serving:
                return None
            ts = self.leader.strong_read_ts(self.clock.now())
        elif mode != api.ReadMode.AT or ts is None:
            return None
        elif not serving:
            return None if ts > self._visible_ts() else ts
        elif ts > self.clock.now():
            return None
        self.leader.serve_at(ts)
        return ts if self.leader.leader_read_ready(ts, key) else None

    def _refuse_future(self, ts: Timestamp, timeout_ns: int) -> None:
        reachable = self._physical_ns() + self.max_offset_ns + max(timeout_ns, 0)
        if ts.wall > reachable:
            raise failure(api.ErrorCode.FUTURE_READ, f"read timestamp {ts} is beyond every clock within the deadline (now {self.clock.now()})")

    async def _leader_read_ts(self, ts: Timestamp, key: bytes | None = None) -> Timestamp:
        """Serve at `ts` as leader: raise the floor, wait for own commands <= ts to finish (commit-wait
        included); with `key`, only those that change the key or name no keys (txn/tablet/leader.py)."""
        lease_id = self.leader.lease_id
        self.leader.serve_at(ts)
        waited = False
        while not self.leader.leader_read_ready(ts, key):
            waited = True
            await self._wait_changed(self._changed)
        if waited:
            self.marks["tablet.read_waited_for_commit"] += 1
        if not self._is_serving() or self.leader.lease_id != lease_id:
            raise self._not_leader()
        return ts

    def read_now(self, request: api.ReadRequest) -> api.ReadReply | None:
        """The reply to a read this replica can serve at once, or None: `read` serves it, waiting
        if it must (the transport's way to answer a read without a task of its own)."""
        return self._read_at_once(request)[2]

    def _read_at_once(self, request: api.ReadRequest) -> tuple[api.ReadMode, Timestamp | None, api.ReadReply | None]:
        if not self.tablet.contains(request.key):
            raise failure(api.ErrorCode.BAD_REQUEST, f"key {request.key!r} is outside tablet {self.tablet.id}")
        mode, ts = self._relative_read(request)
        ready = self._ts_ready_now(mode, ts, request.key)
        if ready is not None:
            result = self._store_read(request.key, ready)
            if result.intent is None:
                if not self._is_serving():
                    self._count_replica_read(ready)  # counted when answered: a read that waits is counted by read_ts
                return mode, ts, api.ReadReply(ready, result.value, result.version_ts, self.node_id)
            # A prepared transaction's intent: `read` waits for its fate (nothing was answered yet).
        return mode, ts, None

    async def read(self, request: api.ReadRequest) -> api.ReadReply:
        mode, ts, reply = self._read_at_once(request)
        if reply is not None:
            return reply
        with trio.move_on_after(max(request.timeout_ns, 0) / 1e9):
            ts = await self.read_ts(mode, ts, request.timeout_ns, request.key)
            result = await self._read_resolved(request.key, ts)  # a prepared transaction's intent: wait for its fate
            return api.ReadReply(ts, result.value, result.version_ts, self.node_id)
        raise failure(api.ErrorCode.TIMEOUT, f"a transaction prepared on {request.key!r} was not resolved in time", leader_hint=self.leader_hint())

    def _relative_read(self, request: api.ReadRequest) -> tuple[api.ReadMode, Timestamp | None]:
        """A STALE read (or MAX_STALE without ts) -> AT (MAX_STALE) `now - stale_ns` on this replica's clock."""
        relative = request.mode == api.ReadMode.STALE or (request.mode == api.ReadMode.MAX_STALE and request.ts is None)
        if request.stale_ns < 0 or (request.stale_ns and not relative):
            raise failure(api.ErrorCode.BAD_REQUEST, f"stale_ns {request.stale_ns} is negative or does not go with "
                          f"read mode {request.mode}" + (" and a timestamp" if request.ts is not None else ""))
        if not relative:
            return request.mode, request.ts
        if request.ts is not None:
            raise failure(api.ErrorCode.BAD_REQUEST, "a stale read takes stale_ns, not a timestamp")
        ts = Timestamp(max(0, self.clock.now().wall - request.stale_ns), 0)
        return (api.ReadMode.AT if request.mode == api.ReadMode.STALE else api.ReadMode.MAX_STALE), ts

    async def scan(self, request: api.ScanRequest) -> api.ScanReply:
        start = max(request.start, self.tablet.start)
        ends = [e for e in (request.end, self.tablet.end) if e is not None]
        end = min(ends) if ends else None
        with trio.move_on_after(max(request.timeout_ns, 0) / 1e9):
            ts = await self.read_ts(request.mode, request.ts, request.timeout_ns)
            rows, more = await self._scan_resolved(start, end, ts, request.limit)
            return api.ScanReply(ts, rows, self.node_id, more)
        raise failure(api.ErrorCode.TIMEOUT, "a transaction prepared in the scanned range was not resolved in time", leader_hint=self.leader_hint())

    # ---- status --------------------------------------------------------------

    def status(self) -> api.TabletStatus:
        paxos = self.paxos.status()
        return api.TabletStatus(
            id=self.tablet.id, is_leader=paxos.is_leader, lease_holder=paxos.lease_holder,
            serving=self._is_serving(), leader_hint=self.leader_hint(), ballot=str(paxos.ballot),
            first_index=paxos.first_index, last_index=paxos.last_index, chosen_index=paxos.chosen_index,
            applied_index=paxos.applied_index, snapshot_index=paxos.snapshot_index,
            pending_proposals=paxos.pending_proposals, safe_ts=self.readable_safe_ts,
            gc_horizon=self.state.store.gc_horizon(),
            lease_remaining_ns=max(0, paxos.lease_expiry_ns - self.monotonic_ns()) if paxos.lease_holder else 0,
            follower_reads=self.follower_reads,
            prepared_txns=tuple(sorted(self.state.txns.prepared)), lock_holders=len(self.txns.locks.txns),
            rebuilding=(self.rebuild_reason or "its store was lost") if self.paxos.core.rebuilding else "",
        )
