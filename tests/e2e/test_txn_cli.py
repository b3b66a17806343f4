"""`chronodb txn` and the Python transaction API against a real 3-node, 4-tablet cluster.

Tablets split the key space on the first byte (0x40, 0x80, 0xc0), so keys
starting with "0" and with "b" live on different tablets: a transaction
writing both commits by two-phase commit.
"""

from __future__ import annotations

import json
import subprocess
import sys

import trio

from hlc import Timestamp
from tests.e2e.harness import LocalCluster
from tests.e2e.test_metrics import cluster_total, scrape_all
from tools.localcluster import ROOT, cli_env
from txn.client import TxnAborted, open_client


def txn_json(cluster: LocalCluster, *statements: str) -> dict:
    result = cluster.cli("txn", *statements, "--json")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, lines  # ONE object
    return json.loads(lines[0])


def version_of(cluster: LocalCluster, key: str) -> tuple[str | None, str | None]:
    code, [row] = cluster.cli_json("get", key)
    return row["value"], row["version_ts"]


def test_cross_tablet_transfer_commits_atomically_at_one_timestamp(shared_cluster: LocalCluster) -> None:
    assert shared_cluster.cli("put", "0-acct", "100").returncode == 0
    assert shared_cluster.cli("put", "b-acct", "0").returncode == 0
    out = txn_json(shared_cluster, "get 0-acct", "get b-acct", "put 0-acct 70", "put b-acct 30")
    assert set(out) == {"ts", "time", "reads"}
    assert [(r["key"], r["value"]) for r in out["reads"]] == [("0-acct", "100"), ("b-acct", "0")]
    assert all(set(r) == {"key", "value", "version_ts"} and r["version_ts"] for r in out["reads"])
    assert out["time"].endswith("Z")
    # Both keys carry the transaction's one commit timestamp.
    assert version_of(shared_cluster, "0-acct") == ("70", out["ts"])
    assert version_of(shared_cluster, "b-acct") == ("30", out["ts"])
    # Before it, the old values at one earlier timestamp; at it, both new ones.
    before = Timestamp.parse(out["ts"])
    before_text = str(Timestamp(before.wall - 1, 0))
    past = txn_json(shared_cluster, "--read-only", "--at", before_text, "get 0-acct", "get b-acct")
    assert [r["value"] for r in past["reads"]] == ["100", "0"] and past["ts"] == before_text


def test_reads_see_the_transactions_own_writes(shared_cluster: LocalCluster) -> None:
    assert shared_cluster.cli("put", "ryw-a", "old").returncode == 0
    assert shared_cluster.cli("put", "ryw-c", "gone soon").returncode == 0
    out = txn_json(shared_cluster, "put ryw-a new", "put ryw-b 'two words'", "delete ryw-c", "get ryw-a", "get ryw-c",
                   "scan ryw- ryw.")
    reads = [(r["key"], r["value"], r["version_ts"]) for r in out["reads"]]
    assert reads == [
        ("ryw-a", "new", None), ("ryw-c", None, None),  # the gets
        ("ryw-a", "new", None), ("ryw-b", "two words", None),  # the scan: own writes merged, the delete hides ryw-c
    ]
    assert version_of(shared_cluster, "ryw-b") == ("two words", out["ts"])
    assert version_of(shared_cluster, "ryw-c")[0] is None


def test_read_only_at_a_timestamp_and_text_output(shared_cluster: LocalCluster) -> None:
    first = shared_cluster.cli_json("put", "ro-key", "v1")[1][0]["ts"]
    assert shared_cluster.cli("put", "ro-key", "v2").returncode == 0
    past = txn_json(shared_cluster, "--read-only", "--at", first, "get ro-key", "get ro-missing")
    assert past["ts"] == first
    assert past["reads"] == [{"key": "ro-key", "value": "v1", "version_ts": first},
                             {"key": "ro-missing", "value": None, "version_ts": None}]
    text = shared_cluster.cli("txn", "--read-only", "get ro-key", "get ro-missing")
    lines = text.stdout.splitlines()
    assert text.returncode == 0 and lines[:2] == ["ro-key\tv2", "ro-missing"] and lines[2].startswith("read at ")
    # A strong snapshot sees the latest write.
    now = txn_json(shared_cluster, "--read-only", "get ro-key")
    assert now["reads"][0]["value"] == "v2" and Timestamp.parse(now["ts"]) > Timestamp.parse(first)


def test_statements_from_stdin(shared_cluster: LocalCluster) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tools.cli", "txn", "--dir", str(shared_cluster.data_dir)],
        input="# a comment\nput stdin-k v\n\nget stdin-k\n", capture_output=True, text=True, env=cli_env(), cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "stdin-k\tv" and result.stdout.splitlines()[1].startswith("committed at ")


def test_usage_errors_exit_2_with_one_line(shared_cluster: LocalCluster) -> None:
    for args in (("txn", "frob x"), ("txn", "put only-key"), ("txn", "--read-only", "put a b"),
                 ("txn", "--at", "-1s", "get a"), ("txn", "scan a z 0")):
        result = shared_cluster.cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("chronodb: ")


async def test_concurrent_increments_across_tablets_all_land(shared_cluster: LocalCluster) -> None:
    """Read-modify-write transactions that conflict (wound-wait, aborts, retries) lose no update."""
    addresses = [node.address for node in shared_cluster.config.nodes]
    keys = [b"0-counter", b"b-counter"]
    workers, rounds = 4, 3

    async def increment(tx) -> None:
        for key in keys:
            value = await tx.get(key)
            tx.put(key, str(int(value or b"0") + 1).encode())

    async with open_client(addresses, cluster_id=shared_cluster.config.cluster_id, timeout_s=20.0, tls=shared_cluster.tls) as client:
        async def worker() -> None:
            for _ in range(rounds):
                await client.run_transaction(increment, max_attempts=50)

        async with trio.open_nursery() as nursery:
            for _ in range(workers):
                nursery.start_soon(worker)
        async with client.snapshot() as snap:
            values = [await snap.get(key) for key in keys]
    assert values == [str(workers * rounds).encode()] * 2


def client_for(cluster: LocalCluster, timeout_s: float = 20.0):
    return open_client([node.address for node in cluster.config.nodes], cluster_id=cluster.config.cluster_id,
                       timeout_s=timeout_s, tls=cluster.tls)


async def test_a_block_that_raises_aborts_and_frees_its_locks(shared_cluster: LocalCluster) -> None:
    async with client_for(shared_cluster) as client:
        await client.put(b"raise-k", b"before")
        try:
            async with client.transaction() as tx:
                await tx.get(b"raise-k")
                tx.put(b"raise-k", b"never")
                raise LookupError("the caller changed its mind")
        except LookupError:
            pass
        assert tx.state == "aborted" and tx.commit_ts is None
        # The shared lock is gone now, not at the 10 s idle expiry: a writer goes straight through.
        with trio.fail_after(5):
            async with client.transaction() as after:
                after.put(b"raise-k", b"after")
        assert (await client.get(b"raise-k")).value == b"after"


async def test_an_older_transaction_wounds_a_younger_one(shared_cluster: LocalCluster) -> None:
    async with client_for(shared_cluster) as client:
        older = (await client.node_timestamp()).now
        caught = None
        try:
            async with client.transaction() as young:  # a later priority: younger
                await young.get(b"wound-k")
                async with client.transaction(priority=older) as elder:
                    elder.put(b"wound-k", b"elder")  # needs the key exclusively: wounds young
                young.put(b"wound-k", b"young")
        except TxnAborted as error:
            caught = error
        assert caught is not None and caught.reason == "wounded" and caught.txn_id == young.txn_id
        assert elder.commit_ts is not None
        assert (await client.get(b"wound-k")).value == b"elder"


async def test_a_busy_clients_transactions_take_their_priority_without_a_timestamp_request(shared_cluster: LocalCluster) -> None:
    def asked() -> float:  # TimestampRequests the nodes have answered
        return cluster_total(scrape_all(shared_cluster), "chronodb_requests_total", kind="timestamp")

    async def bump(tx) -> None:
        priorities.append(tx.priority)
        tx.put(b"prio-k", b"%d" % (int(await tx.get(b"prio-k") or b"0") + 1))

    priorities: list[Timestamp] = []
    async with client_for(shared_cluster) as client:
        before = asked()  # (scraped first: a reading older than a second would be asked for)
        await client.put(b"prio-k", b"0")  # a reply: the client has a node's clock reading
        for _ in range(3):
            await client.run_transaction(bump)
        async with client.transaction() as tx:
            await bump(tx)
        assert asked() == before  # four transactions, no round trip for a priority
        later = (await client.node_timestamp()).now
        assert all(abs(p.wall - later.wall) < 5_000_000_000 for p in priorities), (priorities, later)  # node time
        # With no fresh reply (here: none counts as fresh) it asks a node, once per run_transaction.
        client.node_time_fresh_s = 0.0
        await trio.sleep(0.01)
        before = asked()
        await client.run_transaction(bump)
        assert asked() == before + 1
        assert (await client.get(b"prio-k")).value == b"5"


async def test_a_two_tablet_commit_sends_its_one_prepare_without_a_task_of_its_own(shared_cluster: LocalCluster) -> None:
    """The common cross-tablet commit (two tablets: one prepare, then the coordinator's commit
    request) sends its prepare from the committing task: no nursery and task for one request."""

    class Spawns(trio.abc.Instrument):
        def __init__(self) -> None:
            self.names: list[str] = []

        def task_spawned(self, task: trio.lowlevel.Task) -> None:
            self.names.append(task.name)

    async def transfer(tx) -> None:
        tx.put(b"0-spawn", b"x")
        tx.put(b"b-spawn", b"y")

    async with client_for(shared_cluster) as client:
        await client.run_transaction(transfer)  # the connections to both tablets' leaders are open now
        spawns = Spawns()
        trio.lowlevel.add_instrument(spawns)
        try:
            async with client.transaction() as tx:
                await transfer(tx)
        finally:
            trio.lowlevel.remove_instrument(spawns)
        assert tx.commit_ts is not None and tx.state == "committed"
        assert spawns.names == []
        snapshot = [(await client.get(key)).value for key in (b"0-spawn", b"b-spawn")]
        assert snapshot == [b"x", b"y"]


async def test_cli_exits_6_when_every_attempt_aborts(shared_cluster: LocalCluster) -> None:
    async with client_for(shared_cluster) as client:
        older = (await client.node_timestamp()).now
        async with client.transaction(priority=older) as holder:
            await holder.get(b"held-k")  # a shared lock held by an older transaction: a younger writer waits
            cli_done = trio.Event()

            async def stay_active() -> None:
                # A transaction silent for TXN_IDLE_NS (5 s) loses its locks, and the CLI (a new Python
                # process, two attempts) can take longer than that on a loaded machine: re-read meanwhile.
                while not cli_done.is_set():
                    with trio.move_on_after(1.0):
                        await cli_done.wait()
                    if not cli_done.is_set():
                        await holder.get(b"held-k")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(stay_active)
                result = await trio.to_thread.run_sync(lambda: shared_cluster.cli(
                    "txn", "put held-k v", "--max-attempts", "2", "--timeout", "1s"))
                cli_done.set()
        assert result.returncode == 6, result.stderr
        assert result.stderr.startswith("chronodb: aborted after 2 attempt(s)") and result.stderr.count("\n") == 1
        assert (await client.get(b"held-k")).value is None
