"""The bank workload's checker for `chronodb verify`: totals, and every balance read accounted for.

Role: given the history of a bank run (tools/verify_bank.py: the opening,
transfers, snapshots of every balance; `TxnRecord`s, tools/verify_txn.py),
say whether it is valid and, if not, what broke. Output: a `Verdict` of
`Anomaly` records (txn/sim/elle_records.py). Pure: no I/O, no clock, no
randomness.

Checked:
- totals (txn/sim/elle_bank.py `check_bank`): every ok snapshot read every
  account (`incomplete-read`), the balances sum to the opening's total
  (`bank-total-mismatch`), none is negative (`negative-balance`), snapshots
  at one timestamp agree (`bank-snapshot-disagreement`);
- attribution: every value is `<balance>/<txn id>` (txn/sim/bank_checkers.py
  `encode_value`), so each version read names its writer: it must be a
  written value (`garbage-read`), of an attempt not reported failed (`G1a`),
  read at the commit timestamp it was acknowledged with (`wrong-version-ts`);
  an attempt whose outcome is unknown counts as committed once some ok read
  saw it, at one timestamp for all its accounts
  (`inconsistent-unknown-write`);
- snapshots (`snapshot-mismatch`): the committed versions of each account
  (acknowledged attempts, and unknown ones seen) ordered by commit timestamp;
  a snapshot at T reads, on every account, exactly the newest one at or
  below T. This makes a transfer all-or-nothing at every timestamp;
- no lost update (`lost-update`): on each account it wrote, a committed
  transfer's version directly follows the version it read under its lock;
- real time (`timestamp-order`): a read-write transaction invoked after
  another that wrote was acknowledged commits above it (external
  consistency), and a strong snapshot invoked after it reads at or above it.
  A transfer that moved nothing wrote nothing and commits as a read without
  commit-wait: it is held below nothing that comes after it.

HAZARD: real-time judgements trust the harness's one monotonic clock;
timestamps come from the nodes' clocks.
"""

from __future__ import annotations

import bisect
from collections import Counter
from typing import Sequence

import attrs

from hlc.timestamp import Timestamp
from tools.verify_txn import BALANCES, OPEN, STRONG, TRANSFER, TxnRecord, to_elle_op
from txn.sim.elle_bank import check_bank
from txn.sim.elle_records import (
    FAIL, G1A, GARBAGE_READ, INCOMPLETE_READ, INFO, OK, SNAPSHOT_MISMATCH, TIMESTAMP_ORDER, Anomaly, Op, Verdict,
)

WRONG_VERSION_TS = "wrong-version-ts"
INCONSISTENT_UNKNOWN_WRITE = "inconsistent-unknown-write"
LOST_UPDATE = "lost-update"


@attrs.frozen
class Version:
    ts: Timestamp
    writer: int  # history index
    balance: int


def check_bank_history(history: Sequence[TxnRecord], accounts: tuple[str, ...], total: int) -> Verdict:
    """Every anomaly of a bank history; valid iff there is none."""
    anomalies, elle_ops = _absent_accounts(history)
    anomalies += check_bank(elle_ops, total, accounts).anomalies
    writers = {record.txn_id: i for i, record in enumerate(history) if record.kind in (OPEN, TRANSFER) and record.txn_id}
    found, learned = _attribution(history, writers)
    anomalies += found
    versions = _committed_versions(history, learned)
    anomalies += _snapshots(history, versions)
    anomalies += _lost_updates(history, versions, writers)
    anomalies += _real_time(history)
    stats = Counter(f"{record.kind}-{record.outcome}" for record in history)
    stats.update({f"anomaly:{name}": count for name, count in Counter(a.name for a in anomalies).items()})
    stats.update(ops=len(history), unknown_writes_seen=len(learned),
                 versions=sum(len(vs) for vs in versions.values()))
    return Verdict(not anomalies, anomalies, stats.items())


def _absent_accounts(history: Sequence[TxnRecord]) -> tuple[list[Anomaly], list[Op]]:
    """A snapshot that found an account missing (every read is above the opening) is incomplete;
    it stays out of the totals, which need every balance."""
    anomalies, ops = [], []
    for i, record in enumerate(history):
        missing = [mop[1] for mop in record.mops if mop[0] == "r" and mop[2] is None]
        if record.outcome == OK and missing:
            anomalies.append(Anomaly(INCOMPLETE_READ, (i,), (), (record.read_ts,),
                                     f"snapshot T{i} at {record.read_ts} found no value for {missing}, "
                                     "though every snapshot reads above the opening's commit"))
            record = attrs.evolve(record, mops=())
        ops.append(to_elle_op(record))
    return anomalies, ops


def _observations(record: TxnRecord) -> tuple[tuple[str, int | None, str, Timestamp | None], ...]:
    """(account, balance, writer txn id, version ts) for each account an ok record read: only
    ok transactions' reads are evidence."""
    return record.seen if record.outcome == OK else ()


def _attribution(history: Sequence[TxnRecord], writers: dict[str, int]) -> tuple[list[Anomaly], dict[int, Timestamp]]:
    """Per-read checks; the commit ts learned for each unknown-outcome attempt some ok read saw."""
    anomalies: list[Anomaly] = []
    learned: dict[int, Timestamp] = {}
    for i, record in enumerate(history):
        for account, balance, writer_id, ts in _observations(record):
            if not writer_id:
                continue  # nothing there: the snapshot rule judges it
            w = writers.get(writer_id)
            writer = history[w] if w is not None else None
            if writer is None or (account, balance) not in writer.writes:
                anomalies.append(Anomaly(GARBAGE_READ, (i,), (), (ts,), f"T{i} read {account}={balance} written by "
                                         f"{writer_id} at {ts}, which no transaction attempt wrote"))
            elif writer.outcome == FAIL:
                anomalies.append(Anomaly(G1A, (w, i), (), (ts,), f"Aborted read (Adya G1a): T{i} read {account}="
                                         f"{balance}, written by T{w} ({writer_id}), which was reported failed "
                                         f"({writer.error or 'aborted, then run again'})"))
            elif writer.outcome == OK and ts != writer.commit_ts:
                anomalies.append(Anomaly(WRONG_VERSION_TS, (w, i), (), (writer.commit_ts, ts),
                                         f"T{i} read {account}={balance} as a version at {ts}, but its writer T{w} "
                                         f"was acknowledged at {writer.commit_ts}"))
            elif writer.outcome == INFO and ts is not None:
                first = learned.setdefault(w, ts)
                if first != ts:
                    anomalies.append(Anomaly(INCONSISTENT_UNKNOWN_WRITE, (w, i), (), (first, ts),
                                             f"T{w} ({writer_id}, outcome unknown) was read at {first} and, by T{i} "
                                             f"on {account}, at {ts}: one transaction, two commit timestamps"))
    return anomalies, learned


def _committed_versions(history: Sequence[TxnRecord], learned: dict[int, Timestamp]) -> dict[str, list[Version]]:
    versions: dict[str, list[Version]] = {}
    for i, record in enumerate(history):
        ts = record.commit_ts if record.outcome == OK else learned.get(i) if record.outcome == INFO else None
        if ts is None:
            continue
        for account, balance in record.writes:
            versions.setdefault(account, []).append(Version(ts, i, balance))
    for vs in versions.values():
        vs.sort(key=lambda v: (v.ts, v.writer))
    return versions


def _snapshots(history: Sequence[TxnRecord], versions: dict[str, list[Version]]) -> list[Anomaly]:
    anomalies = []
    stamps = {account: [v.ts for v in vs] for account, vs in versions.items()}
    for i, record in enumerate(history):
        if record.kind != BALANCES or record.outcome != OK or record.read_ts is None:
            continue
        T = record.read_ts
        wrong = []
        for account, balance, writer_id, ts in _observations(record):
            position = bisect.bisect_right(stamps.get(account, []), T)
            expected = versions[account][position - 1] if position else None
            expected_id = history[expected.writer].txn_id if expected else ""
            if (expected_id, expected.ts if expected else None) != (writer_id, ts if writer_id else None):
                want = f"{expected.balance} by T{expected.writer} at {expected.ts}" if expected else "nothing"
                wrong.append(f"{account}={balance} ({writer_id or 'nothing'} at {ts}) where the newest committed "
                             f"version at or below {T} is {want}")
        if wrong:
            anomalies.append(Anomaly(SNAPSHOT_MISMATCH, (i,), (), (T,), f"Snapshot mismatch: {record.mode} snapshot T{i} "
                                     f"at {T} read {'; '.join(wrong)}"))
    return anomalies


def _lost_updates(history: Sequence[TxnRecord], versions: dict[str, list[Version]], writers: dict[str, int]) -> list[Anomaly]:
    anomalies = []
    for account, vs in versions.items():
        for before, version in zip([None, *vs], vs):
            record = history[version.writer]
            if record.kind != TRANSFER:
                continue
            read = {a: (writer_id, ts) for a, _, writer_id, ts in record.seen}.get(account)
            previous = (history[before.writer].txn_id, before.ts) if before else ("", None)
            if read is not None and read != previous:
                anomalies.append(Anomaly(LOST_UPDATE, (version.writer,) + ((before.writer,) if before else ()), (),
                                         (version.ts,), f"transfer T{version.writer} read {account} as written by "
                                         f"{read[0] or 'nobody'} at {read[1]} under its lock, but the version it "
                                         f"replaced at {version.ts} is {previous[0] or 'none'} at {previous[1]}"))
    return anomalies


def _real_time(history: Sequence[TxnRecord]) -> list[Anomaly]:
    """Sweep by invoke time, keeping the highest commit ts acknowledged so far."""
    anomalies = []
    # Only transactions that wrote order later commits: one that wrote nothing (a transfer that
    # moved 0) commits as a read at its leader's now, with no commit-wait, so a later commit on
    # another tablet may sit below it (txn/sim/elle_records.py `orders_later_commits`).
    done = sorted((i for i, r in enumerate(history)
                   if r.outcome == OK and not r.read_only and r.writes and r.commit_ts is not None),
                  key=lambda i: history[i].complete_ns)
    known: tuple[Timestamp, int] | None = None
    finished = 0
    for b in sorted(range(len(history)), key=lambda i: history[i].invoke_ns):
        record = history[b]
        while finished < len(done) and history[done[finished]].complete_ns < record.invoke_ns:
            a = done[finished]
            if known is None or history[a].commit_ts > known[0]:  # type: ignore[operator]
                known = (history[a].commit_ts, a)  # type: ignore[assignment]
            finished += 1
        if known is None or record.outcome != OK:
            continue
        ts_known, a = known
        if not record.read_only and record.commit_ts is not None and not record.commit_ts > ts_known:
            anomalies.append(Anomaly(TIMESTAMP_ORDER, (a, b), (), (ts_known, record.commit_ts),
                                     f"{record.kind} T{b} committed at {record.commit_ts}, not above {ts_known}, the "
                                     f"commit of T{a}, acknowledged before T{b} was invoked"))
        elif record.kind == BALANCES and record.mode == STRONG and record.read_ts is not None and record.read_ts < ts_known:
            anomalies.append(Anomaly(TIMESTAMP_ORDER, (a, b), (), (ts_known, record.read_ts),
                                     f"strong snapshot T{b} read at {record.read_ts}, below {ts_known}, the commit "
                                     f"of T{a}, acknowledged before T{b} was invoked"))
    return anomalies
