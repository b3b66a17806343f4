"""The list-append workload of `chronodb verify`: transactions appending unique integers to lists (Elle).

Role: client processes run read-write transactions (`client.run_transaction`)
of 1-3 micro-operations on a few keys spread over the tablets (so most
transactions span tablets: two-phase commit): an append of a fresh integer
(read the list, write it back one longer: a read-modify-write under the
transaction's locks; the read is recorded too, it is evidence) or a read of
a whole list; and read-only snapshots (`client.snapshot`) of some keys at
one timestamp: strong, at a past timestamp (a commit timestamp seen, or the
client's clock minus up to 3 s) or stale. Every attempt and snapshot is a
`TxnRecord` (tools/verify_txn.py); the checker is Elle's
(txn/sim/elle.py `check_list_append`): G0, G1a, G1b, G1c, G-single,
G2-item (and `-realtime`), incompatible orders, lost and duplicated
elements, timestamp order, and the snapshot rule for read-only ones.

`final_phase` runs after every fault healed: an append per tablet, then a
strong snapshot and a read-write transaction reading every key (any
acknowledged append missing there is lost); the liveness rule requires
every tablet to have committed a transaction after the heal.

Values are unique across the run (one counter: the harness is one trio
thread), drawn per attempt, so an aborted attempt's element is its own.
"""

from __future__ import annotations

import random
from typing import Any, Callable, Sequence

import attrs
import trio

from hlc import Timestamp
from tools.verify_txn import (
    AT, READ_ONLY, STALE, STRONG, TXN, TxnRecord, check_txn_liveness, decode_list, encode_list, to_elle_op,
)
from tools.verify_txn_run import Attempt, read_keys, run_recorded, snapshot_recorded
from tools.verify_workloads import Recorder, past, paced_worker
from txn.client import Client, Snapshot, Transaction
from txn.sim.elle import check_list_append
from txn.sim.elle_records import OK, Anomaly, Verdict

TXN_SHARE = 0.7  # the rest are read-only snapshots
APPEND_SHARE = 0.6  # of the micro-operations of a read-write transaction
MOPS_MAX = 3
READ_ONLY_MIX = ((STRONG, 50), (AT, 35), (STALE, 15))
MAX_ATTEMPTS = 4
FINAL_DEADLINE_S = 60.0  # the healed phase's liveness check: each tablet commits an append within this
FINAL_RETRY_S = 1.0  # between transactions that aborted MAX_ATTEMPTS times (leftover locks expire)
RECENT_COMMITS = 200  # snapshots at a past timestamp pick among the latest commit timestamps


def plan_mops(rng: random.Random, keys: Sequence[str]) -> list[tuple[str, str]]:
    """A read-write transaction's micro-operations: ("append" | "r", key), 1 to MOPS_MAX of them."""
    return [("append" if rng.random() < APPEND_SHARE else "r", rng.choice(keys)) for _ in range(rng.randint(1, MOPS_MAX))]


@attrs.define(eq=False)
class ListAppendWorkload:
    keys: list[str]
    recorder: Recorder
    seed: str
    counter: int = 0
    commit_stamps: list[Timestamp] = attrs.Factory(list)

    name = "list-append"

    async def setup(self, client: Client, groups: dict[str, list[str]]) -> None:
        """Nothing to prepare: a missing key is the empty list."""

    async def worker(self, client: Client, worker: int, workers: int, interval_s: float, stop_at_s: float) -> None:
        await paced_worker(self.run_one, client, random.Random(f"{self.seed}/worker/{worker}"), worker, workers,
                           interval_s, stop_at_s)

    async def run_one(self, client: Client, process: int, rng: random.Random) -> str:
        if rng.random() < TXN_SHARE:
            return (await self.transaction(client, process, plan_mops(rng, self.keys)))[-1].outcome
        mode = rng.choices([m for m, _ in READ_ONLY_MIX], [w for _, w in READ_ONLY_MIX])[0]
        keys = rng.sample(self.keys, rng.randint(1, min(MOPS_MAX, len(self.keys))))
        return (await self.snapshot(client, process, mode, keys, rng)).outcome

    async def transaction(self, client: Client, process: int, plan: Sequence[tuple[str, str]]) -> list[TxnRecord]:
        async def body(tx: Transaction, attempt: Attempt) -> None:
            for kind, key in plan:
                current = decode_list(await tx.get(key.encode()))
                attempt.mops.append(("r", key, current))
                if kind == "append":
                    self.counter += 1
                    tx.put(key.encode(), encode_list((*current, self.counter)))
                    attempt.mops.append(("append", key, self.counter))

        records = await run_recorded(client, self.recorder, process, TXN, body, max_attempts=MAX_ATTEMPTS)
        if records[-1].commit_ts is not None and records[-1].outcome == "ok":
            self.commit_stamps.append(records[-1].commit_ts)
        return records

    async def snapshot(self, client: Client, process: int, mode: str, keys: Sequence[str],
                       rng: random.Random | None = None) -> TxnRecord:
        at = stale_ns = None
        if mode == AT:
            assert rng is not None
            recent = self.commit_stamps[-RECENT_COMMITS:]
            at = rng.choice(recent) if recent and rng.random() < 0.5 else past(client, rng)
        elif mode == STALE:
            assert rng is not None
            stale_ns = rng.randint(1, 3000) * 1_000_000

        async def body(snap: Snapshot) -> tuple[list[tuple[Any, ...]], list]:
            return [("r", key, decode_list(value)) for key, value, _ in await read_keys(snap, keys)], []

        return await snapshot_recorded(client, self.recorder, process, READ_ONLY, mode, body, at=at, stale_ns=stale_ns)

    async def final_phase(self, client: Client, groups: dict[str, list[str]], say: Callable[[str], None]) -> None:
        rng = random.Random(f"{self.seed}/final")
        process = -1
        for tablet_id, keys in sorted(groups.items()):
            key = rng.choice(keys)
            tries: list[TxnRecord] = []
            with trio.move_on_after(FINAL_DEADLINE_S):
                while not tries or tries[-1].outcome != OK:
                    if tries:
                        await trio.sleep(FINAL_RETRY_S)  # leftover locks of abandoned transactions expire
                    tries += await self.transaction(client, process, [("append", key)])
            say(f"final: tablet {tablet_id}: append transaction {tries[-1].outcome} after {len(tries)} attempt(s)")
        strong = await self.snapshot(client, process, STRONG, self.keys)
        reads = await self.transaction(client, process, [("r", key) for key in self.keys])
        say(f"final: strong snapshot of every key {strong.outcome}, read-write transaction reading every key "
            f"{reads[-1].outcome}")

    def check(self, healed_ns: int, groups: dict[str, list[str]]) -> tuple[Verdict, list[Anomaly]]:
        history = self.recorder.history
        return check_list_append([to_elle_op(record) for record in history]), check_txn_liveness(history, healed_ns, groups)
