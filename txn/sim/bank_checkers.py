"""Checkers of the simulation's bank workload: cross-tablet transfers and snapshot totals.

Role: given what the bank clients recorded (txn/sim/bank_workload.py) and the
account versions finally stored, say what was violated. Pure: no I/O, no
trio, no clock.

The history: every ATTEMPT of a transaction (`Transfer`; the opening of the
accounts is one too) with the values it read and wrote and its outcome as
the client reported it (committed at `commit_ts`, aborted, unknown), and
every complete snapshot read (`BankRead`: every account read at one `ts`).
Every written value is `b"<balance>/<txn id>"`, so each version read or
stored names the attempt that wrote it.

Checked:
- totals: every snapshot that read any account read all of them (an empty
  bank before the opening, else the full one) and they sum to the total;
  no balance is negative;
- attribution: every version read or stored was written by a known attempt
  that committed or whose outcome is unknown, never by an aborted one, at
  the writer's commit timestamp (for an unknown attempt, one timestamp for
  all its keys, learned from what was read or stored);
- visibility: an attempt with a commit timestamp C is visible in full in
  every snapshot at T >= C (each key it wrote shows its version or a later
  one) and not at all at T < C; an unknown one that committed is
  all-or-nothing likewise;
- durability: every committed attempt's writes are stored, at C;
- serializability of transfers (strict 2PL): the version a committed
  attempt overwrote on each key is the one it read;
- external consistency: a strong snapshot started after an attempt was
  acknowledged reads at ts >= its commit timestamp;
- quiescence (`check_quiescent`): after healing and recovery time nothing is
  prepared and no intent remains on any replica.
"""

from __future__ import annotations

import attrs

from hlc import Timestamp

COMMITTED = "committed"
ABORTED = "aborted"
UNKNOWN = "unknown"


@attrs.frozen
class Transfer:
    """One attempt of a read-write transaction of the bank workload."""

    txn_id: str
    start_ns: int
    end_ns: int
    outcome: str  # COMMITTED, ABORTED or UNKNOWN
    commit_ts: Timestamp | None
    reads: tuple[tuple[bytes, bytes | None], ...] = attrs.field(converter=tuple)  # (account, value read)
    writes: tuple[tuple[bytes, bytes], ...] = attrs.field(converter=tuple)  # (account, value written)


@attrs.frozen
class BankRead:
    """A snapshot that read every account at `ts`: (account, value, version ts) each."""

    ts: Timestamp
    start_ns: int
    end_ns: int
    strong: bool
    reads: tuple[tuple[bytes, bytes | None, Timestamp | None], ...] = attrs.field(converter=tuple)


def encode_value(balance: int, txn_id: str) -> bytes:
    return b"%d/%s" % (balance, txn_id.encode())


def decode_value(value: bytes) -> tuple[int, str]:
    balance, _, txn_id = value.partition(b"/")
    return int(balance), txn_id.decode()


Versions = dict[bytes, tuple[tuple[Timestamp, bytes | None], ...]]  # account -> ascending (ts, value)


def check_bank(transfers: list[Transfer], reads: list[BankRead], versions: Versions, accounts: tuple[bytes, ...],
               total: int) -> list[str]:
    """Every violation found, one line each (empty: the history is fine)."""
    by_id = {t.txn_id: t for t in transfers}
    problems: list[str] = []
    commit_ts = _commit_stamps(by_id, reads, versions, problems)
    problems += _totals(reads, accounts, total)
    problems += _attribution(by_id, reads, versions, commit_ts)
    problems += _visibility(by_id, reads, commit_ts)
    problems += _durability_and_serializability(by_id, versions, commit_ts)
    problems += _strong_reads(transfers, reads)
    return problems


def _commit_stamps(by_id: dict[str, Transfer], reads: list[BankRead], versions: Versions,
                   problems: list[str]) -> dict[str, Timestamp]:
    """Each attempt's commit timestamp: reported, or (unknown outcome) learned from the versions seen."""
    stamps = {t.txn_id: t.commit_ts for t in by_id.values() if t.outcome == COMMITTED and t.commit_ts is not None}
    seen: dict[str, set[Timestamp]] = {}
    for account, stored in versions.items():
        for ts, value in stored:
            if value is not None:
                seen.setdefault(decode_value(value)[1], set()).add(ts)
    for read in reads:
        for account, value, version_ts in read.reads:
            if value is not None and version_ts is not None:
                seen.setdefault(decode_value(value)[1], set()).add(version_ts)
    for txn_id, found in sorted(seen.items()):
        transfer = by_id.get(txn_id)
        if transfer is None or transfer.outcome != UNKNOWN:
            continue  # attribution reports these
        if len(found) > 1:
            problems.append(f"unknown transfer {txn_id} seen at several timestamps {sorted(found)}: not atomic")
        stamps[txn_id] = min(found)
    return stamps


def _totals(reads: list[BankRead], accounts: tuple[bytes, ...], total: int) -> list[str]:
    problems = []
    for read in reads:
        present = {account: value for account, value, _ in read.reads if value is not None}
        if not present:
            continue  # before the opening: an empty bank
        if set(present) != set(accounts):
            problems.append(f"snapshot at {read.ts} saw accounts {sorted(present)} but not the others: "
                            "the opening is not all-or-nothing")
            continue
        balances = {account: decode_value(value)[0] for account, value in present.items()}
        if sum(balances.values()) != total:
            problems.append(f"snapshot at {read.ts} read balances summing to {sum(balances.values())}, "
                            f"not {total}: {_show(balances)}")
        negative = {account: b for account, b in balances.items() if b < 0}
        if negative:
            problems.append(f"snapshot at {read.ts} read negative balances {_show(negative)}")
    return problems


def _attribution(by_id: dict[str, Transfer], reads: list[BankRead], versions: Versions,
                 commit_ts: dict[str, Timestamp]) -> list[str]:
    problems = []

    def judge(where: str, account: bytes, value: bytes, ts: Timestamp | None) -> None:
        txn_id = decode_value(value)[1]
        writer = by_id.get(txn_id)
        if writer is None or (account, value) not in writer.writes:
            problems.append(f"{where}: {account!r}={value!r} was never written")
        elif writer.outcome == ABORTED:
            problems.append(f"{where}: {account!r}={value!r} is visible, but transfer {txn_id} was reported aborted")
        elif txn_id in commit_ts and ts != commit_ts[txn_id]:
            problems.append(f"{where}: {account!r}={value!r} is a version at {ts}, but transfer {txn_id} "
                            f"committed at {commit_ts[txn_id]}")

    for account, stored in sorted(versions.items()):
        for ts, value in stored:
            if value is not None:
                judge(f"stored version at {ts}", account, value, ts)
    for read in reads:
        for account, value, version_ts in read.reads:
            if value is None:
                continue
            if version_ts is None or version_ts > read.ts:
                problems.append(f"snapshot at {read.ts}: {account!r} read version {version_ts}, not at or below the snapshot")
            judge(f"snapshot at {read.ts}", account, value, version_ts)
    return problems


def _visibility(by_id: dict[str, Transfer], reads: list[BankRead], commit_ts: dict[str, Timestamp]) -> list[str]:
    """At T >= C every key the attempt wrote shows its version or a later one; at T < C none does."""
    problems = []
    for txn_id, ts in sorted(commit_ts.items()):
        written = {account for account, _ in by_id[txn_id].writes}
        if not written:
            continue
        for read in reads:
            seen = {account: version_ts for account, value, version_ts in read.reads if account in written}
            if not seen:
                continue
            visible = {account for account, version_ts in seen.items() if version_ts is not None and version_ts >= ts}
            expected = set(seen) if read.ts >= ts else set()
            if visible == expected:
                continue
            kind = "committed" if by_id[txn_id].outcome == COMMITTED else "unknown-outcome"
            if visible and visible != set(seen):
                what = f"partially visible (on {sorted(visible)} only)"
            elif read.ts >= ts:
                what = "not visible"
            else:
                what = "visible before its commit timestamp"
            problems.append(f"{kind} transfer {txn_id} (commit ts {ts}) is {what} in the snapshot at {read.ts}")
    return problems


def _durability_and_serializability(by_id: dict[str, Transfer], versions: Versions,
                                    commit_ts: dict[str, Timestamp]) -> list[str]:
    problems = []
    for txn_id, ts in sorted(commit_ts.items()):
        transfer = by_id[txn_id]
        read = dict(transfer.reads)
        for account, value in transfer.writes:
            stored = list(versions.get(account, ()))
            at = [i for i, (version_ts, _) in enumerate(stored) if version_ts == ts]
            if not at or stored[at[0]][1] != value:
                kind = "committed" if transfer.outcome == COMMITTED else "unknown-outcome (seen) "
                problems.append(f"{kind} transfer {txn_id}: {account!r}={value!r} at {ts} is not stored")
                continue
            if account in read:
                before = stored[at[0] - 1][1] if at[0] else None
                if before != read[account]:
                    problems.append(f"transfer {txn_id} read {account!r}={read[account]!r} but overwrote "
                                    f"{before!r} at {ts}: a lost update (not serializable)")
    return problems


def _strong_reads(transfers: list[Transfer], reads: list[BankRead]) -> list[str]:
    problems = []
    acked = sorted((t for t in transfers if t.outcome == COMMITTED and t.commit_ts is not None and t.writes),
                   key=lambda t: t.end_ns)
    for read in reads:
        if not read.strong:
            continue
        latest = max((t for t in acked if t.end_ns < read.start_ns), key=lambda t: t.commit_ts, default=None)  # type: ignore[arg-type,return-value]
        if latest is not None and read.ts < latest.commit_ts:  # type: ignore[operator]
            problems.append(f"strong snapshot at {read.ts} started after transfer {latest.txn_id} was acknowledged "
                            f"at {latest.commit_ts}")
    return problems


@attrs.frozen
class Leftover:
    """What a replica still holds once everything healed and recovery had its time."""

    replica: str  # "n2#1/t3"
    prepared: tuple[str, ...] = attrs.field(converter=tuple)
    intents: tuple[tuple[bytes, str], ...] = attrs.field(converter=tuple)  # (key, txn id)


def check_quiescent(leftovers: list[Leftover], waited_s: float) -> list[str]:
    problems = []
    for left in leftovers:
        if left.prepared:
            problems.append(f"{left.replica}: still prepared {waited_s:.1f}s after healing: {', '.join(left.prepared)}")
        if left.intents:
            problems.append(f"{left.replica}: intents remain {waited_s:.1f}s after healing: "
                            + ", ".join(f"{k!r} of {t}" for k, t in left.intents))
    return problems


def _show(balances: dict[bytes, int]) -> str:
    return ", ".join(f"{account.decode()}={b}" for account, b in sorted(balances.items()))
