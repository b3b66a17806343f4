"""`chronodb demo`: the main job `make demo` runs, narrated.

Starts a 3-node cluster (real node processes, TCP on 127.0.0.1, LevelDB) in a
new temporary directory, writes several versions of a few keys, reads them
back at past timestamps, kills the leader of one tablet with SIGKILL, shows
writes and reads continuing, restarts that node and shows it caught up, runs
a bank of cross-tablet transfers through the loss of a coordinator's leader
(tools/demo_bank.py), stops everything and prints a summary. `--keep` leaves the data directory behind;
`--clock` runs the clock-only demonstration instead.
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import tempfile
import time

import trio

from hlc import format_iso
from tools.demo_bank import bank_demo
from tools.demo_clock import clock_demo
from tools.errors import EXIT_OK, CliError
from tools.localcluster import LocalCluster
from txn.client import ClientError


def say(text: str = "") -> None:
    print(text, flush=True)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="narrated demonstration of a local cluster (what `make demo` runs)",
        description="Start a 3-node cluster in a temporary directory, write and read versions at past "
        "timestamps, kill a tablet leader with SIGKILL, keep going, restart it, run a bank of cross-tablet "
        "transfers while a coordinator's leader is killed, and summarize. Under a minute.",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    parser.add_argument("--clock", action="store_true", help="only the hybrid-logical-clock demonstration, no cluster")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.clock:
        trio.run(clock_demo)
        return EXIT_OK
    directory = pathlib.Path(tempfile.mkdtemp(prefix="chronodb-demo-"))
    cluster = LocalCluster(directory / "data")
    started = time.monotonic()
    try:
        cluster_demo(cluster)
    except (ClientError, AssertionError) as error:
        say(cluster.logs_tail())
        raise CliError(f"demo failed: {error}", 1) from None
    finally:
        cluster.stop_all()
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)
    say(f"\nThe demo took {time.monotonic() - started:.1f}s." + (f" Data kept in {directory}." if args.keep else ""))
    return EXIT_OK


def cluster_demo(cluster: LocalCluster) -> None:
    say(f"chronodb demo: a 3-node cluster in {cluster.data_dir}")
    say(f"  {len(cluster.config.tablets)} tablets, each replicated on 3 nodes by its own Paxos log; "
        f"max_offset {cluster.config.max_offset_ns // 1_000_000}ms (commit-wait per write)")
    cluster.start_all()
    t0 = time.monotonic()
    leaders = cluster.wait_healthy()
    say(f"  every tablet elected a leader in {time.monotonic() - t0:.1f}s: "
        + ", ".join(f"{tablet}->{leader}" for tablet, leader in leaders.items()))

    client = cluster.client()
    say("\n1. Several versions of a few keys; each write returns its commit timestamp:")
    history: dict[bytes, list] = {}
    for round_number, (alice, bob) in enumerate([(b"100", b"50"), (b"80", b"70"), (b"65", b"85")]):
        for key, value in ((b"alice", alice), (b"bob", bob)):
            result = client.put(key, value)
            history.setdefault(key, []).append((result.ts, value))
            say(f"   put {key.decode():<5} = {value.decode():<4} ts={result.ts}  ({format_iso(result.ts)})")
    deleted = client.delete(b"bob")
    say(f"   delete bob       ts={deleted.ts}  (a tombstone: older versions stay readable)")

    say("\n2. Reading back at past timestamps (a consistent snapshot at each):")
    for key, versions in history.items():
        for ts, value in versions:
            got = client.get(key, at=ts)
            assert got.value == value, (key, ts, got)
            say(f"   get {key.decode():<5} at {ts} -> {got.value.decode():<4} (version {got.version_ts}, served by {got.served_by})")
    now = client.get(b"bob")
    say(f"   get bob now -> {'not found' if now.value is None else now.value.decode()} (read at {now.ts})")
    snapshot_ts = history[b"bob"][1][0]
    say(f"   a scan at {snapshot_ts}: " + ", ".join(
        f"{row.key.decode()}={row.value.decode()}" for row in client.scan(b"a", b"c", at=snapshot_ts).rows))

    tablet = next(t for t in cluster.config.tablets if t.contains(b"alice"))
    victim = cluster.leaders()[tablet.id]
    say(f"\n3. Killing {victim}, the leader of tablet {tablet.id} (holds 'alice'), with SIGKILL.")
    cluster.kill(victim)
    t0 = time.monotonic()
    result = cluster.client(timeout_s=15).put(b"alice", b"60")
    say(f"   the next write to 'alice' committed after {time.monotonic() - t0:.1f}s at ts={result.ts} "
        f"(a new leader was elected)")
    writes_while_down = 0
    for i in range(10):
        cluster.client().put(b"dave", str(i).encode())
        writes_while_down += 1
    say(f"   {writes_while_down} more writes, and reads still work: alice={client.get(b'alice').value.decode()}, "
        f"dave={client.get(b'dave').value.decode()}")
    say("   new leaders: " + ", ".join(f"{t}->{l}" for t, l in cluster.leaders().items()))

    say(f"\n4. Restarting {victim}; it catches up from the others' logs:")
    cluster.start(victim)
    t0 = time.monotonic()
    caught_up = wait_caught_up(cluster, victim, tablet.id)
    say(f"   {victim} applied everything of {tablet.id} in {time.monotonic() - t0:.1f}s (applied index {caught_up})")
    local = cluster.client(home=victim).get(b"dave", stale_ns=200_000_000)
    say(f"   a read 200ms in the past served by {local.served_by}: dave={local.value.decode() if local.value else None}")

    bank_demo(cluster, say)

    say("\n7. Stopping the cluster.")
    cluster.stop_all()
    say("\nSummary:")
    say(f"  - {sum(len(v) for v in history.values()) + 2 + writes_while_down} writes, each acknowledged after a majority "
        "fsynced it and commit-wait passed; every read returned the version its timestamp asks for;")
    say(f"  - the leader of {tablet.id} was killed with SIGKILL; a new leader took over and nothing acknowledged was lost;")
    say(f"  - {victim} restarted and caught up from its peers;")
    say("  - cross-tablet transfers committed atomically by two-phase commit over Paxos groups, through the loss of a "
        "coordinator's leader, and every snapshot's total stayed the same.")


def wait_caught_up(cluster: LocalCluster, node_id: str, tablet_id: str, timeout_s: float = 20.0) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        statuses = cluster.statuses()
        leader = cluster.leaders().get(tablet_id)
        mine, theirs = statuses.get(node_id), statuses.get(leader) if leader else None
        if mine and theirs:
            applied = {s.id: s.applied_index for s in mine.tablets}.get(tablet_id, 0)
            target = {s.id: s.applied_index for s in theirs.tablets}.get(tablet_id, 0)
            if applied >= target > 0:
                return applied
        time.sleep(0.2)
    raise AssertionError(f"{node_id} did not catch up on {tablet_id} within {timeout_s}s")
