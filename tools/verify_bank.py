"""The bank workload of `chronodb verify`: transfers between accounts on different tablets, snapshots of all.

Role: accounts spread over the tablets are opened in one transaction with
INITIAL each (`setup`); then client processes run transfers
(`client.run_transaction`: read both balances under shared locks, write
both: mostly between accounts of different tablets, so two-phase commit)
and read-only snapshots of every balance (`client.snapshot`: strong, at a
past timestamp: a commit timestamp seen, just below one, an earlier
snapshot's, the client's clock minus up to 3 s; or stale). Every value is
`<balance>/<txn id>` (txn/sim/bank_checkers.py `encode_value`), so every
version read names its writer. Records are `TxnRecord`s
(tools/verify_txn.py); the checker is tools/verify_bank_check.py: totals,
no negative balance, attribution, snapshots exact at their timestamp, no
lost update, real-time order.

Invariants: no snapshot reads below the opening's commit timestamp (past
timestamps are raised to it; a staleness is capped by the time since the
opening); a transfer moves min(amount, balance) (so never overdraws) and
writes nothing when that is 0.

`final_phase` after the heal: a transfer out of each tablet, a strong
snapshot, and snapshots again at up to READBACK_MAX earlier snapshot and
commit timestamps (a timestamp names one state forever).
"""

from __future__ import annotations

import random
from typing import Any, Callable

import attrs
import trio

from hlc import Timestamp
from tools.errors import CliError
from tools.verify_bank_check import check_bank_history
from tools.verify_txn import AT, BALANCES, OPEN, STALE, STRONG, TRANSFER, TxnRecord, check_txn_liveness, decode_balance
from tools.verify_txn_run import Attempt, read_keys, run_recorded, snapshot_recorded
from tools.verify_workloads import Recorder, now_ns, paced_worker, past
from txn.client import Client, Snapshot, Transaction
from txn.sim.bank_checkers import encode_value
from txn.sim.elle_records import OK, Anomaly, Verdict

INITIAL = 100
TRANSFER_SHARE = 0.6  # the rest are snapshots of every balance
CROSS_SHARE = 0.85  # transfers between accounts of different tablets
AMOUNT_MAX = 30
SNAPSHOT_MIX = ((STRONG, 45), (AT, 40), (STALE, 15))
MAX_ATTEMPTS = 4
# The healed phase's liveness check: each tablet must commit a transfer within this (new
# transactions every FINAL_RETRY_S after one aborted MAX_ATTEMPTS times: on a loaded 2-core box
# a lone transfer met leftover locks of the run's abandoned transactions four times in a row).
FINAL_DEADLINE_S = 60.0
FINAL_RETRY_S = 1.0
OPEN_ATTEMPTS = 10
RECENT = 200  # snapshots at a past timestamp pick among the latest timestamps seen
READBACK_MAX = 50
STALE_MARGIN_NS = 200_000_000


@attrs.define(eq=False)
class BankWorkload:
    accounts: list[str]
    recorder: Recorder
    seed: str
    tablet_of: dict[str, str] = attrs.Factory(dict)
    opening: TxnRecord | None = None
    opened_ns: int = 0  # harness clock when the opening was acknowledged
    commit_stamps: list[Timestamp] = attrs.Factory(list)
    read_stamps: list[Timestamp] = attrs.Factory(list)

    name = "bank"

    @property
    def total(self) -> int:
        return INITIAL * len(self.accounts)

    @property
    def floor(self) -> Timestamp:
        assert self.opening is not None and self.opening.commit_ts is not None
        return self.opening.commit_ts

    async def setup(self, client: Client, groups: dict[str, list[str]]) -> None:
        """Open every account in one transaction; the run stops here if that fails."""
        self.tablet_of = {account: tablet for tablet, accounts in groups.items() for account in accounts}

        async def body(tx: Transaction, attempt: Attempt) -> None:
            attempt.mops.extend(("open", account, INITIAL) for account in self.accounts)
            attempt.writes.extend((account, INITIAL) for account in self.accounts)
            for account in self.accounts:
                tx.put(account.encode(), encode_value(INITIAL, tx.txn_id))

        records = await run_recorded(client, self.recorder, -1, OPEN, body, max_attempts=OPEN_ATTEMPTS)
        if records[-1].outcome != OK or records[-1].commit_ts is None:
            raise CliError(f"could not open the bank's accounts: {records[-1].outcome} ({records[-1].error})")
        self.opening = records[-1]
        self.opened_ns = now_ns()
        self.commit_stamps.append(self.floor)

    async def worker(self, client: Client, worker: int, workers: int, interval_s: float, stop_at_s: float) -> None:
        await paced_worker(self.run_one, client, random.Random(f"{self.seed}/worker/{worker}"), worker, workers,
                           interval_s, stop_at_s)

    async def run_one(self, client: Client, process: int, rng: random.Random) -> str:
        if rng.random() < TRANSFER_SHARE:
            src, dst = self.pick_accounts(rng)
            return (await self.transfer(client, process, src, dst, rng.randint(1, AMOUNT_MAX)))[-1].outcome
        mode = rng.choices([m for m, _ in SNAPSHOT_MIX], [w for _, w in SNAPSHOT_MIX])[0]
        return (await self.balances(client, process, mode, rng)).outcome

    def pick_accounts(self, rng: random.Random) -> tuple[str, str]:
        src = rng.choice(self.accounts)
        cross = rng.random() < CROSS_SHARE
        others = [a for a in self.accounts if a != src and (self.tablet_of.get(a) != self.tablet_of.get(src)) == cross]
        return src, rng.choice(others or [a for a in self.accounts if a != src])

    async def transfer(self, client: Client, process: int, src: str, dst: str, amount: int) -> list[TxnRecord]:
        async def body(tx: Transaction, attempt: Attempt) -> None:
            balances = {}
            for account in (src, dst):
                value = await tx.get(account.encode())
                balance, writer = decode_balance(value)
                balances[account] = balance
                attempt.seen.append((account, balance, writer, tx.reads[-1].version_ts))
            moved = min(amount, balances[src]) if balances[src] is not None and balances[dst] is not None else 0
            attempt.mops.append(("transfer", src, dst, max(moved, 0)))
            if moved > 0:
                new = {src: balances[src] - moved, dst: balances[dst] + moved}  # type: ignore[operator]
                for account in (src, dst):
                    tx.put(account.encode(), encode_value(new[account], tx.txn_id))
                    attempt.writes.append((account, new[account]))

        records = await run_recorded(client, self.recorder, process, TRANSFER, body, max_attempts=MAX_ATTEMPTS)
        if records[-1].outcome == OK and records[-1].writes and records[-1].commit_ts is not None:
            self.commit_stamps.append(records[-1].commit_ts)
        return records

    def read_point(self, client: Client, mode: str, rng: random.Random) -> tuple[str, Timestamp | None, int | None]:
        """(mode, at, stale ns) of a snapshot, never below the opening."""
        if mode == AT:
            choice = rng.random()
            if choice < 0.3:
                return AT, rng.choice(self.commit_stamps[-RECENT:]), None
            if choice < 0.55:
                return AT, max(self.floor, just_below(rng.choice(self.commit_stamps[-RECENT:]))), None
            if choice < 0.75 and self.read_stamps:
                return AT, max(self.floor, rng.choice(self.read_stamps[-RECENT:])), None
            return AT, max(self.floor, past(client, rng)), None
        if mode == STALE:
            stale_ns = min(rng.randint(1, 3000) * 1_000_000, now_ns() - self.opened_ns - STALE_MARGIN_NS)
            if stale_ns >= 1_000_000:
                return STALE, None, stale_ns
        return STRONG, None, None

    async def balances(self, client: Client, process: int, mode: str, rng: random.Random | None = None,
                       at: Timestamp | None = None) -> TxnRecord:
        stale_ns = None
        if rng is not None:
            mode, at, stale_ns = self.read_point(client, mode, rng)

        async def body(snap: Snapshot) -> tuple[list[tuple[Any, ...]], list]:
            mops, seen = [], []
            for account, value, version_ts in await read_keys(snap, self.accounts):
                balance, writer = decode_balance(value)
                mops.append(("r", account, balance))
                seen.append((account, balance, writer, version_ts))
            return mops, seen

        record = await snapshot_recorded(client, self.recorder, process, BALANCES, mode, body, at=at, stale_ns=stale_ns)
        if record.outcome == OK and record.read_ts is not None:
            self.read_stamps.append(record.read_ts)
        return record

    async def final_phase(self, client: Client, groups: dict[str, list[str]], say: Callable[[str], None]) -> None:
        rng = random.Random(f"{self.seed}/final")
        process = -1
        for tablet_id, accounts in sorted(groups.items()):
            src = rng.choice(accounts)
            dst = rng.choice([a for a in self.accounts if self.tablet_of.get(a) != tablet_id] or self.accounts)
            amount = rng.randint(1, AMOUNT_MAX)
            tries: list[TxnRecord] = []
            with trio.move_on_after(FINAL_DEADLINE_S):
                while not tries or tries[-1].outcome != OK:
                    if tries:
                        await trio.sleep(FINAL_RETRY_S)  # leftover locks of abandoned transactions expire
                    tries += await self.transfer(client, process, src, dst, amount)
            say(f"final: tablet {tablet_id}: transfer {tries[-1].outcome} after {len(tries)} attempt(s)")
        strong = await self.balances(client, process, STRONG)
        stamps = sorted(set(self.read_stamps) | set(self.commit_stamps))
        sample = rng.sample(stamps, min(READBACK_MAX, len(stamps)))
        limiter = trio.CapacityLimiter(8)
        outcomes: list[str] = []

        async def again(ts: Timestamp) -> None:
            async with limiter:
                outcomes.append((await self.balances(client, process, AT, at=ts)).outcome)

        async with trio.open_nursery() as nursery:
            for ts in sample:
                nursery.start_soon(again, ts)
        say(f"final: strong snapshot {strong.outcome}; {len(sample)} earlier timestamps read again: "
            f"{outcomes.count(OK)} ok")

    def check(self, healed_ns: int, groups: dict[str, list[str]]) -> tuple[Verdict, list[Anomaly]]:
        history = self.recorder.history
        return (check_bank_history(history, tuple(self.accounts), self.total),
                check_txn_liveness(history, healed_ns, groups))


def just_below(ts: Timestamp) -> Timestamp:
    if ts.logical > 0:
        return Timestamp(ts.wall, ts.logical - 1)
    return Timestamp(ts.wall - 1, (1 << 31) - 1)
