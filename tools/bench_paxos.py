"""`chronodb bench paxos`: chosen proposals/s and proposal->chosen latency of a 3-replica group.

Setup: three replica processes on 127.0.0.1, each a PaxosDriver with
PaxosStorage on its own LevelDB (every acknowledgement-bearing write synced),
talking over the TCP transport (`open_tcp_transport`). n1 is the preferred
leader and runs the load itself: K concurrent proposers (K = 1, 16, 256),
each proposing 64-byte commands back to back; latency is from `propose()` to
its return (chosen and applied at the leader). Fsyncs per chosen proposal
sum the synced writes of all three replicas. Baseline, measured in the same
run: synced single-put LevelDB writes per second (one fsync each) on the same
disk; the ratio says how much group commit and batching buy over one fsync
per proposal.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, Iterable

import trio

from hlc import HybridClock
from hlc.physical import SystemClock
from mvcc.engine import Batch
from mvcc.engine_leveldb import LevelDbEngine
from paxos.driver import NotLeader, PaxosConfig, PaxosDriver, ProposalLost
from paxos.storage import PaxosStorage
from tools.bench import existing_directory, positive_seconds, print_setup
import txn.wire  # noqa: F401 - registers the Paxos messages with the wire codec
from txn.net.transport import open_tcp_transport

IDS = ("n1", "n2", "n3")
LEVELS = (1, 16, 256)
MAX_OFFSET_NS = 500_000_000
PAYLOAD = b"x" * 64


class CountingStateMachine:
    def __init__(self) -> None:
        self.applied = 0

    def applied_index(self) -> int:
        return self.applied

    def apply(self, index: int, command: bytes) -> None:
        self.applied = index

    def export_snapshot(self) -> tuple[int, list[bytes]]:
        return self.applied, []

    def install_snapshot(self, index: int, chunks: Iterable[bytes]) -> None:
        self.applied = index


class Inbox:
    driver: PaxosDriver | None = None

    def handle_message(self, src: str, msg: Any) -> None:
        if self.driver is not None:
            self.driver.deliver(src, msg)

    async def handle_request(self, src: str, msg: Any) -> Any:
        raise NotImplementedError("paxos replicas take one-way messages only")


async def load(driver: PaxosDriver, inflight: int, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    lost = 0
    deadline = time.perf_counter() + seconds

    async def proposer() -> None:
        nonlocal lost
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            try:
                await driver.propose(PAYLOAD, timeout_s=10)
            except (NotLeader, ProposalLost, trio.TooSlowError):
                lost += 1
                continue
            latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(inflight):
            nursery.start_soon(proposer)
    elapsed = time.perf_counter() - start
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1e3 if latencies else float("nan")

    return {"chosen": len(latencies), "seconds": elapsed, "p50_ms": pct(0.50), "p99_ms": pct(0.99), "lost": lost}


async def replica(node_id: str, ports: list[int], directory: str) -> None:
    """One replica process: serve until stdin closes; answer `stats` and (at n1) `run K S` lines."""
    engine = LevelDbEngine(os.path.join(directory, node_id))
    inbox = Inbox()
    index = IDS.index(node_id)
    peers = {other: ("127.0.0.1", ports[i]) for i, other in enumerate(IDS) if other != node_id}
    async with open_tcp_transport(node_id=node_id, cluster_id="bench-paxos", host="127.0.0.1", port=ports[index],
                                  peers=peers, clock=HybridClock(SystemClock(), MAX_OFFSET_NS),
                                  handler=inbox) as transport:
        storage = PaxosStorage(engine)
        driver = PaxosDriver(node_id=node_id, peers=IDS, storage=storage, state_machine=CountingStateMachine(),
                             send=transport.send, now_ns=time.monotonic_ns, seed=node_id, config=PaxosConfig(),
                             preferred_leader=(node_id == "n1"))
        inbox.driver = driver
        async with trio.open_nursery() as nursery:
            await nursery.start(driver.run)
            print("ready", flush=True)
            while line := await trio.to_thread.run_sync(sys.stdin.readline):
                words = line.split()
                if words[0] == "stats":
                    reply: dict[str, Any] = {"synced_writes": storage.synced_writes, "is_leader": driver.status().is_leader,
                                             "has_lease": driver.has_lease()}
                elif words[0] == "campaign":
                    driver.campaign()
                    reply = {}
                else:
                    reply = await load(driver, int(words[1]), float(words[2]))
                print(json.dumps(reply), flush=True)
            nursery.cancel_scope.cancel()
    engine.close()


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def synced_put_rate(directory: str, seconds: float) -> float:
    engine = LevelDbEngine(os.path.join(directory, "baseline"))
    count = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        batch = Batch()
        batch.put(b"p%08d" % count, PAYLOAD)
        engine.apply(batch, sync=True)
        count += 1
    rate = count / (time.perf_counter() - start)
    engine.close()
    return rate


def ask(process: subprocess.Popen[str], line: str) -> dict[str, Any]:
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write(line + "\n")
    process.stdin.flush()
    return json.loads(process.stdout.readline())


def run(args: argparse.Namespace) -> int:
    if args.replica:
        trio.run(replica, args.replica, [int(p) for p in args.ports.split(",")], args.dir)
        return 0
    print_setup("paxos", replicas="3 processes on 127.0.0.1, TCP transport, LevelDB with synced writes",
                load=f"{'/'.join(map(str, LEVELS))} proposals in flight at the leader, {len(PAYLOAD)}-byte commands",
                duration=f"{args.seconds}s per figure", config="PaxosConfig() defaults (max batch 512)")
    with tempfile.TemporaryDirectory(prefix="chronodb-bench-paxos-", dir=args.tmp) as directory:
        baseline = synced_put_rate(directory, 1.0)
        print(f"baseline: {baseline:,.0f} synced single-put LevelDB writes/s (one fsync each)", flush=True)
        ports = free_ports(3)
        processes = [subprocess.Popen(
            [sys.executable, "-m", "tools.cli", "bench", "paxos", "--replica", node, "--ports", ",".join(map(str, ports)),
             "--dir", directory], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for node in IDS]
        try:
            for process in processes:
                assert process.stdout is not None
                assert process.stdout.readline().strip() == "ready"
            leader = processes[0]
            deadline = time.time() + 15
            while not ask(leader, "stats")["has_lease"]:
                if time.time() > deadline:
                    print("n1 did not become leader within 15s", file=sys.stderr)
                    return 1
                ask(leader, "campaign")
                time.sleep(0.3)
            for inflight in LEVELS:
                before = sum(ask(p, "stats")["synced_writes"] for p in processes)
                result = ask(leader, f"run {inflight} {args.seconds}")
                fsyncs = sum(ask(p, "stats")["synced_writes"] for p in processes) - before
                rate = result["chosen"] / result["seconds"]
                per = fsyncs / result["chosen"] if result["chosen"] else float("nan")
                print(f"{inflight:>4} in flight: {rate:>9,.0f} chosen/s  p50 {result['p50_ms']:7.2f} ms  "
                      f"p99 {result['p99_ms']:7.2f} ms  fsyncs/chosen {per:5.2f} (3 replicas)  "
                      f"ratio to baseline {rate / baseline:5.2f}" + (f"  lost {result['lost']}" if result["lost"] else ""),
                      flush=True)
        finally:
            for process in processes:
                if process.stdin is not None:
                    process.stdin.close()
            for process in processes:
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("paxos", help="3-replica Paxos: chosen proposals/s, latency, fsyncs per proposal")
    parser.add_argument("--seconds", type=positive_seconds, default=3.0, help="measuring time per figure (default 3.0)")
    parser.add_argument("--tmp", type=existing_directory, default=None, help="directory for the LevelDB data (default: system temp)")
    parser.add_argument("--replica", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--ports", default="", help=argparse.SUPPRESS)
    parser.add_argument("--dir", default="", help=argparse.SUPPRESS)
    parser.set_defaults(func=run)
