"""`chronodb bench probes`: a normal client's writes and the nodes' memory under hostile probes (issue 16).

Starts a fresh local 3-node mutual-TLS cluster (tools/localcluster.py) in a
temporary directory (or `--dir`), and a normal client in its own OS process
(one client, sequential puts of 100-byte values over keys of every tablet,
through the real client library). It measures that client's write p50/p99
unloaded for `--seconds`, then runs each probe of tools/probes.py (`--probes`,
default all) while the client keeps writing, sampling every node's RssAnon and RssFile
every 0.25 s. Per probe it prints what the probe did, the client's writes,
p50/p99 and p50's ratio to the unloaded p50, each node's RSS before, peak and
growth (anonymous memory, and apart the mapped files: LevelDB maps its table
files, whose pages read count in VmRSS as reclaimable page cache), whether every node is alive and every tablet takes a write after,
the probe's own checks, and a verdict.

Verdict (the issue's bar): PASS when every node's anonymous RSS grew by at most
`RSS_GROWTH_MAX_MB` (150), the p50 ratio is at most `P50_RATIO_MAX` (3.0),
every node is alive, every tablet took a write afterwards and the probe's own
checks held; else FAIL naming what failed. Exit 1 if any probe failed. If
the nodes do not restart between probes, one line says why, the probes run
so far are summed up, and the exit is 1 (no traceback).

Invariants: every node process and the client process are stopped on exit,
on failure and on Ctrl-C (`finally`; nodes also die with this process, see
tools/localcluster.py); every wait has a deadline.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import pathlib
import shutil
import tempfile
import time
from multiprocessing.connection import Connection as Pipe
from typing import Callable

import attrs
import trio

from hlc import parse_duration_ns
from tools.bench import duration_text, positive_seconds, print_setup, tablet_count
from tools.errors import CliError
from tools.localcluster import LocalCluster
from tools.probes import (
    MIB, NORMAL_VALUE_BYTES, PROBES, Observed, ProbeScale, WriteLog, cluster_client, observe, scan_target,
    tablet_keys, write_steadily,
)

RSS_GROWTH_MAX_MB = 150.0
P50_RATIO_MAX = 3.0
WRITER_DEADLINE_S = 60.0  # for the normal client's process to start, answer or stop


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "probes", help="hostile probes against a 3-node local cluster, beside a normal client",
        description="A fresh 3-node TLS cluster under each hostile probe (connection floods, idle and half-sent "
        "connections, unread and unbounded scans, oversized writes, a follower catching up over max-size values, "
        "garbage on the port) while a normal client writes: its p50 against unloaded, and every node's RSS growth.",
    )
    parser.add_argument("--seconds", type=positive_seconds, default=10.0, help="unloaded measurement and each probe (default 10)")
    parser.add_argument("--probes", default=",".join(PROBES), help=f"comma-separated, from {', '.join(PROBES)} (default all)")
    parser.add_argument("--dir", default=None, help="cluster directory (default: a new temporary one, removed after)")
    parser.add_argument("--tablets", type=tablet_count, default=3, help="tablets (default 3, one led by each node)")
    parser.add_argument("--max-offset", type=duration_text, default="10ms", help="cluster max_offset (default 10ms)")
    parser.set_defaults(func=run)


# ------------------------------------------------------------------ the normal client's process


async def writer_main(data_dir: str, pipe: Pipe) -> None:
    """Write steadily; answer "start" (reset the log), "take" (send it) and "stop" on the pipe."""
    cluster = LocalCluster.existing(pathlib.Path(data_dir))
    log = WriteLog()
    async with cluster_client(cluster) as client:
        await client.refresh_map()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write_steadily, client, tablet_keys(cluster, b"normal/"), log)
            while not log.latencies_s:
                await trio.sleep(0.05)
            pipe.send("ready")
            while True:
                command = await trio.to_thread.run_sync(pipe.recv, abandon_on_cancel=True)
                if command == "start":
                    log.reset()
                    pipe.send("ok")
                elif command == "take":
                    pipe.send((log.latencies_s, log.errors[:3], len(log.errors)))
                else:
                    nursery.cancel_scope.cancel()
                    return


def writer_process(data_dir: str, pipe: Pipe) -> None:
    trio.run(writer_main, data_dir, pipe)


@attrs.frozen
class Writes:
    latencies_s: tuple[float, ...] = attrs.field(converter=tuple)
    errors: int
    first_errors: tuple[str, ...] = attrs.field(converter=tuple)

    def percentile_ms(self, fraction: float) -> float:
        ordered = sorted(self.latencies_s)
        if not ordered:
            return float("inf")
        return 1e3 * ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


class NormalWriter:
    """The normal client, in its own process so the attackers' CPU is not charged to its latency."""

    def __init__(self, cluster: LocalCluster) -> None:
        context = multiprocessing.get_context("spawn")
        self.pipe, child_end = context.Pipe()
        self.process = context.Process(target=writer_process, args=(str(cluster.data_dir), child_end), daemon=True)
        self.process.start()
        self._expect("ready")

    def _expect(self, what: str) -> object:
        if not self.pipe.poll(WRITER_DEADLINE_S):
            raise CliError(f"the normal client did not answer {what!r} within {WRITER_DEADLINE_S:g}s")
        return self.pipe.recv()

    def during(self, body: Callable[[], object]) -> tuple[object, Writes]:
        """Run body() while recording the writes; its result and the writes made meanwhile."""
        self.pipe.send("start")
        self._expect("ok")
        result = body()
        self.pipe.send("take")
        latencies, first_errors, errors = self._expect("take")  # type: ignore[misc]
        return result, Writes(latencies, errors, first_errors)

    def stop(self) -> None:
        try:
            self.pipe.send("stop")
        except (BrokenPipeError, OSError):
            pass
        self.process.join(timeout=10)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=10)


# ------------------------------------------------------------------ the run


def verdict(observed: Observed, writes: Writes, unloaded_p50_ms: float) -> list[str]:
    """What failed (empty: PASS)."""
    failed = []
    for node_id in sorted(observed.rss_peak_mb):
        growth = observed.rss_growth_mb(node_id)
        if growth > RSS_GROWTH_MAX_MB:
            failed.append(f"{node_id} anonymous RSS grew {growth:.0f} MB > {RSS_GROWTH_MAX_MB:g}")
    ratio = writes.percentile_ms(0.5) / unloaded_p50_ms
    if not ratio <= P50_RATIO_MAX:
        failed.append(f"p50 x{ratio:.2f} > {P50_RATIO_MAX:g}")
    if observed.dead:
        failed.append(f"dead: {', '.join(observed.dead)}")
    if observed.writes_after is not None:
        failed.append(f"writes after: {observed.writes_after}")
    failed.extend(f"check failed: {check}" for check in observed.result.failed_checks)
    return failed


def print_probe(observed: Observed, writes: Writes, unloaded_p50_ms: float, failed: list[str]) -> None:
    result = observed.result
    print(f"\nprobe {result.name}: {result.did}")
    ratio = writes.percentile_ms(0.5) / unloaded_p50_ms
    print(f"  normal client: {len(writes.latencies_s)} writes, {writes.errors} errors"
          f"{' (' + '; '.join(writes.first_errors) + ')' if writes.first_errors else ''}, "
          f"p50 {writes.percentile_ms(0.5):.1f} ms, p99 {writes.percentile_ms(0.99):.1f} ms, p50 x{ratio:.2f} of unloaded")
    print("  RSS MB, anonymous:  " + "   ".join(
        f"{n} {observed.rss_first_mb[n]:.0f} -> peak {observed.rss_peak_mb[n]:.0f} (+{observed.rss_growth_mb(n):.0f})"
        for n in sorted(observed.rss_peak_mb)))
    print("  RSS MB, mapped files (LevelDB tables; page cache, not bounded):  " + "   ".join(
        f"{n} {observed.file_first_mb.get(n, 0):.0f} -> peak {observed.file_peak_mb.get(n, 0):.0f} "
        f"(+{observed.file_growth_mb(n):.0f})" for n in sorted(observed.rss_peak_mb)))
    print(f"  alive: {'all nodes' if not observed.dead else 'DEAD ' + ', '.join(observed.dead)}; "
          f"writes after: {'accepted on every tablet' if observed.writes_after is None else observed.writes_after}")
    for check, held in result.checks:
        print(f"  check: {'ok  ' if held else 'FAIL'} {check}")
    print(f"  verdict {result.name}: {'PASS' if not failed else 'FAIL: ' + '; '.join(failed)}", flush=True)


def run(args: argparse.Namespace) -> int:
    names = [name.strip() for name in args.probes.split(",") if name.strip()]
    unknown = [name for name in names if name not in PROBES]
    if unknown or not names:
        raise CliError(f"--probes takes names from {', '.join(PROBES)}, not {args.probes!r}")
    scale = ProbeScale()
    max_offset_ns = parse_duration_ns(args.max_offset)
    print_setup(
        "probes", cluster=f"3 nodes, {args.tablets} tablets, 3 replicas, mutual TLS on, fresh LevelDB dirs, loopback TCP",
        max_offset=args.max_offset, duration=f"{args.seconds:g}s unloaded, then {args.seconds:g}s per probe",
        client=f"1 normal client in its own process: sequential puts of {NORMAL_VALUE_BYTES} B values, one key per tablet",
        probes=", ".join(names), scale=", ".join(f"{k}={v}" for k, v in attrs.asdict(scale).items()),
        values=f"scan rows {scale.scan_value_bytes / MIB:g} MiB, catch-up values {scale.catchup_value_bytes / MIB:g} MiB",
        verdict=f"PASS: anonymous RSS growth <= {RSS_GROWTH_MAX_MB:g} MB per node, p50 <= {P50_RATIO_MAX:g}x unloaded, "
        "nodes alive, writes after, probe checks",
        load=f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at start, {os.cpu_count()} CPUs",
    )
    directory = pathlib.Path(args.dir) if args.dir else pathlib.Path(tempfile.mkdtemp(prefix="chronodb-bench-probes-"))
    cluster = LocalCluster(directory / "data", tablets=args.tablets, max_offset_ns=max_offset_ns)
    writer: NormalWriter | None = None
    rows = []
    stopped: str | None = None
    try:
        cluster.start_all()
        cluster.wait_healthy()
        if {"unread-scans", "unbounded-scan"} & set(names):
            trio.run(scan_target, cluster, scale)
        writer = NormalWriter(cluster)
        _, unloaded = writer.during(lambda: time.sleep(args.seconds))
        unloaded_p50 = unloaded.percentile_ms(0.5)
        print(f"\nunloaded: {len(unloaded.latencies_s)} writes, {unloaded.errors} errors, p50 {unloaded_p50:.1f} ms, "
              f"p99 {unloaded.percentile_ms(0.99):.1f} ms", flush=True)
        for name in names:
            observed, writes = writer.during(lambda: trio.run(observe, cluster, name, args.seconds, scale))
            assert isinstance(observed, Observed)
            failed = verdict(observed, writes, unloaded_p50)
            print_probe(observed, writes, unloaded_p50, failed)
            rows.append((name, writes, observed, failed))
            if name != names[-1]:
                # A clean slate for the next probe: what one probe left behind (memory the allocator
                # keeps, a stalled node) must not be charged to the next.
                stopped = restart(cluster)
                if stopped is not None:
                    print(f"\nprobes stopped after {name}: the nodes did not restart: {stopped}", flush=True)
                    break
                print("  (nodes restarted for the next probe)", flush=True)
    finally:
        if writer is not None:
            writer.stop()
        cluster.stop_all()
        if not args.dir:
            shutil.rmtree(directory, ignore_errors=True)
    print(f"\n{'probe':<17} {'writes':>6} {'errors':>6} {'p50 ms':>7} {'p99 ms':>7} {'p50 x':>6} "
          f"{'max RSS +MB':>11} {'alive':>5} {'after':>5}  verdict")
    for name, writes, observed, failed in rows:
        growth = max(observed.rss_growth_mb(n) for n in observed.rss_peak_mb)
        print(f"{name:<17} {len(writes.latencies_s):>6} {writes.errors:>6} {writes.percentile_ms(0.5):>7.1f} "
              f"{writes.percentile_ms(0.99):>7.1f} {writes.percentile_ms(0.5) / unloaded_p50:>6.2f} {growth:>11.0f} "
              f"{'yes' if not observed.dead else 'NO':>5} {'yes' if observed.writes_after is None else 'NO':>5}  "
              f"{'PASS' if not failed else 'FAIL'}")
    if stopped is not None:
        print(f"not run: {', '.join(names[len(rows):])} (the nodes did not restart)")
    return 1 if stopped is not None or any(failed for *_, failed in rows) else 0


def restart(cluster: LocalCluster) -> str | None:
    """Stop and restart every node, wait for every tablet's leader: None, or why not (one line)."""
    try:
        cluster.stop_all()
        cluster.start_all()
        cluster.wait_healthy()
    except (AssertionError, OSError, CliError) as error:
        return str(error).splitlines()[0] if str(error) else type(error).__name__
    return None
