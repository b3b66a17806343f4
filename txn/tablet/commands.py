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

Invariant the tablet relies on: within one log, command timestamps strictly
increase with the slot (each leader assigns them in proposal order, strictly
above everything a predecessor could have assigned). A replica's safe time is
therefore the largest timestamp it has applied.

Encoding: canonical CBOR `[kind, ts_bytes, writes]`, kind 1 write batch,
2 safe-time advance, 3 barrier; `writes` is a list of `[key, value|None]`.
"""

from __future__ import annotations

import cbor2

import attrs

from hlc import Timestamp

KIND_WRITE_BATCH = 1
KIND_SAFE_TIME = 2
KIND_BARRIER = 3


class CommandError(ValueError):
    """A log entry that does not decode: corruption or a newer format."""


@attrs.frozen
class WriteBatch:
    ts: Timestamp
    writes: tuple[tuple[bytes, bytes | None], ...] = attrs.field(converter=tuple)

    def __str__(self) -> str:
        return f"WriteBatch ts={self.ts} keys={len(self.writes)}"


@attrs.frozen
class SafeTimeAdvance:
    ts: Timestamp

    def __str__(self) -> str:
        return f"SafeTimeAdvance ts={self.ts}"


@attrs.frozen
class Barrier:
    ts: Timestamp

    def __str__(self) -> str:
        return f"Barrier ts={self.ts}"


Command = WriteBatch | SafeTimeAdvance | Barrier | None  # None: a Paxos no-op


def encode_command(command: WriteBatch | SafeTimeAdvance | Barrier) -> bytes:
    if isinstance(command, WriteBatch):
        writes = [[key, value] for key, value in command.writes]
        return cbor2.dumps([KIND_WRITE_BATCH, command.ts.to_bytes(), writes], canonical=True)
    kind = KIND_SAFE_TIME if isinstance(command, SafeTimeAdvance) else KIND_BARRIER
    return cbor2.dumps([kind, command.ts.to_bytes(), []], canonical=True)


def decode_command(data: bytes) -> Command:
    if not data:
        return None
    try:
        kind, ts_bytes, writes = cbor2.loads(data)
        ts = Timestamp.from_bytes(ts_bytes)
        if kind == KIND_WRITE_BATCH:
            pairs = []
            for key, value in writes:
                if not isinstance(key, bytes) or not (value is None or isinstance(value, bytes)):
                    raise ValueError("write is not [bytes, bytes|null]")
                pairs.append((key, value))
            return WriteBatch(ts, pairs)
        if kind == KIND_SAFE_TIME:
            return SafeTimeAdvance(ts)
        if kind == KIND_BARRIER:
            return Barrier(ts)
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
