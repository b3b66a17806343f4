"""Checkers of client-visible histories: what the contract promises, as code.

Role: given a history of operations (each with its start and end time in one
reference clock, its outcome and its timestamps) and the versions finally
committed, say what was violated. Pure: no I/O; used by the seeded
simulations and, on real clusters, by tests.

Checked:
- durability: every acknowledged write is among the committed versions, at
  the timestamp it was acknowledged with;
- nothing invented: every committed version is an acknowledged write or one
  whose outcome was reported unknown;
- external consistency: if A ended before B started, ts(A) < ts(B) for
  writes, and a read started after a write ended reads at ts >= ts(write);
- snapshot reads: a read at T of key k returns exactly the committed version
  of k with the largest timestamp <= T (or nothing), with that version's
  commit timestamp.
"""

from __future__ import annotations

import bisect

import attrs

from hlc import Timestamp

OK = "ok"
UNKNOWN = "unknown"
FAILED = "failed"


@attrs.frozen
class Op:
    kind: str  # "write" or "read"
    key: bytes
    value: bytes | None  # written value (None: delete) or value read
    start_ns: int
    end_ns: int
    outcome: str  # OK, UNKNOWN or FAILED
    ts: Timestamp | None  # commit ts (write) or read ts (read)
    version_ts: Timestamp | None = None  # read: commit ts of the version read
    strong: bool = False  # read: a strong read (must see everything acknowledged before it)


@attrs.frozen
class Committed:
    """The committed versions of one key: ascending (ts, value|None)."""

    key: bytes
    versions: tuple[tuple[Timestamp, bytes | None], ...] = attrs.field(converter=tuple)

    def at(self, ts: Timestamp) -> tuple[Timestamp, bytes | None] | None:
        stamps = [version_ts for version_ts, _ in self.versions]
        i = bisect.bisect_right(stamps, ts)
        return self.versions[i - 1] if i else None


def check_history(history: list[Op], committed: dict[bytes, Committed]) -> list[str]:
    """Every violation found, as one line each (empty: the history is fine)."""
    problems: list[str] = []
    problems += _durability(history, committed)
    problems += _nothing_invented(history, committed)
    problems += _external_consistency(history)
    problems += _snapshot_reads(history, committed)
    return problems


def _durability(history: list[Op], committed: dict[bytes, Committed]) -> list[str]:
    problems = []
    for op in history:
        if op.kind == "write" and op.outcome == OK:
            versions = dict(committed.get(op.key, Committed(op.key, ())).versions)
            if op.ts not in versions or versions[op.ts] != op.value:
                problems.append(f"acknowledged write lost: {op.key!r}={op.value!r} at {op.ts}")
    return problems


def _nothing_invented(history: list[Op], committed: dict[bytes, Committed]) -> list[str]:
    possible = {(op.key, op.value) for op in history if op.kind == "write" and op.outcome in (OK, UNKNOWN)}
    acked_at = {(op.key, op.ts) for op in history if op.kind == "write" and op.outcome == OK}
    problems = []
    for key, record in committed.items():
        for ts, value in record.versions:
            if (key, value) not in possible:
                problems.append(f"committed version never written: {key!r}={value!r} at {ts}")
            elif (key, ts) not in acked_at and not any(
                op.key == key and op.value == value and op.outcome == UNKNOWN for op in history if op.kind == "write"
            ):
                problems.append(f"committed version at an unexpected timestamp: {key!r}={value!r} at {ts}")
    return problems


def _external_consistency(history: list[Op]) -> list[str]:
    """A before B in real time (A.end < B.start) => ts(A) < ts(B) (<= for reads)."""
    done = sorted((op for op in history if op.outcome == OK and op.ts is not None), key=lambda op: op.end_ns)
    problems = []
    max_write_ts = Timestamp.MIN
    max_write_op: Op | None = None
    finished = 0
    for op in sorted(done, key=lambda op: op.start_ns):
        while finished < len(done) and done[finished].end_ns < op.start_ns:
            earlier = done[finished]
            if earlier.kind == "write" and earlier.ts > max_write_ts:
                max_write_ts, max_write_op = earlier.ts, earlier
            finished += 1
        if max_write_op is None:
            continue
        if op.kind == "write" and not op.ts > max_write_ts:
            problems.append(f"write {op.key!r} at {op.ts} started after write {max_write_op.key!r} at {max_write_ts} was acknowledged")
        if op.kind == "read" and op.strong and op.ts < max_write_ts:
            problems.append(f"strong read of {op.key!r} at {op.ts} started after write {max_write_op.key!r} at {max_write_ts} was acknowledged")
    return problems


def _snapshot_reads(history: list[Op], committed: dict[bytes, Committed]) -> list[str]:
    problems = []
    for op in history:
        if op.kind != "read" or op.outcome != OK:
            continue
        assert op.ts is not None
        expected = committed.get(op.key, Committed(op.key, ())).at(op.ts)
        expected_value = expected[1] if expected else None
        expected_ts = expected[0] if expected and expected[1] is not None else None
        got_ts = op.version_ts if op.value is not None else None
        if (op.value, got_ts) != (expected_value, expected_ts):
            problems.append(
                f"read of {op.key!r} at {op.ts} returned {op.value!r} (version {op.version_ts}); "
                f"committed history says {expected_value!r} (version {expected_ts})"
            )
    return problems
