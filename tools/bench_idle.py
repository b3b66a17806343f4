"""`chronodb bench idle`: what an idle cluster costs, per node process.

Starts a fresh 3-node local cluster (real node processes, LevelDB, loopback
TCP), waits until every tablet has a serving leader, lets it settle, then
for `--seconds` reads each node's CPU time (user + system, from
/proc/PID/stat: the kernel's share of its sends and fsyncs counts) and the
Paxos log growth of every tablet (entries appended while nobody writes:
each is a synced write on every replica). Prints the share of one core per
node and its ratio to the goal of issue 17 (1% of a core per node), and the
node's wake-ups per second (voluntary context switches of its threads, from
/proc/PID/task/*/status): on these VMs an idle node's CPU is mostly its
number of wake-ups (txn/net/coarse_timer.py), and the count, unlike the CPU
share, hardly moves with the host's other load, so it is the figure to
compare variants by.

Linux only (/proc). No client runs during the measurement.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import statistics
import tempfile
import time

from tools.bench import positive_seconds, print_setup, tablet_count
from tools.errors import CliError
from tools.localcluster import LocalCluster

GOAL_CORE_SHARE = 0.01  # issue 17: an idle cluster costs < 1% of a core per node


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "idle", help="CPU per node of an idle 3-node local cluster",
        description="CPU time each node process of an idle 3-node local cluster takes (user + system, "
        "from /proc), and the Paxos log entries its tablets append with nobody writing.",
    )
    parser.add_argument("--seconds", type=positive_seconds, default=20.0, help="measurement window (default 20)")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after the cluster is healthy before measuring (default 5)")
    parser.add_argument("--tablets", type=tablet_count, default=3, help="tablets (default 3, one led by each node)")
    parser.add_argument("--security", choices=("insecure", "tls"), default="insecure", help="cluster security (default insecure)")
    parser.set_defaults(func=run)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (/proc/PID/stat fields 14 and 15)."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kb(pid: int) -> tuple[int, int] | None:
    """(RssAnon, RssFile) of a process in KiB, None if it is gone. RssAnon is what the process
    holds (heap, Python objects, buffers); RssFile counts the pages of the files it maps, there
    LevelDB's table files: clean page cache that grows with the data read (tools/probes.py)."""
    fields: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                name, _, rest = line.partition(":")
                if name in ("RssAnon", "RssFile"):
                    fields[name] = int(rest.split()[0])
    except (FileNotFoundError, ProcessLookupError):
        return None
    if len(fields) < 2:
        return None
    return fields["RssAnon"], fields["RssFile"]


def wake_ups(pid: int) -> int:
    """Voluntary context switches of all of a process's threads so far (each is a sleep that ended)."""
    total = 0
    for status in pathlib.Path(f"/proc/{pid}/task").glob("*/status"):
        try:
            lines = status.read_text().splitlines()
        except OSError:  # a thread that ended meanwhile
            continue
        total += sum(int(line.split()[1]) for line in lines if line.startswith("voluntary_ctxt_switches:"))
    return total


def log_ends(cluster: LocalCluster) -> dict[str, int]:
    """tablet id -> the highest last_index any replica reports."""
    ends: dict[str, int] = {}
    for reply in cluster.statuses().values():
        for status in reply.tablets if reply is not None else ():
            ends[status.id] = max(ends.get(status.id, 0), status.last_index)
    return ends


def run(args: argparse.Namespace) -> int:
    if not pathlib.Path("/proc/self/stat").exists():
        raise CliError("bench idle reads /proc/PID/stat: Linux only")
    if args.seconds <= 0 or args.settle < 0:
        raise CliError("--seconds must be positive and --settle not negative")
    print_setup(
        "idle", cluster=f"3 nodes, {args.tablets} tablets, 3 replicas, fresh LevelDB dirs, loopback TCP, {args.security}",
        window=f"{args.seconds:g}s after {args.settle:g}s of settling, no clients",
        measure="user+system CPU per node process (/proc/PID/stat); wake-ups (voluntary context switches, "
                "/proc/PID/task/*/status); Paxos log entries appended per tablet",
    )
    directory = pathlib.Path(tempfile.mkdtemp(prefix="chronodb-bench-idle-"))
    cluster = LocalCluster(directory / "data", tablets=args.tablets, insecure=args.security == "insecure")
    try:
        cluster.start_all()
        cluster.wait_healthy()
        time.sleep(args.settle)
        pids = {node_id: process.pid for node_id, process in cluster.processes.items()}
        ends_before = log_ends(cluster)
        cpu_before = {node_id: cpu_seconds(pid) for node_id, pid in pids.items()}
        wakes_before = {node_id: wake_ups(pid) for node_id, pid in pids.items()}
        started = time.monotonic()
        time.sleep(args.seconds)
        cpu_after = {node_id: cpu_seconds(pid) for node_id, pid in pids.items()}
        wakes_after = {node_id: wake_ups(pid) for node_id, pid in pids.items()}
        elapsed = time.monotonic() - started
        ends_after = log_ends(cluster)
    finally:
        cluster.stop_all()
        shutil.rmtree(directory, ignore_errors=True)
    shares = {node_id: (cpu_after[node_id] - cpu_before[node_id]) / elapsed for node_id in pids}
    wakes = {node_id: (wakes_after[node_id] - wakes_before[node_id]) / elapsed for node_id in pids}
    print(f"{'node':<6} {'core %':>8} {'x goal (1%)':>12} {'wake-ups/s':>11}")
    for node_id, share in sorted(shares.items()):
        print(f"{node_id:<6} {100 * share:>8.2f} {share / GOAL_CORE_SHARE:>12.1f} {wakes[node_id]:>11.1f}")
    mean = statistics.mean(shares.values())
    print(f"{'mean':<6} {100 * mean:>8.2f} {mean / GOAL_CORE_SHARE:>12.1f} {statistics.mean(wakes.values()):>11.1f}")
    entries = {t: ends_after.get(t, 0) - ends_before.get(t, 0) for t in sorted(ends_after)}
    print("log entries appended per tablet: " + ", ".join(f"{t} {n} ({n / elapsed:.2f}/s)" for t, n in entries.items()),
          flush=True)
    return 0
