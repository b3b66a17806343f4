"""A local cluster of real node processes, for the demo, benchmarks and end-to-end tests.

`LocalCluster` writes a cluster.toml with free ports on 127.0.0.1, starts each
node as its own `python -m tools.cli node` process (real TCP, real LevelDB
directories), kills (SIGKILL) and restarts nodes, runs the CLI, and waits for
health through the same status requests `chronodb status` sends.

No node outlives the process that started it: each runs in its own session
with a parent-death SIGKILL (tools/up.py `die_with_parent`), and an atexit
hook stops whatever a caller forgot. Start clusters from the main thread.

Ports come from 20000-29999, below Linux's ephemeral range (so no outgoing
connection holds one), at random and never twice per process: two per node,
its port and its metrics port (`/metrics`). A port free when picked can still
be taken before the node binds it; the first `start_all` therefore re-picks
both ports of any node that exits with "address already in use", rewrites
cluster.toml and restarts the nodes (safe only then: no client has seen the
cluster yet).

TLS like `chronodb up`: the cluster's certificates are made in DIR/certs by
the same code (`ensure_cluster_certs`), the nodes run with them, and the
CLI, status requests and `client()` use the admin client certificate;
`LocalCluster(..., insecure=True)` runs everything --insecure instead.
"""

from __future__ import annotations

import atexit
import json
import os
import pathlib
import random
import signal
import socket
import subprocess
import sys
import time
from typing import Sequence

import attrs
import trio

from tools.status import gather, tablet_leaders
from tools.up import die_with_parent, start_node, stop_all
from txn.client import SyncClient
from txn.node.config import ClusterConfig, TransportLimits, generate, load_config, node_dir, write_config
from txn.net.tls import ClientTls, certs_dir, ensure_cluster_certs, is_insecure, load_client_tls, set_insecure

ROOT = pathlib.Path(__file__).resolve().parents[1]
PORT_RANGE = range(20000, 30000)
START_ATTEMPTS = 5
READY_TIMEOUT_S = 60.0
_port_picker = random.Random()  # seeded from the OS: concurrent test runs pick differently
_ports_handed_out: set[int] = set()
_running: set[subprocess.Popen] = set()


def free_ports(count: int) -> list[int]:
    """`count` ports from PORT_RANGE that bind right now and were never handed out before
    by this process. Another process may still take one before our node binds it."""
    ports: list[int] = []
    while len(ports) < count:
        assert len(_ports_handed_out) < len(PORT_RANGE) // 2, "port range exhausted"
        port = _port_picker.choice(PORT_RANGE)
        if port in _ports_handed_out:
            continue
        _ports_handed_out.add(port)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
    return ports


def _kill_running() -> None:
    """atexit: SIGKILL every node a caller forgot to stop (their data is crash-safe)."""
    for process in list(_running):
        if process.poll() is None:
            process.kill()
            process.wait()
    _running.clear()


atexit.register(_kill_running)


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


class LocalCluster:
    def __init__(self, data_dir: pathlib.Path, *, nodes: int = 3, tablets: int = 4, max_offset_ns: int = 10_000_000,
                 gc_retention_ns: int | None = None, decision_retention_ns: int | None = None,
                 max_value_bytes: int | None = None,
                 limits: TransportLimits | None = None, insecure: bool = False,
                 task_cpu_dir: pathlib.Path | None = None) -> None:
        """`task_cpu_dir`: nodes count their event loop's CPU per task into <dir>/<id>.json
        (`chronodb node --task-cpu`, tools/task_cpu.py)."""
        self.data_dir = data_dir
        self.task_cpu_dir = task_cpu_dir
        config = generate(nodes=nodes, tablets=tablets, max_offset_ns=max_offset_ns)
        ports = free_ports(2 * nodes)
        config = attrs.evolve(config, nodes=[attrs.evolve(n, port=p, metrics_port=m)
                                             for n, p, m in zip(config.nodes, ports[:nodes], ports[nodes:])])
        if gc_retention_ns is not None:
            config = attrs.evolve(config, gc_retention_ns=gc_retention_ns)
        if decision_retention_ns is not None:
            config = attrs.evolve(config, decision_retention_ns=decision_retention_ns)
        if max_value_bytes is not None:
            config = attrs.evolve(config, max_value_bytes=max_value_bytes)
        if limits is not None:
            config = attrs.evolve(config, limits=limits)
        write_config(data_dir, config)
        self.config: ClusterConfig = load_config(data_dir)
        self.insecure = insecure
        set_insecure(data_dir, insecure)
        self.tls: ClientTls | None = None
        if not insecure:
            ensure_cluster_certs(certs_dir(data_dir), [(n.id, n.host) for n in self.config.nodes])
            self.tls = load_client_tls(certs_dir(data_dir))
        self.processes: dict[str, subprocess.Popen] = {}
        self.ever_started = False

    @classmethod
    def existing(cls, data_dir: pathlib.Path) -> "LocalCluster":
        """A cluster over a directory made elsewhere (e.g. by `chronodb restore`), as `chronodb up --dir` serves it:
        certificates are made on first use unless the directory is --insecure."""
        cluster = cls.__new__(cls)
        cluster.data_dir = data_dir
        cluster.config = load_config(data_dir)
        cluster.insecure = is_insecure(data_dir)
        cluster.tls = None
        if not cluster.insecure:
            ensure_cluster_certs(certs_dir(data_dir), [(n.id, n.host) for n in cluster.config.nodes])
            cluster.tls = load_client_tls(certs_dir(data_dir))
        cluster.processes = {}
        cluster.ever_started = False
        cluster.task_cpu_dir = None
        return cluster

    @property
    def node_ids(self) -> list[str]:
        return [node.id for node in self.config.nodes]

    def address(self, node_id: str) -> tuple[str, int]:
        return self.config.node(node_id).address

    def metrics_address(self, node_id: str) -> tuple[str, int]:
        address = self.config.node(node_id).metrics_address
        assert address is not None, f"{node_id} has no metrics port in {self.data_dir}/cluster.toml"
        return address

    def task_cpu_file(self, node_id: str) -> pathlib.Path:
        assert self.task_cpu_dir is not None
        return self.task_cpu_dir / f"{node_id}.json"

    def start(self, node_id: str) -> None:
        assert node_id not in self.processes or self.processes[node_id].poll() is not None, f"{node_id} runs"
        node_dir(self.data_dir, node_id).mkdir(parents=True, exist_ok=True)
        self.ever_started = True
        extra = ["--task-cpu", str(self.task_cpu_file(node_id))] if self.task_cpu_dir is not None else []
        process = start_node(self.data_dir, node_id, env=cli_env(), cwd=ROOT, insecure=self.insecure, extra_args=extra)
        self.processes[node_id] = process
        _running.add(process)

    def start_all(self) -> None:
        """Start every node. The first time, also wait until each listens, and re-pick the
        port of a node whose port was taken meanwhile (at most START_ATTEMPTS rounds)."""
        if self.ever_started:
            for node_id in self.node_ids:
                self.start(node_id)
            return
        for _ in range(START_ATTEMPTS):
            log_sizes = {node_id: self.log_size(node_id) for node_id in self.node_ids}
            for node_id in self.node_ids:
                self.start(node_id)
            taken = self.wait_listening(log_sizes)
            if not taken:
                return
            self.stop_all()
            self.repick_ports(taken)
        raise AssertionError(f"ports still taken after {START_ATTEMPTS} attempts\n{self.logs_tail()}")

    def wait_listening(self, log_sizes: dict[str, int]) -> list[str]:
        """Wait until every node logged "ready" after log_sizes; return those whose port was
        taken. Any other failure to start is an AssertionError with the logs."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        waiting = set(self.node_ids)
        taken = []
        while waiting:
            for node_id in sorted(waiting):
                output = self.log_since(node_id, log_sizes[node_id])
                code = self.processes[node_id].poll()
                if f"node {node_id} ready on" in output:
                    waiting.discard(node_id)
                elif code is not None:
                    if "already in use" not in output:
                        self.stop_all()
                        raise AssertionError(f"node {node_id} exited with code {code} at start\n{self.logs_tail()}")
                    taken.append(node_id)
                    waiting.discard(node_id)
            if waiting and time.monotonic() > deadline:
                self.stop_all()
                raise AssertionError(f"{sorted(waiting)} not listening after {READY_TIMEOUT_S:g}s\n{self.logs_tail()}")
            time.sleep(0.05)
        return taken

    def repick_ports(self, node_ids: Sequence[str]) -> None:
        """New ports and metrics ports for these nodes in cluster.toml. Only before any client used the cluster."""
        picked = free_ports(2 * len(node_ids))
        new_ports = {node_id: (picked[2 * i], picked[2 * i + 1]) for i, node_id in enumerate(node_ids)}
        nodes = [attrs.evolve(n, port=new_ports[n.id][0], metrics_port=new_ports[n.id][1]) if n.id in new_ports else n
                 for n in self.config.nodes]
        write_config(self.data_dir, attrs.evolve(self.config, nodes=nodes))
        self.config = load_config(self.data_dir)

    def log_size(self, node_id: str) -> int:
        path = node_dir(self.data_dir, node_id) / "node.log"
        return path.stat().st_size if path.exists() else 0

    def log_since(self, node_id: str, offset: int) -> str:
        with open(node_dir(self.data_dir, node_id) / "node.log", "rb") as log_file:
            log_file.seek(offset)
            return log_file.read().decode(errors="replace")

    def kill(self, node_id: str, sig: int = signal.SIGKILL) -> None:
        process = self.processes[node_id]
        process.send_signal(sig)
        process.wait(timeout=60)
        _running.discard(process)

    def stop_all(self) -> None:
        stop_all(self.processes)
        _running.difference_update(self.processes.values())

    def statuses(self):
        return trio.run(gather, self.config, self.tls)

    def leaders(self) -> dict[str, str | None]:
        return {tablet: serving for tablet, (serving, _) in tablet_leaders(self.config, self.statuses()).items()}

    def wait_healthy(self, timeout_s: float = 60.0) -> dict[str, str]:
        deadline = time.monotonic() + timeout_s
        while True:
            leaders = self.leaders()
            if all(leaders.values()):
                return leaders  # type: ignore[return-value]
            if time.monotonic() > deadline:
                raise AssertionError(f"cluster not healthy after {timeout_s}s: {leaders}\n{self.logs_tail()}")
            time.sleep(0.1)

    def logs_tail(self, lines: int = 15) -> str:
        out = []
        for node_id in self.node_ids:
            path = node_dir(self.data_dir, node_id) / "node.log"
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- {node_id}\n" + "\n".join(tail))
        return "\n".join(out)

    def client(self, home: str | None = None, timeout_s: float = 10.0) -> SyncClient:
        addresses = [n.address for n in self.config.nodes]
        if home is not None:
            addresses.sort(key=lambda a: a != self.address(home))
        return SyncClient(addresses, cluster_id=self.config.cluster_id, timeout_s=timeout_s, tls=self.tls)

    def cli(self, *args: str, timeout_s: float = 60.0, with_dir: bool = True) -> subprocess.CompletedProcess:
        return run_cli([*args, "--dir", str(self.data_dir)] if with_dir else list(args), timeout_s)

    def cli_json(self, *args: str) -> tuple[int, list[dict]]:
        result = self.cli(*args, "--json")
        return result.returncode, [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def run_cli(args: Sequence[str], timeout_s: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tools.cli", *args], capture_output=True, text=True,
                          env=cli_env(), cwd=ROOT, timeout=timeout_s, preexec_fn=die_with_parent())
