"""The bank part of `chronodb demo`: cross-tablet transfers, a coordinator leader killed, totals intact.

Four accounts on four different tablets (the default split puts alice, bob,
judy and victor on t1..t4). Concurrent clients move money between them with
read-write transactions (`client.run_transaction`: two tablets per transfer,
so two-phase commit whose coordinator is the tablet of the account debited
first). In the middle of the second phase the leader of alice's tablet, the
coordinator of every transfer out of alice, is killed with SIGKILL. After
each phase a read-only snapshot (one timestamp across all tablets, taken
from a node's clock) shows the balances and their total, which must never
change; at the end every earlier snapshot is read again at its timestamp.
"""

from __future__ import annotations

import random
import time
from typing import Callable

import trio

from tools.localcluster import LocalCluster
from txn.client import ClientError, OutcomeUnknown, TxnAborted, open_client

ACCOUNTS = (b"alice", b"bob", b"judy", b"victor")
OPENING = 100
WORKERS = 4


def bank_demo(cluster: LocalCluster, say: Callable[[str], None]) -> None:
    tablets = {a: cluster.config.tablet_for_key(a).id for a in ACCOUNTS}
    say("\n6. A bank: four accounts on four tablets ("
        + ", ".join(f"{a.decode()} on {t}" for a, t in tablets.items()) + "), transfers as transactions.")
    trio.run(_bank, cluster, tablets, say)


async def _bank(cluster: LocalCluster, tablets: dict[bytes, str], say: Callable[[str], None]) -> None:
    addresses = [n.address for n in cluster.config.nodes]
    async with open_client(addresses, cluster_id=cluster.config.cluster_id, timeout_s=15, tls=cluster.tls) as client:
        async def open_accounts(tx) -> None:
            for account in ACCOUNTS:
                tx.put(account, b"%d" % OPENING)

        await client.run_transaction(open_accounts)
        snapshots = [await _snapshot(client, "opened", say)]

        say(f"   phase 1: {WORKERS} clients, 10 transfers each")
        counts = await _transfers(client, rounds=10, seed=1)
        say(f"   {_counts_text(counts)}")
        snapshots.append(await _snapshot(client, "after phase 1", say))

        victim = (await trio.to_thread.run_sync(cluster.leaders))[tablets[ACCOUNTS[0]]]
        say(f"   phase 2: the same, and {victim} (leader of {tablets[ACCOUNTS[0]]}, the coordinator of every transfer "
            "out of alice) is killed with SIGKILL after 0.5 s")
        async with trio.open_nursery() as nursery:
            async def kill_later() -> None:
                await trio.sleep(0.5)
                await trio.to_thread.run_sync(cluster.kill, victim)
                say(f"   ... {victim} killed")

            nursery.start_soon(kill_later)
            counts = await _transfers(client, rounds=10, seed=2)
        say(f"   {_counts_text(counts)}")
        snapshots.append(await _snapshot(client, "after phase 2", say))

        say(f"   phase 3: {victim} restarts; transfers go on")
        await trio.to_thread.run_sync(cluster.start, victim)
        counts = await _transfers(client, rounds=5, seed=3)
        say(f"   {_counts_text(counts)}")
        snapshots.append(await _snapshot(client, "after phase 3", say))

        say("   every snapshot read again at its own timestamp (a consistent cut of all four tablets):")
        for label, ts, balances in snapshots:
            again = await _balances(client, ts)
            assert again == balances, (label, ts, balances, again)
            say(f"     {label:<14} at {ts}: total {sum(again.values())} (unchanged: {again == balances})")


async def _transfers(client, *, rounds: int, seed: int) -> dict[str, int]:
    counts = {"committed": 0, "aborted": 0, "unknown": 0, "retries": 0}

    async def worker(number: int) -> None:
        stream = random.Random(f"demo/{seed}/{number}")
        for _ in range(rounds):
            source, target = stream.sample(ACCOUNTS, 2)
            amount = stream.randint(1, 20)
            tries = 0

            async def transfer(tx) -> None:
                nonlocal tries
                tries += 1
                balance = int(await tx.get(source))
                if balance < amount:
                    return  # not enough money: commit nothing
                tx.put(source, b"%d" % (balance - amount))
                tx.put(target, b"%d" % (int(await tx.get(target)) + amount))

            try:
                await client.run_transaction(transfer, max_attempts=10)
                counts["committed"] += 1
            except OutcomeUnknown:
                counts["unknown"] += 1
            except (TxnAborted, ClientError):
                counts["aborted"] += 1
            counts["retries"] += max(0, tries - 1)

    async with trio.open_nursery() as nursery:
        for number in range(WORKERS):
            nursery.start_soon(worker, number)
    return counts


def _counts_text(counts: dict[str, int]) -> str:
    return (f"{counts['committed']} committed, {counts['aborted']} gave up, {counts['unknown']} outcome unknown "
            f"(all-or-nothing either way), {counts['retries']} retries after wound-wait aborts")


async def _balances(client, ts) -> dict[bytes, int]:
    async with client.snapshot(at=ts) as snap:
        return {account: int(await snap.get(account)) for account in ACCOUNTS}


async def _snapshot(client, label: str, say: Callable[[str], None]):
    started = time.monotonic()
    async with client.snapshot() as snap:
        balances = {account: int(await snap.get(account)) for account in ACCOUNTS}
        ts = snap.ts
    total = sum(balances.values())
    assert total == OPENING * len(ACCOUNTS), (label, balances)
    say(f"   snapshot {label:<14} at {ts}: " + ", ".join(f"{a.decode()}={v}" for a, v in balances.items())
        + f"  total {total} ({1e3 * (time.monotonic() - started):.0f} ms)")
    return label, ts, balances
