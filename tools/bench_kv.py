"""`chronodb bench kv`: a 3-node local cluster under closed-loop clients.

Starts a fresh cluster (real node processes on 127.0.0.1, LevelDB, commit-wait
on with the cluster's max_offset), then for each concurrency (default 1, 16,
64) runs closed-loop clients for `--seconds` each doing one of: single-key
writes, strong reads, reads at a timestamp 5 s in the past. Prints throughput,
p50/p99 latency, and for writes the share of latency spent in commit-wait
after the Paxos round had finished (what overlapping did not hide).

Clients run in `--client-processes` OS processes, each a trio program with
`--clients-per-process` clients (default 1), each client with one
connection per node and "near" a different node (stale reads go to the
client's nearest replica). By default writes run from one process and
reads from three (`DEFAULT_PROCESSES`): as many as the load needs and no
more, since the processes share the 2 cores with the nodes. One process
is how etcd's load generator runs its 64 clients (../shared/bench), and
for writes it is enough: 62 us of client CPU a write at 5,151-5,307
writes/s, against 90 us and 4,861-4,912 in three processes (12-05, 64
clients, insecure, 3 alternated pairs), each of whose connections carries
a third of the requests, in smaller batches on both sides (the nodes too:
288-298 against 297-303 us a write). Reads need three: one Python process
tops out below what the cluster serves (12-05: 18,599-19,495 past reads/s
against 30,406-30,797, all of them at the one client's home node, the
machine half idle; 12-03: 9,500-14,500 against 15,218-19,298), where Go's
goroutines use both cores from one process. Until 12-05 every workload
ran in three, for the reads: on 12-03 one process with a client near each
node did 2,678-3,376 writes/s against 2,346-2,573 in three, and on 12-04
one process was within the noise for writes.
`--security tls,insecure` (the default) runs the whole set twice, on a
mutual-TLS cluster (rows named `<workload>/tls`) and on an --insecure one
(rows named by the bare workload), and prints each TLS figure's ratio to
the insecure one (the cost of TLS, same run). Each cluster's leaders are
printed before its figures. Keys are dealt evenly
over the tablets (with the default layout each node leads one).
`--key-order random` (the default) picks each operation's key uniformly
from the 1,000, as etcd's load generator does (../shared/bench); `walk`
steps each client through them in turn, as this benchmark did until
12-03. The walk flatters writes: clients whose writes finish together move
to the next tablet together, so each leader sees them arrive at once and
its Paxos batches double in size (0.28 against 0.62 Paxos turns per
write, 3,586 against 2,376 writes/s at 64 clients, one run each).
`--profile DIR` samples every node process with py-spy while each figure
runs and leaves a flame graph per node and figure in DIR, with the top
functions by self time in DIR/top.txt (tools/profiler.py); the samplers'
CPU is printed beside each figure, since it is taken from the same cores.
`--task-cpu` prints under each row the nodes' event loop CPU per operation
split by trio task (steps per operation, CPU per step), read from the
thread's CPU clock around every task step (tools/task_cpu.py).
Each row's notes give the CPU each operation cost (Linux: /proc): the
node processes' user + system CPU over the figure (client start-up
included) per operation and in cores, the client processes' own CPU per
operation, and the whole machine over the same window (tools/box_cpu.py):
how busy its cores were and its context switches per operation, which says
whether a figure was CPU-bound; last, the largest node process's anonymous
resident memory (RssAnon: not the LevelDB table files it maps, which grow
with the data) when the figure began and when it ended: a node whose
memory keeps growing over long figures one after another (`--concurrency
64,64,64 --seconds 150`), past what its LevelDB caches take, leaks. On a
machine whose speed drifts between minutes, CPU per
operation compares two builds better than operations per second; at low
load it is mostly the idle cluster's own cost (`chronodb bench idle`).
For scale, quoted in the issue: a 3-member etcd cluster on a
2-core machine takes about 3,000 writes/s and 7,500 serializable reads/s at
64 clients.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import multiprocessing
import pathlib
import random
import shutil
import statistics
import tempfile
import time
from typing import Iterator, Sequence

import attrs
import trio

from hlc import parse_duration_ns
from tools.bench import (
    client_counts, duration_text, positive_int, positive_seconds, print_setup, print_speed_at_end, tablet_count,
)
from tools.bench_idle import cpu_seconds, rss_kb
from tools.box_cpu import BoxStat, box_note, read_box
from tools.errors import CliError
from tools.localcluster import LocalCluster
from tools.log_writes import LogWrites
from tools.log_writes import note as log_writes_note
from tools.profiler import Profiler, open_profiler
from tools.task_cpu import difference, report, request_snapshots
from txn.api import TabletInfo
from txn.client import ClientError, open_client
from txn.net.tls import client_tls_for_dir

KEYS = 1000
KEY_ORDERS = ("random", "walk")
KEY_ORDER_TEXT = {"random": "uniformly random (as etcd's load generator)", "walk": "the client's next in turn"}
WORKLOADS = ("write", "strong-read", "past-read")
# A row of the mutual-TLS cluster is named <workload>/tls; the --insecure cluster's rows
# carry the bare workload name (the setup etcd is compared in: ../shared/bench/vs_etcd.sh
# takes rows that begin with the bare name).
TLS_SUFFIX = "/tls"
PREFERRED_LEADERS_WAIT_S = 20.0
# Client processes per workload unless --client-processes says (module docstring): writes from
# one, as etcd's load generator; reads from three, which one Python process cannot issue.
DEFAULT_PROCESSES = {"write": 1, "strong-read": 3, "past-read": 3}


def client_processes(kind: str, requested: int | None) -> int:
    """The client processes a figure of `kind` runs in: `--client-processes` if given, else its default."""
    return requested if requested is not None else DEFAULT_PROCESSES[kind]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "kv", help="writes and reads against a 3-node local cluster",
        description="Closed-loop clients against a fresh 3-node local cluster: single-key writes, "
        "strong reads and reads 5s in the past, at several concurrencies. Each row: ops/s, p50/p99 latency, "
        "errors, and the CPU an operation cost (nodes and clients, from /proc; at low load mostly the idle "
        "cluster's own cost), then how busy the whole machine was and its context switches per operation "
        "(/proc/stat: at 100% the figure is CPU-bound) and the largest node's anonymous resident memory "
        "(RssAnon) when the figure began and ended, and the synced Paxos log writes per operation and per "
        "pass of the nodes' log-writer threads (from their /metrics). Under a row with errors: how many of "
        "each kind, with the first one's text.",
    )
    parser.add_argument("--seconds", type=positive_seconds, default=5.0, help="per figure (default 5)")
    parser.add_argument("--concurrency", type=client_counts, default="1,16,64", help="comma-separated client counts (default 1,16,64)")
    parser.add_argument("--client-processes", type=positive_int, default=None,
                        help="client OS processes for every workload (default: 1 for writes, as etcd's load "
                        "generator runs, and 3 for reads, which one Python process cannot issue fast enough)")
    parser.add_argument("--clients-per-process", type=positive_int, default=1,
                        help="client objects per process, each with its own connections and near another node "
                        "(default 1)")
    parser.add_argument("--max-offset", type=duration_text, default="10ms", help="cluster max_offset: commit-wait per write (default 10ms)")
    parser.add_argument("--tablets", type=tablet_count, default=3, help="tablets (default 3, one led by each node)")
    parser.add_argument("--key-order", choices=KEY_ORDERS, default="random",
                        help="each operation's key: random, uniform over the 1,000 keys, as etcd's load generator "
                        "(default); walk, each client through the keys in turn (this benchmark's figures before 12-03)")
    parser.add_argument("--workloads", default=",".join(WORKLOADS),
                        help=f"comma-separated, from {', '.join(WORKLOADS)} (default all; without past-read "
                        "the 5 s wait before the figures is skipped)")
    parser.add_argument("--security", default="tls,insecure",
                        help="clusters to run, in order: tls, insecure or both (default tls,insecure: TLS's cost); "
                        "the TLS cluster's rows are named <workload>/tls")
    parser.add_argument("--profile", metavar="DIR",
                        help="sample every node with py-spy while each figure runs: DIR/<node>-<security>-<workload>"
                        "-c<clients>.svg flame graphs and DIR/top.txt, the top functions by self time (needs py-spy "
                        "and ptrace permission; the samplers' CPU lowers the figures)")
    parser.add_argument("--profile-rate", type=int, default=100, metavar="HZ",
                        help="py-spy samples per second and node with --profile (default 100)")
    parser.add_argument("--task-cpu", action="store_true",
                        help="under each row, the nodes' event loop CPU per operation by trio task (CPU time read "
                        "around every task step, not samples: exact where py-spy counts a preempted thread as busy; "
                        "tools/task_cpu.py)")
    parser.set_defaults(func=run)


def bench_keys(tablets: Sequence[TabletInfo], count: int) -> list[bytes]:
    """`count` keys dealt round-robin over the tablets, so every tablet (and
    with the default layout every node, as some tablet's leader) takes an
    equal share: key i is the start of tablet i mod n, then "bench-<i>"."""
    ordered = sorted(tablets, key=lambda t: t.start)
    keys = []
    for i in range(count):
        tablet = ordered[i % len(ordered)]
        key = tablet.start + b"bench-%05d" % i
        if tablet.end is not None and key >= tablet.end:  # a first tablet that ends before "bench"
            key = tablet.start + b"\x00bench-%05d" % i
        keys.append(key)
    return keys


def key_indexes(key_order: str, start: int) -> Iterator[int]:
    """One client's key indexes, one per operation: `random`, uniform over KEYS from a generator
    seeded with `start` (the same every run); `walk`, start, start + 1, ... modulo KEYS."""
    if key_order == "random":
        choose = random.Random(start).randrange
        while True:
            yield choose(KEYS)
    for i in itertools.count(start):
        yield i % KEYS


async def client_loop(address_orders, cluster_id, kind: str, concurrency: int, seconds: float, offset: int,
                      data_dir: str, key_order: str = "random") -> dict:
    """`concurrency` closed-loop workers, dealt in turn over one client per entry of `address_orders`
    (each client "near" the first node of its order: its stale reads go there)."""
    latencies: list[float] = []
    commit_waits: list[int] = []
    errors = 0
    error_kinds: dict[str, list] = {}  # kind -> [count, the first one's text]
    past_ns = 5_000_000_000
    tls = client_tls_for_dir(data_dir)
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(open_client(order, cluster_id=cluster_id, timeout_s=10, tls=tls))
                   for order in address_orders]
        for client in clients:
            await client.refresh_map()
        keys = bench_keys(clients[0].tablets, KEYS)
        stop_at = trio.current_time() + seconds
        cpu_started_s = time.process_time()

        async def worker(number: int) -> None:
            nonlocal errors
            client = clients[number % len(clients)]
            indexes = key_indexes(key_order, number * 7919 + offset)
            while trio.current_time() < stop_at:
                key = keys[next(indexes)]
                start = trio.current_time()
                try:
                    if kind == "write":
                        result = await client.put(key, b"x" * 32)
                        commit_waits.append(result.commit_wait_ns)
                    elif kind == "strong-read":
                        await client.get(key)
                    else:
                        await client.get(key, stale_ns=past_ns)
                except ClientError as error:
                    errors += 1
                    error_kinds.setdefault(type(error).__name__, [0, str(error)])[0] += 1
                    continue
                latencies.append(trio.current_time() - start)

        async with trio.open_nursery() as nursery:
            for number in range(concurrency):
                nursery.start_soon(worker, number)
        cpu_s = time.process_time() - cpu_started_s
    return {"latencies": latencies, "commit_waits": commit_waits, "errors": errors, "error_kinds": error_kinds,
            "cpu_s": cpu_s}


def merge_error_kinds(parts: Sequence[dict[str, list]]) -> dict[str, list]:
    """The client processes' error kinds together: counts added, the first text kept."""
    merged: dict[str, list] = {}
    for part in parts:
        for kind, (count, text) in part.items():
            merged.setdefault(kind, [0, text])[0] += count
    return merged


def error_line(kinds: dict[str, list], text_chars: int = 160) -> str:
    """The line under a row with errors: each kind, most frequent first, with the first one's text."""
    shown = [f"{kind} {count} (first: {text[:text_chars]!r})"
             for kind, (count, text) in sorted(kinds.items(), key=lambda item: (-item[1][0], item[0]))]
    return "  errors: " + "; ".join(shown)


def nodes_cpu_s(cluster: LocalCluster) -> float | None:
    """User + system CPU seconds of the cluster's node processes so far; None without /proc."""
    try:
        return sum(cpu_seconds(process.pid) for process in cluster.processes.values())
    except (OSError, ValueError, IndexError):
        return None


def largest_node_rss(cluster: LocalCluster) -> int | None:
    """The anonymous resident memory (RssAnon: what it holds, not the LevelDB table files it maps)
    of the cluster's largest node process now, in bytes; None without /proc or with a node gone."""
    sizes = [rss_kb(process.pid) for process in cluster.processes.values()]
    if not sizes or any(size is None for size in sizes):
        return None
    return 1024 * max(size[0] for size in sizes if size is not None)


@attrs.frozen
class CpuWindow:
    """The nodes' CPU, memory and synced log writes and the machine's counters when a figure's
    clients start (`begin`); `figures` reads them again when the clients are done and gives what
    `cpu_note` prints."""

    cluster: LocalCluster
    nodes_s: float | None
    box: BoxStat | None
    started_s: float
    node_rss: int | None = None
    log_writes: LogWrites | None = None

    @classmethod
    def begin(cls, cluster: LocalCluster) -> "CpuWindow":
        log_writes = LogWrites.read(cluster)
        return cls(cluster, nodes_cpu_s(cluster), read_box(), time.monotonic(), largest_node_rss(cluster), log_writes)

    def figures(self, clients_cpu_s: float, operations: int) -> dict:
        """Per operation: the node processes' CPU (and in cores), the clients' own (`clients_cpu_s`,
        summed over their processes), and the whole machine (client processes' start-up included)."""
        nodes_after_s, box_after, elapsed_s = nodes_cpu_s(self.cluster), read_box(), time.monotonic() - self.started_s
        nodes_s = None if self.nodes_s is None or nodes_after_s is None else nodes_after_s - self.nodes_s
        rss_after = largest_node_rss(self.cluster)
        log_writes = log_writes_note(self.log_writes, LogWrites.read(self.cluster), operations)
        return {
            "node_cpu_us_per_op": 1e6 * nodes_s / operations if nodes_s is not None and operations else None,
            "node_cores": nodes_s / elapsed_s if nodes_s is not None else None,
            "client_cpu_us_per_op": 1e6 * clients_cpu_s / operations if operations else None,
            "box": box_note(self.box, box_after, operations),
            "node_rss": None if self.node_rss is None or rss_after is None else (self.node_rss, rss_after),
            "log_writes": log_writes,
        }


def client_process(address_orders, cluster_id, kind, concurrency, seconds, offset, data_dir, key_order, queue) -> None:
    queue.put(trio.run(client_loop, address_orders, cluster_id, kind, concurrency, seconds, offset, data_dir, key_order))


def homes(addresses: list, processes: int, clients: int) -> list[list[list]]:
    """Per client process, the address order of each of its clients: the k-th client of the whole
    run is "near" node k mod n (its first address), as clients of a real deployment would be
    (stale reads go there)."""
    return [[addresses[k % len(addresses):] + addresses[:k % len(addresses)]
             for k in range(p * clients, (p + 1) * clients)] for p in range(processes)]


def measure(cluster: LocalCluster, kind: str, concurrency: int, seconds: float, processes: int,
            key_order: str = "random", clients: int = 1) -> dict:
    addresses = [n.address for n in cluster.config.nodes]
    processes = max(1, min(processes, concurrency))
    shares = [concurrency // processes + (1 if i < concurrency % processes else 0) for i in range(processes)]
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [
        context.Process(target=client_process, args=(orders[:max(1, min(clients, share))], cluster.config.cluster_id,
                                                     kind, share, seconds, i * 104729, str(cluster.data_dir),
                                                     key_order, queue))
        for i, (share, orders) in enumerate(zip(shares, homes(addresses, processes, clients)))
    ]
    window = CpuWindow.begin(cluster)
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=seconds + 60) for _ in workers]
    cpu = window.figures(sum(r["cpu_s"] for r in results), sum(len(r["latencies"]) for r in results))
    for worker in workers:
        worker.join()
    latencies = sorted(x for r in results for x in r["latencies"])
    waits = [x for r in results for x in r["commit_waits"]]
    return {
        **cpu,
        "client_processes": processes,
        "ops": len(latencies) / seconds,
        "operations": len(latencies),
        "p50_ms": 1e3 * latencies[len(latencies) // 2] if latencies else float("nan"),
        "p99_ms": 1e3 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] if latencies else float("nan"),
        "errors": sum(r["errors"] for r in results),
        "error_kinds": merge_error_kinds([r["error_kinds"] for r in results]),
        "commit_wait_ms": statistics.mean(waits) / 1e6 if waits else 0.0,
        "mean_ms": 1e3 * statistics.mean(latencies) if latencies else float("nan"),
    }


def cpu_note(figures: dict) -> str:
    """`CPU/op: nodes 405 us (1.33 cores), clients 95 us (3 processes); box 94% busy (75% user, 19% system),
    6.3 context switches/op; largest node's RssAnon 81 -> 83 MiB; log writes 0.38/op, 1.42 a pass`
    (nodes: n/a without /proc, and no box or RSS part; the client processes' count where the figures
    give it, as `measure`'s do; the log writes where the nodes' /metrics could be read,
    tools/log_writes.py)."""
    if figures["node_cpu_us_per_op"] is None:
        nodes = "n/a"
    else:
        nodes = f"{figures['node_cpu_us_per_op']:.0f} us ({figures['node_cores']:.2f} cores)"
    clients = "n/a" if figures["client_cpu_us_per_op"] is None else f"{figures['client_cpu_us_per_op']:.0f} us"
    processes = figures.get("client_processes")
    if processes is not None:
        clients += f" ({processes} process{'es' if processes != 1 else ''})"
    box = figures.get("box") or ""
    rss = figures.get("node_rss")
    memory = "" if rss is None else f"; largest node's RssAnon {rss[0] / 2**20:.0f} -> {rss[1] / 2**20:.0f} MiB"
    log_writes = figures.get("log_writes") or ""
    return (f"CPU/op: nodes {nodes}, clients {clients}" + (f"; {box}" if box else "") + memory
            + (f"; {log_writes}" if log_writes else ""))


def run(args: argparse.Namespace) -> int:
    levels = [int(x) for x in args.concurrency.split(",")]
    max_offset_ns = parse_duration_ns(args.max_offset)
    modes = [mode.strip() for mode in args.security.split(",") if mode.strip()]
    if not modes or any(mode not in ("tls", "insecure") for mode in modes):
        raise CliError(f"--security takes tls, insecure or both, not {args.security!r}")
    args.workload_list = [name.strip() for name in args.workloads.split(",") if name.strip()]
    if not args.workload_list or any(name not in WORKLOADS for name in args.workload_list):
        raise CliError(f"--workloads takes names from {', '.join(WORKLOADS)}, not {args.workloads!r}")
    if (args.client_processes is not None and args.client_processes < 1) or args.clients_per_process < 1:
        raise CliError("--client-processes and --clients-per-process must be at least 1")
    profiler = open_profiler(args.profile, args.profile_rate) if args.profile else None
    print_setup(
        "kv", cluster=f"3 nodes, {args.tablets} tablets, 3 replicas, fresh LevelDB dirs, loopback TCP",
        max_offset=args.max_offset, duration=f"{args.seconds}s per figure",
        clients=f"closed loop; {layout_text(args.workload_list, args.client_processes)}; "
                f"{args.clients_per_process} client(s) a process, each near another node; "
                f"keys={KEYS} dealt evenly over the tablets, "
                f"each operation's key {KEY_ORDER_TEXT[args.key_order]}, value=32B",
        concurrency=args.concurrency, workloads=", ".join(args.workload_list),
        **({"profile": profiler.describe()} if profiler else {}),
    )
    results: dict[str, dict[tuple[str, int], dict]] = {}
    print(f"{'workload':<16} {'clients':>7} {'ops/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}  notes")
    for mode in modes:
        results[mode] = run_cluster(args, mode, levels, max_offset_ns, profiler)
    if len(results) == 2:
        print("TLS cost (tls / insecure, same run): throughput ratio, p50 ratio")
        for (kind, level), tls in results["tls"].items():
            plain = results["insecure"][(kind, level)]
            ops = tls["ops"] / plain["ops"] if plain["ops"] else float("nan")
            p50 = tls["p50_ms"] / plain["p50_ms"] if plain["p50_ms"] else float("nan")
            print(f"{kind + TLS_SUFFIX:<16} {level:>7}  throughput x{ops:.2f}  p50 x{p50:.2f}", flush=True)
    if profiler:
        print(profiler.report(), flush=True)
    print_speed_at_end()
    return 0


def layout_text(workloads: Sequence[str], requested: int | None) -> str:
    """`3 client processes` (`1 client process`), or per workload: `client processes: write 1, strong-read 3,
    past-read 3`."""
    if requested is not None:
        return f"{requested} client process{'es' if requested != 1 else ''}"
    return "client processes: " + ", ".join(f"{kind} {client_processes(kind, None)}" for kind in workloads)


def measure_profiled(cluster: LocalCluster, profiler: Profiler | None, figure: str, kind: str, level: int,
                     seconds: float, processes: int, key_order: str, clients: int = 1) -> tuple[dict, str]:
    """measure(), with every node sampled by py-spy meanwhile if profiling; and a note on the samplers' CPU."""
    if profiler is None:
        return measure(cluster, kind, level, seconds, processes, key_order, clients), ""
    pids = {node_id: process.pid for node_id, process in cluster.processes.items()}
    with profiler.sample(pids, figure) as profile:
        figures = measure(cluster, kind, level, seconds, processes, key_order, clients)
    return figures, f"py-spy {profile.cpu_s:.2f} CPU-s"


def task_cpu_snapshots(cluster: LocalCluster) -> dict[str, dict]:
    """Every node's next task CPU snapshot (`--task-cpu`); a node that writes none is one CliError line."""
    nodes = {node_id: (process.pid, cluster.task_cpu_file(node_id)) for node_id, process in cluster.processes.items()}
    try:
        return request_snapshots(nodes)
    except TimeoutError as error:
        raise CliError(f"--task-cpu: {error}") from None


def wait_preferred_leaders(cluster: LocalCluster, timeout_s: float) -> dict[str, str | None]:
    """Until every tablet is led by its preferred leader (cluster.toml spreads them over the nodes;
    a node that lost an early election gets its tablets handed back after keeping up for a while),
    or timeout_s; the leaders then."""
    preferred = {t.id: t.preferred_leader for t in cluster.config.tablets}
    deadline = time.monotonic() + timeout_s
    while (leaders := cluster.leaders()) != preferred and time.monotonic() < deadline:
        time.sleep(0.2)
    return leaders


def run_cluster(args: argparse.Namespace, mode: str, levels: list[int], max_offset_ns: int,
                profiler: Profiler | None) -> dict[tuple[str, int], dict]:
    directory = pathlib.Path(tempfile.mkdtemp(prefix="chronodb-bench-kv-"))
    cluster = LocalCluster(directory / "data", tablets=args.tablets, max_offset_ns=max_offset_ns,
                           insecure=(mode == "insecure"), task_cpu_dir=directory if args.task_cpu else None)
    results = {}
    try:
        cluster.start_all()
        cluster.wait_healthy()
        leaders = wait_preferred_leaders(cluster, PREFERRED_LEADERS_WAIT_S)
        # Where leadership sits decides how the load spreads over the nodes: say it.
        print(f"{mode} cluster: leaders " + ", ".join(f"{t} {n}" for t, n in sorted(leaders.items())), flush=True)
        # Fill every key once, then let 5 s pass so reads 5 s in the past see data.
        measure(cluster, "write", 16, 2.0, 1, key_order="walk")
        if "past-read" in args.workload_list:
            time.sleep(5.0)
        for kind in args.workload_list:
            for level in levels:
                task_cpu_before = task_cpu_snapshots(cluster) if args.task_cpu else {}
                figures, profile_note = measure_profiled(cluster, profiler, f"{mode}-{kind}-c{level}", kind, level,
                                                         args.seconds, client_processes(kind, args.client_processes),
                                                         args.key_order,
                                                         args.clients_per_process)
                results[(kind, level)] = figures
                notes = [cpu_note(figures)] + ([profile_note] if profile_note else [])
                if kind == "write":
                    share = figures["commit_wait_ms"] / figures["mean_ms"] if figures["mean_ms"] else 0
                    notes.insert(0, f"commit-wait after chosen: {figures['commit_wait_ms']:.2f} ms mean ({share:.0%} of latency)")
                note = "; ".join(notes)
                name = kind + (TLS_SUFFIX if mode == "tls" else "")
                print(f"{name:<16} {level:>7} {figures['ops']:>9,.0f} {figures['p50_ms']:>8.2f} "
                      f"{figures['p99_ms']:>8.2f} {figures['errors']:>6}  {note}", flush=True)
                if figures["errors"]:
                    print(error_line(figures["error_kinds"]), flush=True)
                if args.task_cpu:
                    spent = difference(task_cpu_before, task_cpu_snapshots(cluster))
                    print("\n".join(report(spent, figures["operations"])), flush=True)
    finally:
        cluster.stop_all()
        shutil.rmtree(directory, ignore_errors=True)
    return results
