"""`chronodb bench space`: a soak of overwrites; does LevelDB's size per tablet level off?

Starts a fresh 3-node local cluster (real node processes on 127.0.0.1, TLS,
LevelDB) with the given `gc_retention`, then overwrites `--keys` keys (spread
evenly over the tablets, random values of `--value-bytes`) as fast as
`--clients` closed-loop writers in `--client-processes` OS processes can, for
`--minutes`. Every `--report-every` seconds it prints, per tablet: the
LevelDB directory size of each replica (everything: MVCC data, Paxos log,
write-ahead log, manifest), the MVCC versions stored, the Paxos log length,
the GC horizon's lag behind safe time, the versions GC dropped, and the
compactions the space loop ran (txn/tablet/space.py) with the longest one
(that long, the node's loop did nothing else).

Verdict (`levels_off`): the size per tablet is the largest of its replicas'
at a report. It levels off when, for every tablet, the median size over the
last third of the reports is at most `LEVEL_RATIO` times the median over the
middle third (the first third is warm-up: the retention window filling).
Size growing with the number of writes would show about the ratio of the
writes at the two thirds' ends (printed next to it), 1.5 at a steady rate.
Medians, not maxima: the size is a sawtooth (write-ahead log and Paxos log
filling, then flushed, truncated and compacted), and with sub-MB tablets a
single report caught just before a flush moved a third's maximum by a third
(the maxima are printed too).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import pathlib
import random
import shutil
import statistics
import tempfile
import time

import trio

from hlc import parse_duration_ns
from hlc.durations import format_duration_ns
from paxos.types import PaxosConfig
from tools.bench import positive_int, print_setup, tablet_count
from tools.errors import EXIT_NEGATIVE, CliError
from tools.localcluster import LocalCluster
from tools.status import ask_node
from txn import api
from txn.client import ClientError, open_client
from txn.node.config import ClusterConfig, tablet_dir
from txn.net.tls import client_tls_for_dir

LEVEL_RATIO = 1.25
MB = 1_000_000


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "space", help="a soak of overwrites: does LevelDB's size per tablet level off?",
        description="Overwrite a fixed set of keys against a fresh 3-node local cluster with a short gc_retention; "
        "every interval print each tablet's LevelDB size, Paxos log length and GC horizon lag; "
        "at the end say whether the size leveled off.",
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to write (default 10)")
    parser.add_argument("--keys", type=int, default=1000, help="keys overwritten (default 1000)")
    parser.add_argument("--gc-retention", default="30s", help="the cluster's gc_retention (default 30s)")
    parser.add_argument("--report-every", type=float, default=30.0, help="seconds between reports (default 30)")
    parser.add_argument("--value-bytes", type=int, default=100, help="random value size (default 100)")
    parser.add_argument("--tablets", type=tablet_count, default=3, help="tablets (default 3, one led by each node)")
    parser.add_argument("--clients", type=positive_int, default=16, help="concurrent writers in all (default 16)")
    parser.add_argument("--client-processes", type=positive_int, default=2, help="client OS processes (default 2)")
    parser.set_defaults(func=run)


def spread_keys(config: ClusterConfig, count: int) -> list[bytes]:
    """`count` keys, dealt round-robin to the tablets: each tablet's start (b"0" for the first) + a number."""
    keys = []
    for number in range(count):
        tablet = config.tablets[number % len(config.tablets)]
        key = (tablet.start or b"0") + b"space-%06d" % number
        assert config.tablet_for_key(key).id == tablet.id, (key, tablet)
        keys.append(key)
    return keys


async def writer_loop(addresses, cluster_id: str, data_dir: str, keys: list[bytes], workers: int, offset: int,
                      value_bytes: int, ready, go, stop_at, written, errors) -> None:
    rng = random.Random(offset)
    async with open_client(addresses, cluster_id=cluster_id, timeout_s=10, tls=client_tls_for_dir(data_dir)) as client:
        await client.refresh_map()
        ready.release()
        await trio.to_thread.run_sync(go.wait)
        deadline = stop_at.value  # time.monotonic(): one clock for every process of this machine

        async def worker(number: int) -> None:
            index = offset + number
            while time.monotonic() < deadline:
                key = keys[index % len(keys)]
                index += workers * 7 + 1  # every key in turn, the workers apart
                try:
                    await client.put(key, rng.randbytes(value_bytes))
                except ClientError:
                    with errors.get_lock():
                        errors.value += 1
                    continue
                with written.get_lock():
                    written.value += 1

        async with trio.open_nursery() as nursery:
            for number in range(workers):
                nursery.start_soon(worker, number)


def writer_process(*args) -> None:
    trio.run(writer_loop, *args)


async def gather_tablets(config: ClusterConfig) -> dict[tuple[str, str], api.InspectTabletReply | None]:
    """(tablet, node) -> that replica's inspect reply, or None if it did not answer."""
    replies: dict[tuple[str, str], api.InspectTabletReply | None] = {}

    async def one(tablet_id: str, node_id: str) -> None:
        reply = await ask_node(config, node_id, api.InspectTabletRequest(tablet_id), timeout_s=5.0)
        replies[(tablet_id, node_id)] = reply if isinstance(reply, api.InspectTabletReply) else None

    async with trio.open_nursery() as nursery:
        for tablet in config.tablets:
            for node_id in tablet.replicas:
                nursery.start_soon(one, tablet.id, node_id)
    return replies


def directory_bytes(path: pathlib.Path) -> int:
    try:
        return sum(entry.stat().st_size for entry in os.scandir(path) if entry.is_file())
    except FileNotFoundError:
        return 0


def file_bytes(path: pathlib.Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


HEADER = (f"{'elapsed_s':>9} {'writes':>9} {'w/s':>6}  {'tablet':<6} {'leveldb_MB':>10}  {'per_replica_MB':<17}"
          f" {'versions':>8} {'log':>6} {'lag_s':>6} {'dropped':>9} {'compactions':>11} {'longest_ms':>10}")


def most(values, form: str = "{:,}") -> str:
    """The largest of the replicas' figures, or "?" when none answered."""
    values = list(values)
    return form.format(max(values)) if values else "?"


def report_rows(cluster: LocalCluster, replies, elapsed: float, writes: int, rate: float) -> dict[str, int]:
    """Print one report; returns each tablet's size (the largest of its replicas', bytes)."""
    sizes = {}
    for tablet in cluster.config.tablets:
        per_replica = [directory_bytes(tablet_dir(cluster.data_dir, node_id, tablet.id)) for node_id in tablet.replicas]
        sizes[tablet.id] = max(per_replica)
        answered = [r for r in (replies.get((tablet.id, n)) for n in tablet.replicas) if r is not None]
        lags = [(r.status.safe_ts.wall - r.status.gc_horizon.wall) / 1e9 for r in answered if r.status.gc_horizon.wall > 0]
        print(f"{elapsed:>9.1f} {writes:>9,} {rate:>6.0f}  {tablet.id:<6} {sizes[tablet.id] / MB:>10.2f}  "
              f"{'/'.join(f'{b / MB:.2f}' for b in per_replica):<17}"
              f" {most(r.versions for r in answered):>8} {most(r.status.last_index - r.status.first_index + 1 for r in answered):>6}"
              f" {most(lags, '{:.1f}') if lags else '-':>6} {most(r.gc_dropped for r in answered):>9}"
              f" {most(r.compactions for r in answered):>11} {most((r.compaction_max_ns / 1e6 for r in answered), '{:.1f}'):>10}",
              flush=True)
    return sizes


def levels_off(series: dict[str, list[int]], writes: list[int]) -> tuple[bool | None, list[str]]:
    """The verdict (module docstring) and the lines explaining it; None when there are fewer than 3 reports."""
    reports = len(writes)
    if reports < 3:
        return None, [f"verdict: undecided: {reports} reports, the rule needs at least 3"]
    middle, last = slice(reports // 3, 2 * reports // 3), slice(2 * reports // 3, reports)
    growth = writes[-1] / max(1, writes[middle][-1])
    before_middle = writes[middle.start - 1] if middle.start else 0
    middle_rate = (writes[middle][-1] - before_middle) / len(writes[middle])
    pace = (writes[-1] - writes[middle][-1]) / len(writes[last]) / max(1e-9, middle_rate)
    lines, ratios = [], []
    for tablet_id, sizes in series.items():
        ratio = statistics.median(sizes[last]) / max(1, statistics.median(sizes[middle]))
        ratios.append(ratio)
        lines.append(f"  {tablet_id}: median over the middle third {statistics.median(sizes[middle]) / MB:.2f} MB, "
                     f"over the last third {statistics.median(sizes[last]) / MB:.2f} MB: x{ratio:.2f} "
                     f"(largest {max(sizes[middle]) / MB:.2f} and {max(sizes[last]) / MB:.2f} MB: "
                     f"x{max(sizes[last]) / max(1, max(sizes[middle])):.2f})")
    ok = max(ratios) <= LEVEL_RATIO
    lines.append(f"rule: levels off when every tablet's median size over the last third of the reports is at most "
                 f"{LEVEL_RATIO}x its median over the middle third (writes grew x{growth:.2f} between those thirds' ends; "
                 f"the write rate in the last third was x{pace:.2f} the middle third's, and the versions inside the "
                 f"retention window grow with the rate)")
    lines.append(f"verdict: {'levels off' if ok else 'GROWS'} (largest ratio x{max(ratios):.2f})")
    return ok, lines


def run(args: argparse.Namespace) -> int:
    try:
        retention_ns = parse_duration_ns(args.gc_retention)
    except ValueError as error:
        raise CliError(str(error)) from None
    if retention_ns <= 0 or args.minutes <= 0 or args.report_every <= 0 or args.keys < 1 or args.clients < 1:
        raise CliError("--gc-retention, --minutes, --report-every, --keys and --clients must be positive")
    duration_s = args.minutes * 60
    directory = pathlib.Path(tempfile.mkdtemp(prefix="chronodb-bench-space-"))
    cluster = LocalCluster(directory / "data", tablets=args.tablets, gc_retention_ns=retention_ns)
    processes = max(1, min(args.client_processes, args.clients))
    paxos = PaxosConfig()  # what the nodes run with
    print_setup(
        "space", cluster=f"3 nodes, {args.tablets} tablets x 3 replicas, fresh LevelDB dirs, loopback TCP, TLS",
        cores=f"{os.cpu_count()} (load average {os.getloadavg()[0]:.2f} at start)",
        workload=f"overwrites of {args.keys} keys ({args.keys // args.tablets}+ per tablet), random {args.value_bytes}-byte values",
        clients=f"{args.clients} closed-loop writers in {processes} processes",
        gc=f"gc_retention {format_duration_ns(retention_ns)}; Paxos log truncated past {paxos.truncate_threshold_entries:,} "
        f"entries (keeps {paxos.truncate_keep_entries:,})",
        duration=f"{args.minutes:g} min, a report every {args.report_every:g}s",
    )
    writers: list[multiprocessing.process.BaseProcess] = []
    try:
        cluster.start_all()
        cluster.wait_healthy()
        keys = spread_keys(cluster.config, args.keys)
        context = multiprocessing.get_context("spawn")
        written, errors, stop_value = context.Value("q", 0), context.Value("q", 0), context.Value("d", 0.0)
        ready, go = context.Semaphore(0), context.Event()
        addresses = [n.address for n in cluster.config.nodes]
        shares = [args.clients // processes + (1 if i < args.clients % processes else 0) for i in range(processes)]
        writers += [context.Process(target=writer_process, args=(
            addresses[i % len(addresses):] + addresses[:i % len(addresses)], cluster.config.cluster_id,
            str(cluster.data_dir), keys, share, i * 1000, args.value_bytes, ready, go, stop_value, written, errors,
        )) for i, share in enumerate(shares)]
        for writer in writers:
            writer.start()
        for writer in writers:  # every writer connected: the clock starts with the first writes
            if not ready.acquire(timeout=120):
                raise CliError("the writer processes did not connect within 120s", EXIT_NEGATIVE)
        started = time.monotonic()
        stop_at = stop_value.value = started + duration_s
        go.set()
        print(HEADER, flush=True)
        series: dict[str, list[int]] = {tablet.id: [] for tablet in cluster.config.tablets}
        writes: list[int] = []
        number, last_writes, last_at = 0, 0, started
        while True:
            number += 1
            due = started + min(number * args.report_every, duration_s)
            time.sleep(max(0.0, due - time.monotonic()))
            now, count = time.monotonic(), written.value
            replies = trio.run(gather_tablets, cluster.config)
            for tablet_id, size in report_rows(cluster, replies, now - started, count,
                                               (count - last_writes) / max(1e-9, now - last_at)).items():
                series[tablet_id].append(size)
            writes.append(count)
            last_writes, last_at = count, now
            if due >= stop_at:
                break
        for writer in writers:
            writer.join(timeout=60)
        print(f"writes: {written.value:,} acknowledged, {errors.value:,} failed, "
              f"{written.value / duration_s:,.0f}/s; load average {os.getloadavg()[0]:.2f} at the end")
        info_logs = [file_bytes(tablet_dir(cluster.data_dir, node_id, tablet.id) / "LOG")
                     for tablet in cluster.config.tablets for node_id in tablet.replicas]
        print(f"LevelDB's info logs (the LOG files, counted in the sizes above; they grow until the node restarts): "
              f"largest {max(info_logs) / 1000:.1f} kB")
        _, lines = levels_off(series, writes)
        print("\n".join(lines), flush=True)
    finally:
        for writer in writers:  # only a failed run leaves one running (waiting for the start, say)
            if writer.is_alive():
                writer.kill()
                writer.join()
        cluster.stop_all()
        shutil.rmtree(directory, ignore_errors=True)
    return 0
