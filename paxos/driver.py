"""The trio driver of one Paxos replica: feeds the pure core and carries out its outputs.

Role: the I/O edge. One task (`run`) owns the core and reads one bounded
inbox; everything else only feeds it: `deliver(src, msg)` (non-blocking; a
full inbox drops the message, as a network may), `propose` (waits for room),
`campaign`, `take_snapshot`, `transfer_leadership`. The one exception:
`turn_now()` runs a turn in the caller's task (a node's connection reader,
once it has delivered what one read carried), a loop pass sooner; it takes
the inbox in the same FIFO order, never runs inside a turn, and leaves a
failure for the owner task to raise. The owner task therefore parks on a
parking lot, never in the channel's receive() (which would hand it the next
item directly, out of the inbox's order). Each loop turn takes every queued input, then
carries out `core.ready()` in order (`carry_out`): early sends (the leader's
Accepts), ONE synced storage write for the whole turn (group commit), the
snapshot install, state machine applies, the sends that depend on the write,
`core.advance()`. LevelDB calls run inline.

The synced write off the loop (`write_synced`, given by a real node): a
turn sends its early messages and applies the chosen slots that earlier
writes already hold (every slot below the first one this turn writes: a
leader's choices counted on the last turn's Accepteds need not wait for
this turn's new proposals to be synced), then its owner task awaits
`write_synced(batch)` (the turn's log write, synced in a worker thread) and
only then applies the slots it wrote, sends what depends on the write and
calls `core.advance()`. Until then the core takes no input: what arrives waits in
the inbox for the next turn (one write and one fsync for all of it), while
the event loop serves the node's other tablets and sockets. The write itself
goes to the thread, not just an fsync after an unsynced write: LevelDB syncs
only its current log file, so a log switch between the two would leave the
write unsynced. A snapshot install's turn writes inline (its order below).
Without `write_synced` (unit tests, the Paxos-only simulation) every turn writes
inline.

Snapshot install order, and why a crash at any point is safe: the write that
records the log's truncation through the snapshot index is synced first, then
the state machine installs (itself: a synced "installing" marker, clear and
import, one synced final batch; txn/tablet/state.py), then the SnapshotAck
goes out. A crash
- before the truncation is synced: nothing changed, the leader resends;
- after it, before the state's marker: the state machine is intact at an
  index below the new log start, so the core restarts with `need_snapshot`;
- after the marker: the state machine restarts `install_pending` (the core
  is told so through the state machine's `install_pending` attribute) and
  needs a snapshot too;
- after the final batch: installed.
The other order (install, then truncate) left the state beyond a log with a
hole; the core still repairs that at start-up by finishing the truncation.
A replica needing a snapshot never applies, never campaigns and so never
exports.

Outputs to callers: `propose()` returns the slot once the command is chosen
and applied here; `NotLeader` if not leader when the loop took it (never
proposed); `ProposalLost` if leadership was lost after (fate unknown, or
known not chosen when another value was applied in its slot);
`trio.TooSlowError` on timeout (fate unknown). `status()`, `has_lease()`,
`wait_applied()`, `wait_status_change()`, `entries()` read the core.
Closed tokens (paxos/replica.py): `set_closed` hands the core the leader's
newest (a plain call: the core only stores it, and it goes out with the
next Accept); `before_heartbeat()` is called just before the core builds a
leader's heartbeats, so the application can set a fresh token for them (at
the heartbeat's pace: every `heartbeat_ns`, or `idle_heartbeat_ns` while the
leader is quiet); `on_closed(token, index)` is called after a turn in which
a follower received a new one.

HAZARD: `has_lease()` is only as good as the clock-rate bound in
PaxosConfig (`drift_allowance_ns` per `lease_ns`); `now_ns` must be
monotonic.
"""

from __future__ import annotations

import logging
import math
import random
from typing import Any, Awaitable, Callable

import attrs
import trio

from mvcc.engine import Batch
from paxos.messages import Ballot, Entry
from paxos.replica import NEVER, Replica, Role
from paxos.storage import PaxosStorage
from paxos.types import NotLeader, PaxosConfig, PaxosStatus, ProposalLost, Ready, StateMachine

__all__ = ["NotLeader", "PaxosConfig", "PaxosDriver", "PaxosStatus", "ProposalLost", "StateMachine"]

INBOX_SIZE = 8192
MAX_INPUTS_PER_TURN = 4096

log = logging.getLogger("chronodb.paxos")


@attrs.define(eq=False)
class _Proposal:
    command: bytes
    # Told once the command is known never to be chosen, even when its proposer has stopped
    # waiting (cancelled, or timed out): the proposer's records must not outlive it.
    on_not_chosen: Callable[[], None] | None = None
    # Told once the fate is known (`propose_nowait`), in the driver's turn: instead of a task
    # waiting on `done`. Its failure is logged, never the driver's.
    on_done: Callable[[int, Exception | None], None] | None = None
    done: trio.Event | None = attrs.field(factory=trio.Event)
    slot: int = 0
    error: Exception | None = None

    def finish(self, slot: int = 0, error: Exception | None = None) -> None:
        self.slot, self.error = slot, error
        if self.done is not None:
            self.done.set()
        if self.on_not_chosen is not None and (
                isinstance(error, NotLeader) or (isinstance(error, ProposalLost) and error.known_not_chosen)):
            self.on_not_chosen()
        if self.on_done is not None:
            try:
                self.on_done(slot, error)
            except Exception:  # the proposer's bug: it must not stop this tablet's Paxos
                log.exception("a proposal's on_done failed")


class PaxosDriver:
    def __init__(
        self, *, node_id: str, peers: tuple[str, ...], storage: PaxosStorage, state_machine: StateMachine,
        send: Callable[[str, object], None], now_ns: Callable[[], int], seed: int | str, config: PaxosConfig,
        preferred_leader: bool = False, preferred_leader_id: str | None = None,
        on_closed: Callable[[bytes, int], None] | None = None,
        before_heartbeat: Callable[[], None] | None = None,
        quiet_heartbeat_at: Callable[[int, int], int] | None = None,
        write_synced: Callable[[Batch], Awaitable[None]] | None = None,
    ) -> None:
        """`preferred_leader_id`: the group's preferred leader, known to every replica, so that
        whoever leads hands leadership back to it once it has kept up for
        `config.transfer_after_ns`. `preferred_leader` (this node is it) only makes it campaign
        at start-up; it is implied by `preferred_leader_id == node_id`. `quiet_heartbeat_at`: where
        a quiet leader's heartbeats go (the core's argument, paxos/replica.py). `write_synced`:
        applies a batch to `storage`'s engine, synced, off the event loop (module docstring);
        None: each turn's write is synced inline."""
        self.node_id = node_id
        self.storage = storage
        self.state_machine = state_machine
        self._send = send
        self._now_ns = now_ns
        self.preferred_leader = preferred_leader or preferred_leader_id == node_id
        self.preferred_leader_id = preferred_leader_id
        self.on_closed = on_closed
        self.before_heartbeat = before_heartbeat
        self._write_synced = write_synced
        # A turn whose log write awaits `write_synced` (its Ready and time): the core takes no
        # input until the owner task has written and carried out the rest of it.
        self._sync_due: tuple[Ready, int] | None = None
        install_pending = bool(getattr(state_machine, "install_pending", False))
        applied_index = state_machine.applied_index()
        # Applied entries stay on disk at start-up (read back when a follower needs them); a
        # half-installed state machine's applied index means nothing, so then everything is loaded.
        persisted = storage.load(resident_after=None if install_pending else applied_index)
        self.core = Replica(
            node_id=node_id, peers=peers, config=config, rng=random.Random(f"{seed}/paxos/{node_id}"),
            persisted=persisted, applied_index=applied_index, now_ns=now_ns(),
            install_pending=install_pending, preferred_leader=preferred_leader_id, read_entry=storage.read_entry,
            quiet_heartbeat_at=quiet_heartbeat_at,
        )
        self._inbox_send, self._inbox_receive = trio.open_memory_channel[tuple[Any, ...]](INBOX_SIZE)
        # The owner task parks here, never in the channel's receive(): a receiver parked there would
        # be handed the next item directly, and a turn run meanwhile by `turn_now` would take the
        # items after it first (two proposals' slots out of their timestamps' order).
        self._inbox_waiter = trio.lowlevel.ParkingLot()
        self._wait_scope: trio.CancelScope | None = None
        self._in_turn = False
        self._running = False  # the owner task is serving: `turn_now` may run turns for it
        self._failure: BaseException | None = None
        self._pending: dict[int, _Proposal] = {}
        self._applied_event = trio.Event()
        self._status_event = trio.Event()
        self._status_key = self._key(now_ns())
        self._closed_seen: tuple[bytes, int] = self.core.closed_in
        self._wake_at_ns = NEVER
        self._dropped = 0
        self._leading_ballot: Ballot | None = None

    # ------------------------------------------------------------ the owner task

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        if self.preferred_leader:
            self.core.campaign(self._now_ns())
        self._turn()
        task_status.started()
        self._running = True
        try:
            await self._serve_inbox()
        finally:
            self._running = False

    async def _serve_inbox(self) -> None:
        while True:
            if self._failure is not None:
                raise self._failure  # a turn run by `turn_now` failed: this task fails as if it ran it
            if self._sync_due is not None:
                await self._finish_synced_turn()
                continue
            if self._inbox_receive.statistics().current_buffer_used:
                await trio.lowlevel.checkpoint()  # what receive() did with an item ready
            else:
                with trio.move_on_at(self._wake_deadline_s()) as scope:
                    self._wait_scope = scope
                    try:
                        await self._inbox_waiter.park()
                    finally:
                        self._wait_scope = None
            if self._failure is not None:
                raise self._failure
            if self._sync_due is not None:
                continue  # a turn run by `turn_now` meanwhile waits for its sync
            self._take_queued()
            now = self._now_ns()
            if self.before_heartbeat is not None and self.core.heartbeat_due(now):
                self.before_heartbeat()
            self.core.tick(now)
            self._turn()

    def _wake_deadline_s(self) -> float:
        if self._wake_at_ns >= NEVER:
            return math.inf
        return trio.current_time() + max(self._wake_at_ns - self._now_ns(), 0) / 1e9

    def _take_queued(self) -> None:
        for _ in range(MAX_INPUTS_PER_TURN):
            try:
                item = self._inbox_receive.receive_nowait()
            except trio.WouldBlock:
                return
            self._take(item)

    def turn_now(self) -> None:
        """Take what the inbox holds and run a turn in the caller's task, now, instead of one loop
        pass later in the owner task (a node calls it once it has delivered what one socket read
        carried: `deliver(..., wake=False)`). Not from inside a turn (its callbacks), not while the
        owner task is not running (before it started, after it ended) and not once a turn failed:
        the owner task is woken instead (runs it, or raises the failure)."""
        if self._in_turn or self._sync_due is not None or self._failure is not None or not self._running:
            self._inbox_waiter.unpark()
            return
        try:
            self._take_queued()
            self._turn()
        except Exception as error:
            # The owner task raises it (as if its own turn had failed) and the tablet's nursery
            # sees it there; the caller's task (a connection's reader) would only log it.
            self._failure = error
            self._inbox_waiter.unpark()
            return
        if self._sync_due is not None:
            self._inbox_waiter.unpark()  # the owner task syncs and finishes the turn
            return
        if self._wait_scope is not None:
            self._wait_scope.deadline = self._wake_deadline_s()  # the turn may want an earlier tick
        if self._inbox_receive.statistics().current_buffer_used:
            self._inbox_waiter.unpark()  # more than a turn takes

    def _take(self, item: tuple[Any, ...]) -> None:
        kind = item[0]
        now = self._now_ns()
        if kind == "message":
            self.core.step(item[1], item[2], now)
        elif kind == "propose":
            proposal: _Proposal = item[1]
            slot = self.core.propose(proposal.command, now)
            if slot is None:
                proposal.finish(error=NotLeader(self.core.transfer_target or self.core.leader_hint))
            else:
                self._pending[slot] = proposal
        elif kind == "campaign":
            self.core.campaign(now)
        elif kind == "snapshot":
            self.core.truncate(self.core.applied_index)
        elif kind == "transfer":
            self.core.transfer_leadership(item[1], now)

    def _turn(self) -> None:
        """Carry out ready() until the core has nothing more to do right now."""
        self._in_turn = True
        try:
            self._turn_steps()
        finally:
            self._in_turn = False

    def _turn_steps(self) -> None:
        while True:
            now = self._now_ns()
            ready = self.core.ready(now)
            if self._write_synced is not None and ready.persist and ready.install is None:
                for out in ready.early_messages:
                    self._send(out.dst, out.message)
                ready = self._apply_durable(ready)
                self._sync_due = (ready, now)
                return  # the owner task writes, then finishes the turn (`_finish_synced_turn`)
            self._carry_out(ready, now)
            if not self.core.has_ready():
                break
        self._after_turn(self._now_ns())

    async def _finish_synced_turn(self) -> None:
        assert self._sync_due is not None and self._write_synced is not None
        ready, now = self._sync_due
        # The batch is built here, on the loop (a truncation reads the log's keys); only the
        # write leaves it. A failure fails this task, as an inline write's does.
        await self._write_synced(self.storage.batch_of(ready.persist))
        self.storage.count_synced(ready.persist)
        self._sync_due = None
        self._in_turn = True
        try:
            carry_out_synced(self.core, ready, now, state_machine=self.state_machine, send=self._send,
                             on_applied=self._resolve)
            self._applied(ready)
            self._wake_at_ns = ready.wake_at_ns
            if self.core.has_ready():
                self._turn_steps()
            else:
                self._after_turn(self._now_ns())
        finally:
            self._in_turn = False

    def _apply_durable(self, ready: Ready) -> Ready:
        """Apply now the chosen slots that an earlier turn's write already holds (every slot below
        the first this turn writes): only slots the turn writes again wait for its write."""
        if not ready.apply:
            return ready
        first_written = ready.persist.entries[0].index if ready.persist.entries else NEVER
        now_count = 0
        while now_count < len(ready.apply) and ready.apply[now_count].index < first_written:
            now_count += 1
        if now_count == 0:
            return ready
        self.core.mark("paxos.applied_ahead_of_write")
        early = attrs.evolve(ready, apply=ready.apply[:now_count])
        _apply(early, self.state_machine, self._resolve)
        self._applied(early)
        return attrs.evolve(ready, apply=ready.apply[now_count:])

    def _carry_out(self, ready: Ready, now: int) -> None:
        carry_out(self.core, ready, now, storage=self.storage, state_machine=self.state_machine,
                  send=self._send, on_applied=self._resolve)
        self._applied(ready)
        self._wake_at_ns = ready.wake_at_ns

    def _applied(self, ready: Ready) -> None:
        if ready.apply or ready.install is not None:
            self._applied_event.set()
            self._applied_event = trio.Event()

    def _resolve(self, entry: Entry) -> None:
        proposal = self._pending.pop(entry.index, None)
        if proposal is not None:
            if entry.command == proposal.command:
                proposal.finish(slot=entry.index)
            else:
                proposal.finish(error=ProposalLost(known_not_chosen=True))

    def _after_turn(self, now: int) -> None:
        ballot = self.core.ballot if self.core.role is Role.LEADER else None
        if ballot != self._leading_ballot:
            for slot in sorted(self._pending):
                if slot > self.core.applied_index:
                    self._pending.pop(slot).finish(error=ProposalLost(known_not_chosen=False))
            self._leading_ballot = ballot
        if self.core.closed_in != self._closed_seen:
            self._closed_seen = self.core.closed_in
            if self.on_closed is not None:
                self.on_closed(*self._closed_seen)
        key = self._key(now)
        if key != self._status_key:
            self._status_key = key
            self._status_event.set()
            self._status_event = trio.Event()

    def _key(self, now: int) -> tuple[Any, ...]:
        core = self.core
        # rebuilding: its end wakes the tablet's leadership loop, which says so in the log at once
        # (before, at its idle fallback, seconds later: tests/e2e/test_repair.py missed the line).
        return (core.role, core.ballot, core.leader_hint, core.has_lease(now), core.lease_acquired_ns, core.rebuilding)

    # ------------------------------------------------------------ feeding the inbox

    def deliver(self, src: str, msg: object, *, wake: bool = True) -> None:
        """Queue a peer's message (a full inbox drops it, as a network may). `wake=False`: the
        caller runs `turn_now()` itself once it has delivered what it read."""
        try:
            self._inbox_send.send_nowait(("message", src, msg))
        except trio.WouldBlock:
            self._dropped += 1
            return
        if wake:
            self._inbox_waiter.unpark()

    def _queue(self, item: tuple[Any, ...]) -> None:
        """Queue an input and wake the owner task (WouldBlock: the inbox is full)."""
        self._inbox_send.send_nowait(item)
        self._inbox_waiter.unpark()

    async def propose(self, command: bytes, *, timeout_s: float,
                      on_not_chosen: Callable[[], None] | None = None) -> int:
        """The slot once chosen and applied here. A timeout before the command
        reached the inbox is `ProposalLost(known_not_chosen=True)`: it was never
        proposed, so the caller may forget it; after, `trio.TooSlowError`.
        `on_not_chosen` is called whenever the command is known never to be chosen,
        also after this call ended: cancelled before the inbox took it, or refused or
        overwritten later while nobody waits any more."""
        if not timeout_s >= 0:
            raise ValueError(f"timeout_s must be non-negative, got {timeout_s!r}")
        proposal = _Proposal(command, on_not_chosen)
        assert proposal.done is not None
        queued = False
        try:
            # trio.fail_after's work without its two generator context managers (a write's hot path).
            with trio.move_on_at(trio.current_time() + timeout_s) as scope:
                try:
                    # Room in the inbox (nearly always): queued without the checkpoints of
                    # send(), a task step per write less; the wait below is the checkpoint.
                    self._queue(("propose", proposal))
                except trio.WouldBlock:
                    await self._inbox_send.send(("propose", proposal))
                    self._inbox_waiter.unpark()
                queued = True
                await proposal.done.wait()
        except BaseException:  # cancelled (e.g. its client's connection closed)
            if not queued and on_not_chosen is not None:
                on_not_chosen()
            raise
        if scope.cancelled_caught:
            if not queued:
                if on_not_chosen is not None:
                    on_not_chosen()
                raise ProposalLost(known_not_chosen=True)
            raise trio.TooSlowError
        if proposal.error is not None:
            raise proposal.error
        return proposal.slot

    def propose_nowait(self, command: bytes, *, on_done: Callable[[int, Exception | None], None],
                       on_not_chosen: Callable[[], None] | None = None) -> None:
        """Queue `command` without a task waiting for it: `on_done(slot, None)` once it is chosen
        and applied here, `on_done(0, error)` once `NotLeader` or `ProposalLost` (as `propose`
        raises them), called from the turn that learns it. No deadline: the caller keeps its own
        (a fate not learned by then is unknown, as `propose`'s `TooSlowError`). `trio.WouldBlock`
        if the inbox is full: nothing was queued."""
        self._queue(("propose", _Proposal(command, on_not_chosen, on_done, None)))

    def has_room(self) -> bool:
        """Whether the inbox takes another input now (`propose_nowait` would not raise WouldBlock)."""
        return self._inbox_send.statistics().current_buffer_used < INBOX_SIZE

    def campaign(self) -> None:
        self._queue(("campaign",))

    def transfer_leadership(self, to: str) -> None:
        """Hand leadership to replica `to` (if this one leads): new proposals get `NotLeader(to)`
        while the log drains, then the lease is given up and `to` campaigns at once. If `to`
        does not catch up within an election timeout, this replica leads on."""
        self._queue(("transfer", to))

    def set_closed(self, token: bytes, index: int) -> None:
        """As leader: send `token` (true of every slot at or below `index`) on every Accept from now on.
        A plain call, not an inbox input: the core only records it for its next Accept."""
        self.core.set_closed(token, index)

    def take_snapshot(self) -> None:
        """Truncate the log up to the applied index (the state machine holds those slots)."""
        self._queue(("snapshot",))

    # ------------------------------------------------------------ reading

    @property
    def write_out(self) -> bool:
        """A turn awaits its synced write (`write_synced`): nothing that depends on it has left."""
        return self._sync_due is not None

    def has_lease(self, now_ns: int | None = None) -> bool:
        return self.core.has_lease(self._now_ns() if now_ns is None else now_ns)

    def status(self) -> PaxosStatus:
        status = self.core.status(self._now_ns(), pending_proposals=len(self._pending))
        extra = (("driver.inbox_dropped", self._dropped), ("storage.synced_writes", self.storage.synced_writes))
        return attrs.evolve(status, counters=status.counters + extra)

    async def wait_applied(self, index: int) -> None:
        # The state machine's index: the core's runs ahead of it while a turn awaits its write.
        while self.state_machine.applied_index() < index:
            await self._applied_event.wait()

    async def wait_status_change(self) -> None:
        await self._status_event.wait()

    def entries(self, from_index: int, to_index: int) -> list[tuple[int, Ballot, bytes]]:
        return [(entry.index, entry.ballot, entry.command) for entry in self.core.entries(from_index, to_index)]


def carry_out(
    core: Replica, ready: Ready, now: int, *, storage: PaxosStorage, state_machine: StateMachine,
    send: Callable[[str, object], None], on_applied: Callable[[Entry], None] = lambda entry: None,
) -> None:
    """Do what one `Ready` asks, in the order that keeps every crash point safe (module docstring)."""
    for out in ready.early_messages:
        send(out.dst, out.message)
    # The log truncation of an install is synced BEFORE the state is touched:
    # a crash in between leaves a state machine below the log start, which
    # the core answers by asking for a snapshot again.
    if ready.persist:
        storage.write(ready.persist, sync=True)
    if ready.install is not None:
        state_machine.install_snapshot(ready.install.index, ready.install.chunks)
    carry_out_synced(core, ready, now, state_machine=state_machine, send=send, on_applied=on_applied)


def carry_out_synced(
    core: Replica, ready: Ready, now: int, *, state_machine: StateMachine, send: Callable[[str, object], None],
    on_applied: Callable[[Entry], None] = lambda entry: None,
) -> None:
    """A turn's part after its early sends and its synced write (and install): the applies, the
    sends that depend on the write, `advance`, a snapshot export."""
    _apply(ready, state_machine, on_applied)
    for out in ready.messages:
        send(out.dst, out.message)
    core.advance(ready, now)
    if ready.export_snapshot:
        index, chunks = state_machine.export_snapshot()
        core.snapshot_exported(index, list(chunks), now)


def _apply(ready: Ready, state_machine: StateMachine, on_applied: Callable[[Entry], None]) -> None:
    if ready.apply:
        apply_entries = getattr(state_machine, "apply_entries", None)
        if apply_entries is not None:  # a turn's slots in as few writes as the state machine can
            apply_entries([(entry.index, entry.command) for entry in ready.apply])
        else:
            for entry in ready.apply:
                state_machine.apply(entry.index, entry.command)
        for entry in ready.apply:
            on_applied(entry)
