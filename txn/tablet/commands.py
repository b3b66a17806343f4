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

Encoding: canonical CBOR `[kind, ts_bytes, writes, epoch_round, epoch_node]`,
kind 1 write batch, 2 safe-time advance, 3 barrier; `writes` is a list of
`[key, value|None]`. A 3-element command (written before epochs existed)
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


Command = WriteBatch | SafeTimeAdvance | Barrier | None  # None: a Paxos no-op


def encode_command(command: WriteBatch | SafeTimeAdvance | Barrier) -> bytes:
    epoch = [command.epoch.round, command.epoch.node]
    if isinstance(command, WriteBatch):
        writes = [[key, value] for key, value in command.writes]
        return cbor2.dumps([KIND_WRITE_BATCH, command.ts.to_bytes(), writes, *epoch], canonical=True)
    kind = KIND_SAFE_TIME if isinstance(command, SafeTimeAdvance) else KIND_BARRIER
    return cbor2.dumps([kind, command.ts.to_bytes(), [], *epoch], canonical=True)


def decode_command(data: bytes) -> Command:
    if not data:
        return None
    try:
        fields = cbor2.loads(data)
        if not isinstance(fields, list) or len(fields) not in (3, 5):
            raise ValueError("not a [kind, ts, writes(, epoch round, epoch node)] list")
        kind, ts_bytes, writes = fields[:3]
        epoch = NO_EPOCH
        if len(fields) == 5:
            if type(fields[3]) is not int or fields[3] < 0 or not isinstance(fields[4], str):
                raise ValueError("epoch is not [round >= 0, node]")
            epoch = Ballot(fields[3], fields[4])
        ts = Timestamp.from_bytes(ts_bytes)
        if kind == KIND_WRITE_BATCH:
            pairs = []
            for key, value in writes:
                if not isinstance(key, bytes) or not (value is None or isinstance(value, bytes)):
                    raise ValueError("write is not [bytes, bytes|null]")
                pairs.append((key, value))
            return WriteBatch(ts, pairs, epoch)
        if kind == KIND_SAFE_TIME:
            return SafeTimeAdvance(ts, epoch)
        if kind == KIND_BARRIER:
            return Barrier(ts, epoch)
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
