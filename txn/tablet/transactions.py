"""A tablet leader's part in read-write transactions: locks, prepare, decide, resolve, recover.

Role: the trio side of 2PL + 2PC for one tablet replica (the protocol is in
txn/api/txn.py, the lock rules in txn/tablet/locks.py, the log records in
txn/tablet/txn_records.py). Handlers raise `RequestFailed` with the error
code the client acts on: `txn_aborted` (with a reason: safe to run the
transaction again), `not_leader` (retry at the leader), `outcome_unknown`.

Coordinator (the tablet of the transaction's first written key, itself a
participant that does not prepare: Spanner 4.2.1): on `CommitRequest` it
takes its own part's exclusive locks and checks its read locks as a prepare
would, takes the commit timestamp at or above every other participant's
prepare timestamp and above its floor, logs `Decide(commit)` with its own
writes through its Paxos group, waits out commit-wait, answers, then
resolves the other participants. Its locks are held, marked prepared (never
wounded), from the check until its decision is applied and commit-waited;
they live only in its leader's memory, as a one-phase commit's do: a leader
change before the decision is chosen skips it (the epoch rule of
txn/tablet/commands.py), and the transaction ends aborted. A coordinator
that was prepared by a `PrepareRequest` (the protocol before) still
decides from its Prepare record. Presumed abort: asked about a transaction it has no decision
for (`TxnStatusRequest`), it logs `Decide(abort)` first and answers from
the log (the first decision in the log wins, so a racing commit and a
presumed abort cannot both hold).

Participant: a transaction prepared here that nobody resolves within
`RECOVERY_AFTER_S` is asked about at its coordinator tablet, and resolved
from the answer; an attempt that got no answer (a lost message, a
coordinator between leaders) is tried again `RECOVERY_RETRY_S` later, not
`RECOVERY_AFTER_S` (simulation seed 3111: one lost status request after a
coordinator crash left a committed transaction's intents in place for
over 10 s). Its locks survive leader changes: a new leader rebuilds
them from the logged Prepare records when it starts serving.

HAZARD: none of its own; timestamps come from the leader core (txn/tablet/leader.py).
"""

from __future__ import annotations

import itertools
import logging
import math
from typing import TYPE_CHECKING, Awaitable, Callable

import trio

from hlc import Timestamp
from paxos.types import NotLeader, ProposalLost
from txn import api
from txn.api.errors import AbortReason, RequestFailed, aborted, failure
from txn.api.txn import MAX_RESOLVE_DECISIONS
from txn.net.coarse_timer import sleep_coarse
from txn.tablet.commands import Decide, Forget, Prepare, Resolve
from txn.tablet.forgetting import ForgetQueue
from txn.tablet.leader import PendingCommand, WriteState
from txn.tablet.locks import Decision, LockMode, LockTable, Outcome

if TYPE_CHECKING:
    from txn.tablet.tablet_replica import TabletReplica

RECOVERY_AFTER_S = 5.0  # a slow 2PC must not be presumed dead: prepares on a loaded box take seconds
RECOVERY_INTERVAL_S = 0.5
RECOVERY_RETRY_S = 1.0  # after an attempt that got no answer: the coordinator was asked once already
TXN_IDLE_NS = 5_000_000_000  # an unprepared transaction silent this long loses its locks
RESOLVE_ATTEMPTS = 20
# A ResolveRequest's transaction ids, in bytes, past its first: ids are the clients' choice, and
# one client's outsized ones must not make a request too large to send for everyone's decisions.
RESOLVE_BATCH_ID_BYTES = 64 << 10
PEER_TIMEOUT_S = 2.0
FORGET_BATCH = 2048  # transaction ids per Forget command (at most 128 bytes each: txn/api/limits.py)
FORGET_COMMANDS_PER_ROUND = 8  # Forget commands a recovery round logs at most
DEFAULT_DECISION_RETENTION_S = 30.0
# The sweep of commit records the leader's tracking missed (`_sweep_decisions`): every
# min(SWEEP_INTERVAL_S, retention), but no more often than RECOVERY_INTERVAL_S; SWEEP_RECORDS a
# round; records older than the retention plus min(SWEEP_MARGIN_S, 2 x retention) (what the
# tracking handles is gone by then).
SWEEP_INTERVAL_S = 10.0
SWEEP_RECORDS = 2048
SWEEP_MARGIN_S = 60.0

log = logging.getLogger("chronodb.txn")


def commit_lock_wait_ns(timeout_ns: int) -> int:
    """How long a commit (one-phase, or a coordinator's own part) may wait for its locks: half its
    deadline. The rest is for logging it and commit-wait: a commit request the client's deadline
    cuts off after its proposal is `outcome_unknown` to the client, where one that gave up waiting
    for a lock is a clean abort (run it again)."""
    return timeout_ns // 2


CallTablet = Callable[..., Awaitable[object]]  # Node.call_tablet(tablet_id, message, timeout_s, *, resend=True)


class TabletTransactions:
    # A commit decision is forgotten only once every participant acknowledged its resolution
    # (txn/tablet/forgetting.py). False is a mutant the simulation must catch: forgotten a
    # retention after it was decided, whatever the participants said.
    FORGET_AFTER_ACKS = True
    # Likewise for the sweep of old commit records (`_sweep_decisions`): False forgets those a
    # participant did not answer for too.
    SWEEP_NEEDS_ANSWERS = True

    def __init__(self, replica: "TabletReplica", *, decision_retention_s: float = DEFAULT_DECISION_RETENTION_S) -> None:
        self.replica = replica
        self.forgetting = ForgetQueue(decision_retention_s)
        self.sweep_interval_s = max(RECOVERY_INTERVAL_S, min(SWEEP_INTERVAL_S, decision_retention_s))
        self.sweep_age_s = decision_retention_s + min(SWEEP_MARGIN_S, 2 * decision_retention_s)
        self._sweep_after: bytes | None = None  # where the sweep's next page starts (None: the first record)
        self.locks = LockTable()
        self.call_tablet: CallTablet | None = None  # set by the node: reach another tablet's leader
        self.deciding: dict[str, trio.Event] = {}
        self.prepared_seen: dict[str, float] = {}
        self.wounding: set[str] = set()  # prepared holders whose coordinator is being asked to decide
        self.abort_after_prepare: set[str] = set()  # aborted by their client while their Prepare was being logged
        # Transactions whose Prepare this leader is logging (assigned, not known applied): their keys,
        # which a decision or resolution of theirs assigned meanwhile names (`_intent_keys`).
        self.preparing: dict[str, frozenset[bytes]] = {}
        self._plain_writes = itertools.count(1)
        self._to_resolve: dict[str, dict[str, Timestamp | None]] = {}  # participant tablet: txn_id: decision, to send
        self._resolving: set[str] = set()  # participant tablets with a task sending their queued decisions
        self._nursery: trio.Nursery | None = None

    @property
    def tablet_id(self) -> str:
        return self.replica.tablet.id

    def mark(self, name: str) -> None:
        self.replica.marks[name] += 1

    def _now_ns(self) -> int:
        return self.replica.monotonic_ns()

    # ---- leadership hooks ----------------------------------------------------------

    def became_serving(self) -> None:
        self.locks.rebuild(self.replica.state.txns.lock_records(), self._now_ns())

    def stopped_serving(self) -> None:
        self.locks.clear()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._recovery_loop)
            nursery.start_soon(self._sweep_loop)
            task_status.started()

    # ---- locks ---------------------------------------------------------------------

    async def _lock(self, txn_id: str, priority: Timestamp, *, key: bytes | None = None,
                    mode: LockMode = LockMode.SHARED, key_range: tuple[bytes, bytes | None] | None = None,
                    preparing: bool = False, deadline_s: float = math.inf) -> None:
        """Take a lock under wound-wait, waiting (within the caller's deadline) while older or prepared holders run.

        `deadline_s` (trio's clock): a wait that would go past it raises `trio.TooSlowError`
        instead, so a caller whose locks are nearly always free needs no cancel scope of its own.

        `preparing`: the request is a 2PC prepare. The transaction may already
        be prepared at another participant, where an older transaction may be
        waiting for it (nobody wounds a prepared holder); if it waited here for
        that older one, the two would wait for each other. So a preparing
        transaction never waits for an older unprepared holder: it votes no
        (`conflict`) at once and runs again later with the same priority.
        Waiting for prepared holders is safe: they never wait for anyone."""
        waited = False
        while True:
            now_ns = self._now_ns()
            decision = self._try_lock(txn_id, priority, key, mode, key_range, now_ns)
            if decision.outcome is Outcome.GRANTED:
                if waited:
                    self.mark("txn.waited")
                return
            if preparing and any(not self.locks.txns[b].prepared for b in decision.blockers if b in self.locks.txns):
                self.locks.abort(txn_id, AbortReason.CONFLICT, now_ns)
                self.replica._notify()
                self.mark("txn.prepare_refused_older_holder")
                raise aborted(AbortReason.CONFLICT, f"transaction {txn_id} met an older transaction's lock while "
                              f"preparing at tablet {self.tablet_id}; it runs again with the same priority")
            self._wound_prepared(txn_id, priority, decision.blockers)
            waited = True
            if trio.current_time() >= deadline_s:
                raise trio.TooSlowError
            await self.replica._wait_changed(self.replica._changed, deadline_s)

    def lock_now(self, txn_id: str, priority: Timestamp, *, key: bytes, mode: LockMode) -> bool:
        """`_lock`'s first try, without waiting: True if granted now; False if it would wait (the
        caller releases what it holds, or waits in `_lock`). Raises as `_lock` does when not
        serving or aborted."""
        return self._try_lock(txn_id, priority, key, mode, None, self._now_ns()).outcome is Outcome.GRANTED

    def _try_lock(self, txn_id: str, priority: Timestamp, key: bytes | None, mode: LockMode,
                  key_range: tuple[bytes, bytes | None] | None, now_ns: int) -> Decision:
        """Ask the lock table once (wounding younger holders); raises when not serving or aborted."""
        if not self.replica._is_serving():
            raise self.replica._not_leader()
        if key is not None:
            decision = self.locks.lock_key(txn_id, priority, key, mode, now_ns)
        else:
            assert key_range is not None
            decision = self.locks.lock_range(txn_id, priority, key_range[0], key_range[1], now_ns)
        if decision.wounded:
            self.mark("txn.wounded")
            self.replica._notify()
        if decision.outcome is Outcome.ABORTED:
            assert decision.reason is not None
            raise aborted(decision.reason, f"transaction {txn_id} was aborted at tablet {self.tablet_id} ({decision.reason})")
        return decision

    def _wound_prepared(self, txn_id: str, priority: Timestamp, blockers: tuple[str, ...]) -> None:
        """Wound-wait for prepared holders: nobody may undo a prepared transaction's
        vote here, but its coordinator may still abort it. An older waiter asks the
        coordinator of each younger prepared holder for the decision at once; with
        none logged yet, the coordinator presumes (and logs) abort. Without this two
        transactions prepared at different tablets could wait for each other until
        a recovery timeout broke the cycle, sometimes against the older one."""
        if self._nursery is None:
            return
        me = (priority, txn_id)
        for holder_id in blockers:
            holder = self.locks.txns.get(holder_id)
            prepare = self.replica.state.txns.prepared.get(holder_id)
            if holder is None or prepare is None or not holder.prepared or (holder.priority, holder_id) < me:
                continue
            if holder_id in self.wounding:
                continue
            self.wounding.add(holder_id)
            self.mark("txn.wounded_prepared")
            self._nursery.start_soon(self._wound_through_coordinator, holder_id, prepare)

    async def _wound_through_coordinator(self, holder_id: str, prepare: Prepare) -> None:
        try:
            await self._recover(holder_id, prepare)
        finally:
            self.wounding.discard(holder_id)

    def _clip_to_tablet(self, txn_id: str, key_range: tuple[bytes, bytes | None]) -> tuple[bytes, bytes | None]:
        """The part of a requested range this tablet holds (what a scan locks and a prepare checks)."""
        tablet = self.replica.tablet
        start = max(key_range[0], tablet.start)
        ends = [e for e in (key_range[1], tablet.end) if e is not None]
        return start, (min(ends) if ends else None)

    # ---- reads under a shared lock ------------------------------------------------------

    async def read(self, request: api.TxnReadRequest) -> api.TxnReadReply:
        if not self.replica.tablet.contains(request.key):
            raise failure(api.ErrorCode.BAD_REQUEST, f"key {request.key!r} is outside tablet {self.tablet_id}")
        with self._deadline(request.timeout_ns, request.txn_id):
            await self._lock(request.txn_id, request.priority, key=request.key, mode=LockMode.SHARED)
            lease = self.replica.leader.lease_id or 0  # the lock's: taken under it just now
            ts = await self.replica._leader_read_ts(self.replica.leader.strong_read_ts(self.replica.clock.now()), request.key)
            result = await self.replica._read_resolved(request.key, ts)
        return api.TxnReadReply(result.value, result.version_ts, ts, self.replica.node_id, lease)

    async def scan(self, request: api.TxnScanRequest) -> api.TxnScanReply:
        start, end = self._clip_to_tablet(request.txn_id, (request.start, request.end))
        with self._deadline(request.timeout_ns, request.txn_id):
            await self._lock(request.txn_id, request.priority, key_range=(start, end))
            lease = self.replica.leader.lease_id or 0
            ts = await self.replica._leader_read_ts(self.replica.leader.strong_read_ts(self.replica.clock.now()))
            rows, more = await self.replica._scan_resolved(start, end, ts, request.limit)
        return api.TxnScanReply(rows, ts, self.replica.node_id, more, lease)

    def _deadline(self, timeout_ns: int, txn_id: str) -> "_Deadline":
        return _Deadline(max(timeout_ns, 1) / 1e9, txn_id)

    # ---- commit paths ----------------------------------------------------------------

    async def _exclusive_and_check(self, txn_id: str, priority: Timestamp, writes: tuple[api.KeyWrite, ...],
                                   read_keys: tuple[bytes, ...], read_ranges: tuple[api.KeyRange, ...],
                                   *, preparing: bool = False) -> None:
        if not self.replica._is_serving():  # locks live at the serving leader: none of ours are here
            raise self.replica._not_leader()
        for item in writes:
            if not self.replica.tablet.contains(item.key):
                raise failure(api.ErrorCode.BAD_REQUEST, f"key {item.key!r} is outside tablet {self.tablet_id}")
        # The read locks are checked BEFORE the exclusive locks are taken: a key both
        # read and written would otherwise pass the check on the exclusive lock just
        # granted, although the shared lock of the read was lost with a leader change
        # (found by the simulation's bank workload: lost updates, seeds 1235 and 1625).
        # From here to the end no read lock can vanish unnoticed: a wound or an expiry
        # is remembered (the lock request below then fails), a leader change ends serving.
        ranges = [self._clip_to_tablet(txn_id, (r.start, r.end)) for r in read_ranges]
        lease_id = self.replica.leader.lease_id
        earlier = self.locks.is_aborted(txn_id)
        if earlier is not None:  # wounded (or expired) here already: say so, not "lost locks"
            raise aborted(earlier, f"transaction {txn_id} was aborted at tablet {self.tablet_id} ({earlier})")
        if not self.locks.holds(txn_id, read_keys, ranges):
            if self.locks.txns.get(txn_id) is None or not self.locks.txns[txn_id].prepared:
                self.locks.abort(txn_id, AbortReason.LOST_LOCKS, self._now_ns())
            self.mark("txn.lost_locks")
            raise aborted(AbortReason.LOST_LOCKS, f"transaction {txn_id} no longer holds its read locks at tablet "
                          f"{self.tablet_id} (a leader change): its reads may be stale")
        for key in sorted({w.key for w in writes}):
            await self._lock(txn_id, priority, key=key, mode=LockMode.EXCLUSIVE, preparing=preparing)
        if self.replica.leader.lease_id != lease_id:  # a new lease while we waited: the table was rebuilt
            self.mark("txn.lost_locks")
            raise aborted(AbortReason.LOST_LOCKS, f"transaction {txn_id}: tablet {self.tablet_id} changed leadership "
                          "while it waited for its write locks: its reads may be stale")

    async def prepare(self, request: api.PrepareRequest) -> api.PrepareReply:
        records = self.replica.state.txns
        if request.txn_id in records.prepared:
            return api.PrepareReply(records.prepared[request.txn_id].ts)
        with self._deadline(request.timeout_ns, request.txn_id):
            await self._exclusive_and_check(request.txn_id, request.priority, request.writes, request.read_keys,
                                            request.read_ranges, preparing=True)
        keys = frozenset(w.key for w in request.writes)
        pending = self.replica.leader.assign(self.replica.clock.now(), commit_wait=False, keys=keys)
        command = Prepare(pending.ts, self.replica.paxos.core.ballot, request.txn_id, request.priority,
                          request.coordinator_tablet, [(w.key, w.value) for w in request.writes],
                          request.read_keys, [(r.start, r.end) for r in request.read_ranges])
        self.locks.mark_prepared(request.txn_id)
        self.preparing[request.txn_id] = keys
        try:
            await self._propose(pending, command, request.timeout_ns)
        except RequestFailed:
            self._unprepare(request.txn_id)
            raise
        finally:
            self.preparing.pop(request.txn_id, None)
        if request.txn_id not in records.prepared:
            self._unprepare(request.txn_id)
            reason = AbortReason.DECIDED_ABORT if request.txn_id in records.decisions else AbortReason.CONFLICT
            raise aborted(reason, f"transaction {request.txn_id} could not prepare at tablet {self.tablet_id} ({reason})")
        self.prepared_seen[request.txn_id] = trio.current_time()
        self.mark("txn.prepared")
        if request.txn_id in self.abort_after_prepare and self._nursery is not None:
            self.abort_after_prepare.discard(request.txn_id)
            self._nursery.start_soon(self._recover, request.txn_id, records.prepared[request.txn_id])
        return api.PrepareReply(pending.ts)

    def _unprepare(self, txn_id: str) -> None:
        locks = self.locks.txns.get(txn_id)
        self.abort_after_prepare.discard(txn_id)
        if locks is not None and txn_id not in self.replica.state.txns.prepared:
            locks.prepared = False
            self.locks.abort(txn_id, AbortReason.CONFLICT, self._now_ns())
            self.replica._notify()

    async def one_phase_commit(self, request: api.OnePhaseCommitRequest) -> api.CommitReply:
        try:
            with self._deadline(commit_lock_wait_ns(request.timeout_ns), request.txn_id):
                await self._exclusive_and_check(request.txn_id, request.priority, request.writes, request.read_keys, request.read_ranges)
            if not request.writes:
                ts = self.replica.leader.strong_read_ts(self.replica.clock.now())
                self.mark("txn.committed_read_only")
                return api.CommitReply(ts, 0)
            reply = await self.replica._write_locked(request.writes, request.timeout_ns)
            self.mark("txn.committed_one_phase")
            return api.CommitReply(reply.ts, reply.commit_wait_ns)
        finally:
            self._release(request.txn_id)

    async def commit(self, request: api.CommitRequest) -> api.CommitReply:
        """Coordinator: decide commit (Spanner 4.2.1), unless a decision is already logged.

        The coordinator does not prepare: it takes its own part's locks here, as a prepare
        would (`request.writes`, read locks checked), and logs its writes in the decision.
        A coordinator prepared by a `PrepareRequest` has its part in that record instead."""
        records = self.replica.state.txns
        decided = records.decisions.get(request.txn_id)
        if decided is None:
            if not self.replica._is_serving():
                raise self.replica._not_leader()
            own_part = bool(request.writes or request.read_keys or request.read_ranges)
            if own_part == (request.txn_id in records.prepared):
                if own_part:
                    raise failure(api.ErrorCode.BAD_REQUEST, f"transaction {request.txn_id} is prepared at its "
                                  f"coordinator {self.tablet_id}, and its commit request carries writes or reads too")
                raise aborted(AbortReason.CONFLICT, f"transaction {request.txn_id} is not prepared at its coordinator {self.tablet_id}")
            self._check_parts(request, own_part)
            # Spanner 4.2.1: no lower than any prepare timestamp, nor than the commit request's
            # arrival (the start rule, as for plain writes: TabletReplica._start_ts).
            floor_ts = max((vote.prepare_ts for vote in request.votes), default=Timestamp.MIN)
            self._refuse_forged_vote(request.txn_id, floor_ts)
            start = self.replica._start_ts()
            parts_refused = False
            try:
                if own_part:
                    locks_deadline_s = trio.current_time() + commit_lock_wait_ns(request.timeout_ns) / 1e9
                    with self._deadline(commit_lock_wait_ns(request.timeout_ns), request.txn_id):
                        await self._exclusive_and_check(request.txn_id, request.priority, request.writes,
                                                        request.read_keys, request.read_ranges, preparing=True)
                    if request.parts:
                        lease_id = self.replica.leader.lease_id
                        try:
                            prepared_ts = await self._prepare_parts(request, locks_deadline_s)
                        except RequestFailed:
                            parts_refused = True
                            raise
                        floor_ts = max(floor_ts, *prepared_ts)
                        self._refuse_forged_vote(request.txn_id, floor_ts)  # peers' answers are input too
                        self._check_still_held(request.txn_id, lease_id)
                    self.locks.mark_prepared(request.txn_id)  # nobody wounds it while its decision is logged
                    keys: frozenset[bytes] | None = frozenset(w.key for w in request.writes)
                else:
                    keys = self._intent_keys(request.txn_id)
                pending = self.replica.leader.assign(start if start > floor_ts else floor_ts, commit_wait=True, keys=keys)
                named = {v.tablet_id for v in request.votes} | {p.tablet_id for p in request.parts}
                others = sorted(named - {self.tablet_id})  # a prepared coordinator's own vote is not resolved remotely
                command = Decide(pending.ts, self.replica.paxos.core.ballot, request.txn_id, True, others,
                                 [(w.key, w.value) for w in request.writes])
                event = self.deciding.setdefault(request.txn_id, trio.Event())
                try:
                    await self._propose(pending, command, request.timeout_ns)
                finally:
                    self.deciding.pop(request.txn_id, None)
                    event.set()
                decided = records.decisions.get(request.txn_id)
                if decided is None:
                    self.mark("txn.decide_failed")
                    raise aborted(AbortReason.CONFLICT, f"transaction {request.txn_id}: its decision at {self.tablet_id} "
                                  "met another transaction's intent on one of its writes")
                if decided.committed and decided.commit_ts == pending.ts:
                    await self.replica._commit_waited(pending)
                    self.mark("txn.committed_two_phase")
                    self.replica.distributed_commits += 1  # the commit record is on a majority's synced logs
                    self._start_resolving(request.txn_id, decided.commit_ts, decided.participants)
                    return api.CommitReply(decided.commit_ts, max(0, self.replica._physical_ns() - (pending.applied_at_ns or 0)))
            except RequestFailed:
                if parts_refused:
                    self.mark("txn.participant_refused")
                elif own_part:  # its locks lost, a leader change, a decision skipped or unconfirmed, ...
                    self.mark("txn.coordinator_part_failed")
                raise
            finally:
                if own_part:
                    self._unmark_prepared(request.txn_id)
                self._release(request.txn_id)
        if not decided.committed:
            raise aborted(AbortReason.DECIDED_ABORT, f"transaction {request.txn_id} was decided aborted at {self.tablet_id}")
        # Decided committed before (a retried commit): the answer stands once commit-wait is surely over.
        while self.replica._physical_ns() <= decided.commit_ts.wall + self.replica.max_offset_ns:
            await trio.sleep(0.001)
        return api.CommitReply(decided.commit_ts, 0)

    def _check_parts(self, request: api.CommitRequest, own_part: bool) -> None:
        """The other participants' parts are input: each names another tablet once, and carries something."""
        seen = {self.tablet_id} | {vote.tablet_id for vote in request.votes}
        for part in request.parts:
            if part.tablet_id in seen:
                raise failure(api.ErrorCode.BAD_REQUEST, f"transaction {request.txn_id}: tablet {part.tablet_id} is "
                              "named twice among its coordinator and participants")
            seen.add(part.tablet_id)
            if not (part.writes or part.read_keys or part.read_ranges):
                raise failure(api.ErrorCode.BAD_REQUEST, f"transaction {request.txn_id}: its part at {part.tablet_id} is empty")
        if request.parts and not own_part:
            raise failure(api.ErrorCode.BAD_REQUEST, f"transaction {request.txn_id}: a coordinator that prepares "
                          "other participants needs a part of its own")

    async def _prepare_parts(self, request: api.CommitRequest, deadline_s: float) -> list[Timestamp]:
        """Coordinator: prepare every other participant (`PrepareRequest` to its leader, node to node,
        in parallel; within `deadline_s`, the half of the commit's deadline its locks may use).
        Returns their prepare timestamps (the votes); the first refusal or silence cancels the rest
        and raises: `txn_aborted` (nothing is decided here, so the transaction is not committed;
        the client's abort, or the participants' presumed abort, frees what did prepare), or the
        participant's own `bad_request`. A prepare that went out is never sent again (its
        Prepare record may stand)."""
        votes: list[Timestamp] = []
        refusals: list[RequestFailed] = []
        nursery: trio.Nursery | None = None

        async def prepare(part: api.ParticipantPart) -> None:
            timeout_s = max(deadline_s - trio.current_time(), 0.001)
            message = api.PrepareRequest(part.tablet_id, request.txn_id, request.priority, self.tablet_id, part.writes,
                                         part.read_keys, part.read_ranges, int(timeout_s * 0.9e9))
            try:
                assert self.call_tablet is not None
                reply = await self.call_tablet(part.tablet_id, message, timeout_s, resend=False)
            except RequestFailed as error:  # no such tablet
                reply = error.reply
            if isinstance(reply, api.PrepareReply):
                votes.append(reply.prepare_ts)
                return
            refusals.append(self._refusal_of(request.txn_id, part.tablet_id, reply))
            if nursery is not None:
                nursery.cancel_scope.cancel()

        if self.call_tablet is None:
            raise failure(api.ErrorCode.UNAVAILABLE, f"{self.tablet_id} cannot reach other tablets yet")
        if len(request.parts) == 1:
            await prepare(request.parts[0])  # the common case: no nursery for one request
        else:
            async with trio.open_nursery() as nursery:
                for part in request.parts:
                    nursery.start_soon(prepare, part)
        if refusals:
            raise refusals[0]
        return votes

    def _refusal_of(self, txn_id: str, tablet_id: str, reply: object) -> RequestFailed:
        """What a participant's answer other than a vote makes of the commit."""
        if isinstance(reply, api.ErrorReply) and reply.code is api.ErrorCode.TXN_ABORTED:
            return aborted(reply.abort_reason or AbortReason.CONFLICT, f"participant {tablet_id}: {reply.message}")
        if isinstance(reply, api.ErrorReply) and reply.code in (api.ErrorCode.BAD_REQUEST, api.ErrorCode.UNKNOWN_TABLET):
            return failure(api.ErrorCode.BAD_REQUEST, f"participant {tablet_id}: {reply.message}")
        said = reply.message if isinstance(reply, api.ErrorReply) else "no answer in time"
        return aborted(AbortReason.CONFLICT, f"transaction {txn_id}: participant {tablet_id} gave no vote ({said}); "
                       "nothing was decided, so it is not committed")

    def _check_still_held(self, txn_id: str, lease_id: object) -> None:
        """After the other participants prepared: the coordinator's own locks, unprepared (so
        wound-wait could take them) while it waited, are still its own under the same lease."""
        earlier = self.locks.is_aborted(txn_id)
        if earlier is not None:
            raise aborted(earlier, f"transaction {txn_id} was aborted at tablet {self.tablet_id} ({earlier}) while its "
                          "participants prepared")
        if not self.replica._is_serving() or self.replica.leader.lease_id != lease_id:
            self.mark("txn.lost_locks")
            raise aborted(AbortReason.LOST_LOCKS, f"transaction {txn_id}: tablet {self.tablet_id} changed leadership "
                          "while its participants prepared: its reads may be stale")
        if txn_id in self.replica.state.txns.decisions:  # presumed aborted meanwhile (an older waiter asked)
            raise aborted(AbortReason.DECIDED_ABORT, f"transaction {txn_id} was decided aborted at {self.tablet_id} "
                          "while its participants prepared")

    def _unmark_prepared(self, txn_id: str) -> None:
        """The coordinator's locks, marked prepared while its decision was logged, are ordinary again (to be released)."""
        self.abort_after_prepare.discard(txn_id)  # an AbortRequest meanwhile logged its abort decision itself
        locks = self.locks.txns.get(txn_id)
        if locks is not None and txn_id not in self.replica.state.txns.prepared:
            locks.prepared = False

    def _refuse_forged_vote(self, txn_id: str, prepare_ts: Timestamp) -> None:
        """The votes come through the client, so they are input: a prepare timestamp beyond every
        clock (a participant's leader took it from its HLC, within max_offset of ours) would
        raise this leader's floor, and every later write's timestamp and commit-wait, without
        bound. Nothing is assigned or logged for such a request; the transaction stays prepared
        until it is committed with true votes or presumed aborted."""
        reachable_ns = self.replica._physical_ns() + 2 * self.replica.max_offset_ns
        if prepare_ts.wall > reachable_ns:
            raise failure(api.ErrorCode.BAD_REQUEST, f"transaction {txn_id}: prepare timestamp {prepare_ts} in its "
                          f"votes is more than 2 * max_offset ahead of this node's clock (now {self.replica.clock.now()}): "
                          "a forged vote, or clocks out of their bound")

    async def abort(self, request: api.AbortRequest) -> api.AbortReply:
        records = self.replica.state.txns
        if not self.replica._is_serving():
            # Locks live at the leader: an abort answered elsewhere would free nothing.
            raise self.replica._not_leader()
        earlier = self.locks.is_aborted(request.txn_id)
        held = self.locks.txns.get(request.txn_id)
        if held is not None and held.prepared and request.txn_id not in records.prepared:
            # Its Prepare is being logged right now: the vote cannot be taken back
            # here; once it lands, ask the coordinator (which decides abort).
            self.abort_after_prepare.add(request.txn_id)
        elif request.txn_id not in records.prepared:
            if held is not None:
                self.locks.abort(request.txn_id, AbortReason.DECIDED_ABORT, self._now_ns())
                self.replica._notify()
        if request.coordinator_tablet == self.tablet_id and request.txn_id not in records.decisions:
            await self._decide_abort(request.txn_id, request.timeout_ns)
            self.mark("txn.abort_decided_for_client")  # read by the node's metrics
        elif request.txn_id in records.prepared and self._nursery is not None:
            # Prepared here and given up by its client: learn the decision now
            # (the coordinator presumes abort) rather than at the next recovery round.
            self.prepared_seen[request.txn_id] = trio.current_time()
            self._nursery.start_soon(self._recover, request.txn_id, records.prepared[request.txn_id])
        return api.AbortReply(None if earlier is None else str(earlier))

    async def status(self, request: api.TxnStatusRequest) -> api.TxnStatusReply:
        """Coordinator: the decision, presuming abort (logged before answering) when there is none."""
        records = self.replica.state.txns
        event = self.deciding.get(request.txn_id)
        if event is not None:
            with trio.move_on_after(max(request.timeout_ns, 1) / 1e9):
                await event.wait()
        if request.txn_id not in records.decisions:
            if not self.replica._is_serving():
                raise self.replica._not_leader()
            await self._decide_abort(request.txn_id, request.timeout_ns)
            self.mark("txn.presumed_abort")
        decided = records.decisions[request.txn_id]
        state = api.TxnState.COMMITTED if decided.committed else api.TxnState.ABORTED
        return api.TxnStatusReply(request.txn_id, state, decided.commit_ts if decided.committed else None)

    async def resolve(self, request: api.ResolveRequest) -> api.ResolveReply:
        """Participant: the decisions its coordinator queued for it (`_resolve_remote`), logged
        together in one Resolve command. Answered once none of them is prepared here; else an
        error, and the coordinator sends them again (a decision no longer prepared here is
        skipped: resolving is idempotent)."""
        if len(request.decisions) > MAX_RESOLVE_DECISIONS:
            raise failure(api.ErrorCode.BAD_REQUEST, f"a resolve request carries at most {MAX_RESOLVE_DECISIONS} "
                          f"decisions, not {len(request.decisions)}")
        if not self.replica._is_serving():
            # Only the serving leader has applied every Prepare its tablet voted with: a
            # follower behind it would find nothing prepared and say so, and the coordinator
            # takes the reply as the participant's acknowledgement (it may then forget the
            # decision, which this participant's recovery would still ask about).
            raise self.replica._not_leader()
        prepared = self.replica.state.txns.prepared
        todo = {d.txn_id: d.commit_ts for d in request.decisions if d.txn_id in prepared}
        if todo:
            await self._resolve_here(todo, request.timeout_ns)
            left = sum(1 for txn_id in todo if txn_id in prepared)
            if left:  # its command came after a newer leader's barrier, or lost to another value
                raise failure(api.ErrorCode.UNAVAILABLE, f"{left} of {len(todo)} transactions are still prepared at "
                              f"{self.tablet_id} after their resolution was logged; send them again")
        return api.ResolveReply()

    async def _decide_abort(self, txn_id: str, timeout_ns: int) -> None:
        pending = self.replica.leader.assign(self.replica.clock.now(), commit_wait=False, keys=self._intent_keys(txn_id))
        await self._propose(pending, Decide(pending.ts, self.replica.paxos.core.ballot, txn_id, False, ()), timeout_ns)
        self._release(txn_id)

    async def _resolve_here(self, decisions: dict[str, Timestamp | None], timeout_ns: int) -> None:
        """Log one Resolve command for these transactions' decisions (txn_id: commit_ts, None for
        abort), then release the locks of each no longer prepared here."""
        leader = self.replica.leader
        commits = [commit_ts for commit_ts in decisions.values() if commit_ts is not None]
        if commits:
            leader.serve_at(max(commits))  # later commands here get timestamps above them
        keys: set[bytes] = set()
        for txn_id in decisions:
            keys |= self._intent_keys(txn_id)
        pending = leader.assign(self.replica.clock.now(), commit_wait=False, keys=frozenset(keys))
        await self._propose(pending, Resolve(pending.ts, self.replica.paxos.core.ballot, tuple(decisions.items())), timeout_ns)
        for txn_id in decisions:
            if txn_id not in self.replica.state.txns.prepared:
                self._release(txn_id)
                self.prepared_seen.pop(txn_id, None)
                self.mark("txn.resolved")

    def _intent_keys(self, txn_id: str) -> frozenset[bytes]:
        """The keys a decision or resolution of `txn_id` changes here: its prepared intents' (the
        record applied when the command is assigned), or those of its Prepare this leader is
        logging; else none. A transaction neither prepared nor preparing here has no intent here
        that a command assigned now could change: a Prepare of it assigned later fails once
        decided (txn/tablet/txn_records.py), and one assigned earlier is pending under its own
        keys until applied, then its intents hold reads of them (`_read_resolved`) until
        resolved. Before 12-05 such a decision named no keys, so every read of the tablet at or
        above its timestamp waited for it: a client's abort at a coordinator held up 27% of the
        reads there under `bench txn` transfers."""
        prepare = self.replica.state.txns.prepared.get(txn_id)
        if prepare is not None:
            return frozenset(key for key, _ in prepare.writes)
        return self.preparing.get(txn_id, frozenset())

    def _release(self, txn_id: str) -> None:
        locks = self.locks.txns.get(txn_id)
        if locks is not None and txn_id not in self.replica.state.txns.prepared:
            self.locks.release(txn_id)
            self.replica._notify()

    async def _propose(self, pending: PendingCommand, command: object, timeout_ns: int) -> None:
        try:
            await self.replica._propose(pending, command, max(timeout_ns, 1) / 1e9)  # type: ignore[arg-type]
        except NotLeader as error:
            raise failure(api.ErrorCode.NOT_LEADER, f"leadership of {self.tablet_id} moved", leader_hint=error.leader_hint) from None
        except ProposalLost as error:
            if error.known_not_chosen:
                raise failure(api.ErrorCode.NOT_LEADER, f"leadership of {self.tablet_id} moved; not logged") from None
            self._count_not_durable(command)
            raise failure(api.ErrorCode.OUTCOME_UNKNOWN, f"leadership of {self.tablet_id} moved while logging {command}") from None
        except trio.TooSlowError:
            self._count_not_durable(command)
            raise failure(api.ErrorCode.OUTCOME_UNKNOWN, f"{command} was not confirmed within the deadline") from None
        if pending.state is WriteState.SKIPPED and not isinstance(command, Prepare):
            raise failure(api.ErrorCode.NOT_LEADER, f"{command} came after a newer leader's barrier: not logged")

    def _count_not_durable(self, command: object) -> None:
        """A commit decision whose majority durability could not be confirmed (comdb2's not-durable commit)."""
        if isinstance(command, Decide) and command.committed:
            self.replica.not_durable_commits += 1

    # ---- resolution and recovery ------------------------------------------------------------

    def _start_resolving(self, txn_id: str, commit_ts: Timestamp | None, participants: tuple[str, ...]) -> None:
        """Queue the decision for each participant; one task per participant sends what is queued.
        A commit is tracked for forgetting once every participant acknowledged it (`forgetting`)."""
        if self._nursery is None:
            return
        if commit_ts is not None:
            self.forgetting.decided(txn_id, participants if self.FORGET_AFTER_ACKS else (), trio.current_time())
        for tablet_id in participants:
            self._to_resolve.setdefault(tablet_id, {})[txn_id] = commit_ts
            if tablet_id not in self._resolving:
                self._resolving.add(tablet_id)
                self._nursery.start_soon(self._resolve_remote, tablet_id)

    async def _resolve_remote(self, tablet_id: str) -> None:
        """Send participant `tablet_id` the decisions queued for it, a `ResolveRequest` at a time,
        each carrying everything queued while the one before was out (up to
        MAX_RESOLVE_DECISIONS, and RESOLVE_BATCH_ID_BYTES of ids), until nothing is queued.
        Before 12-05 each decision had a task and a request of its own."""
        try:
            while True:
                queued = self._to_resolve.get(tablet_id)
                if not queued:
                    self._to_resolve.pop(tablet_id, None)
                    return
                batch: list[api.ResolveDecision] = []
                size = 0
                for txn_id in list(itertools.islice(queued, MAX_RESOLVE_DECISIONS)):
                    size += len(txn_id)
                    if batch and size > RESOLVE_BATCH_ID_BYTES:
                        break
                    batch.append(api.ResolveDecision(txn_id, queued.pop(txn_id)))
                await self._send_decisions(tablet_id, batch)
        finally:
            self._resolving.discard(tablet_id)

    async def _send_decisions(self, tablet_id: str, batch: list[api.ResolveDecision]) -> None:
        for attempt in range(RESOLVE_ATTEMPTS):
            if self.call_tablet is None:
                break
            request = api.ResolveRequest(tablet_id, batch, int(PEER_TIMEOUT_S * 1e9))
            try:
                reply = await self.call_tablet(tablet_id, request, PEER_TIMEOUT_S)
            except Exception as error:  # a peer's failure is retried, never fatal
                log.debug("resolving %d transactions at %s: %r", len(batch), tablet_id, error)
                reply = None
            if isinstance(reply, api.ResolveReply):
                self.mark("txn.resolve_requests")  # read by the node's metrics
                self.replica.marks["txn.resolve_decisions"] += len(batch)
                now = trio.current_time()
                for decision in batch:  # the participant's serving leader has none of them prepared
                    if decision.commit_ts is not None:
                        self.forgetting.acknowledged(decision.txn_id, tablet_id, now)
                return
            await trio.sleep(min(0.05 * 2 ** attempt, 1.0))
        # The participant's own recovery asks the coordinator later: these decisions are kept.
        for decision in batch:
            self.forgetting.given_up(decision.txn_id)

    async def _recovery_loop(self) -> None:
        while True:
            await sleep_coarse(RECOVERY_INTERVAL_S)  # with the node's other housekeeping (txn/net/coarse_timer.py)
            expired = self.locks.expire(self._now_ns(), TXN_IDLE_NS)
            if expired:
                self.mark("txn.expired")
                self.replica._notify()
            if not self.replica._is_serving() or self.call_tablet is None:
                continue
            try:
                await self._forget_due()
            except Exception:  # housekeeping: a failure here must not stop the recovery of prepared transactions
                log.exception("tablet %s: forgetting decisions failed", self.tablet_id)
            now = trio.current_time()
            for txn_id, prepare in list(self.replica.state.txns.prepared.items()):
                seen = self.prepared_seen.setdefault(txn_id, now)
                if now - seen < RECOVERY_AFTER_S:
                    continue
                self.prepared_seen[txn_id] = now
                if not await self._recover(txn_id, prepare) and txn_id in self.prepared_seen:
                    self.prepared_seen[txn_id] = now - RECOVERY_AFTER_S + RECOVERY_RETRY_S

    async def _forget_due(self) -> None:
        """Log a `Forget` of the commit decisions whose retention has passed since every
        participant acknowledged them (`forgetting`), FORGET_BATCH a command; any whose command
        was not logged are due again at the next round."""
        now = trio.current_time()
        for _ in range(FORGET_COMMANDS_PER_ROUND):
            txn_ids = self.forgetting.take_due(now, FORGET_BATCH)
            if not txn_ids:
                return
            if not await self._log_forget(txn_ids):
                self.forgetting.put_back(txn_ids, now)
                return

    async def _log_forget(self, txn_ids: list[str]) -> bool:
        """Log one `Forget` of `txn_ids` (commit records every participant resolved); False: not logged."""
        pending = self.replica.leader.assign(self.replica.clock.now(), commit_wait=False, keys=frozenset())  # no key
        try:
            await self._propose(pending, Forget(pending.ts, self.replica.paxos.core.ballot, txn_ids),
                                int(PEER_TIMEOUT_S * 1e9))
        except RequestFailed as failed:
            log.info("tablet %s: forgetting %d decisions: %s", self.tablet_id, len(txn_ids), failed.reply.message)
            return False
        self.replica.marks["txn.decisions_forgotten"] += len(txn_ids)
        return True

    async def _sweep_loop(self) -> None:
        while True:
            await sleep_coarse(self.sweep_interval_s)  # with the node's other housekeeping (txn/net/coarse_timer.py)
            if not self.replica._is_serving() or self.call_tablet is None:
                continue
            try:
                await self._sweep_decisions()
            except Exception:  # housekeeping: a failure here must never stop the tablet
                log.exception("tablet %s: sweeping decision records failed", self.tablet_id)

    async def _sweep_decisions(self) -> None:
        """Forget old commit records the leader's tracking (`forgetting`) missed: a leader change
        lost it, a participant did not answer all of a resolution's attempts, or the record is
        from a build before 12-05. The next page of records (SWEEP_RECORDS, in id order,
        wrapping around); each commit older than `sweep_age_s` is resolved again at every
        participant (idempotent: one that no longer has it prepared just answers), and those all
        of whose participants' serving leaders answered are forgotten, as the tracking would.
        Abort records are passed over (kept: txn/tablet/txn_records.py)."""
        page, self._sweep_after = self.replica.state.txns.decision_page(self._sweep_after, SWEEP_RECORDS)
        horizon_ns = self.replica._physical_ns() - int(self.sweep_age_s * 1e9)
        old = [(txn_id, record) for txn_id, record in page if record.committed and record.commit_ts.wall < horizon_ns]
        if not old:
            return
        by_participant: dict[str, list[api.ResolveDecision]] = {}
        for txn_id, record in old:
            for tablet_id in record.participants:
                by_participant.setdefault(tablet_id, []).append(api.ResolveDecision(txn_id, record.commit_ts))
        unanswered: set[str] = set()
        for tablet_id, decisions in by_participant.items():
            for first in range(0, len(decisions), MAX_RESOLVE_DECISIONS):
                batch = decisions[first:first + MAX_RESOLVE_DECISIONS]
                try:
                    assert self.call_tablet is not None
                    reply = await self.call_tablet(tablet_id, api.ResolveRequest(tablet_id, batch, int(PEER_TIMEOUT_S * 1e9)),
                                                   PEER_TIMEOUT_S)
                except Exception as error:  # a peer's failure: these stay for a later round
                    log.debug("sweep: resolving %d transactions at %s: %r", len(batch), tablet_id, error)
                    reply = None
                if not isinstance(reply, api.ResolveReply) and self.SWEEP_NEEDS_ANSWERS:
                    unanswered.update(decision.txn_id for decision in batch)
        answered = [txn_id for txn_id, _ in old if txn_id not in unanswered]
        self.replica.marks["txn.decisions_swept"] += len(answered)
        for first in range(0, len(answered), FORGET_BATCH):
            if not await self._log_forget(answered[first:first + FORGET_BATCH]):
                return  # the next pass over these records tries again

    async def _recover(self, txn_id: str, prepare: Prepare) -> bool:
        """Ask the coordinator and resolve here; False if no answer came (try again soon)."""
        try:
            if prepare.coordinator == self.tablet_id:
                reply: object = await self.status(api.TxnStatusRequest(self.tablet_id, txn_id, int(PEER_TIMEOUT_S * 1e9)))
            else:
                reply = await self.call_tablet(prepare.coordinator, api.TxnStatusRequest(prepare.coordinator, txn_id, int(PEER_TIMEOUT_S * 1e9)), PEER_TIMEOUT_S)  # type: ignore[misc]
            if not isinstance(reply, api.TxnStatusReply):
                log.info("tablet %s: recovering %s: no answer from coordinator %s (%s)", self.tablet_id, txn_id,
                         prepare.coordinator, reply)
                return False
            commit_ts = reply.commit_ts if reply.state is api.TxnState.COMMITTED else None
            if txn_id in self.replica.state.txns.prepared:
                await self._resolve_here({txn_id: commit_ts}, int(PEER_TIMEOUT_S * 1e9))
                self.mark("txn.recovered")
            return True
        except RequestFailed as failed:
            log.info("tablet %s: recovering %s: %s", self.tablet_id, txn_id, failed.reply)
        except Exception as error:  # a peer's failure is retried later, never fatal
            log.info("tablet %s: recovering %s: %r", self.tablet_id, txn_id, error)
        return False

    def plain_write_id(self) -> str:
        return f"w/{self.replica.node_id}/{next(self._plain_writes)}"

    def summary(self) -> tuple[list[tuple[str, Timestamp, str]], list[tuple[str, bool, int, int]]]:
        prepared = [(t, p.ts, p.coordinator) for t, p in sorted(self.replica.state.txns.prepared.items())]
        return prepared, self.locks.summary()


class _Deadline:
    """A cancel scope that turns an expired wait into `txn_aborted(conflict)` (retry with the same priority)."""

    def __init__(self, seconds: float, txn_id: str) -> None:
        self.scope = trio.move_on_after(seconds)
        self.txn_id = txn_id

    def __enter__(self) -> trio.CancelScope:
        return self.scope.__enter__()

    def __exit__(self, *exc: object) -> bool:
        suppressed = self.scope.__exit__(*exc)  # type: ignore[arg-type]
        if self.scope.cancelled_caught:
            raise aborted(AbortReason.CONFLICT, f"transaction {self.txn_id} waited too long for a lock or a read")
        return bool(suppressed)
