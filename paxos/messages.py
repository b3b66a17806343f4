"""Paxos values and messages: ballots, log entries, and what replicas send each other.

Role: plain frozen values shared by the replica core, its storage and the wire
codec (txn/wire_paxos.py registers them with type ids 100-199; paxos/ cannot
import txn/). Pure: no I/O.

Messages (phase names follow "Paxos Made Simple"; "Prepare/commit" is 2PC's):
- `Prepare(ballot, from_index)`: phase 1a for every slot >= from_index at once.
- `Promise(ballot, from_index, entries, chosen_index, snapshot_index)`: phase 1b,
  with every accepted entry at index >= from_index.
- `Accept(ballot, entries, commit_index, lease_sent_ns, closed, closed_index)`:
  phase 2a for a batch of consecutive slots; with no entries it is the
  leader's heartbeat. Every Accept asks for a lease grant; `lease_sent_ns` is
  the leader's clock at send. `closed`/`closed_index`: the leader
  application's closed token (paxos/replica.py, "Closed token"), b"" if none.
- `Accepted(ballot, match_index, lease_sent_ns, chosen_index, need_snapshot)`:
  phase 2b. `match_index`: every slot up to it is accepted at `ballot` (or
  known chosen) and synced.
- `Reject(ballot, promised, reason)`: refusal of a Prepare/Accept/chunk;
  reason is "ballot" (promised is higher), "lease" (a lease granted to another
  leader is still running) or "behind" (our log starts past from_index).
- `PreVote(ballot, chosen_index, last_index)` / `PreVoteReply(ballot, granted,
  promised, reason)`: before phase 1 a candidate asks whether it could win
  (Raft thesis section 9.6, "PreVote"); `ballot` is the one it would use.
  Granting changes no state; reason is "lease", "behind" or "ballot" as for
  Reject, "" when granted.
- `TimeoutNow(ballot, target)`: leadership transfer (Raft thesis section
  3.10, adapted to leases). The leader at `ballot`, having stopped holding
  its lease, tells every acceptor to move the lease promise it made to the
  leader over to `target`, and `target` to campaign now.
- `SnapshotChunk` / `SnapshotAck`: install-snapshot, one chunk at a time; the
  ack names the next chunk wanted, so a lost chunk is simply sent again;
  `next_seq=-1` means "older than what I hold: send a newer snapshot".

Invariants: `Ballot` is totally ordered by (round, node); `ZERO_BALLOT` is below
every real ballot. Each message has a one-line `__str__` for traces.
"""

from __future__ import annotations

import attrs


@attrs.frozen(order=False)
class Ballot:
    round: int
    node: str

    # Hand-written ordering, as hlc.Timestamp's: attrs' generated one builds its tuples through
    # a generator on every comparison, and ballots are compared for every message and applied slot.
    def __lt__(self, other: object) -> bool:
        if other.__class__ is not Ballot:
            return NotImplemented
        return (self.round, self.node) < (other.round, other.node)  # type: ignore[attr-defined]

    def __le__(self, other: object) -> bool:
        if other.__class__ is not Ballot:
            return NotImplemented
        return (self.round, self.node) <= (other.round, other.node)  # type: ignore[attr-defined]

    def __gt__(self, other: object) -> bool:
        if other.__class__ is not Ballot:
            return NotImplemented
        return (self.round, self.node) > (other.round, other.node)  # type: ignore[attr-defined]

    def __ge__(self, other: object) -> bool:
        if other.__class__ is not Ballot:
            return NotImplemented
        return (self.round, self.node) >= (other.round, other.node)  # type: ignore[attr-defined]

    def __str__(self) -> str:
        return f"{self.round}.{self.node}" if self.node else "0"


ZERO_BALLOT = Ballot(0, "")


@attrs.frozen
class Entry:
    index: int
    ballot: Ballot
    command: bytes

    def __str__(self) -> str:
        return f"{self.index}@{self.ballot}:{_short(self.command)}"


def _short(command: bytes) -> str:
    if not command:
        return "noop"
    text = command[:12].decode("utf-8", "replace")
    return text + ("…" if len(command) > 12 else "")


def _slots(entries: tuple[Entry, ...]) -> str:
    if not entries:
        return "-"
    if len(entries) == 1:
        return str(entries[0].index)
    return f"{entries[0].index}..{entries[-1].index}"


@attrs.frozen
class Prepare:
    ballot: Ballot
    from_index: int

    def __str__(self) -> str:
        return f"Prepare b={self.ballot} from={self.from_index}"


@attrs.frozen
class Promise:
    ballot: Ballot
    from_index: int
    entries: tuple[Entry, ...] = attrs.field(converter=tuple)
    chosen_index: int
    snapshot_index: int

    def __str__(self) -> str:
        accepted = " ".join(str(entry) for entry in self.entries[:4])
        more = f" +{len(self.entries) - 4}" if len(self.entries) > 4 else ""
        return f"Promise b={self.ballot} chosen={self.chosen_index} accepted=[{accepted}{more}]"


@attrs.frozen
class Reject:
    ballot: Ballot
    promised: Ballot
    reason: str

    def __str__(self) -> str:
        return f"Reject b={self.ballot} promised={self.promised} {self.reason}"


@attrs.frozen
class PreVote:
    ballot: Ballot
    chosen_index: int
    last_index: int

    def __str__(self) -> str:
        return f"PreVote b={self.ballot} chosen={self.chosen_index} last={self.last_index}"


@attrs.frozen
class PreVoteReply:
    ballot: Ballot
    granted: bool
    promised: Ballot
    reason: str

    def __str__(self) -> str:
        verdict = "granted" if self.granted else f"refused {self.reason}"
        return f"PreVoteReply b={self.ballot} {verdict} promised={self.promised}"


@attrs.frozen
class Accept:
    ballot: Ballot
    entries: tuple[Entry, ...] = attrs.field(converter=tuple)
    commit_index: int
    lease_sent_ns: int
    closed: bytes = b""
    closed_index: int = 0

    def __str__(self) -> str:
        if not self.entries:
            return f"Heartbeat b={self.ballot} commit={self.commit_index}"
        return f"Accept b={self.ballot} slot={_slots(self.entries)} commit={self.commit_index}"


@attrs.frozen
class Accepted:
    ballot: Ballot
    match_index: int
    lease_sent_ns: int
    chosen_index: int
    need_snapshot: bool
    # False from an acceptor rebuilding lost state: its match_index is only what it
    # learned was chosen (no vote), and it must not be handed leadership.
    voting: bool = True

    def __str__(self) -> str:
        extra = (" need-snapshot" if self.need_snapshot else "") + ("" if self.voting else " non-voting")
        return f"Accepted b={self.ballot} match={self.match_index} chosen={self.chosen_index}{extra}"


@attrs.frozen
class SnapshotChunk:
    ballot: Ballot
    snapshot_index: int
    seq: int
    data: bytes
    total: int

    def __str__(self) -> str:
        return f"SnapshotChunk b={self.ballot} index={self.snapshot_index} seq={self.seq}/{self.total} {len(self.data)}B"


@attrs.frozen
class SnapshotAck:
    ballot: Ballot
    snapshot_index: int
    next_seq: int
    done: bool

    def __str__(self) -> str:
        state = "done" if self.done else f"next={self.next_seq}"
        return f"SnapshotAck b={self.ballot} index={self.snapshot_index} {state}"


@attrs.frozen
class TimeoutNow:
    ballot: Ballot
    target: str

    def __str__(self) -> str:
        return f"TimeoutNow b={self.ballot} to={self.target}"


MESSAGE_TYPES: tuple[type, ...] = (
    Prepare, Promise, Reject, Accept, Accepted, SnapshotChunk, SnapshotAck, PreVote, PreVoteReply, TimeoutNow,
)


def describe(src: str, dst: str, message: object) -> str:
    """The trace line of one message: `n1->n2 Accept b=3.n1 slot=7 commit=6`."""
    return f"{src}->{dst} {message}"
