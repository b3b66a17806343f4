"""The simulation's bank workload: cross-tablet transfers and snapshot totals, through the real client.

Role: for a seed whose plan says `workload="bank"` (txn/sim/plan.py), the
accounts ACCOUNTS (spread over the tablets: the sim's tablets split at b"c"
and b"f") are opened with one transaction holding INITIAL each; then each
sim client loops: a transfer (`run_transaction`: read both balances under
shared locks, write both; mostly between accounts of different tablets, so
two-phase commit, sometimes within one tablet, one-phase) or a read-only
snapshot of every account (`client.snapshot`: strong, stale, or at a past
timestamp: a commit timestamp seen, just below one, or an earlier
snapshot's). Every attempt of every transaction and every complete
snapshot is recorded (txn/sim/bank_checkers.py says what must hold).

Outcomes as the client reports them: `commit_ts` set: committed;
`OutcomeUnknown`: unknown; every other `ClientError` (`TxnAborted`, and
`NoLeader`/`Unreachable`, raised before the commit request was delivered):
aborted. `run_transaction` runs the function again only after `TxnAborted`,
so every attempt but the last aborted.

Randomness: the client library's own stream (`rng=` to open_client:
transaction ids, retry jitter) is `random.Random(f"{seed}/client/{i}")`; the
workload's choices come from `f"{seed}/bank/{i}"`.
"""

from __future__ import annotations

import random
from typing import Callable

import attrs
import trio

from hlc import Timestamp
from txn.client import ClientError, OutcomeUnknown
from txn.client.transaction import Transaction
from txn.sim.bank_checkers import ABORTED, COMMITTED, UNKNOWN, BankRead, Transfer, decode_value, encode_value
from txn.sim.sim_client import SimClient, now_ns

ACCOUNTS = (b"a1", b"a2", b"d1", b"d2", b"g1", b"g2")
INITIAL = 100
TOTAL = INITIAL * len(ACCOUNTS)
MAX_ATTEMPTS = 4
OPEN_ATTEMPTS = 20
STALE_CHOICES_NS = (0, 20_000_000, 200_000_000)


@attrs.define(eq=False)
class BankHistory:
    transfers: list[Transfer] = attrs.Factory(list)
    reads: list[BankRead] = attrs.Factory(list)
    commit_stamps: list[Timestamp] = attrs.Factory(list)  # for snapshots at past timestamps
    txn_tablets: dict[str, tuple[str, ...]] = attrs.Factory(dict)  # txn id -> tablets it writes (fault triggers)
    opened: bool = False


class BankClient:
    """One sim client running the bank workload."""

    def __init__(self, client: SimClient, history: BankHistory, stream: random.Random,
                 tablet_of: Callable[[bytes], str], in_flight: Callable[[bytes, int], None]) -> None:
        self.sim = client
        self.history = history
        self.stream = stream
        self.tablet_of = tablet_of
        self.in_flight = in_flight

    async def one_operation(self, deadline_s: float = float("inf")) -> None:
        """A transfer or a snapshot; cancelled at `deadline_s` (the outcome then is what the transaction's
        state says: a commit request that may be in flight is unknown)."""
        if self.stream.random() < 0.6:
            src, dst = self._pick_accounts()
            await self.transfer(src, dst, self.stream.randint(1, 30), deadline_s=deadline_s)
        else:
            with trio.move_on_at(deadline_s):
                await self.snapshot()

    def _pick_accounts(self) -> tuple[bytes, bytes]:
        src = self.stream.choice(ACCOUNTS)
        cross = self.stream.random() < 0.8
        others = [a for a in ACCOUNTS if a != src and (self.tablet_of(a) != self.tablet_of(src)) == cross]
        return src, self.stream.choice(others or [a for a in ACCOUNTS if a != src])

    # ---- read-write transactions ---------------------------------------------------------

    async def open_accounts(self) -> bool:
        """The opening: every account at INITIAL, in one transaction; True once it committed."""
        for _ in range(OPEN_ATTEMPTS):
            committed = await self._run(lambda tx: self._open(tx), max_attempts=1)
            if committed:
                self.history.opened = True
                return True
            await trio.sleep(0.05)
        return False

    async def _open(self, tx: Transaction) -> list[tuple[bytes, bytes]]:
        writes = [(account, encode_value(INITIAL, tx.txn_id)) for account in ACCOUNTS]
        for account, value in writes:
            tx.put(account, value)
        return writes

    async def transfer(self, src: bytes, dst: bytes, amount: int, *, deadline_s: float = float("inf")) -> bool:
        async def body(tx: Transaction) -> list[tuple[bytes, bytes]]:
            balances = {}
            for account in (src, dst):
                value = await tx.get(account)
                balances[account] = decode_value(value)[0] if value is not None else None
            if balances[src] is None or balances[dst] is None:
                return []  # not opened (cannot happen after the opening committed): write nothing
            moved = min(amount, balances[src])
            if not moved:
                return []
            writes = [(src, encode_value(balances[src] - moved, tx.txn_id)),
                      (dst, encode_value(balances[dst] + moved, tx.txn_id))]
            for account, value in writes:
                tx.put(account, value)
            return writes

        return await self._run(body, max_attempts=MAX_ATTEMPTS, keys=(src, dst), deadline_s=deadline_s)

    async def _run(self, body, *, max_attempts: int, keys: tuple[bytes, ...] = ACCOUNTS,
                   deadline_s: float = float("inf")) -> bool:
        """Run `body` with `run_transaction`, recording every attempt; True if the last one committed."""
        client = self.sim.client
        assert client is not None
        attempts: list[tuple[Transaction, int, list[tuple[bytes, bytes | None]], list[tuple[bytes, bytes]]]] = []

        async def attempt(tx: Transaction) -> None:
            reads: list[tuple[bytes, bytes | None]] = []
            writes: list[tuple[bytes, bytes]] = []
            attempts.append((tx, now_ns(), reads, writes))
            writes.extend(await body(tx))
            reads.extend((row.key, row.value) for row in tx.reads)
            self.history.txn_tablets[tx.txn_id] = tuple(sorted({self.tablet_of(k) for k, _ in writes}))

        for key in keys:
            self.in_flight(key, 1)
        outcome = COMMITTED
        try:
            with trio.move_on_at(deadline_s) as scope:
                await client.run_transaction(attempt, max_attempts=max_attempts)
            if scope.cancelled_caught:
                state = attempts[-1][0].state if attempts else "aborted"
                outcome = {"committed": COMMITTED, "aborted": ABORTED}.get(state, UNKNOWN)
        except OutcomeUnknown:
            outcome = UNKNOWN
        except ClientError:
            outcome = ABORTED
        finally:
            for key in keys:
                self.in_flight(key, -1)
        end = now_ns()
        for number, (tx, start, reads, writes) in enumerate(attempts):
            last = number == len(attempts) - 1
            result = outcome if last else ABORTED
            commit_ts = tx.commit_ts if last and result == COMMITTED else None
            self.history.transfers.append(Transfer(tx.txn_id, start, end, result, commit_ts, reads, writes))
            if commit_ts is not None and writes:
                self.history.commit_stamps.append(commit_ts)
        return outcome == COMMITTED and bool(attempts)

    # ---- read-only snapshots -------------------------------------------------------------------

    async def snapshot(self) -> None:
        client = self.sim.client
        assert client is not None
        stamps = self.history.commit_stamps[-20:]
        seen = [read.ts for read in self.history.reads[-20:]]
        choice = self.stream.random()
        at: Timestamp | None = None
        stale: int | None = None
        if choice < 0.2 and stamps:
            at = self.stream.choice(stamps)  # exactly a commit: the transfer must be there in full
        elif choice < 0.4 and stamps:
            at = _just_below(self.stream.choice(stamps))  # just before one: not there at all
        elif choice < 0.5 and seen:
            at = self.stream.choice(seen)
        elif choice < 0.65:
            stale = self.stream.choice(STALE_CHOICES_NS)
        strong = at is None and stale is None
        start = now_ns()
        try:
            async with client.snapshot(at=at, stale=stale) as snap:
                rows = []
                for account in ACCOUNTS:
                    value = await snap.get(account)
                    rows.append((account, value, snap.reads[-1].version_ts if value is not None else None))
        except ClientError:
            return  # an incomplete snapshot says nothing
        self.history.reads.append(BankRead(snap.ts, start, now_ns(), strong, rows))


def _just_below(ts: Timestamp) -> Timestamp:
    if ts.logical > 0:
        return Timestamp(ts.wall, ts.logical - 1)
    return Timestamp(ts.wall - 1, (1 << 31) - 1)
