"""The client side of a transaction, without I/O: read-your-writes, read sets, the commit plan.

Role: the decisions txn/client/transaction.py makes, as pure functions and
records, so they are unit-tested without a cluster (tests/txn/test_client_txn_plan.py).
Inputs: the transaction's buffered writes (key -> value, None = delete, in the
order first written), the rows a leader answered, the keys and ranges read per
tablet. Outputs: merged rows, a `CommitPlan` (one-phase or two-phase, the
coordinator, each participant's writes and read set), read timestamps for
snapshots, and retry delays.

Invariants:
- a key the transaction wrote is never read from a leader: its buffered value
  (or its absence, for a delete) is the answer (read-your-writes);
- every tablet read or written is a participant; the coordinator is the
  tablet of the first key written (the first tablet read if nothing was
  written), and it is a participant;
- a retried transaction keeps the priority of its first attempt (wound-wait:
  an older transaction wins, so a retried one eventually does);
- a priority is a node's clock reading (`node_now_estimate`: the newest reply's,
  advanced by the time since it arrived), never the client's own clock.

HAZARD: `strong_snapshot_ts` assumes every node's clock is within
`max_offset_ns` of the one that answered the TimestampRequest; a write
acknowledged before the snapshot began has a timestamp below that node's
`now + max_offset` (commit-wait, DESIGN.md contract point 1).
"""

from __future__ import annotations

import random
from typing import Iterable, Iterator, Mapping, Sequence

import attrs

from hlc.timestamp import Timestamp
from txn import api

RETRY_FIRST_S = 0.01
RETRY_MAX_S = 0.5


@attrs.frozen
class ReadRow:
    """One read of a transaction or snapshot: `version_ts` None means not found or the transaction's own write."""

    key: bytes
    value: bytes | None
    version_ts: Timestamp | None

    def __iter__(self) -> Iterator[object]:
        return iter((self.key, self.value, self.version_ts))


@attrs.define(eq=False)
class ReadSet:
    """What one tablet must still hold shared locks on at commit."""

    keys: list[bytes] = attrs.field(factory=list)
    ranges: list[api.KeyRange] = attrs.field(factory=list)
    lease: tuple[str, int] | None = None  # (leader, lease) of its first read that said one

    def same_lease(self, served_by: str, lease: int) -> bool:
        """Record the first read's lease; False if this one came under another (locks lost between)."""
        if not lease:
            return True  # a node that does not say
        if self.lease is None:
            self.lease = (served_by, lease)
        return self.lease == (served_by, lease)

    def add_key(self, key: bytes) -> None:
        if key not in self.keys:
            self.keys.append(key)

    def add_range(self, key_range: api.KeyRange) -> None:
        if key_range not in self.ranges:
            self.ranges.append(key_range)


@attrs.frozen
class Participant:
    tablet_id: str
    writes: tuple[api.KeyWrite, ...] = attrs.field(converter=tuple)
    read_keys: tuple[bytes, ...] = attrs.field(converter=tuple)
    read_ranges: tuple[api.KeyRange, ...] = attrs.field(converter=tuple)


@attrs.frozen
class CommitPlan:
    """`participants` is empty for a transaction that touched nothing; `one_phase` when exactly one."""

    coordinator: str | None
    participants: tuple[Participant, ...] = attrs.field(converter=tuple)

    @property
    def one_phase(self) -> bool:
        return len(self.participants) == 1


def in_range(key: bytes, start: bytes, end: bytes | None) -> bool:
    return start <= key and (end is None or key < end)


def min_end(a: bytes | None, b: bytes | None) -> bytes | None:
    """The smaller of two exclusive range ends, None meaning the end of the key space."""
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def merge_rows(rows: Iterable[api.Row], writes: Mapping[bytes, bytes | None], start: bytes, end: bytes | None) -> list[ReadRow]:
    """The leader's rows of [start, end) with the transaction's buffered writes there laid over them, in key order."""
    merged: dict[bytes, ReadRow] = {row.key: ReadRow(row.key, row.value, row.version_ts) for row in rows}
    for key, value in writes.items():
        if not in_range(key, start, end):
            continue
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = ReadRow(key, value, None)
    return [merged[key] for key in sorted(merged)]


def scanned_range(cursor: bytes, end: bytes | None, rows: Sequence[api.Row], page: int, *, more: bool = False) -> api.KeyRange:
    """The range one TxnScanRequest page answered for: up to just past its last row if the page was full
    or the node cut it short (`more`).

    `end` is already clipped to the tablet. A full page may have stopped early,
    so only [cursor, last key] is known; a short page covered all. (The lock,
    and the read set sent at commit, are the whole requested range.)"""
    if (len(rows) >= page or more) and rows:
        return api.KeyRange(cursor, rows[-1].key + b"\x00")
    return api.KeyRange(cursor, end)


def plan_commit(
    write_tablets: Sequence[tuple[str, api.KeyWrite]], reads: Mapping[str, ReadSet], read_order: Sequence[str],
) -> CommitPlan:
    """Group the buffered writes (in the order first written, each with its tablet) and the read sets by tablet.

    The coordinator is the tablet of the first written key; with no writes, the
    first tablet read (its read locks must still be verified, ARCHITECTURE.md)."""
    order: list[str] = []
    writes: dict[str, list[api.KeyWrite]] = {}
    for tablet_id, write in write_tablets:
        if tablet_id not in writes:
            writes[tablet_id] = []
            order.append(tablet_id)
        writes[tablet_id].append(write)
    for tablet_id in read_order:
        if tablet_id not in order:
            order.append(tablet_id)
    if not order:
        return CommitPlan(None, ())
    participants = []
    for tablet_id in order:
        read_set = reads.get(tablet_id, ReadSet())
        participants.append(Participant(tablet_id, writes.get(tablet_id, ()), read_set.keys, read_set.ranges))
    return CommitPlan(order[0], participants)


def strong_snapshot_ts(reply: api.TimestampReply) -> Timestamp:
    """A read timestamp covering every write acknowledged before the request (see HAZARD above)."""
    return Timestamp(reply.now.wall + reply.max_offset_ns, reply.now.logical)


def stale_ts(reply: api.TimestampReply, stale_ns: int) -> Timestamp:
    """`now - stale_ns` on the answering node's clock (not the client's)."""
    return Timestamp(max(0, reply.now.wall - stale_ns), 0)


def node_now_estimate(readings: Iterable[tuple[Timestamp, float] | None], now_s: float, fresh_s: float) -> Timestamp | None:
    """A node's clock now, from the newest reply's reading, or None if none is fresh.

    `readings`: per connection, the node clock reading the newest reply carried and the
    client's monotonic time (seconds) it arrived at, or None. The newest by arrival, if it
    arrived within `fresh_s` of `now_s`, is advanced by the time since: the node's clock
    ran as long (rates differ by parts per million). The reading was taken before the
    reply left, so the estimate trails that node's clock by the reply's flight, as a
    TimestampRequest's answer does by the time it took back."""
    newest = max((r for r in readings if r is not None), key=lambda r: r[1], default=None)
    if newest is None or not 0 <= now_s - newest[1] <= fresh_s:
        return None
    reading, at_s = newest
    elapsed_ns = round((now_s - at_s) * 1e9)
    return Timestamp(reading.wall + elapsed_ns, 0) if elapsed_ns else reading


def retry_delay_s(attempt: int, rng: random.Random) -> float:
    """Capped exponential backoff after the `attempt`-th abort (1-based), jittered in [50%, 100%]."""
    delay_s = min(RETRY_MAX_S, RETRY_FIRST_S * 2 ** (attempt - 1))
    return delay_s * (0.5 + rng.random() / 2)
