"""`chronodb bench txn`: read-write transactions against a 3-node local cluster.

Starts a fresh cluster (real node processes, LevelDB, commit-wait on; mutual
TLS, or plain TCP with `--security insecure`, as `bench kv`'s insecure rows) with
the default split (so "a..." and "k..." keys sit on different tablets led by
different nodes), then for each concurrency (default 1, 16, 64) runs
closed-loop clients for `--seconds` each doing one of:

- `transfer`: a cross-tablet transaction: read two accounts on two tablets,
  write both (2PC: one commit request to the coordinator's leader, which
  prepares the other tablet, decides without preparing itself, and then
  resolves the other);
- `rmw`: a single-tablet read-modify-write transaction (one-phase commit);
- `write`: a plain single-key write (the baseline) of an account on the
  transfers' first tablet: one tablet and one leader take every write, so
  its Paxos batches are larger than writes spread over the tablets get
  (`bench kv`).

Before measuring, it waits (up to 20 s) until every tablet is led by its
preferred leader, as `bench kv` does, and prints the leaders.
Prints transactions/s, p50/p99 latency, aborts (retried by
`run_transaction`), the ratios of each transaction kind to the plain
write measured in the same run, and, as `bench kv` does, the CPU a
committed transaction cost (node and client processes, from /proc), how
busy the whole machine was and its context switches per transaction
(tools/box_cpu.py), the largest node's anonymous resident memory
(RssAnon) when the figure began and ended, and the synced Paxos log
writes per transaction and per pass of the nodes' log-writer threads
(tools/log_writes.py). Accounts are drawn from `--accounts` per
tablet, so contention (and wound-wait) grows with the client count.
Under each transaction row, where a committed transaction's time went at
the client, as means: before the attempt that committed (its aborted
predecessors and their retry waits), that attempt's reads, and its commit
(from the last read to the reply: for a transfer the participant's
prepare, the coordinator's decision and what is left of commit-wait).
`--task-cpu` prints under each row the nodes' event loop CPU per committed
transaction, split by trio task, as `bench kv --task-cpu` does
(tools/task_cpu.py).
"""

from __future__ import annotations

import argparse
import multiprocessing
import pathlib
import random
import shutil
import tempfile
import time

import trio

from hlc import parse_duration_ns
from tools.bench import client_counts, duration_text, positive_int, positive_seconds, print_setup, print_speed_at_end
from tools.bench_kv import PREFERRED_LEADERS_WAIT_S, CpuWindow, cpu_note, task_cpu_snapshots, wait_preferred_leaders
from tools.errors import CliError
from tools.localcluster import LocalCluster
from tools.task_cpu import difference, report
from txn.client import ClientError, open_client
from txn.net.tls import client_tls_for_dir, is_insecure

# The default 4-tablet split (first bytes b, j, t) puts these on t1 and t3, led by different nodes;
# `run` checks that they land on different tablets (before 12-04 both started "acct-": one tablet,
# so every "transfer" was a one-phase commit).
LEFT, RIGHT = b"a-acct-", b"k-acct-"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "txn", help="read-write transactions (cross-tablet transfers, single-tablet RMW) vs plain writes",
        description="Closed-loop clients against a fresh 3-node local cluster: cross-tablet transfers (2PC), "
        "single-tablet read-modify-write transactions and plain writes, at several concurrencies. Each row: "
        "transactions/s, p50/p99 latency, retries, errors, its ratios to the plain write, the CPU a committed "
        "transaction cost (nodes and clients, from /proc), then how busy the whole machine was and its context "
        "switches per transaction (/proc/stat), the largest node's anonymous resident memory (RssAnon) "
        "when the figure began and ended, and the synced Paxos log writes per transaction and per pass of "
        "the nodes' log-writer threads (from their /metrics).",
    )
    parser.add_argument("--seconds", type=positive_seconds, default=5.0, help="per figure (default 5)")
    parser.add_argument("--concurrency", type=client_counts, default="1,16,64", help="comma-separated client counts (default 1,16,64)")
    parser.add_argument("--client-processes", type=positive_int, default=3, help="client OS processes (default 3)")
    parser.add_argument("--accounts", type=positive_int, default=1000, help="accounts per tablet (default 1000)")
    parser.add_argument("--max-offset", type=duration_text, default="10ms", help="cluster max_offset: commit-wait (default 10ms)")
    parser.add_argument("--security", choices=("tls", "insecure"), default="tls",
                        help="the cluster: tls, mutual TLS (default), or insecure, plain TCP (as `bench kv`'s "
                        "insecure rows and etcd in ../shared/bench/vs_etcd.sh run)")
    parser.add_argument("--task-cpu", action="store_true",
                        help="under each row, the nodes' event loop CPU per committed transaction by trio task "
                        "(CPU time read around every task step; tools/task_cpu.py)")
    parser.set_defaults(func=run)


async def client_loop(addresses, cluster_id, kind: str, concurrency: int, seconds: float, seed: int, accounts: int, tls) -> dict:
    latencies: list[float] = []
    errors = 0
    attempts = 0
    # Sums over committed transactions (`phases_line`): seconds before the attempt that committed
    # (earlier attempts, their aborts and retry waits), in its reads, and in its commit.
    phases = {"before_s": 0.0, "reads_s": 0.0, "commit_s": 0.0, "count": 0}
    async with open_client(addresses, cluster_id=cluster_id, timeout_s=10, tls=tls) as client:
        await client.refresh_map()
        stop_at = trio.current_time() + seconds
        cpu_started_s = time.process_time()

        async def worker(number: int) -> None:
            nonlocal errors, attempts
            stream = random.Random(f"{seed}/{number}")
            while trio.current_time() < stop_at:
                left = LEFT + b"%05d" % stream.randrange(accounts)
                right = RIGHT + b"%05d" % stream.randrange(accounts)
                other = LEFT + b"%05d" % stream.randrange(accounts)
                tries = 0
                marks = [0.0, 0.0]  # this transaction's latest attempt: when it began, when its reads ended

                async def transfer(tx) -> None:
                    nonlocal tries
                    tries += 1
                    marks[0] = trio.current_time()
                    a = int(await tx.get(left) or b"100")
                    b = int(await tx.get(right) or b"100")
                    marks[1] = trio.current_time()
                    tx.put(left, b"%d" % (a - 1))
                    tx.put(right, b"%d" % (b + 1))

                async def rmw(tx) -> None:
                    nonlocal tries
                    tries += 1
                    marks[0] = trio.current_time()
                    a = int(await tx.get(left) or b"100")
                    b = int(await tx.get(other) or b"100")
                    marks[1] = trio.current_time()
                    tx.put(left, b"%d" % (a - 1))
                    tx.put(other, b"%d" % (b + 1))

                start = trio.current_time()
                try:
                    if kind == "transfer":
                        await client.run_transaction(transfer, max_attempts=20)
                    elif kind == "rmw":
                        await client.run_transaction(rmw, max_attempts=20)
                    else:
                        tries = 1
                        await client.put(left, b"100")
                except ClientError:
                    errors += 1
                    continue
                attempts += tries
                end = trio.current_time()
                latencies.append(end - start)
                if kind != "write":
                    phases["before_s"] += marks[0] - start
                    phases["reads_s"] += marks[1] - marks[0]
                    phases["commit_s"] += end - marks[1]
                    phases["count"] += 1

        async with trio.open_nursery() as nursery:
            for number in range(concurrency):
                nursery.start_soon(worker, number)
        cpu_s = time.process_time() - cpu_started_s
    return {"latencies": latencies, "errors": errors, "attempts": attempts, "cpu_s": cpu_s, "phases": phases}


def client_process(addresses, cluster_id, kind, concurrency, seconds, seed, accounts, data_dir, queue) -> None:
    # The client certificate is loaded here: an SSL context does not cross a process boundary.
    tls = client_tls_for_dir(data_dir)
    queue.put(trio.run(client_loop, addresses, cluster_id, kind, concurrency, seconds, seed, accounts, tls))


def measure(cluster: LocalCluster, kind: str, concurrency: int, seconds: float, processes: int, accounts: int) -> dict:
    addresses = [n.address for n in cluster.config.nodes]
    processes = max(1, min(processes, concurrency))
    shares = [concurrency // processes + (1 if i < concurrency % processes else 0) for i in range(processes)]
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [
        context.Process(target=client_process, args=(addresses[i % len(addresses):] + addresses[:i % len(addresses)],
                                                     cluster.config.cluster_id, kind, share, seconds, i * 104729 + concurrency,
                                                     accounts, str(cluster.data_dir), queue))
        for i, share in enumerate(shares)
    ]
    window = CpuWindow.begin(cluster)
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=seconds + 120) for _ in workers]
    # Per committed transaction, as `bench kv` prints them (`cpu_note`).
    cpu = window.figures(sum(r["cpu_s"] for r in results), sum(len(r["latencies"]) for r in results))
    for worker in workers:
        worker.join()
    latencies = sorted(x for r in results for x in r["latencies"])
    done = len(latencies)
    return {
        **cpu,
        "ops": done / seconds,
        "operations": done,
        "p50_ms": 1e3 * latencies[done // 2] if latencies else float("nan"),
        "p99_ms": 1e3 * latencies[min(done - 1, int(done * 0.99))] if latencies else float("nan"),
        "errors": sum(r["errors"] for r in results),
        "retries": sum(r["attempts"] for r in results) - done,
        "phases": merge_phases([r["phases"] for r in results]),
    }


def merge_phases(parts: list[dict]) -> dict:
    """The client processes' phase sums (`client_loop`) added together."""
    return {name: sum(part[name] for part in parts) for name in ("before_s", "reads_s", "commit_s", "count")}


def phases_line(phases: dict) -> str | None:
    """Where a committed transaction's time went at the client, means in ms: `  per transaction: earlier
    attempts 2.10 ms, reads 12.60 ms, commit 36.30 ms`. Earlier attempts: before the attempt that
    committed (its aborted predecessors, their retry waits, and the start, the priority's); reads: that
    attempt's two reads, one after the other; commit: from its last read to the commit's reply. None if
    none committed."""
    count = phases["count"]
    if not count:
        return None
    mean_ms = {name: 1e3 * phases[name] / count for name in ("before_s", "reads_s", "commit_s")}
    return (f"  per transaction: earlier attempts {mean_ms['before_s']:.2f} ms, reads {mean_ms['reads_s']:.2f} ms, "
            f"commit {mean_ms['commit_s']:.2f} ms")


def run(args: argparse.Namespace) -> int:
    levels = [int(x) for x in args.concurrency.split(",")]
    max_offset_ns = parse_duration_ns(args.max_offset)
    directory = pathlib.Path(tempfile.mkdtemp(prefix="chronodb-bench-txn-"))
    cluster = LocalCluster(directory / "data", tablets=4, max_offset_ns=max_offset_ns, insecure=args.security == "insecure",
                           task_cpu_dir=directory if args.task_cpu else None)
    try:
        print_setup(
            "txn", cluster="3 nodes, 4 tablets (default split), 3 replicas, fresh LevelDB dirs, loopback TCP, "
            # read back from the data directory the nodes start from, not from the flag
            + ("insecure (no TLS)" if is_insecure(cluster.data_dir) else "mutual TLS on"),
            max_offset=args.max_offset, duration=f"{args.seconds}s per figure",
            clients=f"closed loop, {args.client_processes} client processes, {args.accounts} accounts per tablet, "
                    "run_transaction with up to 20 attempts",
            concurrency=args.concurrency,
            workloads="transfer = read+write 2 keys on 2 tablets (2PC); rmw = read+write 2 keys on 1 tablet (one phase); "
                      "write = plain single-key put, all to the transfers' first tablet",
        )
        left, right = cluster.config.tablet_for_key(LEFT), cluster.config.tablet_for_key(RIGHT)
        if left.id == right.id:
            raise CliError(f"bench txn: {LEFT!r} and {RIGHT!r} fall on one tablet ({left.id}): no transfer would be cross-tablet")
        print(f"tablets:   transfers between {LEFT.decode()}* on {left.id} (preferred leader {left.preferred_leader}) "
              f"and {RIGHT.decode()}* on {right.id} ({right.preferred_leader}); rmw and write on {left.id}", flush=True)
        cluster.start_all()
        cluster.wait_healthy()
        # As bench kv: a node that lost an early election gets its tablets back about 2 s later;
        # measured meanwhile, the first figure would include that hand-over (and its aborts).
        leaders = wait_preferred_leaders(cluster, PREFERRED_LEADERS_WAIT_S)
        print("leaders:   " + ", ".join(f"{t} {n}" for t, n in sorted(leaders.items())), flush=True)
        print(f"{'workload':<10} {'clients':>7} {'txn/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'retries':>7} {'errors':>6}  "
              "vs write; CPU per transaction; the machine")
        baseline: dict[int, dict] = {}
        for kind in ("write", "rmw", "transfer"):
            for level in levels:
                task_cpu_before = task_cpu_snapshots(cluster) if args.task_cpu else {}
                figures = measure(cluster, kind, level, args.seconds, args.client_processes, args.accounts)
                if kind == "write":
                    baseline[level] = figures
                    ratio = ""
                else:
                    base = baseline[level]
                    ratio = (f"throughput {figures['ops'] / base['ops']:.2f}x, p50 {figures['p50_ms'] / base['p50_ms']:.2f}x"
                             if base["ops"] and base["p50_ms"] == base["p50_ms"] else "")
                notes = "; ".join(note for note in (ratio, cpu_note(figures)) if note)
                print(f"{kind:<10} {level:>7} {figures['ops']:>9,.0f} {figures['p50_ms']:>8.2f} {figures['p99_ms']:>8.2f} "
                      f"{figures['retries']:>7} {figures['errors']:>6}  {notes}", flush=True)
                phases = phases_line(figures["phases"]) if kind != "write" else None
                if phases:
                    print(phases, flush=True)
                if args.task_cpu:
                    spent = difference(task_cpu_before, task_cpu_snapshots(cluster))
                    print("\n".join(report(spent, figures["operations"])), flush=True)
    finally:
        cluster.stop_all()
        shutil.rmtree(directory, ignore_errors=True)
    print_speed_at_end()
    return 0
