"""The tablet leader's rules as a pure core: timestamps, commit-wait, serving, reads.

Role: decides, for one tablet replica, which timestamp a write or a read
gets, when a write may be acknowledged, when a read at T may proceed, and
when a new lease holder may serve. Inputs are method calls with the current
physical time (int ns, from the node's possibly skewed clock) and HLC
readings; outputs are return values and `next_wake_ns()`. No trio, no
clock reads: txn/tablet/tablet_replica.py is the thin driver that proposes,
waits and answers.

The rules (Spanner, OSDI 2012, section 4.1.2 and 4.2.1, with an HLC):

- `floor` is the largest timestamp this leader assigned to a command or
  served a read at. A command gets `max(start, floor.next())`, so
  timestamps strictly increase in proposal order (hence in slot order).
  `start` is an HLC reading taken no earlier than the command's request
  arrived (a client's write, one-phase commit or two-phase commit
  decision: at its arrival, Spanner's start rule; anything else: now).
  Any write acknowledged before the request was sent finished commit-wait,
  so every clock was past its timestamp by then: `start` is above it.
  Whatever this leader assigned or served between the arrival and the
  assignment is below the floor, hence below the timestamp.
- Commit-wait: a write at ts is complete once it is applied AND this node's
  physical clock reads past `ts.wall + max_offset`. Until then it is
  acknowledged to nobody and VISIBLE TO NOBODY: a read at T >= ts waits for
  it (Spanner holds the write's locks through commit-wait). Before this
  rule a strong read could return a write still in commit-wait, and a client
  that saw it could then commit a write on another leader whose clock ran
  behind with a SMALLER timestamp (read-then-write external consistency).
  The wait is one timer per tablet (`next_wake_ns`), not a task per write,
  on a heap of applied commands by release time: `tick` takes only what is
  due and `next_wake_ns` reads the first, instead of scanning every pending
  command (about 25 per tablet under 64 writing clients) on each wake-up.
- A read of ONE key at T waits only for the unfinished commands at or below
  T that change that key (their `keys`: a write's keys, a prepare's
  intents, a decision's or resolution's intents) or that name no keys (a
  barrier, a safe-time advance: `keys` None, every read waits). Its answer
  is the key's value at T, and that is final once no command at or below T
  that changes the key is unfinished: no later command gets a timestamp at
  or below T (the floor). Another key's write in commit-wait is nothing it
  returns; a read of that key waits for it. Scans and exports read ranges
  and wait for every command (key None).
- Non-leader replicas (and the leader for reads it has no pending record
  of) serve a read at T only when safe time >= T AND their physical clock is
  past `T.wall + 2 * max_offset`: then the leader's clock is past
  `T.wall + max_offset`, so every write at or below T finished commit-wait.
  This costs nothing for reads more than 2 * max_offset in the past.
- A new lease holder serves only after (a) its PHYSICAL clock has advanced
  2 * max_offset past the moment the lease began (measured on the physical
  clock, not the monotonic one: an injected negative skew must lengthen the
  wait, not shorten it), and (b) its Barrier, whose timestamp is taken after
  (a), is applied. Leases are disjoint, so the predecessor stopped before
  this lease began; whatever it assigned or served was at most its HLC,
  which is within max_offset of some physical clock, which is within
  max_offset of ours.
- A snapshot install raises the floor to the installed safe time.
- Closed timestamps (CockroachDB's closed-timestamp side transport): when no
  command it assigned is still unapplied, a serving leader may `close` its
  HLC now: it raises the floor to C, so every later command gets a
  timestamp above C, and every command at or below C is applied here, at or
  below the applied index N taken with it. Paxos carries (C, N) on the
  leader's Accepts (heartbeats included); a follower that has applied N may
  serve reads at or below C, as if a SafeTimeAdvance(C) were in its log,
  without a synced proposal (an idle tablet logs one only every
  `SAFE_TIME_LOG_INTERVAL_NS`, so that a restart finds a recent safe time). C is no more than any
  timestamp this leader could assign, so the rule (a) wait of the next
  lease holder covers it as it covers writes; commit-wait is the followers'
  horizon rule above, as for logged safe time.

HAZARD: every rule above rests on any two serving clocks being within
max_offset (DESIGN.md contract 6, enforced by fencing in txn/node/clock_watch.py).
"""

from __future__ import annotations

import enum
import heapq
import itertools
from typing import Iterable

import attrs

from hlc.timestamp import Timestamp


class WriteState(enum.Enum):
    PROPOSED = "proposed"  # fate not known yet
    APPLIED = "applied"  # chosen and applied here; commit-wait may still run
    DONE = "done"  # applied and commit-wait over: acknowledge
    SKIPPED = "skipped"  # chosen, but skipped at apply (stale epoch): definitely not committed
    NOT_CHOSEN = "not_chosen"  # known not to be in the log: definitely not committed
    UNKNOWN = "unknown"  # leadership lost before we learned the fate


@attrs.define(eq=False)
class PendingCommand:
    """A command this leader assigned a timestamp to, until it is done or known dead."""

    ts: Timestamp
    release_after_ns: int  # physical time after which commit-wait is over (0: none needed)
    keys: frozenset[bytes] | None = None  # the keys it changes; None: unknown or none named (every read waits)
    state: WriteState = WriteState.PROPOSED
    applied_at_ns: int = 0  # physical time of the apply (for the commit-wait statistic)
    # The I/O side's handle to wake the one task waiting out this command's commit-wait, once
    # `tick` returns it (txn/tablet/tablet_replica.py sets a trio.Event); the core never reads it.
    waiter: object = None

    @property
    def finished(self) -> bool:
        return self.state not in (WriteState.PROPOSED, WriteState.APPLIED)


class Serving(enum.Enum):
    NOT_LEADER = "not_leader"
    WAITING_OUT_PREDECESSOR = "waiting_out_predecessor"  # rule (a)
    BARRIER_PENDING = "barrier_pending"  # rule (b)
    SERVING = "serving"


class TabletLeaderCore:
    # Mutation point for the simulation's mutant tests: False lets reads see
    # writes whose commit-wait is still running (the bug this core fixed).
    HOLD_READS_UNTIL_COMMIT_WAIT = True

    def __init__(self, max_offset_ns: int, safe_ts: Timestamp) -> None:
        self.max_offset_ns = max_offset_ns
        self.floor = safe_ts
        self.pending: dict[Timestamp, PendingCommand] = {}
        # The commit-wait queue: (release time, ts, push number, command) for each command applied
        # here, by release time (the push number: never a comparison of two commands). An entry
        # whose command is no longer APPLIED is stale and skipped.
        self._waits: list[tuple[int, Timestamp, int, PendingCommand]] = []
        self._pushes = itertools.count()
        self.serving = Serving.NOT_LEADER
        self.lease_id: int | None = None  # identifies the lease being served (its start on the monotonic clock)
        self.lease_start_physical_ns = 0
        self.barrier: PendingCommand | None = None

    # ---- leadership -----------------------------------------------------------

    def lease_acquired(self, lease_id: int, lease_start_physical_ns: int) -> None:
        """A new lease: forget the old one's unfinished commands (they are resolved by Paxos)."""
        self.lease_id = lease_id
        self.lease_start_physical_ns = lease_start_physical_ns
        self.serving = Serving.WAITING_OUT_PREDECESSOR
        self.barrier = None
        self._forget_unapplied()

    def lease_lost(self) -> None:
        self.lease_id = None
        self.serving = Serving.NOT_LEADER
        self.barrier = None
        self._forget_unapplied()

    def _forget_unapplied(self) -> None:
        # Applied commands keep their commit-wait (they are committed); the
        # others' fate is Paxos's to tell, and no read of a new lease can
        # happen before its barrier, which follows every one of them.
        for ts, command in list(self.pending.items()):
            if command.state is WriteState.PROPOSED:
                command.state = WriteState.UNKNOWN
                del self.pending[ts]

    def barrier_due(self, physical_now_ns: int) -> bool:
        """Rule (a) is met: propose the barrier now."""
        return (self.serving is Serving.WAITING_OUT_PREDECESSOR
                and physical_now_ns > self.lease_start_physical_ns + 2 * self.max_offset_ns)

    def barrier_proposed(self, command: PendingCommand) -> None:
        self.serving = Serving.BARRIER_PENDING
        self.barrier = command

    def barrier_failed(self) -> None:
        """The barrier did not commit; propose another (rule (a) still holds)."""
        if self.serving is Serving.BARRIER_PENDING:
            self.serving = Serving.WAITING_OUT_PREDECESSOR
            self.barrier = None

    @property
    def is_serving(self) -> bool:
        return self.serving is Serving.SERVING

    def close(self, hlc_now: Timestamp) -> Timestamp | None:
        """A closed timestamp C (module docstring): None unless serving with every assigned command applied.
        Raises the floor to C, so no later command gets a timestamp at or below it."""
        if self.serving is not Serving.SERVING or any(c.state is WriteState.PROPOSED for c in self.pending.values()):
            return None
        if hlc_now > self.floor:
            self.floor = hlc_now
        return self.floor

    # ---- commands -------------------------------------------------------------

    def assign(self, start: Timestamp, *, commit_wait: bool, keys: frozenset[bytes] | None = None) -> PendingCommand:
        """A timestamp for a new command, strictly above everything assigned or served and no lower
        than `start` (an HLC reading from no earlier than the command's request arrived). `keys`:
        every key whose value or intent the command changes, or None (reads of any key wait for it)."""
        ts = start if start > self.floor else self.floor.next()
        self.floor = ts
        command = PendingCommand(ts, ts.wall + self.max_offset_ns if commit_wait else 0, keys)
        self.pending[ts] = command
        return command

    def not_chosen(self, command: PendingCommand) -> None:
        """Paxos says the command is not in the log (never proposed, or another value won its slot)."""
        command.state = WriteState.NOT_CHOSEN
        self.pending.pop(command.ts, None)

    def fate_unknown(self, command: PendingCommand) -> None:
        """The proposer gives up waiting; the record stays until Paxos resolves it or the lease ends."""

    def applied(self, ts: Timestamp, *, skipped: bool, physical_now_ns: int, release: bool = True) -> None:
        """A command with this timestamp was applied (or skipped) at this replica. `release=False`:
        the caller calls `tick` itself after a batch of these (one pass over `pending`, not one per slot)."""
        if ts > self.floor:
            self.floor = ts
        command = self.pending.get(ts)
        if command is None:
            return
        if skipped:
            command.state = WriteState.SKIPPED
            del self.pending[ts]
            if command is self.barrier:
                self.barrier_failed()
            return
        if command.state is not WriteState.APPLIED:
            heapq.heappush(self._waits, (command.release_after_ns, ts, next(self._pushes), command))
        command.state = WriteState.APPLIED
        command.applied_at_ns = physical_now_ns
        if command is self.barrier and self.serving is Serving.BARRIER_PENDING:
            self.serving = Serving.SERVING
        if release:
            self.tick(physical_now_ns)

    def snapshot_installed(self, safe_ts: Timestamp) -> None:
        if safe_ts > self.floor:
            self.floor = safe_ts

    def tick(self, physical_now_ns: int) -> list[PendingCommand]:
        """Finish every applied command whose commit-wait is over; returns them, by release time.
        Takes only what is due from the commit-wait queue: the others are not looked at."""
        done = []
        waits = self._waits
        while waits and waits[0][0] < physical_now_ns:
            _, ts, _, command = heapq.heappop(waits)
            if command.state is WriteState.APPLIED:
                command.state = WriteState.DONE
                if self.pending.get(ts) is command:
                    del self.pending[ts]
                done.append(command)
        return done

    def waiting(self) -> int:
        """How many applied commands are in commit-wait."""
        return sum(1 for entry in self._waits if entry[3].state is WriteState.APPLIED)

    def next_wake_ns(self) -> int | None:
        """When the next commit-wait ends (physical ns), if any applied command waits."""
        waits = self._waits
        while waits and waits[0][3].state is not WriteState.APPLIED:
            heapq.heappop(waits)  # stale: its command left APPLIED another way
        return waits[0][0] + 1 if waits else None

    # ---- reads ----------------------------------------------------------------

    def strong_read_ts(self, hlc_now: Timestamp) -> Timestamp:
        """T for a strong read: at least everything acknowledged; raises the floor so later writes are above T."""
        ts = hlc_now if hlc_now > self.floor else self.floor
        self.floor = ts
        return ts

    def serve_at(self, ts: Timestamp) -> None:
        """The leader serves a read at ts: no later command may get a timestamp at or below it."""
        if ts > self.floor:
            self.floor = ts

    def leader_read_ready(self, ts: Timestamp, key: bytes | None = None) -> bool:
        """No command at or below ts is unfinished (not applied, or still in commit-wait); with `key`,
        no such command that changes the key or names no keys (module docstring)."""
        for command in self.pending.values():
            if command.ts <= ts and (key is None or command.keys is None or key in command.keys):
                if command.state is WriteState.PROPOSED:
                    return False
                if command.state is WriteState.APPLIED and self.HOLD_READS_UNTIL_COMMIT_WAIT:
                    return False
        return True

    def replica_visible_ts(self, safe_ts: Timestamp, physical_now_ns: int) -> Timestamp:
        """The highest T any replica may serve without a leader's pending records (see the module docstring)."""
        if not self.HOLD_READS_UNTIL_COMMIT_WAIT:
            return safe_ts
        horizon = Timestamp(max(0, physical_now_ns - 2 * self.max_offset_ns), 0)
        return safe_ts if safe_ts <= horizon else horizon

    def unfinished(self) -> Iterable[PendingCommand]:
        return self.pending.values()
