"""`chronodb up` as a user runs it: start, Ctrl-C, resume with the data, refusals."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

from tests.e2e.harness import LocalCluster, run_cli
from tests.e2e.test_cli_flow import thread_policies
from tools.localcluster import ROOT, START_ATTEMPTS, cli_env
from tools.up import die_with_parent

WAIT_S = 60.0


def start_up(data_dir, *extra: str) -> subprocess.Popen:
    """`chronodb up` in the background; it and (through it) its nodes die with pytest."""
    return subprocess.Popen([sys.executable, "-m", "tools.cli", "up", "--dir", str(data_dir), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=cli_env(), cwd=ROOT,
                            preexec_fn=die_with_parent())


def stop_up(up: subprocess.Popen) -> str:
    """Stop `up` (it stops its nodes) and return its output; "" if that was read already."""
    if up.poll() is None:
        up.send_signal(signal.SIGTERM)
    if up.stdout is None or up.stdout.closed:
        up.wait(timeout=WAIT_S)
        return ""
    return up.communicate(timeout=WAIT_S)[0]


def wait_up_healthy(cluster: LocalCluster, up: subprocess.Popen) -> bool:
    """True once every tablet has a leader; False if `up` exited first."""
    deadline = time.monotonic() + WAIT_S
    while up.poll() is None:
        if all(cluster.leaders().values()):
            return True
        assert time.monotonic() < deadline, f"cluster not healthy after {WAIT_S:g}s\n{cluster.logs_tail()}"
        time.sleep(0.1)
    return False


def first_up(cluster: LocalCluster, *extra: str) -> subprocess.Popen:
    """Start `up` on a new cluster.toml; a port taken since it was written is re-picked (only
    safe before the cluster's first start)."""
    for _ in range(START_ATTEMPTS):
        up = start_up(cluster.data_dir, *extra)
        if wait_up_healthy(cluster, up):
            return up
        output = stop_up(up)
        assert up.returncode == 2 and "in use" in output, output
        cluster.repick_ports(cluster.node_ids)
    raise AssertionError(f"ports still taken after {START_ATTEMPTS} attempts")


def test_up_stops_on_ctrl_c_and_resumes_with_the_data(tmp_path) -> None:
    cluster = LocalCluster(tmp_path / "data")  # writes cluster.toml with free ports; `up` resumes it
    up = first_up(cluster)
    try:
        written = cluster.cli("put", "kept", "across-restarts")
        assert written.returncode == 0, written.stderr
        up.send_signal(signal.SIGINT)
        output, _ = up.communicate(timeout=WAIT_S)
        assert up.returncode == 0, output
        assert "stopped" in output
        assert cluster.cli("status").returncode == 1  # nothing answers any more
        up = start_up(cluster.data_dir)
        assert wait_up_healthy(cluster, up), up.communicate(timeout=WAIT_S)[0]
        result = cluster.cli("get", "kept")
        assert result.returncode == 0 and result.stdout.strip() == "across-restarts"
    finally:
        stop_up(up)


def test_up_gives_its_nodes_the_cpu_policy_it_is_told(tmp_path) -> None:
    """`chronodb up --cpu-policy normal` starts each node with it: every thread under SCHED_OTHER
    (a node's own default is SCHED_BATCH, tests/e2e/test_cli_flow.py)."""
    cluster = LocalCluster(tmp_path / "data")
    up = first_up(cluster, "--cpu-policy", "normal")
    try:
        for node_id in cluster.node_ids:
            pid_file = cluster.data_dir / node_id / "node.pid"  # written once the node serves
            deadline = time.monotonic() + WAIT_S
            while not (pid_file.exists() and pid_file.read_text().strip()):
                assert time.monotonic() < deadline, f"{node_id} never wrote {pid_file}"
                time.sleep(0.1)
            assert thread_policies(int(pid_file.read_text())) == {os.SCHED_OTHER}, node_id
    finally:
        stop_up(up)


def test_up_refuses_a_directory_of_another_cluster(tmp_path) -> None:
    cluster = LocalCluster(tmp_path / "data")
    (cluster.data_dir / "n2").mkdir()
    (cluster.data_dir / "n2" / "CLUSTER_ID").write_text("some-other-cluster\n")
    result = run_cli(["up", "--dir", str(cluster.data_dir)])
    assert result.returncode == 2 and "belongs to cluster some-other-cluster" in result.stderr
    assert result.stderr.count("\n") == 1
    assert not list(cluster.data_dir.glob("*/node.log"))  # refused before any node started


def test_up_refuses_mismatched_layout_flags(tmp_path) -> None:
    cluster = LocalCluster(tmp_path / "data")
    result = run_cli(["up", "--dir", str(cluster.data_dir), "--nodes", "5"])
    assert result.returncode == 2 and "--nodes" in result.stderr
    result = run_cli(["up", "--dir", str(cluster.data_dir), "--metrics-port", "1"])
    assert result.returncode == 2 and "--metrics-port" in result.stderr


def test_up_and_node_refuse_a_metrics_port_in_use(tmp_path) -> None:
    cluster = LocalCluster(tmp_path / "data")
    host, port = cluster.metrics_address("n2")
    with socket.socket() as holder:
        holder.bind((host, port))
        holder.listen()
        result = run_cli(["up", "--dir", str(cluster.data_dir)])
        assert result.returncode == 2, result.stderr
        assert result.stderr == f"chronodb: metrics port {port} for node n2 on {host} is in use (Address already in use)\n"
        assert not list(cluster.data_dir.glob("*/node.log"))  # refused before any node started
        node = run_cli(["node", "--dir", str(cluster.data_dir), "--id", "n2"])
        assert node.returncode == 2 and node.stderr.count("\n") == 1, node.stderr
        assert f"cannot listen for metrics on {host}:{port}: the address is already in use" in node.stderr


def test_a_node_that_fails_to_start_is_reported_and_the_others_keep_serving(tmp_path) -> None:
    cluster = LocalCluster(tmp_path / "data")
    up = first_up(cluster)
    output = ""
    try:
        assert cluster.cli("put", "before", "damage").returncode == 0
        up.send_signal(signal.SIGINT)
        up.communicate(timeout=WAIT_S)
        # Break one replica of n2 in a way that is not corruption (a corrupt store is set aside and
        # rebuilt, tests/e2e/test_repair.py): its directory is a plain file, so LevelDB cannot open it.
        store = tmp_path / "data" / "n2" / "tablets" / "t1"
        shutil.rmtree(store)
        store.write_text("not a LevelDB directory\n")
        up = start_up(cluster.data_dir)
        deadline = time.monotonic() + WAIT_S
        while cluster.cli("put", "after", "damage", "--timeout", "5s").returncode != 0:
            assert up.poll() is None, up.communicate(timeout=WAIT_S)[0]
            assert time.monotonic() < deadline, cluster.logs_tail()
            time.sleep(0.5)
        assert up.poll() is None  # still running, serving with two of three nodes
        got = cluster.cli("get", "before")
        assert got.returncode == 0 and got.stdout.strip() == "damage"
    finally:
        output = stop_up(up)
    line = next(line for line in output.splitlines() if line.startswith("node n2 failed to start:"))
    assert "t1" in line and "chronodb node --dir" in line, output
    assert "node n1 failed" not in output and "node n3 failed" not in output
