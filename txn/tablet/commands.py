"""Commands in a tablet's Paxos log, and their byte encoding.

Role: what the tablet leader proposes and every replica applies, in slot
order. Pure: no I/O.

- `WriteBatch(ts, writes)`: write every (key, value) at commit timestamp
  `ts`, atomically; value None is a delete (tombstone).
- `SafeTimeAdvance(ts)`: nothing is written, but no later command in the log
  carries a timestamp at or below `ts`; followers may serve reads up to it.
- `Barrier(ts)`: the first command of a new leader; once it is applied, the
  leader has applied everything its predecessors had chosen.
- The empty command `b""` is a Paxos no-op (gap filler); it changes nothing.

Every command carries its `epoch`: the Paxos ballot of the leadership that
proposed it (CockroachDB's proposer lease sequence). Paxos may choose a
command long after its proposer was deposed: phase 1 of a later leader
re-proposes the highest-ballot value of every open slot, so a deposed
leader's log tail can come back after a newer leader's entries. The state
machine (txn/tablet/state.py) skips, identically on every replica, a command
from an epoch older than the last applied Barrier or with a timestamp at or
below safe time; the proposer then reports it as not committed.

Invariant the tablet relies on: among the commands APPLIED (not skipped),
timestamps strictly increase with the slot. A replica's safe time is the
largest timestamp it has applied.

Transactions (txn/api/txn.py) add `Prepare` (a participant's vote: the
writes become intents at the prepare timestamp), `Decide` (the coordinator's
transaction record, first one wins), `Resolve` (a participant learns the
decision) and `Forget` (the coordinator deletes commit records every
participant has resolved: txn/tablet/txn_records.py).

Encoding: canonical CBOR `[kind, ts_bytes, writes, epoch_round, epoch_node]`,
kind 1 write batch, 2 safe-time advance, 3 barrier; `writes` is a list of
`[key, value|None]`; kinds 4 prepare, 5 decide, 6 resolve append a sixth
element, the transaction body. Kind 7, a resolve of several transactions
(written since 12-05; kind 6, one transaction's, is still read), has the
body `[[txn_id, commit_ts|null], ...]`; kind 8, a forget (since 12-05), the body
`[txn_id, ...]` (a build before 12-05 cannot read it: upgrade every node together). A decide's `writes` are the coordinator's own
(empty in decides logged before the coordinator stopped preparing: they
decode as a decision without writes, as they were). A 3-element command (written before epochs existed)
decodes with epoch `Ballot(0, "")`, older than every real ballot.
"""

from __future__ import annotations

import cbor2

import attrs

from hlc import Timestamp
from paxos.messages import ZERO_BALLOT, Ballot

NO_EPOCH = ZERO_BALLOT  # commands logged before epochs existed

KIND_WRITE_BATCH = 1
KIND_SAFE_TIME = 2
KIND_BARRIER = 3
KIND_PREPARE = 4
KIND_DECIDE = 5
KIND_RESOLVE = 6  # one decision: how a Resolve was logged before 12-05 (still read)
KIND_RESOLVE_MANY = 7
KIND_FORGET = 8


class CommandError(ValueError):
    """A log entry that does not decode: corruption or a newer format."""


@attrs.frozen
class WriteBatch:
    ts: Timestamp
    writes: tuple[tuple[bytes, bytes | None], ...] = attrs.field(converter=tuple)
    epoch: Ballot = NO_EPOCH

    def __str__(self) -> str:
        return f"WriteBatch ts={self.ts} keys={len(self.writes)} epoch={self.epoch}"


@attrs.frozen
class SafeTimeAdvance:
    ts: Timestamp
    epoch: Ballot = NO_EPOCH

    def __str__(self) -> str:
        return f"SafeTimeAdvance ts={self.ts} epoch={self.epoch}"


@attrs.frozen
class Barrier:
    ts: Timestamp
    epoch: Ballot = NO_EPOCH

    def __str__(self) -> str:
        return f"Barrier ts={self.ts} epoch={self.epoch}"


@attrs.frozen
class Prepare:
    """2PC participant vote: the writes become intents at ts (the prepare timestamp).

    Also records what the transaction read here, so a new leader can rebuild
    its locks, and its coordinator tablet, so a stuck participant knows whom
    to ask."""

    ts: Timestamp
    epoch: Ballot
    txn_id: str
    priority: Timestamp
    coordinator: str
    writes: tuple[tuple[bytes, bytes | None], ...] = attrs.field(converter=tuple)
    read_keys: tuple[bytes, ...] = attrs.field(converter=tuple)
    read_ranges: tuple[tuple[bytes, bytes | None], ...] = attrs.field(converter=tuple)

    def __str__(self) -> str:
        return f"Prepare {self.txn_id} ts={self.ts} writes={len(self.writes)} coordinator={self.coordinator} epoch={self.epoch}"


@attrs.frozen
class Decide:
    """The coordinator's transaction record: the first Decide of a txn in a log wins.

    `ts` is the commit timestamp when committed (the command's own timestamp);
    participants lists the other tablets to resolve. `writes`: the
    coordinator's own writes, which did not prepare (Spanner 4.2.1); they
    become versions at ts if this decision wins and commits. A coordinator
    that did prepare (a Prepare record here, `writes` empty) has its intents
    resolved by the same command."""

    ts: Timestamp
    epoch: Ballot
    txn_id: str
    committed: bool
    participants: tuple[str, ...] = attrs.field(converter=tuple)
    writes: tuple[tuple[bytes, bytes | None], ...] = attrs.field(default=(), converter=tuple)

    def __str__(self) -> str:
        verdict = "commit" if self.committed else "abort"
        return (f"Decide {self.txn_id} {verdict} ts={self.ts} participants={','.join(self.participants)} "
                f"writes={len(self.writes)} epoch={self.epoch}")


@attrs.frozen
class Resolve:
    """A participant learns decisions: each transaction's intents become versions at its
    commit_ts (None: aborted), or vanish. One command carries every decision of one
    `ResolveRequest` (since 12-05; before, a command per transaction)."""

    ts: Timestamp
    epoch: Ballot
    decisions: tuple[tuple[str, Timestamp | None], ...] = attrs.field(converter=tuple)  # (txn_id, commit_ts)

    def __str__(self) -> str:
        verdicts = ", ".join(f"{txn_id} " + (f"commit at {commit_ts}" if commit_ts is not None else "abort")
                             for txn_id, commit_ts in self.decisions[:3])
        more = f" and {len(self.decisions) - 3} more" if len(self.decisions) > 3 else ""
        return f"Resolve {verdicts}{more} ts={self.ts} epoch={self.epoch}"


@attrs.frozen
class Forget:
    """The coordinator forgets commit decisions: each transaction's commit record (b"t/d/") is
    deleted, once every participant has resolved it and the record's retention has passed.
    Changes no key's data; an abort record, or a transaction with no record, is left as is."""

    ts: Timestamp
    epoch: Ballot
    txn_ids: tuple[str, ...] = attrs.field(converter=tuple)

    def __str__(self) -> str:
        shown = ", ".join(self.txn_ids[:3])
        more = f" and {len(self.txn_ids) - 3} more" if len(self.txn_ids) > 3 else ""
        return f"Forget {shown}{more} ts={self.ts} epoch={self.epoch}"


TxnCommand = Prepare | Decide | Resolve | Forget
Command = WriteBatch | SafeTimeAdvance | Barrier | Prepare | Decide | Resolve | Forget | None  # None: a Paxos no-op


def encode_command(command: WriteBatch | SafeTimeAdvance | Barrier | Prepare | Decide | Resolve | Forget) -> bytes:
    epoch = [command.epoch.round, command.epoch.node]
    ts = command.ts.to_bytes()
    if isinstance(command, WriteBatch):
        writes = [[key, value] for key, value in command.writes]
        return cbor2.dumps([KIND_WRITE_BATCH, ts, writes, *epoch], canonical=True)
    if isinstance(command, Prepare):
        body = [command.txn_id, command.priority.to_bytes(), command.coordinator,
                [list(r) for r in command.read_ranges], list(command.read_keys)]
        writes = [[key, value] for key, value in command.writes]
        return cbor2.dumps([KIND_PREPARE, ts, writes, *epoch, body], canonical=True)
    if isinstance(command, Decide):
        body = [command.txn_id, command.committed, list(command.participants)]
        writes = [[key, value] for key, value in command.writes]
        return cbor2.dumps([KIND_DECIDE, ts, writes, *epoch, body], canonical=True)
    if isinstance(command, Resolve):
        body = [[txn_id, None if commit_ts is None else commit_ts.to_bytes()] for txn_id, commit_ts in command.decisions]
        return cbor2.dumps([KIND_RESOLVE_MANY, ts, [], *epoch, body], canonical=True)
    if isinstance(command, Forget):
        return cbor2.dumps([KIND_FORGET, ts, [], *epoch, list(command.txn_ids)], canonical=True)
    kind = KIND_SAFE_TIME if isinstance(command, SafeTimeAdvance) else KIND_BARRIER
    return cbor2.dumps([kind, ts, [], *epoch], canonical=True)


def _pairs(writes: object) -> list[tuple[bytes, bytes | None]]:
    pairs = []
    for key, value in writes:  # type: ignore[attr-defined]
        if not isinstance(key, bytes) or not (value is None or isinstance(value, bytes)):
            raise ValueError("write is not [bytes, bytes|null]")
        pairs.append((key, value))
    return pairs


def _txn_command(kind: int, ts: Timestamp, epoch: Ballot, writes: object, body: object) -> Prepare | Decide | Resolve:
    if not isinstance(body, list) or not body or not isinstance(body[0], str):
        raise ValueError("transaction command without a [txn_id, ...] body")
    if kind == KIND_PREPARE:
        txn_id, priority, coordinator, ranges, read_keys = body
        return Prepare(ts, epoch, txn_id, Timestamp.from_bytes(priority), coordinator, _pairs(writes),
                       tuple(read_keys), tuple((start, end) for start, end in ranges))
    if kind == KIND_DECIDE:
        txn_id, committed, participants = body
        return Decide(ts, epoch, txn_id, bool(committed), tuple(participants), _pairs(writes))
    txn_id, commit_ts = body
    return Resolve(ts, epoch, ((txn_id, _commit_ts(commit_ts)),))


def _commit_ts(data: object) -> Timestamp | None:
    return None if data is None else Timestamp.from_bytes(data)  # type: ignore[arg-type]


def _resolve_many(ts: Timestamp, epoch: Ballot, body: object) -> Resolve:
    if not isinstance(body, list) or not body:
        raise ValueError("resolve command without [[txn_id, commit_ts|null], ...]")
    decisions = []
    for item in body:
        if not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], str):
            raise ValueError("resolve decision is not [txn_id, commit_ts|null]")
        decisions.append((item[0], _commit_ts(item[1])))
    return Resolve(ts, epoch, decisions)


def _forget(ts: Timestamp, epoch: Ballot, body: object) -> Forget:
    if not isinstance(body, list) or not body or not all(isinstance(txn_id, str) for txn_id in body):
        raise ValueError("forget command without [txn_id, ...]")
    return Forget(ts, epoch, body)


def decode_command(data: bytes) -> Command:
    if not data:
        return None
    try:
        fields = cbor2.loads(data)
        if not isinstance(fields, list) or len(fields) not in (3, 5, 6):
            raise ValueError("not a [kind, ts, writes(, epoch round, epoch node(, body))] list")
        kind, ts_bytes, writes = fields[:3]
        epoch = NO_EPOCH
        if len(fields) >= 5:
            if type(fields[3]) is not int or fields[3] < 0 or not isinstance(fields[4], str):
                raise ValueError("epoch is not [round >= 0, node]")
            epoch = Ballot(fields[3], fields[4])
        ts = Timestamp.from_bytes(ts_bytes)
        if kind == KIND_WRITE_BATCH:
            return WriteBatch(ts, _pairs(writes), epoch)
        if kind == KIND_SAFE_TIME:
            return SafeTimeAdvance(ts, epoch)
        if kind == KIND_BARRIER:
            return Barrier(ts, epoch)
        if kind in (KIND_PREPARE, KIND_DECIDE, KIND_RESOLVE) and len(fields) == 6:
            return _txn_command(kind, ts, epoch, writes, fields[5])
        if kind == KIND_RESOLVE_MANY and len(fields) == 6:
            return _resolve_many(ts, epoch, fields[5])
        if kind == KIND_FORGET and len(fields) == 6:
            return _forget(ts, epoch, fields[5])
        raise ValueError(f"unknown command kind {kind!r}")
    except (ValueError, TypeError, cbor2.CBORDecodeError) as error:
        raise CommandError(f"undecodable log command ({len(data)} bytes): {error}") from None


def describe_command(data: bytes) -> str:
    """One line for the inspector: `noop`, `WriteBatch ts=... keys=2`, ..."""
    try:
        command = decode_command(data)
    except CommandError as error:
        return f"<{error}>"
    return "noop" if command is None else str(command)
