"""A local cluster of real node processes, for the demo, benchmarks and end-to-end tests.

`LocalCluster` writes a cluster.toml with free ports on 127.0.0.1, starts each
node as its own `python -m tools.cli node` process (real TCP, real LevelDB
directories), kills (SIGKILL) and restarts nodes, runs the CLI, and waits for
health through the same status requests `chronodb status` sends.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
from typing import Sequence

import attrs
import trio

from tools.status import gather, tablet_leaders
from tools.up import start_node, stop_all
from txn.client import SyncClient
from txn.node.config import ClusterConfig, generate, load_config, node_dir, write_config

ROOT = pathlib.Path(__file__).resolve().parents[1]


def free_ports(count: int) -> list[int]:
    sockets = []
    try:
        for _ in range(count):
            probe = socket.socket()
            probe.bind(("127.0.0.1", 0))
            sockets.append(probe)
        return [probe.getsockname()[1] for probe in sockets]
    finally:
        for probe in sockets:
            probe.close()


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


class LocalCluster:
    def __init__(self, data_dir: pathlib.Path, *, nodes: int = 3, tablets: int = 4, max_offset_ns: int = 10_000_000,
                 gc_retention_ns: int | None = None) -> None:
        self.data_dir = data_dir
        config = generate(nodes=nodes, tablets=tablets, max_offset_ns=max_offset_ns)
        ports = free_ports(nodes)
        config = attrs.evolve(config, nodes=[attrs.evolve(n, port=p) for n, p in zip(config.nodes, ports)])
        if gc_retention_ns is not None:
            config = attrs.evolve(config, gc_retention_ns=gc_retention_ns)
        write_config(data_dir, config)
        self.config: ClusterConfig = load_config(data_dir)
        self.processes: dict[str, subprocess.Popen] = {}

    @property
    def node_ids(self) -> list[str]:
        return [node.id for node in self.config.nodes]

    def address(self, node_id: str) -> tuple[str, int]:
        return self.config.node(node_id).address

    def start(self, node_id: str) -> None:
        assert node_id not in self.processes or self.processes[node_id].poll() is not None, f"{node_id} runs"
        node_dir(self.data_dir, node_id).mkdir(parents=True, exist_ok=True)
        self.processes[node_id] = start_node(self.data_dir, node_id, env=cli_env(), cwd=ROOT)

    def start_all(self) -> None:
        for node_id in self.node_ids:
            self.start(node_id)

    def kill(self, node_id: str, sig: int = signal.SIGKILL) -> None:
        process = self.processes[node_id]
        process.send_signal(sig)
        process.wait(timeout=10)

    def stop_all(self) -> None:
        stop_all(self.processes)

    def statuses(self):
        return trio.run(gather, self.config)

    def leaders(self) -> dict[str, str | None]:
        return {tablet: serving for tablet, (serving, _) in tablet_leaders(self.config, self.statuses()).items()}

    def wait_healthy(self, timeout_s: float = 30.0) -> dict[str, str]:
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
        return SyncClient(addresses, cluster_id=self.config.cluster_id, timeout_s=timeout_s)

    def cli(self, *args: str, timeout_s: float = 60.0, with_dir: bool = True) -> subprocess.CompletedProcess:
        return run_cli([*args, "--dir", str(self.data_dir)] if with_dir else list(args), timeout_s)

    def cli_json(self, *args: str) -> tuple[int, list[dict]]:
        result = self.cli(*args, "--json")
        return result.returncode, [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def run_cli(args: Sequence[str], timeout_s: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tools.cli", *args], capture_output=True, text=True,
                          env=cli_env(), cwd=ROOT, timeout=timeout_s)
