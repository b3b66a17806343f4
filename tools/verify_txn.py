"""Records of the transactional workloads of `chronodb verify` (list-append, bank), without I/O.

Role: the pure half of tools/verify_list_append.py and tools/verify_bank.py:
how a list is stored in a value, what one transaction attempt or snapshot
looks like once recorded (`TxnRecord`), its history line (`record_to_json`,
`record_from_json`), its form for the Elle checkers (`to_elle_op`,
txn/sim/elle_records.py), the liveness rule after the heal, and the
verdict's size limit. Pure: no I/O, no clock, no randomness.

Invariants:
- One record per transaction ATTEMPT: `run_transaction` runs its function
  again only after `TxnAborted`, so every attempt but the last is `fail`
  (definitely not committed); the last one is `ok` (committed, `commit_ts`
  set), `fail` (aborted, or refused before the commit request was
  delivered: `NoLeader`, `Unreachable`), or `info` (`OutcomeUnknown`, or an
  error nobody foresaw: it may have committed).
- A record's micro-operations are the Elle checker's (`("append", key,
  value)`, `("r", key, tuple)`; bank: `("transfer", src, dst, amount)`,
  `("r", account, balance)`), in the order the transaction ran them.
- A read-only record reads at one timestamp `read_ts`; only a strong one is
  in real-time order (`to_elle_op` sets `realtime=False` for the others: a
  read at a past timestamp may miss writes acknowledged before it began).
- Lists are stored as decimal integers joined by commas; a missing key is
  the empty list. Decoding never raises: a part that is not an integer is
  kept as text, so the checker reports it as a garbage read. Bank balances
  are `<balance>/<txn id>` (txn/sim/bank_checkers.py); `decode_balance`
  never raises either.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Iterable, Sequence

import attrs

from hlc.timestamp import Timestamp
from txn.sim.bank_checkers import decode_value
from txn.sim.elle_records import OK, Anomaly, Op

# Kinds of record.
TXN = "txn"  # list-append: a read-write transaction of appends and reads
READ_ONLY = "read-only"  # list-append: a snapshot reading some keys at one timestamp
OPEN = "open"  # bank: the accounts opened, each with the initial balance
TRANSFER = "transfer"  # bank: a read-write transaction moving money between two accounts
BALANCES = "balances"  # bank: a snapshot reading every account at one timestamp
READ_ONLY_KINDS = (READ_ONLY, BALANCES)
# Read-only modes: where the read timestamp comes from.
STRONG = "strong"  # a node's now + max_offset: covers every write acknowledged before
AT = "at"  # a given past timestamp (a commit timestamp seen, or the client's clock minus up to 3 s)
STALE = "stale"  # a node's now minus a staleness
MAX_LISTED = 25  # anomalies listed per class in the verdict; every one is counted


def encode_list(values: Iterable[int]) -> bytes:
    return ",".join(str(value) for value in values).encode()


def decode_list(value: bytes | None) -> tuple[int | str, ...]:
    if not value:
        return ()
    parts = value.decode(errors="replace").split(",")
    return tuple(int(part) if part.lstrip("-").isdigit() else part for part in parts)


def decode_balance(value: bytes | None) -> tuple[int | None, str]:
    """A bank value `<balance>/<txn id>` as (balance, writer's txn id); (None, "") when there is no
    value, (None, "garbage ...") when it does not parse (no transaction wrote that)."""
    if value is None:
        return None, ""
    try:
        return decode_value(value)
    except (ValueError, UnicodeDecodeError):
        return None, f"garbage {value!r}"


def _freeze(mops: Iterable[Sequence[Any]]) -> tuple[tuple[Any, ...], ...]:
    return tuple(tuple(tuple(part) if isinstance(part, list) else part for part in mop) for mop in mops)


@attrs.frozen
class TxnRecord:
    """One transaction attempt or snapshot as the harness saw it.

    `seen` (bank): for each account read, (account, balance or None, id of
    the transaction that wrote the version read or "" if none, version ts);
    `writes` (bank): (account, balance written)."""

    process: int
    kind: str  # TXN, READ_ONLY, OPEN, TRANSFER or BALANCES
    invoke_ns: int
    complete_ns: int
    outcome: str  # OK, FAIL or INFO
    mops: tuple = attrs.field(converter=_freeze, default=())
    mode: str = ""  # read-only kinds: STRONG, AT or STALE
    txn_id: str = ""
    attempt: int = 0  # 1-based attempt of a read-write transaction; 0 for a snapshot
    commit_ts: Timestamp | None = None
    read_ts: Timestamp | None = None
    seen: tuple[tuple[str, int | None, str, Timestamp | None], ...] = attrs.field(converter=tuple, default=())
    writes: tuple[tuple[str, int], ...] = attrs.field(converter=tuple, default=())
    error: str = ""

    @property
    def read_only(self) -> bool:
        return self.kind in READ_ONLY_KINDS

    def keys(self) -> set[str]:
        """Every key (account) the micro-operations name."""
        if self.kind == TRANSFER:
            return {mop[i] for mop in self.mops for i in (1, 2)}
        return {mop[1] for mop in self.mops}


def to_elle_op(record: TxnRecord) -> Op:
    return Op(
        process=record.process, invoke_ns=record.invoke_ns, complete_ns=record.complete_ns, outcome=record.outcome,
        mops=record.mops, commit_ts=None if record.read_only else record.commit_ts, read_only=record.read_only,
        read_ts=record.read_ts if record.read_only else None,
        realtime=not record.read_only or record.mode == STRONG,
    )


def _ts_text(ts: Timestamp | None) -> str | None:
    return None if ts is None else str(ts)


def _ts(text: str | None) -> Timestamp | None:
    return None if text is None else Timestamp.parse(text)


def record_to_json(index: int, record: TxnRecord, start_ns: int) -> dict[str, Any]:
    """A history line; times in ns since the run's start, timestamps as WALL.LOGICAL text."""
    return {
        "index": index, "process": record.process, "kind": record.kind, "mode": record.mode,
        "txn_id": record.txn_id, "attempt": record.attempt, "invoke_ns": record.invoke_ns - start_ns,
        "complete_ns": record.complete_ns - start_ns, "outcome": record.outcome,
        "commit_ts": _ts_text(record.commit_ts), "read_ts": _ts_text(record.read_ts),
        "mops": [[list(part) if isinstance(part, tuple) else part for part in mop] for mop in record.mops],
        "seen": [[account, balance, writer, _ts_text(ts)] for account, balance, writer, ts in record.seen],
        "writes": [list(write) for write in record.writes], "error": record.error,
    }


def record_from_json(line: dict[str, Any]) -> TxnRecord:
    return TxnRecord(
        line["process"], line["kind"], line["invoke_ns"], line["complete_ns"], line["outcome"], line["mops"],
        line["mode"], line["txn_id"], line["attempt"], _ts(line["commit_ts"]), _ts(line["read_ts"]),
        [(account, balance, writer, _ts(ts)) for account, balance, writer, ts in line["seen"]],
        [(account, balance) for account, balance in line["writes"]], line["error"],
    )


def check_txn_liveness(history: Sequence[TxnRecord], healed_ns: int, groups: dict[str, list[str]]) -> list[Anomaly]:
    """After `healed_ns` every tablet (group of keys) must have committed a read-write
    transaction touching one of its keys: its leader serves reads under locks and commits."""
    served: set[str] = set()
    for record in history:
        if record.outcome == OK and not record.read_only and record.invoke_ns >= healed_ns:
            served |= record.keys()
    return [Anomaly("unavailable-after-heal", (), (), (), f"tablet {group} committed no transaction after every "
                    "fault was healed") for group, keys in sorted(groups.items()) if not served.intersection(keys)]


def listed(anomalies: Sequence[Anomaly], limit: int = MAX_LISTED) -> tuple[list[Anomaly], dict[str, int]]:
    """The first `limit` anomalies of each class, and how many there are of each."""
    counts = Counter(anomaly.name for anomaly in anomalies)
    seen: Counter[str] = Counter()
    kept = []
    for anomaly in anomalies:
        seen[anomaly.name] += 1
        if seen[anomaly.name] <= limit:
            kept.append(anomaly)
    return kept, dict(counts)

