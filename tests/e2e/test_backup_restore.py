"""Backup and restore against real clusters: exact state at a timestamp, chains, failures.

A restored cluster's scan at TS must equal the source's scan at TS byte for
byte (keys, values, version timestamps); an incremental chain must restore
a timestamp between its backups; backups taken while transfers across
tablets run restore to states with the right total, each transfer all or
nothing (balances = opening + the transfers committed at or below TS); a
backup survives a SIGKILLed replica; a
corrupt file, a chain with a gap, a TS outside the chain and a non-empty
target are one-line errors with exit 2 and leave nothing behind.
"""

from __future__ import annotations

import json
import pathlib
import random
import signal
import subprocess
import sys
import time

import pytest
import trio

from hlc import Timestamp
from tests.e2e.harness import LocalCluster, run_cli
from tools.localcluster import ROOT, cli_env, free_ports
from txn.client import ClientError, OutcomeUnknown, TxnAborted, open_client
from txn.node.config import load_config

pytestmark = pytest.mark.e2e


def rows_at(cluster: LocalCluster, ts: Timestamp) -> list[tuple[bytes, bytes, Timestamp]]:
    result = cluster.client().scan(b"", None, at=ts)
    return [(row.key, row.value, row.version_ts) for row in result.rows]


def backup(cluster: LocalCluster, dest: pathlib.Path, *extra: str) -> dict:
    result = cluster.cli("backup", str(dest), "--json", *extra)
    assert result.returncode == 0, result.stderr
    assert "tablets 4/4" in result.stderr  # the progress line
    return json.loads(result.stdout)


def restore(sources: list[pathlib.Path], new_dir: pathlib.Path, *extra: str) -> subprocess.CompletedProcess:
    return run_cli(["restore", *map(str, sources), "--dir", str(new_dir), "--port", str(free_ports(1)[0]), *extra])


def started(data_dir: pathlib.Path) -> LocalCluster:
    """A LocalCluster over a directory `chronodb restore` made (what `chronodb up --dir` serves)."""
    cluster = LocalCluster.existing(data_dir)
    cluster.start_all()
    cluster.wait_healthy()
    return cluster


def write_keys(cluster: LocalCluster, prefix: str, count: int, value: str) -> Timestamp:
    client = cluster.client()
    last = None
    for i in range(count):
        key = f"{prefix}{i:03d}".encode()
        last = client.put(key, f"{value}-{i}".encode() + b"\x00\xff").ts
    return last


def test_restore_equals_source_at_backup_ts_and_chain_intermediate(make_cluster, tmp_path: pathlib.Path) -> None:
    source = make_cluster()
    client = source.client()
    # Keys on every tablet (the split points are b, j, t), overwrites, deletes, a zero byte in a key.
    for word in ("alice", "bob", "carol", "kate", "tom", "zed", b"\x00zero".decode(), "~tilde"):
        client.put(word.encode(), b"v1-" + word.encode())
    client.put(b"bob", b"v2-bob")
    client.delete(b"carol")
    write_keys(source, "k", 30, "first")
    full = backup(source, tmp_path / "full")
    full_ts = Timestamp.parse(full["ts"])
    assert full["since"] is None and full["versions"] >= 37

    # Changes after the full backup: overwrites, deletes, new keys.
    client.put(b"alice", b"v2-alice")
    client.delete(b"tom")
    middle_ts = write_keys(source, "m", 10, "middle")
    inc1 = backup(source, tmp_path / "inc1", "--since", str(tmp_path / "full"))
    inc1_ts = Timestamp.parse(inc1["ts"])
    client.put(b"alice", b"v3-alice")
    client.delete(b"m003")
    client.put(b"zed", b"v2-zed")
    inc2 = backup(source, tmp_path / "inc2", "--since", str(tmp_path / "inc1"))
    inc2_ts = Timestamp.parse(inc2["ts"])
    assert inc1["since"] == full["ts"] and inc2["since"] == inc1["ts"]
    assert inc2["versions"] == 3  # only what changed, tombstone included
    client.put(b"alice", b"after-every-backup")

    expected = {ts: rows_at(source, ts) for ts in (full_ts, middle_ts, inc1_ts, inc2_ts)}
    assert expected[full_ts] != expected[inc2_ts]

    # Naming the newest backup finds its parents; restore at its timestamp.
    result = restore([tmp_path / "inc2"], tmp_path / "r-last", "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["ts"] == str(inc2_ts) and summary["source_cluster_id"] == source.config.cluster_id
    assert summary["cluster_id"] != source.config.cluster_id
    # A timestamp between the full backup and inc1, from the chain.
    result = restore([tmp_path / "inc2"], tmp_path / "r-middle", "--at", str(middle_ts))
    assert result.returncode == 0, result.stderr
    result = restore([tmp_path / "full"], tmp_path / "r-full")
    assert result.returncode == 0, result.stderr
    source.stop_all()  # two clusters at a time on two cores

    for directory, ts in (("r-last", inc2_ts), ("r-middle", middle_ts), ("r-full", full_ts)):
        restored = started(tmp_path / directory)
        try:
            assert [t.start for t in restored.config.tablets] == [t.start for t in source.config.tablets]
            assert rows_at(restored, ts) == expected[ts], directory
            # The restored cluster takes writes above TS; it has no history below the full backup.
            assert restored.client().put(b"alice", b"new").ts > ts
            below = restored.cli("get", "alice", "--at", str(Timestamp(full_ts.wall - 1, 0)))
            assert below.returncode == 2 and "GC horizon" in below.stderr
        finally:
            restored.stop_all()


def test_backup_survives_a_killed_replica(make_cluster, tmp_path: pathlib.Path) -> None:
    source = make_cluster()
    write_keys(source, "a", 40, "x")
    write_keys(source, "p", 40, "y")
    ts = source.client().put(b"last", b"1").ts
    dest = tmp_path / "backup"
    process = subprocess.Popen(
        [sys.executable, "-m", "tools.cli", "backup", str(dest), "--dir", str(source.data_dir), "--json",
         "--page-bytes", "300", "--page-delay", "50ms"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(), cwd=ROOT)
    partial = list(tmp_path.glob(".backup.partial-*"))
    deadline = time.monotonic() + 30
    while not any(partial and partial[0].glob("tablets/*/*.cbor")):
        assert time.monotonic() < deadline and process.poll() is None, process.communicate()
        time.sleep(0.02)
        partial = list(tmp_path.glob(".backup.partial-*"))
    source.kill("n1", signal.SIGKILL)  # a replica of every tablet (3 nodes, 3 replicas each)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    summary = json.loads(out)
    backup_ts = Timestamp.parse(summary["ts"])
    assert backup_ts > ts
    manifest = json.loads((dest / "manifest.json").read_text())
    # t1 is read from n1 first (tablet i starts at its i-th replica); n1 died part way through it.
    assert manifest["tablets"][0]["served_by"][0] == "n1" and len(manifest["tablets"][0]["served_by"]) == 2
    assert all("n1" not in t["served_by"] for t in manifest["tablets"][1:])
    expected = rows_at(source, backup_ts)
    source.stop_all()
    result = restore([dest], tmp_path / "restored")
    assert result.returncode == 0, result.stderr
    restored = started(tmp_path / "restored")
    try:
        assert rows_at(restored, backup_ts) == expected
        assert len(expected) == 81
    finally:
        restored.stop_all()


def test_errors_are_one_line_exit_2_and_leave_nothing(shared_cluster: LocalCluster, tmp_path: pathlib.Path) -> None:
    cluster = shared_cluster
    write_keys(cluster, "e", 5, "v")
    backup(cluster, tmp_path / "full")
    cluster.client().put(b"e000", b"changed")
    backup(cluster, tmp_path / "inc1", "--since", str(tmp_path / "full"))
    cluster.client().put(b"e001", b"changed")
    backup(cluster, tmp_path / "inc2", "--since", str(tmp_path / "inc1"))

    def refused(sources, new_name: str, *extra: str) -> str:
        result = restore(sources, tmp_path / new_name, *extra)
        assert result.returncode == 2, (result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("chronodb: "), result.stderr
        if new_name != "busy":
            assert not (tmp_path / new_name).exists()
        else:
            assert [p.name for p in (tmp_path / new_name).iterdir()] == ["file"]
        assert not list(tmp_path.glob(f".{new_name}.restore-*"))
        return lines[0]

    # A timestamp outside the chain.
    assert "outside the backup chain" in refused([tmp_path / "inc2"], "r1", "--at", "1.0")
    # A non-empty target.
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    assert "not empty" in refused([tmp_path / "full"], "busy")
    # A corrupt chunk, then a missing one.
    chunk = sorted((tmp_path / "inc1").glob("tablets/*/*.cbor"))[0]
    original = chunk.read_bytes()
    chunk.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    assert "corrupt (sha256 mismatch)" in refused([tmp_path / "inc2"], "r2")
    chunk.unlink()
    assert "is missing" in refused([tmp_path / "inc2"], "r3")
    chunk.write_bytes(original)
    # A corrupt manifest.
    manifest = tmp_path / "full" / "manifest.json"
    text = manifest.read_text()
    manifest.write_text(text.replace('"ts"', '"ts" ', 1))
    assert "corrupt" in refused([tmp_path / "full"], "r4")
    manifest.write_text(text)
    # A gap: inc1 gone, inc2 names it as its parent; and full + inc2 given explicitly.
    (tmp_path / "inc1").rename(tmp_path / "elsewhere")
    assert "gap" in refused([tmp_path / "inc2"], "r5")
    assert "gap" in refused([tmp_path / "full", tmp_path / "inc2"], "r6")
    (tmp_path / "elsewhere").rename(tmp_path / "inc1")
    # With every piece back, the same restore works (offline; not started here).
    result = restore([tmp_path / "inc2"], tmp_path / "r7")
    assert result.returncode == 0, result.stderr


def test_backup_below_gc_horizon_names_it(make_cluster, tmp_path: pathlib.Path) -> None:
    cluster = make_cluster(gc_retention_ns=500_000_000)
    write_keys(cluster, "g", 3, "v")
    time.sleep(1.5)  # past the retention; GC runs at least every 0.25 s here
    before = time.time_ns() - 1_200_000_000
    result = cluster.cli("backup", str(tmp_path / "old"), "--at", f"{before}.0")
    assert result.returncode == 2, result.stderr
    assert "below the GC horizon" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "old").exists() and not list(tmp_path.glob(".old.partial-*"))


BANK_ACCOUNTS = (b"alice", b"david", b"mallory", b"zoe")  # one per tablet (splits b, j, t)
BANK_OPENING = 100


def test_backups_during_a_bank_workload_restore_to_all_or_nothing_states(make_cluster, tmp_path: pathlib.Path) -> None:
    """Transfers across tablets run while two backups (a full and an incremental) are
    taken; each restores to a state whose total is right and whose balances are exactly
    the opening balances plus the transfers committed at or below its timestamp."""
    source = make_cluster()
    committed: list[tuple[Timestamp, bytes, bytes, int]] = []  # commit ts, from, to, amount
    unknown: list[str] = []
    backups: dict[str, dict] = {}

    async def bank() -> None:
        async with open_client([n.address for n in source.config.nodes], cluster_id=source.config.cluster_id,
                               timeout_s=20.0, tls=source.tls) as client:
            async def open_accounts(tx) -> None:
                for account in BANK_ACCOUNTS:
                    tx.put(account, b"%d" % BANK_OPENING)
            await client.run_transaction(open_accounts)
            stop = trio.Event()

            async def worker(number: int) -> None:
                rng = random.Random(number)
                while not stop.is_set():
                    source_key, target_key = rng.sample(BANK_ACCOUNTS, 2)
                    amount = rng.randint(1, 10)

                    async def transfer(tx) -> bool:
                        balance = int(await tx.get(source_key))
                        if balance < amount:
                            return False  # nothing written
                        tx.put(source_key, b"%d" % (balance - amount))
                        tx.put(target_key, b"%d" % (int(await tx.get(target_key)) + amount))
                        return True

                    try:
                        async with client.transaction() as tx:
                            moved = await transfer(tx)
                        if moved:
                            assert tx.commit_ts is not None
                            committed.append((tx.commit_ts, source_key, target_key, amount))
                    except OutcomeUnknown as error:
                        unknown.append(str(error))
                    except (TxnAborted, ClientError):
                        pass  # not committed: nothing to account for

            async def take_backups() -> None:
                await trio.sleep(1.0)
                backups["full"] = await trio.to_thread.run_sync(backup, source, tmp_path / "full")
                await trio.sleep(1.0)
                backups["inc"] = await trio.to_thread.run_sync(
                    lambda: backup(source, tmp_path / "inc", "--since", str(tmp_path / "full")))
                await trio.sleep(0.5)
                stop.set()

            async with trio.open_nursery() as nursery:
                for number in range(4):
                    nursery.start_soon(worker, number)
                nursery.start_soon(take_backups)

    trio.run(bank)
    assert not unknown, unknown  # no faults here: every transfer's outcome is known
    stamps = {name: Timestamp.parse(summary["ts"]) for name, summary in backups.items()}
    expected = {}
    for name, ts in stamps.items():
        balances = dict.fromkeys(BANK_ACCOUNTS, BANK_OPENING)
        for commit_ts, source_key, target_key, amount in committed:
            if commit_ts <= ts:
                balances[source_key] -= amount
                balances[target_key] += amount
        expected[name] = balances
    assert sum(1 for c in committed if stamps["full"] < c[0] <= stamps["inc"]) > 0, "no transfer between the backups"
    source_rows = {name: rows_at(source, ts) for name, ts in stamps.items()}
    source.stop_all()

    for name, ts in stamps.items():
        result = restore([tmp_path / name], tmp_path / f"r-{name}")
        assert result.returncode == 0, result.stderr
        restored = started(tmp_path / f"r-{name}")
        try:
            assert rows_at(restored, ts) == source_rows[name], name
            balances = {key: int(value) for key, value, _ in rows_at(restored, ts)}
            assert sum(balances.values()) == BANK_OPENING * len(BANK_ACCOUNTS), (name, balances)
            assert balances == expected[name], (name, balances, expected[name])
        finally:
            restored.stop_all()
