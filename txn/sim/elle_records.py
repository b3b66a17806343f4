"""The values the history checkers read and return.

Role: the shared vocabulary of `txn/sim/elle*.py`. Inputs are `Op` records (one
per transaction, in the order the harness logged them); outputs are `Anomaly`
records gathered in a `Verdict`. A transaction is named by its position in the
history list, everywhere.

Invariants:
- Micro-operations are tuples: `("append", key, value)`, `("r", key, tuple |
  None)` for list-append; `("transfer", src, dst, amount)` and
  `("r", account, balance)` for bank. Read lists are stored as tuples so an
  `Op` stays hashable.
- Times are integer ns in the harness's one reference clock; `complete_ns` of
  an `info` operation is only when the harness gave up waiting.
- `realtime=False` marks a transaction that promises no real-time order: a
  read-only one at a past (or stale) timestamp, which by design may miss
  writes acknowledged before it began. No real-time edge touches it; its read
  timestamp alone places it (txn/sim/elle_snapshot.py).

Pure: no I/O, no clock reads, no randomness.
"""

from __future__ import annotations

from typing import Any

import attrs

from hlc.timestamp import Timestamp

OK = "ok"
FAIL = "fail"  # definitely did not happen
INFO = "info"  # may or may not have happened

# Anomaly class names: what `chronodb verify` prints and what tests match on.
G0 = "G0"
G1A = "G1a"
G1B = "G1b"
G1C = "G1c"
G_SINGLE = "G-single"
G2_ITEM = "G2-item"
REALTIME = "-realtime"  # suffix of a cycle that needs a real-time edge
INCOMPATIBLE_ORDER = "incompatible-order"
LOST_APPEND = "lost-append"
DUPLICATE_ELEMENT = "duplicate-element"
GARBAGE_READ = "garbage-read"
TIMESTAMP_ORDER = "timestamp-order"
SNAPSHOT_MISMATCH = "snapshot-mismatch"
BANK_TOTAL_MISMATCH = "bank-total-mismatch"
NEGATIVE_BALANCE = "negative-balance"
INCOMPLETE_READ = "incomplete-read"
BANK_SNAPSHOT_DISAGREEMENT = "bank-snapshot-disagreement"

# Dependency kinds, Adya's thesis section 3.1: write-write, write-read,
# read-write (anti-dependency), plus real-time order for strict serializability.
WW = "ww"
WR = "wr"
RW = "rw"
RT = "rt"


def _freeze_mop(mop: Any) -> tuple:
    mop = tuple(mop)
    if mop and mop[0] == "r" and isinstance(mop[2], list):
        return (mop[0], mop[1], tuple(mop[2]))
    return mop


def _freeze_mops(mops: Any) -> tuple:
    return tuple(_freeze_mop(mop) for mop in mops)


@attrs.frozen
class Op:
    """One transaction as the harness saw it."""

    process: int
    invoke_ns: int
    complete_ns: int
    outcome: str  # OK, FAIL or INFO
    mops: tuple = attrs.field(converter=_freeze_mops)
    commit_ts: Timestamp | None = None  # read-write transactions, when known
    read_only: bool = False
    read_ts: Timestamp | None = None  # read-only transactions: the snapshot read
    realtime: bool = True  # False: a read at a past timestamp, outside real-time order

    def __attrs_post_init__(self) -> None:
        if self.complete_ns < self.invoke_ns:
            raise ValueError(f"operation completed before it was invoked: {self}")
        if self.outcome not in (OK, FAIL, INFO):
            raise ValueError(f"outcome must be ok, fail or info: {self.outcome!r}")

    def __str__(self) -> str:
        ts = f" ts={self.read_ts if self.read_only else self.commit_ts}"
        body = " ".join(_mop_text(mop) for mop in self.mops)
        return f"p{self.process} {self.outcome} [{self.invoke_ns},{self.complete_ns}]{ts} {body}"


def _mop_text(mop: tuple) -> str:
    if mop[0] == "r" and isinstance(mop[2], tuple):
        return f"r({mop[1]})={list(mop[2])}"
    return f"{mop[0]}({', '.join(str(part) for part in mop[1:])})"


@attrs.frozen
class Edge:
    """A dependency src -> dst: src must precede dst in any valid order."""

    src: int
    dst: int
    kind: str  # WW, WR, RW or RT
    key: Any = None  # the key that gave the dependency (None for RT)
    value: Any = None  # the element that gave it (None for RT)

    def __str__(self) -> str:
        why = "" if self.kind == RT else f" on {self.key}={self.value}"
        return f"T{self.src} -{self.kind}-> T{self.dst}{why}"


@attrs.frozen
class Anomaly:
    """One thing that no valid execution explains."""

    name: str
    txns: tuple[int, ...] = attrs.field(converter=tuple)
    edges: tuple[Edge, ...] = attrs.field(converter=tuple, default=())
    timestamps: tuple[Timestamp | None, ...] = attrs.field(converter=tuple, default=())
    explanation: str = ""

    def __str__(self) -> str:
        return f"{self.name} {list(self.txns)}: {self.explanation}"


@attrs.frozen
class Verdict:
    """`valid` iff no anomaly was found; `stats` are (name, count) pairs."""

    valid: bool
    anomalies: tuple[Anomaly, ...] = attrs.field(converter=tuple)
    stats: tuple[tuple[str, int], ...] = attrs.field(converter=lambda pairs: tuple(sorted(dict(pairs).items())))

    def names(self) -> tuple[str, ...]:
        """The distinct anomaly class names, sorted."""
        return tuple(sorted({anomaly.name for anomaly in self.anomalies}))

    def stat(self, name: str) -> int:
        return dict(self.stats).get(name, 0)


def orders_later_commits(op: Op) -> bool:
    """Whether a transaction's timestamp must be below every commit invoked after it completed:
    only one that wrote. A read-only snapshot reads at `now + max_offset`, and a transaction that
    wrote nothing commits as a read at its leader's now, with no commit-wait
    (txn/tablet/transactions.py `one_phase_commit`): a later commit on a tablet it did not touch
    may sit below either."""
    return not op.read_only and any(mop[0] != "r" for mop in op.mops)


def ts_of(op: Op) -> Timestamp | None:
    """The timestamp a transaction took effect at: read ts if read-only."""
    return op.read_ts if op.read_only else op.commit_ts
