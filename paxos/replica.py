"""The Multi-Paxos replica core: one tablet log's acceptor, learner and (when elected) leader.

Role: a synchronous state machine with no I/O. Inputs: `step(src, msg, now)`,
`tick(now)`, `propose(command, now)`, `campaign(now)`, `snapshot_exported(...)`,
`truncate(through, now)`; outputs: `ready(now)` returns one `Ready` (what to
persist with one synced write, what to send, entries now chosen to apply, a
snapshot to install, when to wake next); `advance(ready, now)` says it was done.
Time comes in as int ns of the replica's own monotonic clock.

Protocol ("Paxos Made Simple" section 3, with a stable leader):
- Pre-vote (Raft thesis section 9.6): before phase 1 a would-be candidate
  sends `PreVote` (the ballot it would use, its chosen and last index); only
  when a majority (itself included) grants does it raise its ballot. A
  replica grants unless it honours a leader's lease (heard an Accept within
  `lease_ns + drift_allowance_ns` on its own clock), has promised at least
  that ballot, or the asker is "behind" (below). Granting changes no state,
  so a paused or partitioned replica that keeps timing out never raises a
  promise that would later depose a healthy leader.
- Ballots are `(round, node)`. A candidate persists its promise, sends one
  Prepare covering every slot from its chosen index on, and on a majority of
  Promises re-proposes in each slot the accepted value with the highest
  ballot, fills gaps with no-ops, and appends one no-op of its own (the lease
  is only usable once that is chosen: then every earlier choice is known).
  After that, phase 2 only: Accepts carry batches of consecutive slots (at
  most `max_batch_entries`, commands summing to at most `max_message_bytes`
  unless one alone is larger), pipelined up to `max_in_flight`
  unacknowledged entries per follower.
- Acceptors reply only after the write that makes the reply true is synced
  (the driver sends `messages` after `persist`); a follower's `match_index`
  is the prefix it holds at the leader's ballot, and it learns chosen slots as
  min(leader's commit index, match_index).
- A replica seeing a higher ballot steps down; a candidate whose Prepare
  reaches a replica whose log starts past the candidate's chosen index is
  told "behind" and gives up (the most up-to-date replica can always win).
- Catch-up: the leader resends from a follower's match index when it makes no
  progress for a heartbeat, then probes it with one Accept at a time until it
  reports progress, resending after 2, 4 ... 16 heartbeats without (a stopped
  follower cost a full window of 4 MiB Accepts every 50 ms before); a follower behind the leader's log start (or that
  lost its state machine below its own log start) gets a snapshot instead,
  streamed one chunk at a time, each ack naming the next chunk wanted.

- Start-up: a state machine `install_pending` (a crash mid-install) or below
  the log start needs a snapshot: it applies nothing and never campaigns. A
  state machine beyond a log with a hole (install synced, truncation not)
  finishes the truncation (paxos/driver.py explains the install order).
- Leadership transfer to `preferred_leader` (or on `transfer_leadership`):
  drain (no new proposals) until the target holds every slot, then step down
  (ending our lease) and send `TimeoutNow`; acceptors holding a lease
  promise for us move it to the target, which campaigns at once.
  ARCHITECTURE.md (paxos) gives the one-lease-holder argument.

Closed token (the application's side transport, e.g. a closed timestamp): the
leader's application sets an opaque token with `set_closed(token, index)`;
every Accept this leader sends carries the newest one, and a follower that
accepts an Accept keeps its token in `closed_in` for its application (paxos
neither reads nor orders tokens; the application must make any token it sets
true of every slot at or below its index, since followers act on it once
they have applied that far). Tokens are bounded (`MAX_CLOSED_BYTES`) and are
forgotten when leadership changes.

Leases: every Accept (heartbeats are empty Accepts) carries the leader's send
time. An acceptor that accepts it promises not to answer another node's
Prepare until `lease_ns + drift_allowance_ns` after it received it (own
clock); the leader holds the lease until the earliest expiry, `sent +
lease_ns`, among the best majority of grants (its own included), provided its
start no-op is chosen. A restarted replica that ever promised anything
refuses all Prepares for one lease first, since it forgot whom it granted to.
HAZARD: at most one lease holder at any instant holds only while clock rates
differ by less than `drift_allowance_ns` per `lease_ns`.

Rebuilding (an acceptor whose storage was lost: a corrupt replica rebuilt
from nothing; "Paxos Made Live" section 5.1): it may have promised or accepted
anything before, so until it is fenced it votes for nothing. It ignores
Prepares, refuses pre-votes, never campaigns, and answers Accepts with the
chosen index only (`Accepted.voting` False: no slot is chosen on its word, and
no leader hands it leadership); it learns, catches up and installs snapshots
as usual. Once caught up and `rebuild_wait_ns` after it started (any lease it
granted has expired; a candidate counts a Promise only within
`election_timeout_max_ns` of its Prepare, so any phase 1 that counted a lost
promise is over and every other member of its quorum has persisted that
ballot), it asks every other replica for its promised ballot (a PreVote: its
reply carries `promised` and changes nothing), promises the highest of them
(at least every ballot a quorum counting its lost promise could hold) and
clears the marker in the same synced write. A replier that is rebuilding too
does not count: with a majority rebuilding the group waits for an operator.

Hostile peers: a peer's message never raises. `step` first checks its shape
(types, non-negative indexes below 2**62, ballots naming a replica, a sender
that is the ballot's owner where only the owner sends it, consecutive Accept
entries at the Accept's ballot, snapshot chunk numbers within the total) and
its ballots: a round of 2**62 or more, or more than `MAX_BALLOT_JUMP` above
the highest round seen, is refused; so are slots more than `MAX_SLOT_GAP`
past what the message could legitimately reach (such a promise, once persisted, would
wedge the group: round 2**64 no longer encodes). Refused messages are dropped
and counted (`paxos.hostile_messages` plus `paxos.hostile.<reason>` in the
status counters). Asserts remain only for our own state.

Invariants: a slot's chosen value never changes (checked by the simulation);
`applied_index <= chosen_index <= last_index`; the in-memory log holds every
slot in [first_index, last_index] the replica has accepted.
"""

from __future__ import annotations

import enum
import functools
import typing
from typing import Callable, Iterable, Protocol

import attrs

from paxos.messages import (
    ZERO_BALLOT, Accept, Accepted, Ballot, Entry, Prepare, PreVote, PreVoteReply, Promise, Reject, SnapshotAck,
    SnapshotChunk, TimeoutNow,
)
from paxos.entry_log import EntryLog, EntryReader
from paxos.quorum import majority, quorum_floor
from paxos.types import (
    Outgoing, PaxosConfig, PaxosStatus, Persist, PersistedState, Ready, SnapshotInstall,
)

NEVER = 2**63 - 1
MAX_ROUND = 2**62  # rounds at or above are refused outright: far below the 2**64 encoding limit
MAX_INDEX = 2**62  # likewise for slot indexes, chunk numbers and counts
MAX_BALLOT_JUMP = 2**20  # a legitimate round is at most one per election above the highest round seen
MAX_RETRANSMIT_HEARTBEATS = 16  # the longest wait between resends to a follower making no progress
MAX_CLOSED_BYTES = 64  # a closed token (module docstring): an application's timestamp, not a payload
MAX_SLOT_GAP = 2**20  # slots a legitimate Accept or Promise can skip; phase 1 fills gaps with no-ops one by one
_OWNER_SENDS = (Prepare, Accept, SnapshotChunk, PreVote, TimeoutNow)  # messages only the ballot's owner sends
_FIELD_TYPES: dict[str, type] = {
    "int": int, "bool": bool, "str": str, "bytes": bytes, "Ballot": Ballot, "tuple[Entry, ...]": tuple,
}


@functools.cache
def _field_checks(cls: type) -> tuple[tuple[str, type | None], ...]:
    """Each field's name and expected type, for `_hostile`: worked out once per message class,
    not per message (it was a tenth of a follower's Paxos turn under load)."""
    return tuple((field.name, _expected_type(field.type)) for field in attrs.fields(cls))


def _expected_type(annotation: object) -> type | None:
    """A message field's type, whether its annotation is still a string or was resolved (txn/wire.py resolves them)."""
    if isinstance(annotation, str):
        return _FIELD_TYPES.get(annotation)
    found = typing.get_origin(annotation) or annotation
    return found if found in _FIELD_TYPES.values() else None


class Rng(Protocol):
    """A seeded random.Random, passed in by the driver (one stream per replica)."""

    def randint(self, a: int, b: int) -> int: ...


class Role(enum.Enum):
    FOLLOWER = "follower"
    CANDIDATE = "candidate"
    LEADER = "leader"


@attrs.define(eq=False)
class PeerProgress:
    """The leader's view of one follower at the current ballot."""

    next_index: int
    match_index: int  # highest ever reported (counts toward the commit)
    reported_match: int = 0  # the latest report (where a resend starts)
    window_base: int = 0  # next_index - 1 when sending (re)started: the in-flight window counts from here
    progress_mark: int = -1
    # Retransmission: after a resend the follower is probed with one Accept at a time until it
    # reports progress, and resends back off (1, 2, 4 ... MAX_RETRANSMIT_HEARTBEATS heartbeats).
    probing: bool = False
    retransmit_after: int = 1  # heartbeats without progress before the next resend
    stalled: int = 0  # heartbeats without progress so far
    grant_expiry_ns: int = 0
    need_snapshot: bool = False
    snapshot: SnapshotInstall | None = None  # the snapshot being streamed to this follower
    snapshot_seq: int = 0
    snapshot_mark: int = -1
    heard_ns: int = 0  # when its last Accepted arrived (own clock)
    voting: bool = True  # False while it rebuilds lost state: never a transfer target
    caught_up_since_ns: int | None = None  # held every slot we had a heartbeat earlier, since then


@attrs.define(eq=False)
class SnapshotBuffer:
    index: int
    total: int
    chunks: list[bytes]


class Replica:
    def __init__(
        self, *, node_id: str, peers: Iterable[str], config: PaxosConfig, rng: Rng,
        persisted: PersistedState, applied_index: int, now_ns: int, install_pending: bool = False,
        preferred_leader: str | None = None, read_entry: EntryReader | None = None,
        quiet_heartbeat_at: Callable[[int, int], int] | None = None,
    ) -> None:
        """`read_entry`: reads one durable log entry back (the driver's storage); with it, applied
        entries beyond `config.log_resident_bytes` leave memory (paxos/entry_log.py).
        `quiet_heartbeat_at(deadline_ns, period_ns)`: a point of a grid of `period_ns` at or before
        `deadline_ns` (a pure function of its arguments and the grid's phase); a quiet leader's next
        heartbeat moves there, earlier never later, so that a node's quiet heartbeats and its
        housekeeping wake together (txn/net/coarse_timer.py). None: exactly `idle_heartbeat_ns` on."""
        self.node_id = node_id
        self.peers = tuple(sorted(set(peers)))
        assert node_id in self.peers, (node_id, self.peers)
        self.others = tuple(peer for peer in self.peers if peer != node_id)
        self.config = config
        self.rng = rng
        self.preferred_leader = preferred_leader if preferred_leader in self.peers else None
        self.quiet_heartbeat_at = quiet_heartbeat_at
        # Leadership transfer: as leader, the replica we are handing over to (while draining);
        # as target, until when to retry pre-votes quickly; as acceptor, the ballot whose
        # leader handed over (its later-arriving Accepts are stale: dropped).
        self.transfer_target: str | None = None
        self.transfer_deadline_ns = 0
        self.transfer_attempts = 0
        self.transfer_campaign_until_ns = 0
        self.released_ballot = ZERO_BALLOT
        self.last_index_at_heartbeat = 0
        # The closed token (module docstring): what this leader sends, and what a follower received.
        self.closed_out: tuple[bytes, int] = (b"", 0)
        self.closed_in: tuple[bytes, int] = (b"", 0)
        self.promised = persisted.promised
        snapshot_index = persisted.snapshot_index
        log = {e.index: e for e in persisted.entries if e.index > snapshot_index}
        stored = {index for index in persisted.stored if index > snapshot_index}  # on disk, not loaded
        # The state machine holds slots its log lacks: an install whose state
        # write was synced but whose log truncation was not (the order before
        # the driver persisted the truncation first). Those slots are chosen
        # (applied), so finish the truncation instead of keeping a log with a
        # hole that a leader could not send from.
        self._truncate_through: int | None = None
        if not install_pending and applied_index > snapshot_index and any(
                index not in log and index not in stored for index in range(snapshot_index + 1, applied_index + 1)):
            snapshot_index = applied_index
            log = {index: entry for index, entry in log.items() if index > snapshot_index}
            stored = {index for index in stored if index > snapshot_index}
            self._truncate_through = snapshot_index
        self.first_index = snapshot_index + 1
        self.log = EntryLog(log.values(), stored=stored, read=read_entry, resident_bytes=config.log_resident_bytes,
                            on_read=lambda: self.mark("paxos.entry_read_back"))
        self.last_index = self.log.max_index(snapshot_index)
        # install_pending: the state machine is half-installed (a crash during
        # an install); it holds no usable prefix, so it waits for a snapshot.
        self.applied_index = 0 if install_pending else applied_index
        self.need_snapshot = install_pending or applied_index < snapshot_index
        self.resuming_install = self.need_snapshot  # for the coverage mark once a snapshot arrives
        self.chosen_index = max(self.applied_index, snapshot_index)
        self.role = Role.FOLLOWER
        self.ballot = self.promised
        self.leader_hint: str | None = None
        self.max_round_seen = self.promised.round
        self.match_ballot = ZERO_BALLOT
        self.match_index = self.chosen_index
        # Lease promises we made (own clock); None grantee: unknown (after restart).
        self.lease_granted_until_ns = now_ns + config.lease_ns + config.drift_allowance_ns if self.promised != ZERO_BALLOT else 0
        self.lease_grantee: str | None = None
        # Pre-vote state: the ballot asked about and who granted it (None: not asking).
        self.prevote_ballot: Ballot | None = None
        self.prevotes: dict[str, bool] = {}
        # Candidate and leader state.
        self.promises: dict[str, Promise] = {}
        self.from_index = 0
        self.start_index = NEVER
        self.progress: dict[str, PeerProgress] = {}
        self.self_match = 0
        self.self_grant_expiry_ns = 0
        self.next_heartbeat_ns = NEVER
        self.heartbeat_interval_ns = config.heartbeat_ns  # the interval before the next heartbeat (idle or not)
        self.lease_expiry_ns = 0
        self.lease_acquired_ns = 0
        self.snapshot_cache: SnapshotInstall | None = None
        self.receiving: SnapshotBuffer | None = None
        self.counters: dict[str, int] = {}
        self.election_deadline_ns = now_ns + self._election_timeout()
        self.phase1_deadline_ns = 0  # as candidate: Promises arriving later are not counted
        # Rebuilding (an acceptor that lost its state): votes for nothing until it holds a promise
        # at least as high as every other replica's, asked for after `rebuild_wait_ns(config)`.
        self.rebuilding = persisted.rebuilding
        self.fence_after_ns = now_ns + rebuild_wait_ns(config) if self.rebuilding else 0
        self.fence_ballot: Ballot | None = None
        self.fence_replies: dict[str, Ballot] = {}
        self.next_fence_ask_ns = 0
        self._rebuilt_dirty = False
        # Outputs gathered until the next ready().
        self._promised_dirty = False
        self._entries: dict[int, Entry] = {}
        self._messages: list[Outgoing] = []
        self._early: list[Outgoing] = []
        self._install: SnapshotInstall | None = None
        self._export = False

    # ------------------------------------------------------------ inputs

    def step(self, src: str, msg: object, now: int) -> None:
        """One message from peer `src`. Never raises: a malformed or hostile message is dropped and counted."""
        problem = self._hostile(src, msg, now)
        if problem:
            self.mark("paxos.hostile_messages")
            self.mark(f"paxos.hostile.{problem}")
            return
        if isinstance(msg, Accept):
            self.handle_accept(src, msg, now)
        elif isinstance(msg, Accepted):
            self.handle_accepted(src, msg, now)
        elif isinstance(msg, Prepare):
            self.handle_prepare(src, msg, now)
        elif isinstance(msg, Promise):
            self.handle_promise(src, msg, now)
        elif isinstance(msg, Reject):
            self.handle_reject(src, msg, now)
        elif isinstance(msg, SnapshotChunk):
            self.handle_snapshot_chunk(src, msg, now)
        elif isinstance(msg, SnapshotAck):
            self.handle_snapshot_ack(src, msg, now)
        elif isinstance(msg, PreVote):
            self.handle_pre_vote(src, msg, now)
        elif isinstance(msg, PreVoteReply):
            self.handle_pre_vote_reply(src, msg, now)
        elif isinstance(msg, TimeoutNow):
            self.handle_timeout_now(src, msg, now)

    def heartbeat_due(self, now: int) -> bool:
        """`tick(now)` would send a leader's heartbeats."""
        return self.role is Role.LEADER and now >= self.next_heartbeat_ns

    def tick(self, now: int) -> None:
        if self.rebuilding:
            self._ask_fence(now)
        if self.role is Role.LEADER:
            if now >= self.next_heartbeat_ns:
                self.heartbeat(now)
            self._refresh_lease(now)
            self._maybe_transfer(now)
        elif now >= self.election_deadline_ns:
            self.campaign(now)

    def propose(self, command: bytes, now: int) -> int | None:
        """The slot the command goes into, or None if this replica is not the leader (or is handing over)."""
        if self.role is not Role.LEADER or self.transfer_target is not None:
            return None
        slot = self.last_index + 1
        self._write(Entry(slot, self.ballot, command))
        # The followers learn that the slot was chosen from the next heartbeat: a quiet leader's is up
        # to idle_heartbeat_ns away (a follower then lagged a lone write by up to 400 ms). It comes
        # after the normal interval instead.
        if self.next_heartbeat_ns > now + self.config.heartbeat_ns:
            self.next_heartbeat_ns = now + self.config.heartbeat_ns
            self.mark("paxos.heartbeat_hastened")
        return slot

    def campaign(self, now: int) -> None:
        """Ask for pre-votes now, then run phase 1 on a majority (unless a lease we granted forbids it, or we cannot lead)."""
        if self.role is Role.LEADER:
            return
        if self.need_snapshot or self.rebuilding:
            self.election_deadline_ns = now + self._election_timeout()
            return
        if now < self.lease_granted_until_ns and self.lease_grantee != self.node_id:
            self.mark("paxos.campaign_deferred_by_lease")
            self.election_deadline_ns = self.lease_granted_until_ns + self._election_timeout() // 4
            return
        self.election_deadline_ns = self._next_election_deadline(now)
        self.pre_vote(now)

    def pre_vote(self, now: int) -> None:
        """Ask every peer whether it would promise our next ballot; persists nothing."""
        self.prevote_ballot = Ballot(max(self.max_round_seen, self.promised.round) + 1, self.node_id)
        self.prevotes = {self.node_id: True}
        self.mark("paxos.prevotes")
        for peer in self.others:
            self._send(peer, PreVote(self.prevote_ballot, self.chosen_index, self.last_index))
        self._maybe_start_phase_1(now)

    def start_phase_1(self, now: int) -> None:
        """Raise our ballot, promise it, and send one Prepare for every slot from our chosen index on."""
        self.prevote_ballot = None
        self.prevotes = {}
        self.role = Role.CANDIDATE
        self.max_round_seen = max(self.max_round_seen, self.promised.round) + 1
        self.ballot = Ballot(self.max_round_seen, self.node_id)
        self._promise(self.ballot)
        self.from_index = self.chosen_index + 1
        self.promises = {self.node_id: self._own_promise(self.ballot, self.from_index)}
        self.election_deadline_ns = self._next_election_deadline(now)
        self.phase1_deadline_ns = now + self.config.election_timeout_max_ns
        self.mark("paxos.campaigns")
        for peer in self.others:
            self._send(peer, Prepare(self.ballot, self.from_index))
        self._maybe_win(now)

    def snapshot_exported(self, index: int, chunks: Iterable[bytes], now: int) -> None:
        """The state machine's snapshot (asked for by `Ready.export_snapshot`)."""
        self.snapshot_cache = SnapshotInstall(index, tuple(chunks))
        if self.role is Role.LEADER:
            for peer in self.others:
                self._send_accepts(peer, now)

    def transfer_leadership(self, target: str, now: int) -> bool:
        """Hand leadership to `target`: stop taking proposals, wait until every slot is chosen
        and `target` holds them all, then give up the lease and send `TimeoutNow` (see
        `_hand_over`). False if not leader, already transferring, or `target` is no other replica."""
        if self.role is not Role.LEADER or self.transfer_target is not None or target not in self.progress:
            return False
        self.transfer_target = target
        self.transfer_deadline_ns = now + self.config.election_timeout_min_ns
        self.transfer_attempts += 1
        self.mark("paxos.transfer_started")
        self._maybe_transfer(now)
        return True

    def truncate(self, through: int) -> int:
        """Drop log entries up to `through` (at most the applied index); returns the new snapshot index."""
        through = min(through, self.applied_index)
        if through < self.first_index or self.need_snapshot:
            return self.first_index - 1
        self.log.drop_through(through)
        self.first_index = through + 1
        self._truncate_through = through
        self.mark("paxos.truncations")
        return through

    # ------------------------------------------------------------ outputs

    def ready(self, now: int) -> Ready:
        if self.role is Role.LEADER:
            for peer in self.others:
                self._send_accepts(peer, now)
        apply: list[Entry] = []
        if not self.need_snapshot and self.chosen_index > self.applied_index:
            apply = [self.log[index] for index in range(self.applied_index + 1, self.chosen_index + 1)]
            self.applied_index = self.chosen_index
        ready = Ready(
            persist=Persist(
                promised=self.promised if self._promised_dirty else None,
                entries=tuple(self._entries[index] for index in sorted(self._entries)),
                truncate_through=self._truncate_through,
                rebuilt=self._rebuilt_dirty,
            ),
            messages=tuple(self._messages), early_messages=tuple(self._early), apply=tuple(apply),
            install=self._install, export_snapshot=self._export, wake_at_ns=self._wake_at(now),
        )
        self._promised_dirty = False
        self._rebuilt_dirty = False
        self._entries = {}
        self._truncate_through = None
        self._messages = []
        self._early = []
        self._install = None
        self._export = False
        return ready

    def advance(self, ready: Ready, now: int) -> None:
        """The driver did everything `ready` asked (the write is synced)."""
        if self.role is Role.LEADER:
            for entry in ready.persist.entries:
                if entry.ballot == self.ballot:
                    self.self_match = max(self.self_match, entry.index)
            self.maybe_advance_commit()
            self._refresh_lease(now)
        kept = self.applied_index - self.first_index + 1
        if kept > self.config.truncate_threshold_entries:
            self.truncate(self.applied_index - self.config.truncate_keep_entries)
        evictions = self.log.evictions
        self.log.evict(self.applied_index, self._entries)
        if self.log.evictions > evictions:
            self.mark("paxos.entries_evicted")

    def has_ready(self) -> bool:
        """Whether `ready()` now has something to do (outputs waiting, or chosen slots to apply)."""
        return bool(self._messages or self._early or self._entries or self._promised_dirty or self._rebuilt_dirty or self._install
                    or self._export or self._truncate_through is not None
                    or (not self.need_snapshot and self.chosen_index > self.applied_index))

    def set_closed(self, token: bytes, index: int) -> None:
        """As leader: carry `token` on every Accept from now on (module docstring, "Closed token")."""
        if self.role is Role.LEADER and len(token) <= MAX_CLOSED_BYTES and 0 <= index <= self.last_index:
            self.closed_out = (token, index)

    def has_lease(self, now: int) -> bool:
        return self.role is Role.LEADER and self.chosen_index >= self.start_index and now < self.lease_expiry_ns

    def status(self, now: int, pending_proposals: int = 0) -> PaxosStatus:
        holder = self.has_lease(now)
        return PaxosStatus(
            node_id=self.node_id, ballot=self.ballot if self.role is Role.LEADER else self.promised,
            leader_hint=self.leader_hint, is_leader=self.role is Role.LEADER, lease_holder=holder,
            lease_expiry_ns=self.lease_expiry_ns if holder else 0,
            lease_acquired_ns=self.lease_acquired_ns if holder else 0,
            first_index=self.first_index, last_index=self.last_index, chosen_index=self.chosen_index,
            applied_index=self.applied_index, snapshot_index=self.first_index - 1,
            pending_proposals=pending_proposals, counters=tuple(sorted(self.counters.items())),
            rebuilding=self.rebuilding,
        )

    # ------------------------------------------------------------ hostile peers

    def _hostile(self, src: str, msg: object, now: int) -> str:
        """Why `msg` from `src` must be dropped ("" if it may be handled)."""
        if not isinstance(src, str) or src not in self.others:
            return "unknown_sender"
        check = MESSAGE_CHECKS.get(type(msg))
        if check is None:
            return "unknown_type"
        for name, expected in _field_checks(type(msg)):
            problem = self._bad_value(getattr(msg, name), name, expected)
            if problem:
                return problem
        if isinstance(msg, _OWNER_SENDS) and getattr(msg, "ballot").node != src:
            return "impersonation"
        return check(self, msg, now)

    def _bad_value(self, value: object, name: str, expected: type | None) -> str:
        """Whether one field has the annotated type and a sane range (field types per paxos/messages.py)."""
        if expected is None or not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            return "type"
        if expected is int and name == "lease_sent_ns":
            return "" if -NEVER <= value <= NEVER else "range"  # the sender's clock: any int64
        if expected is int:
            return "" if 0 <= value < MAX_INDEX or (name == "next_seq" and value == -1) else "range"
        if expected is Ballot:
            return self._bad_ballot(value, allow_zero=name == "promised")
        if expected is tuple:
            return next(filter(None, map(self._bad_entry, value)), "")
        return ""

    def _bad_entry(self, entry: object) -> str:
        if not isinstance(entry, Entry) or not isinstance(entry.command, bytes):
            return "type"
        return self._bad_value(entry.index, "index", int) or self._bad_ballot(entry.ballot, allow_zero=False) or (
            "range" if entry.index == 0 else "")

    def _bad_ballot(self, ballot: Ballot, allow_zero: bool) -> str:
        if not isinstance(ballot, Ballot) or type(ballot.round) is not int or not isinstance(ballot.node, str):
            return "type"
        if ballot == ZERO_BALLOT and allow_zero:
            return ""
        if ballot.node not in self.peers:
            return "unknown_node"
        if ballot.round < 1:
            return "range"
        if ballot.round >= MAX_ROUND:
            return "huge_round"
        if ballot.round > max(self.max_round_seen, self.promised.round) + MAX_BALLOT_JUMP:
            return "ballot_jump"
        return ""

    def _check_accept(self, msg: Accept, now: int) -> str:
        indexes = [entry.index for entry in msg.entries]
        if indexes and indexes != list(range(indexes[0], indexes[0] + len(indexes))):
            return "gap"  # a batch is consecutive slots
        if any(entry.ballot != msg.ballot for entry in msg.entries):
            return "entry_ballot"  # every entry travels at the Accept's ballot
        if indexes and indexes[-1] > self.last_index + MAX_SLOT_GAP:
            return "slot_gap"  # a follower this far behind is sent a snapshot, never such a slot
        if len(msg.closed) > MAX_CLOSED_BYTES:
            return "closed_size"
        return ""

    def _check_promise(self, msg: Promise, now: int) -> str:
        indexes = [entry.index for entry in msg.entries]
        if indexes != sorted(set(indexes)) or (indexes and indexes[0] < msg.from_index):
            return "gap"
        if any(entry.ballot > msg.ballot for entry in msg.entries):
            return "entry_ballot"  # an acceptor accepts nothing above what it promised
        if indexes and indexes[-1] > msg.from_index + len(indexes) + MAX_SLOT_GAP:
            return "slot_gap"  # become_leader would write that many no-ops
        return ""

    def _check_accepted(self, msg: Accepted, now: int) -> str:
        if msg.ballot != self.ballot or self.role is not Role.LEADER:
            return ""
        if msg.match_index > self.last_index:
            return "range"  # nobody holds slots at our ballot that we never sent
        if msg.lease_sent_ns > now:
            return "future_lease"  # it echoes our own send time: a later one would extend our lease
        return ""

    def _check_snapshot_chunk(self, msg: SnapshotChunk, now: int) -> str:
        return "" if msg.seq <= msg.total else "range"

    def _check_timeout_now(self, msg: TimeoutNow, now: int) -> str:
        return "" if msg.target in self.peers else "unknown_node"

    def _check_pre_vote(self, msg: PreVote, now: int) -> str:
        return "" if msg.chosen_index <= msg.last_index else "range"

    def _check_nothing_more(self, msg: object, now: int) -> str:
        return ""

    def entries(self, from_index: int, to_index: int) -> list[Entry]:
        return [self.log[i] for i in range(max(from_index, self.first_index), min(to_index, self.last_index) + 1) if i in self.log]

    def mark(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    # ------------------------------------------------------------ phase 1

    def handle_prepare(self, src: str, msg: Prepare, now: int) -> None:
        self._observe(msg.ballot)
        if self.rebuilding:
            self.mark("paxos.rebuilding_ignored_prepare")  # it may have promised more before it lost its state
            return
        if msg.ballot < self.promised:
            self._send(src, Reject(msg.ballot, self.promised, "ballot"))
        elif now < self.lease_granted_until_ns and self.lease_grantee != msg.ballot.node:
            self.mark("paxos.lease_refused_prepare")
            self._send(src, Reject(msg.ballot, self.promised, "lease"))
        elif self.first_index > msg.from_index:
            self.mark("paxos.refused_behind_candidate")
            self._send(src, Reject(msg.ballot, self.promised, "behind"))
        else:
            if self.role is not Role.FOLLOWER and msg.ballot > self.ballot:
                self.become_follower(now, None)
            self._promise(msg.ballot)
            self.election_deadline_ns = now + self._election_timeout()
            self._send(src, self._own_promise(msg.ballot, msg.from_index))

    def handle_pre_vote(self, src: str, msg: PreVote, now: int) -> None:
        """Would we promise `msg.ballot` now? Answer without changing any state (no promise, no timer).
        The reply's `promised` also answers a rebuilding replica's fence question (`_ask_fence`)."""
        if self.rebuilding:
            reason = "rebuilding"
        elif msg.ballot <= self.promised:
            reason = "ballot"
        elif now < self.lease_granted_until_ns and self.lease_grantee != src:
            reason = "lease"
        elif self.first_index > msg.chosen_index + 1:
            reason = "behind"
        else:
            reason = ""
        if reason:
            self.mark("paxos.prevote_refused")
        self._send(src, PreVoteReply(msg.ballot, not reason, self.promised, reason))

    def handle_pre_vote_reply(self, src: str, msg: PreVoteReply, now: int) -> None:
        if self.rebuilding and msg.ballot == self.fence_ballot:
            if msg.reason != "rebuilding":  # its promise was lost too: it proves nothing
                self._fence_reply(src, msg.promised)
            return
        if self.role is Role.LEADER or msg.ballot != self.prevote_ballot:
            return
        self._observe(msg.promised)
        if msg.granted:
            self.prevotes[src] = True
            self._maybe_start_phase_1(now)

    def _maybe_start_phase_1(self, now: int) -> None:
        if len(self.prevotes) >= majority(len(self.peers)):
            self.start_phase_1(now)

    def handle_promise(self, src: str, msg: Promise, now: int) -> None:
        if self.role is Role.CANDIDATE and msg.ballot == self.ballot:
            if now > self.phase1_deadline_ns:
                # Phase 1 is bounded in time: a rebuilding acceptor relies on no
                # candidate completing it with a promise older than its wait.
                self.mark("paxos.late_promise_ignored")
                return
            self.promises[src] = msg
            self._maybe_win(now)

    def handle_reject(self, src: str, msg: Reject, now: int) -> None:
        self._observe(msg.promised)
        if self.role is Role.FOLLOWER or msg.ballot != self.ballot:
            return
        if msg.promised > self.ballot:
            self.mark("paxos.stepped_down")
            self.become_follower(now, None)
        elif msg.reason == "behind" and self.role is Role.CANDIDATE:
            self.become_follower(now, None)

    def _maybe_win(self, now: int) -> None:
        if len(self.promises) >= majority(len(self.peers)):
            self.become_leader(now)

    def become_leader(self, now: int) -> None:
        """Phase 1 done: re-propose the highest-ballot accepted value of each slot, no-ops in gaps."""
        merged: dict[int, Entry] = {}
        for promise in self.promises.values():
            for entry in promise.entries:
                if entry.index >= self.from_index and (entry.index not in merged or entry.ballot > merged[entry.index].ballot):
                    merged[entry.index] = entry
        top = max(merged, default=self.from_index - 1)
        for index in range(self.from_index, top + 1):
            found = merged.get(index)
            own = self.log.get(index)
            if found is None:
                self.mark("paxos.noop_filled_gap")
            elif found.command and (own is None or own.command != found.command):
                self.mark("paxos.recovered_accepted_value")
            self._write(Entry(index, self.ballot, found.command if found else b""))
        self.start_index = top + 1
        self._write(Entry(self.start_index, self.ballot, b""))
        assert self.last_index == self.start_index, (self.last_index, self.start_index)
        self.role = Role.LEADER
        self.leader_hint = self.node_id
        self.self_match = self.from_index - 1
        self.progress = {}
        for peer in self.others:
            known = self.promises[peer].chosen_index if peer in self.promises else 0
            self.progress[peer] = PeerProgress(self.from_index, known, known, self.from_index - 1)
        self.promises = {}
        self.prevote_ballot = None
        self.prevotes = {}
        self.lease_expiry_ns = 0
        self.transfer_target = None
        self.closed_out = (b"", 0)
        self.last_index_at_heartbeat = self.last_index
        self.heartbeat_interval_ns = self.config.heartbeat_ns
        if self.transfer_campaign_until_ns:
            self.transfer_campaign_until_ns = 0
            self.mark("paxos.leadership_transferred")
        self.mark("paxos.became_leader")
        self.heartbeat(now)

    def become_follower(self, now: int, leader_hint: str | None) -> None:
        self.role = Role.FOLLOWER
        self.prevote_ballot = None
        self.prevotes = {}
        self.ballot = self.promised
        self.leader_hint = leader_hint
        self.promises = {}
        self.progress = {}
        self.start_index = NEVER
        self.next_heartbeat_ns = NEVER
        self.lease_expiry_ns = 0
        self.transfer_target = None
        self.closed_out = (b"", 0)
        self.election_deadline_ns = now + self._election_timeout()

    # ------------------------------------------------------------ phase 2

    def heartbeat(self, now: int) -> None:
        """Every heartbeat: renew lease grants, resend to followers that made no progress."""
        for peer, progress in self.progress.items():
            if progress.snapshot is not None and progress.snapshot.index < self.first_index - 1:
                # The log was truncated past the snapshot being streamed (to a follower cut off
                # for a while): once installed it would need another; start a fresh one instead.
                self.mark("paxos.snapshot_restarted")
                progress.snapshot = None
            if progress.snapshot is not None:
                if progress.snapshot_seq == progress.snapshot_mark:
                    self._send_chunk(peer, progress)
                progress.snapshot_mark = progress.snapshot_seq
            elif progress.reported_match < progress.next_index - 1 and progress.reported_match == progress.progress_mark:
                progress.stalled += 1
                if progress.stalled >= progress.retransmit_after:
                    self.mark("paxos.retransmit")
                    progress.next_index = progress.reported_match + 1
                    progress.window_base = progress.reported_match
                    progress.probing = True
                    progress.stalled = 0
                    progress.retransmit_after = min(2 * progress.retransmit_after, MAX_RETRANSMIT_HEARTBEATS)
            else:
                progress.stalled = 0
            progress.progress_mark = progress.reported_match
            self._send_early(peer, Accept(self.ballot, (), self.chosen_index, now, *self.closed_out))
            caught_up = (progress.match_index >= self.last_index_at_heartbeat and progress.snapshot is None
                         and now - progress.heard_ns <= 2 * self.heartbeat_interval_ns)
            if not caught_up:
                progress.caught_up_since_ns = None
            elif progress.caught_up_since_ns is None:
                progress.caught_up_since_ns = now
        quiet = self._quiet(now)
        self.last_index_at_heartbeat = self.last_index
        self._grant_self(now)
        self.heartbeat_interval_ns = self.config.idle_heartbeat_ns if quiet else self.config.heartbeat_ns
        if quiet and self.config.idle_heartbeat_ns > self.config.heartbeat_ns:
            self.mark("paxos.idle_heartbeat")
        self.next_heartbeat_ns = now + self.heartbeat_interval_ns
        if quiet and self.quiet_heartbeat_at is not None:
            on_grid = self.quiet_heartbeat_at(self.next_heartbeat_ns, self.heartbeat_interval_ns)
            if now < on_grid <= self.next_heartbeat_ns:  # never later: the lease is renewed as often
                self.next_heartbeat_ns = on_grid

    def _quiet(self, now: int) -> bool:
        """Nothing to hurry for: nothing appended since the last heartbeat, everything chosen, every
        follower holding every slot and answering, no transfer. Then the next heartbeat comes after
        `idle_heartbeat_ns`; the first proposal is sent at once as always, and the heartbeat after
        it is a normal one again."""
        if self.last_index != self.last_index_at_heartbeat or self.chosen_index != self.last_index:
            return False
        if self.transfer_target is not None:
            return False
        for progress in self.progress.values():
            if (progress.match_index < self.last_index or progress.snapshot is not None or progress.need_snapshot
                    or progress.probing or now - progress.heard_ns > 2 * self.heartbeat_interval_ns):
                return False
        return True

    def _send_accepts(self, peer: str, now: int) -> None:
        progress = self.progress[peer]
        if progress.snapshot is not None:
            return
        if progress.need_snapshot or progress.next_index < self.first_index:
            self._start_snapshot(peer, progress, now)
            return
        acked = max(progress.match_index, progress.window_base)
        window = 1 if progress.probing else self.config.max_in_flight
        while progress.next_index <= self.last_index and progress.next_index - 1 - acked < window:
            if progress.next_index <= self.chosen_index:
                self.mark("paxos.catch_up")
            entries = self._batch(progress.next_index)
            self._send_early(peer, Accept(self.ballot, entries, self.chosen_index, now, *self.closed_out))
            progress.next_index = entries[-1].index + 1
            self._grant_self(now)

    def _batch(self, start: int) -> tuple[Entry, ...]:
        """Consecutive entries from `start`: at most `max_batch_entries`, and commands summing to at most
        `max_message_bytes` unless the first alone is larger (a follower refuses frames over its limit,
        so an unbounded batch would be resent forever)."""
        high = min(self.last_index, start + self.config.max_batch_entries - 1)
        entries = [self._stamped(start)]
        size = len(entries[0].command)
        for index in range(start + 1, high + 1):
            entry = self._stamped(index)
            size += len(entry.command)
            if size > self.config.max_message_bytes:
                self.mark("paxos.accept_split_by_size")
                break
            entries.append(entry)
        return tuple(entries)

    def handle_accept(self, src: str, msg: Accept, now: int) -> None:
        self._observe(msg.ballot)
        if msg.ballot < self.promised:
            self._send(src, Reject(msg.ballot, self.promised, "ballot"))
            return
        if msg.ballot == self.released_ballot:
            # Sent before its leader handed over (overtaken by the TimeoutNow): that leader
            # no longer leads at this ballot; taking its lease grant back would only stall the target.
            self.mark("paxos.stale_accept_after_transfer")
            return
        self._follow(src, msg.ballot, now)
        if msg.closed:
            self.closed_in = (msg.closed, msg.closed_index)
        self.lease_grantee = src
        self.lease_granted_until_ns = max(
            self.lease_granted_until_ns, now + self.config.lease_ns + self.config.drift_allowance_ns)
        # A timeout before the lease we grant ends would only be deferred past it (campaign()): time out
        # there at once, with the deferral's quarter of this timeout's draw. So a quiet leader's heartbeats
        # may come further apart than election_timeout_min without waking its followers in between.
        self.election_deadline_ns = max(self.election_deadline_ns,
                                        self.lease_granted_until_ns + (self.election_deadline_ns - now) // 4)
        for entry in msg.entries:
            if entry.index > self.chosen_index and entry.index >= self.first_index and self.log.get(entry.index) != entry:
                self._write(entry)
        if self.match_ballot != msg.ballot:
            self.match_ballot = msg.ballot
            self.match_index = self.chosen_index
        if msg.entries and msg.entries[0].index <= self.match_index + 1:
            self.match_index = max(self.match_index, msg.entries[-1].index)
        self._extend_match()
        self.chosen_index = max(self.chosen_index, min(msg.commit_index, self.match_index))
        if self.rebuilding:
            # No vote: report only what is known chosen, so no slot is chosen on our word.
            self._send(src, Accepted(msg.ballot, self.chosen_index, msg.lease_sent_ns, self.chosen_index, self.need_snapshot, False))
        else:
            self._send(src, Accepted(msg.ballot, self.match_index, msg.lease_sent_ns, self.chosen_index, self.need_snapshot))

    def handle_accepted(self, src: str, msg: Accepted, now: int) -> None:
        if self.role is not Role.LEADER or msg.ballot != self.ballot:
            return
        progress = self.progress[src]
        progress.match_index = max(progress.match_index, msg.match_index)
        if msg.match_index > progress.reported_match:  # progress: back to a full window, resends at once
            progress.probing = False
            progress.retransmit_after = 1
        progress.reported_match = msg.match_index
        progress.next_index = max(progress.next_index, progress.match_index + 1)
        progress.need_snapshot = msg.need_snapshot
        progress.voting = msg.voting
        progress.heard_ns = now
        progress.grant_expiry_ns = max(progress.grant_expiry_ns, msg.lease_sent_ns + self.config.lease_ns)
        self.maybe_advance_commit()
        self._refresh_lease(now)
        if self.transfer_target is not None:
            self._maybe_transfer(now)

    def maybe_advance_commit(self) -> bool:
        matches = [self.self_match] + [progress.match_index for progress in self.progress.values()]
        chosen = min(quorum_floor(matches, len(self.peers), self.chosen_index), self.last_index)
        if chosen <= self.chosen_index:
            return False
        self.chosen_index = chosen
        return True

    # ------------------------------------------------------------ leadership transfer

    def _maybe_transfer(self, now: int) -> None:
        """Start a transfer to the preferred leader once it has kept up for a while; hand over once drained."""
        target = self.transfer_target
        if target is None:
            if self._transfer_due(now):
                self.transfer_leadership(self.preferred_leader or "", now)
            return
        drained = self.self_match == self.chosen_index == self.last_index == self.progress[target].match_index
        if drained and self.has_lease(now):
            self._hand_over(target, now)
        elif now >= self.transfer_deadline_ns:
            self.mark("paxos.transfer_abandoned")  # nothing was given up yet: lead on
            self.transfer_target = None

    def _transfer_due(self, now: int) -> bool:
        target = self.preferred_leader
        if target is None or target not in self.progress or not self.has_lease(now) or not self.progress[target].voting:
            return False
        since = self.progress[target].caught_up_since_ns
        wait_ns = self.config.transfer_after_ns << min(self.transfer_attempts, 5)  # back off if it never takes over
        return since is not None and now - since >= wait_ns

    def _hand_over(self, target: str, now: int) -> None:
        """Give up the lease first, then move the acceptors' lease promises to `target`.

        Becoming a follower ends our lease at once (has_lease needs the leader role) and
        for good at this ballot: we send nothing more at it, and leading again takes a
        new ballot and fresh grants. Only then does TimeoutNow let acceptors that
        promised their lease to us admit `target` early, so two lease holders never
        overlap (ARCHITECTURE.md, paxos, "Leadership transfer")."""
        ballot = self.ballot
        self.become_follower(now, target)
        self.released_ballot = ballot
        self.lease_grantee = target  # our own acceptor's promise moves too
        self.mark("paxos.transfer_handed_over")
        for peer in self.others:
            self._send(peer, TimeoutNow(ballot, target))

    def handle_timeout_now(self, src: str, msg: TimeoutNow, now: int) -> None:
        """The leader we promised our lease to handed over to `msg.target`: let it (only it) through."""
        self._observe(msg.ballot)
        if msg.ballot != self.promised or self.lease_grantee != src:
            self.mark("paxos.timeout_now_ignored")  # stale, or not our grantee: our promise stands
            return
        self.released_ballot = msg.ballot
        self.lease_grantee = msg.target
        if msg.target == self.node_id:
            self.transfer_campaign_until_ns = now + self.config.election_timeout_min_ns
            self.campaign(now)

    def _next_election_deadline(self, now: int) -> int:
        """While taking over by transfer, retry soon (an acceptor may not have had its TimeoutNow yet)."""
        if now < self.transfer_campaign_until_ns:
            return now + self.config.heartbeat_ns
        return now + self._election_timeout()

    # ------------------------------------------------------------ snapshots

    def _start_snapshot(self, peer: str, progress: PeerProgress, now: int) -> None:
        cache = self.snapshot_cache
        if cache is None or cache.index < self.first_index - 1:
            self._export = True
            return
        progress.snapshot = cache
        progress.snapshot_seq = 0
        progress.snapshot_mark = -1
        self.mark("paxos.snapshot_sent")
        self._send_chunk(peer, progress)

    def _send_chunk(self, peer: str, progress: PeerProgress) -> None:
        cache = progress.snapshot
        assert cache is not None
        seq = progress.snapshot_seq
        data = cache.chunks[seq] if seq < len(cache.chunks) else b""
        self._send(peer, SnapshotChunk(self.ballot, cache.index, seq, data, len(cache.chunks)))

    def handle_snapshot_ack(self, src: str, msg: SnapshotAck, now: int) -> None:
        if self.role is not Role.LEADER or msg.ballot != self.ballot:
            return
        progress = self.progress[src]
        if progress.snapshot is None or progress.snapshot.index != msg.snapshot_index:
            return
        if msg.done:
            progress.snapshot = None
            progress.need_snapshot = False
            progress.match_index = max(progress.match_index, msg.snapshot_index)
            progress.reported_match = max(progress.reported_match, msg.snapshot_index)
            progress.next_index = max(progress.next_index, progress.match_index + 1)
            self._send_accepts(src, now)
        elif msg.next_seq < 0:
            self.mark("paxos.snapshot_too_old")
            progress.snapshot = None
            self.snapshot_cache = None
            self._send_accepts(src, now)
        elif msg.next_seq > len(progress.snapshot.chunks):
            self.mark("paxos.hostile_messages")  # wants a chunk past the end
        elif msg.next_seq != progress.snapshot_seq:
            progress.snapshot_seq = msg.next_seq
            self._send_chunk(src, progress)

    def handle_snapshot_chunk(self, src: str, msg: SnapshotChunk, now: int) -> None:
        self._observe(msg.ballot)
        if msg.ballot < self.promised:
            self._send(src, Reject(msg.ballot, self.promised, "ballot"))
            return
        self._follow(src, msg.ballot, now)
        if not self.need_snapshot and msg.snapshot_index <= self.chosen_index:
            self._send(src, SnapshotAck(msg.ballot, msg.snapshot_index, msg.total, True))
            return
        if msg.snapshot_index < self.first_index - 1:
            self._send(src, SnapshotAck(msg.ballot, msg.snapshot_index, -1, False))
            return
        buffer = self.receiving
        if msg.seq == 0 and (buffer is None or (buffer.index, buffer.total) != (msg.snapshot_index, msg.total)):
            buffer = self.receiving = SnapshotBuffer(msg.snapshot_index, msg.total, [])
        if buffer is None or (buffer.index, buffer.total) != (msg.snapshot_index, msg.total):
            self._send(src, SnapshotAck(msg.ballot, msg.snapshot_index, 0, False))
            return
        if msg.seq == len(buffer.chunks) and msg.seq < buffer.total:
            buffer.chunks.append(msg.data)
        if len(buffer.chunks) < buffer.total:
            self._send(src, SnapshotAck(msg.ballot, msg.snapshot_index, len(buffer.chunks), False))
            return
        self._install_snapshot(buffer)
        self._send(src, SnapshotAck(msg.ballot, msg.snapshot_index, buffer.total, True))

    def _install_snapshot(self, buffer: SnapshotBuffer) -> None:
        self.receiving = None
        self._install = SnapshotInstall(buffer.index, tuple(buffer.chunks))
        self.log.drop_through(buffer.index)
        for index in [index for index in self._entries if index <= buffer.index]:
            del self._entries[index]
        self.first_index = buffer.index + 1
        self.last_index = max(self.last_index, buffer.index)
        self._truncate_through = buffer.index
        self.applied_index = buffer.index
        self.chosen_index = max(self.chosen_index, buffer.index)
        self.match_index = max(self.match_index, buffer.index)
        self.need_snapshot = False
        self._extend_match()
        self.mark("paxos.snapshot_installed")
        if self.resuming_install:
            self.resuming_install = False
            self.mark("paxos.snapshot_install_resumed")

    # ------------------------------------------------------------ rebuilding lost state

    def _ask_fence(self, now: int) -> None:
        """Rebuilding: once caught up and past the wait, ask every other replica for its promised ballot."""
        if self.need_snapshot or self.applied_index == 0 or now < self.fence_after_ns or now < self.next_fence_ask_ns:
            return
        if self.fence_ballot is None:
            self.fence_ballot = Ballot(max(self.max_round_seen, self.promised.round) + 1, self.node_id)
        self.next_fence_ask_ns = now + self.config.heartbeat_ns
        for peer in self.others:
            if peer not in self.fence_replies:
                self._send(peer, PreVote(self.fence_ballot, self.chosen_index, self.last_index))

    def _fence_reply(self, src: str, promised: Ballot) -> None:
        """Every other replica answered after the wait: promise the highest ballot any of them
        promised, then vote again (the marker goes in the same synced write as that promise)."""
        self._observe(promised)
        self.fence_replies[src] = promised
        if len(self.fence_replies) < len(self.others):
            return
        fence = max([self.promised, *self.fence_replies.values()])
        self._promise(fence)
        self.rebuilding = False
        self._rebuilt_dirty = True
        self.fence_ballot = None
        self.fence_replies = {}
        self.mark("paxos.rebuild_fenced")

    # ------------------------------------------------------------ helpers

    def _follow(self, src: str, ballot: Ballot, now: int) -> None:
        """A leader at `ballot` (>= our promise) spoke: adopt it as the leader."""
        if self.role is not Role.FOLLOWER:
            self.become_follower(now, src)
        self.prevote_ballot = None  # a live leader: stop asking
        self.prevotes = {}
        self._promise(ballot)
        self.ballot = ballot
        self.leader_hint = src
        self.election_deadline_ns = now + self._election_timeout()
        self.transfer_campaign_until_ns = 0
        if src == self.preferred_leader:
            self.transfer_attempts = 0

    def _promise(self, ballot: Ballot) -> None:
        if ballot != self.promised:
            assert ballot > self.promised, (ballot, self.promised)
            self.promised = ballot
            self._promised_dirty = True

    def _own_promise(self, ballot: Ballot, from_index: int) -> Promise:
        accepted = tuple(self.log[index] for index in sorted(i for i in self.log.indexes() if i >= from_index))
        return Promise(ballot, from_index, accepted, self.chosen_index, self.first_index - 1)

    def _extend_match(self) -> None:
        while (entry := self.log.get(self.match_index + 1)) is not None and entry.ballot == self.match_ballot:
            self.match_index += 1

    def _write(self, entry: Entry) -> None:
        self.log.put(entry)
        self._entries[entry.index] = entry
        self.last_index = max(self.last_index, entry.index)

    def _stamped(self, index: int) -> Entry:
        entry = self.log[index]
        return entry if entry.ballot == self.ballot else Entry(index, self.ballot, entry.command)

    def _grant_self(self, now: int) -> None:
        self.self_grant_expiry_ns = now + self.config.lease_ns
        self.lease_grantee = self.node_id
        self.lease_granted_until_ns = max(self.lease_granted_until_ns, now + self.config.lease_ns + self.config.drift_allowance_ns)

    def _refresh_lease(self, now: int) -> None:
        grants = [self.self_grant_expiry_ns] + [progress.grant_expiry_ns for progress in self.progress.values()]
        expiry = quorum_floor(grants, len(self.peers), 0) if self.chosen_index >= self.start_index else 0
        if now < expiry and not now < self.lease_expiry_ns:
            self.lease_acquired_ns = now
            self.mark("paxos.lease_acquired")
        self.lease_expiry_ns = expiry

    def _observe(self, ballot: Ballot) -> None:
        self.max_round_seen = max(self.max_round_seen, ballot.round)

    def _send(self, dst: str, msg: object) -> None:
        self._messages.append(Outgoing(dst, msg))

    def _send_early(self, dst: str, msg: object) -> None:
        self._early.append(Outgoing(dst, msg))

    def _election_timeout(self) -> int:
        return self.rng.randint(self.config.election_timeout_min_ns, self.config.election_timeout_max_ns)

    def _wake_at(self, now: int) -> int:
        if self.role is Role.LEADER:
            lease_check = self.lease_expiry_ns if self.lease_expiry_ns > now else NEVER
            return min(self.next_heartbeat_ns, lease_check)
        if self.rebuilding:
            return min(self.election_deadline_ns, max(self.fence_after_ns, self.next_fence_ask_ns))
        return self.election_deadline_ns


def rebuild_wait_ns(config: PaxosConfig) -> int:
    """How long a rebuilding acceptor waits before it asks for the fence: any lease it granted
    has expired, and any candidate's phase 1 that counted a promise it lost is over (twice
    the phase-1 window, for clock rates)."""
    return config.lease_ns + config.drift_allowance_ns + 2 * config.election_timeout_max_ns


MESSAGE_CHECKS = {
    Prepare: Replica._check_nothing_more, Promise: Replica._check_promise, Reject: Replica._check_nothing_more,
    Accept: Replica._check_accept, Accepted: Replica._check_accepted, SnapshotChunk: Replica._check_snapshot_chunk,
    SnapshotAck: Replica._check_nothing_more, PreVote: Replica._check_pre_vote, PreVoteReply: Replica._check_nothing_more,
    TimeoutNow: Replica._check_timeout_now,
}
