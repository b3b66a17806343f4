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
  commit timestamp;
- read-then-write: a read that observed version v and completed before write
  W was invoked implies ts(W) > v;
- repeatable reads: two reads of one key at the same T return the same
  version.
Besides histories, over what the simulation observed inside the nodes:
- `check_lease_samples`: at most one lease holder per tablet at any sampled
  instant;
- `check_applied`: on every replica the applied command timestamps strictly
  increase with the log index, and replicas agree on each index's command.
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
    problems += _read_then_write(history)
    problems += _repeatable_reads(history)
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


def _read_then_write(history: list[Op]) -> list[str]:
    """R (observed version v) ended before W started => ts(W) > v."""
    reads = sorted((op for op in history if op.kind == "read" and op.outcome == OK and op.version_ts is not None),
                   key=lambda op: op.end_ns)
    writes = sorted((op for op in history if op.kind == "write" and op.outcome == OK), key=lambda op: op.start_ns)
    problems = []
    seen: Op | None = None
    finished = 0
    for write in writes:
        while finished < len(reads) and reads[finished].end_ns < write.start_ns:
            read = reads[finished]
            if seen is None or read.version_ts > seen.version_ts:  # type: ignore[operator]
                seen = read
            finished += 1
        if seen is not None and not write.ts > seen.version_ts:  # type: ignore[operator]
            problems.append(f"write {write.key!r} at {write.ts} started after a read of {seen.key!r} "
                            f"had observed version {seen.version_ts}")
    return problems


def _repeatable_reads(history: list[Op]) -> list[str]:
    answers: dict[tuple[bytes, Timestamp], tuple[bytes | None, Timestamp | None]] = {}
    problems = []
    for op in history:
        if op.kind != "read" or op.outcome != OK or op.ts is None:
            continue
        got = (op.value, op.version_ts if op.value is not None else None)
        first = answers.setdefault((op.key, op.ts), got)
        if got != first:
            problems.append(f"two reads of {op.key!r} at {op.ts} differ: {first} then {got}")
    return problems


@attrs.frozen
class LeaseSample:
    at_ns: int
    tablet: str
    holders: tuple[str, ...]  # replicas (node/incarnation) whose core says it holds the lease


def check_lease_samples(samples: list[LeaseSample]) -> list[str]:
    return [f"{len(s.holders)} lease holders of {s.tablet} at {s.at_ns}: {', '.join(s.holders)}"
            for s in samples if len(s.holders) > 1]


@attrs.frozen
class Applied:
    tablet: str
    replica: str  # node id and incarnation, e.g. "n2#1"
    index: int
    ts: Timestamp


def check_applied(applied: list[Applied]) -> list[str]:
    """Per replica incarnation: ts strictly increasing with index; per tablet: one ts per index."""
    problems = []
    last: dict[tuple[str, str], Applied] = {}
    by_index: dict[tuple[str, int], Applied] = {}
    for record in applied:
        previous = last.get((record.tablet, record.replica))
        if previous is not None and not (record.index > previous.index and record.ts > previous.ts):
            problems.append(f"{record.tablet} on {record.replica}: applied index {record.index} at {record.ts} "
                            f"after index {previous.index} at {previous.ts}")
        last[(record.tablet, record.replica)] = record
        other = by_index.setdefault((record.tablet, record.index), record)
        if other.ts != record.ts:
            problems.append(f"{record.tablet} index {record.index}: {other.replica} applied ts {other.ts}, "
                            f"{record.replica} applied ts {record.ts}")
    return problems
