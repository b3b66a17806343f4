"""Single writes started without a task of their own: their answers, given by whoever learns them.

Role: a leader's plain write (`WriteRequest`) whose locks are free is started in one
synchronous call (`TabletReplica.start_write`, from the connection's reading task on a real
node): its locks taken, its timestamp assigned, its command queued in the Paxos inbox
(`PaxosDriver.propose_nowait`). This module holds it from then on and answers it from
whichever task learns its fate: the Paxos turn that applies it or finds it lost
(`_decided`), the commit-wait release that ends its wait (`StartedWrite.set`, called where
`TabletReplica._released` wakes a waiting task), or the sweeper (its deadline). Before, a
task per write awaited each of those: 2.4 task steps per write under load.

Invariants:
- Each started write is answered exactly once, with what the task path (`TabletReplica.
  _write_locked`) answers in the same case: a `WriteReply` once applied and its commit-wait
  is over; `not_leader` when known not committed (never proposed, another value won its
  slot, skipped at apply); `outcome_unknown` when proposed and its fate not learned.
- Its locks are held until it is answered (through commit-wait, as Spanner holds them).
- Not chosen by its deadline: answered `outcome_unknown` and its locks let go, as the task
  path's deadline does; its record stays in the leader core until Paxos resolves it. A fate
  learned after that changes nothing here.
- A record the core dropped at a lease change (UNKNOWN) whose command Paxos then applied is
  acknowledged once the physical clock is past its release time (checked by the sweeper).
- A replica that stops answers every write it still holds `outcome_unknown` (`stop`).
- The sweeper runs only while a started write is unanswered (an idle tablet never wakes for
  it) and looks every `SWEEP_S`: a deadline is kept to within that much late.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable

import attrs
import trio

from paxos.types import NotLeader, ProposalLost
from txn import api
from txn.api.errors import RequestFailed, failure
from txn.tablet.leader import PendingCommand, WriteState

if TYPE_CHECKING:
    from txn.tablet.tablet_replica import TabletReplica

SWEEP_S = 0.05

log = logging.getLogger("chronodb.replica")

Answer = Callable[[api.WriteReply | RequestFailed], None]


@attrs.define(eq=False)
class StartedWrite:
    """One started write until it is answered."""

    pending: PendingCommand
    txn_id: str  # its locks' holder
    deadline_s: float  # trio's clock: not chosen by then, its fate is unknown
    started_ns: int  # monotonic_ns at the proposal (the node's proposal-latency metric)
    answer: Answer
    owner: StartedWrites
    chosen: bool = False

    def set(self) -> None:
        """Its commit-wait is over (`PendingCommand.waiter`, as a waiting task's Event is set)."""
        self.owner.released(self)


class StartedWrites:
    """A tablet replica's started writes (module docstring)."""

    def __init__(self, replica: TabletReplica) -> None:
        self.replica = replica
        self._open: dict[StartedWrite, None] = {}  # unanswered, in start order
        self._wake = trio.Event()  # set when the first one starts: the sweeper runs

    def __len__(self) -> int:
        return len(self._open)

    def start(self, pending: PendingCommand, txn_id: str, command: bytes, timeout_ns: int, answer: Answer) -> bool:
        """Propose `command` (its locks held by `txn_id`, its record `pending`) and hold it until
        answered. False: the Paxos inbox is full; nothing was proposed, `pending` is let go and
        the caller still owns the locks."""
        replica = self.replica
        write = StartedWrite(pending, txn_id, trio.current_time() + max(timeout_ns, 1) / 1e9,
                             replica.monotonic_ns(), answer, self)
        try:
            replica.paxos.propose_nowait(command, on_done=lambda slot, error: self._decided(write, error),
                                         on_not_chosen=lambda: replica.leader.not_chosen(pending))
        except trio.WouldBlock:
            replica.leader.not_chosen(pending)
            return False
        self._open[write] = None
        replica.marks["tablet.write_started"] += 1
        if len(self._open) == 1:
            self._wake.set()
        return True

    def _decided(self, write: StartedWrite, error: Exception | None) -> None:
        """Paxos told the write's fate (the driver's turn): answer it, or leave it to its release."""
        if write not in self._open:
            return  # answered already (its deadline)
        replica, ts = self.replica, write.pending.ts
        if isinstance(error, NotLeader):
            self._finish(write, failure(api.ErrorCode.NOT_LEADER, "leadership moved before the write was proposed",
                                        leader_hint=error.leader_hint))
            return
        if isinstance(error, ProposalLost) and error.known_not_chosen:
            self._finish(write, failure(api.ErrorCode.NOT_LEADER, "leadership moved; the write was not committed"))
            return
        if error is not None:
            replica.not_durable_commits += 1
            self._finish(write, failure(api.ErrorCode.OUTCOME_UNKNOWN,
                                        f"leadership moved while the write at {ts} was being replicated"))
            return
        replica.observe_proposal_ns(replica.monotonic_ns() - write.started_ns)
        write.chosen = True
        state = write.pending.state
        if state is WriteState.SKIPPED:
            self._finish(write, failure(api.ErrorCode.NOT_LEADER, f"the write at {ts} came after a newer leader's "
                                        "barrier and was skipped: not committed"))
        elif state is WriteState.DONE:
            self._acknowledge(write)
        elif state is not WriteState.UNKNOWN:
            write.pending.waiter = write  # its release calls write.set()
        # UNKNOWN: the core dropped its record; the sweeper waits out its release on the clock

    def released(self, write: StartedWrite) -> None:
        if write in self._open:
            self._acknowledge(write)

    def _acknowledge(self, write: StartedWrite) -> None:
        replica = self.replica
        physical_ns = replica.clock.physical.now_ns()
        applied_at_ns = write.pending.applied_at_ns or physical_ns
        replica.marks["tablet.write_acknowledged"] += 1
        replica.distributed_commits += 1
        self._finish(write, api.WriteReply(write.pending.ts, max(0, physical_ns - applied_at_ns)))

    def _finish(self, write: StartedWrite, result: api.WriteReply | RequestFailed) -> None:
        if self._open.pop(write, False) is False:  # the value is None while open
            return
        if isinstance(result, RequestFailed):
            self.replica.marks["tablet.started_write_failed"] += 1
        self.replica.txns._release(write.txn_id)
        try:
            write.answer(result)
        except Exception:  # the transport's bug: never the caller's (a Paxos turn, a timer)
            log.exception("tablet %s: answering a write failed", self.replica.tablet.id)

    def sweep(self) -> None:
        """Answer what is due: a deadline passed before the write was chosen (outcome unknown); a
        chosen write whose core record was dropped (UNKNOWN) once the clock is past its
        release; a release missed by mistake."""
        now_s = trio.current_time()
        physical_ns = self.replica.clock.physical.now_ns()
        for write in list(self._open):
            pending = write.pending
            if not write.chosen:
                if now_s >= write.deadline_s:
                    self.replica.not_durable_commits += 1
                    self._finish(write, failure(api.ErrorCode.OUTCOME_UNKNOWN,
                                                f"the write at {pending.ts} was not confirmed within the deadline"))
            elif pending.state is WriteState.DONE or (
                    pending.state is WriteState.UNKNOWN and physical_ns > pending.release_after_ns):
                self._acknowledge(write)

    async def run(self) -> None:
        """The sweeper: every SWEEP_S while any write is open, else asleep until one starts."""
        try:
            while True:
                if not self._open:
                    self._wake = trio.Event()
                    await self._wake.wait()
                await trio.sleep(SWEEP_S)
                self.sweep()
        finally:
            self.stop()

    def stop(self) -> None:
        """The replica stops: every open write is answered outcome unknown (each was proposed),
        but one whose commit-wait is over."""
        for write in list(self._open):
            if write.chosen and write.pending.state is WriteState.DONE:
                self._acknowledge(write)
                continue
            self.replica.not_durable_commits += 1
            self._finish(write, failure(api.ErrorCode.OUTCOME_UNKNOWN,
                                        f"the replica stopped before the write at {write.pending.ts} was confirmed"))
