"""The replica core's configuration, its outputs, its status, and the state machine protocol.

Role: the values that cross between the pure core (paxos/replica.py), the
storage edge (paxos/storage.py) and the trio driver (paxos/driver.py). Pure.

`Ready` is everything one step of the core asks the driver to do, in this
order: write `persist` with one synced write (for an install it records the
log's truncation through the snapshot index); install `install` into the
state machine; apply `apply` (chosen entries, slot order); send `messages`.
The truncation goes first so that a crash mid-install leaves a state machine
below the log start, which the core answers with a new snapshot
(paxos/driver.py explains each crash point).
`early_messages` may go out before the write (the leader's own Accepts: they
carry its proposals, not claims about its disk). Then `core.advance(ready)`.
"""

from __future__ import annotations

from typing import Iterable, Protocol

import attrs

from paxos.messages import Ballot, Entry

MS = 1_000_000


@attrs.frozen
class PaxosConfig:
    """Timing and sizing of one Paxos group (all durations int ns).

    HAZARD: `lease_ns` safety needs every replica's clock *rate* to stay within
    `drift_allowance_ns` per lease of every other's (the offset does not
    matter: each side measures intervals on its own clock).
    """

    heartbeat_ns: int = 100 * MS
    # A quiet leader (nothing appended since its last heartbeat, every follower holding every slot
    # and answering) heartbeats this often instead: an idle tablet's messages and wake-ups are what
    # an idle cluster costs. Lease renewal needs a few per lease (checked below); followers do not
    # time out on it, since they never campaign while they honour the lease anyway (paxos/replica.py).
    # One grain of the node's housekeeping grid (txn/net/coarse_timer.py), where a node's quiet
    # heartbeats go: the lease is three of them (it was 300 ms and a 1 s lease; ARCHITECTURE.md).
    idle_heartbeat_ns: int = 400 * MS
    election_timeout_min_ns: int = 300 * MS
    election_timeout_max_ns: int = 600 * MS
    lease_ns: int = 1_200 * MS
    drift_allowance_ns: int = 10 * MS
    max_batch_entries: int = 512
    max_message_bytes: int = 4 * 1024 * 1024  # command bytes per Accept (one entry always goes); under the frame limit
    max_in_flight: int = 8  # Accept messages outstanding per follower
    snapshot_chunk_bytes: int = 256 * 1024
    # Truncate once this many applied entries are kept: the log holds keep..threshold entries in steady
    # state (a bound in entries: at 10,000 a 10-minute soak of ~40 writes/s never reached it).
    truncate_threshold_entries: int = 2_000
    truncate_keep_entries: int = 1_000  # entries kept below the applied index for catch-up
    # Applied entries stay in memory up to this many command bytes; older ones are read back from the
    # log on disk when a follower needs them (20 x 4 MiB values cost every replica 80 MiB before).
    log_resident_bytes: int = 16 << 20
    transfer_after_ns: int = 2_000 * MS  # the preferred leader must keep up this long before it is handed leadership

    def __attrs_post_init__(self) -> None:
        if not 0 < self.heartbeat_ns < self.election_timeout_min_ns <= self.election_timeout_max_ns:
            raise ValueError("need 0 < heartbeat < election_timeout_min <= election_timeout_max")
        if self.lease_ns <= 0 or self.drift_allowance_ns < 0:
            raise ValueError("lease must be positive and drift allowance non-negative")
        if not self.heartbeat_ns <= self.idle_heartbeat_ns <= self.lease_ns // 3:
            raise ValueError("need heartbeat <= idle_heartbeat <= lease / 3 (a quiet leader renews its lease "
                             "at least three times per lease)")
        if self.max_batch_entries < 1 or self.max_in_flight < 1 or self.max_message_bytes < 1:
            raise ValueError("max_batch_entries, max_in_flight and max_message_bytes must be at least 1")


@attrs.frozen
class Outgoing:
    dst: str
    message: object


@attrs.frozen
class Persist:
    """One synced write: a new promise, entries to write, and/or a truncation.

    `truncate_through`: delete every log entry with index <= it and record it
    as the snapshot index (the state machine already holds those slots).
    """

    promised: Ballot | None = None
    entries: tuple[Entry, ...] = attrs.field(default=(), converter=tuple)
    truncate_through: int | None = None
    rebuilt: bool = False  # clear the "rebuilding" marker: this acceptor votes again (paxos/replica.py)

    def __bool__(self) -> bool:
        return self.promised is not None or bool(self.entries) or self.truncate_through is not None or self.rebuilt


@attrs.frozen
class SnapshotInstall:
    index: int
    chunks: tuple[bytes, ...] = attrs.field(converter=tuple)


@attrs.frozen
class Ready:
    persist: Persist
    messages: tuple[Outgoing, ...] = attrs.field(converter=tuple)
    early_messages: tuple[Outgoing, ...] = attrs.field(converter=tuple)
    apply: tuple[Entry, ...] = attrs.field(converter=tuple)
    install: SnapshotInstall | None
    export_snapshot: bool
    wake_at_ns: int


@attrs.frozen
class PersistedState:
    """What storage recovers after a restart."""

    promised: Ballot
    snapshot_index: int
    entries: tuple[Entry, ...] = attrs.field(converter=tuple)
    # The acceptor lost its state (a corrupt replica rebuilt from nothing) and
    # has not yet re-established a promise above every one it may have made.
    rebuilding: bool = False
    # Indexes on disk whose entries were not loaded (applied ones; read back on demand).
    stored: tuple[int, ...] = attrs.field(default=(), converter=tuple)


@attrs.frozen
class PaxosStatus:
    node_id: str
    ballot: Ballot
    leader_hint: str | None
    is_leader: bool
    lease_holder: bool
    lease_expiry_ns: int
    lease_acquired_ns: int
    first_index: int
    last_index: int
    chosen_index: int
    applied_index: int
    snapshot_index: int
    pending_proposals: int
    counters: tuple[tuple[str, int], ...] = attrs.field(converter=tuple)
    rebuilding: bool = False  # a non-voting acceptor rebuilding lost state (paxos/replica.py)


class StateMachine(Protocol):
    """What Paxos replicates into. `apply` is called once per slot, in slot order;
    a no-op slot has command b"" and still advances the index.

    Optional attribute `install_pending: bool` (read once, at start-up; absent
    means False): the state machine was interrupted mid-install and holds no
    usable prefix; the core then applies nothing and asks for a snapshot.
    `install_snapshot` must leave, after a crash at any point, either the old
    state or one that restarts `install_pending`.

    Optional method `apply_entries(entries)` (absent: `apply` per slot): a
    turn's chosen slots `[(index, command), ...]` at once, in slot order, so
    the state machine may write them together; after a crash it must restart
    at some prefix of them (its `applied_index` says which)."""

    def applied_index(self) -> int: ...

    def apply(self, index: int, command: bytes) -> None: ...

    def export_snapshot(self) -> tuple[int, Iterable[bytes]]: ...

    def install_snapshot(self, index: int, chunks: Iterable[bytes]) -> None: ...


class NotLeader(Exception):
    """Not the leader when the proposal was submitted: it was never proposed, retry elsewhere."""

    def __init__(self, leader_hint: str | None) -> None:
        super().__init__(f"not the leader (leader hint: {leader_hint or 'unknown'})")
        self.leader_hint = leader_hint


class ProposalLost(Exception):
    """Leadership was lost after the proposal was submitted.

    known_not_chosen: another value was chosen in its slot (safe to retry);
    otherwise its fate is unknown.
    """

    def __init__(self, known_not_chosen: bool) -> None:
        fate = "another value was chosen in its slot" if known_not_chosen else "its fate is unknown"
        super().__init__(f"leadership lost after the proposal was submitted: {fate}")
        self.known_not_chosen = known_not_chosen
