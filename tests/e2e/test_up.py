"""`chronodb up` as a user runs it: start, Ctrl-C, resume with the data, refusals."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from tests.e2e.harness import LocalCluster, run_cli
from tools.localcluster import ROOT, cli_env


def start_up(data_dir) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tools.cli", "up", "--dir", str(data_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=cli_env(), cwd=ROOT)


def test_up_stops_on_ctrl_c_and_resumes_with_the_data(tmp_path) -> None:
    cluster = LocalCluster(tmp_path / "data")  # writes cluster.toml with free ports; `up` resumes it
    up = start_up(cluster.data_dir)
    try:
        cluster.wait_healthy()
        written = cluster.cli("put", "kept", "across-restarts")
        assert written.returncode == 0, written.stderr
        up.send_signal(signal.SIGINT)
        output, _ = up.communicate(timeout=20)
        assert up.returncode == 0, output
        assert "stopped" in output
        assert cluster.cli("status").returncode == 1  # nothing answers any more
        up = start_up(cluster.data_dir)
        cluster.wait_healthy()
        result = cluster.cli("get", "kept")
        assert result.returncode == 0 and result.stdout.strip() == "across-restarts"
    finally:
        if up.poll() is None:
            up.send_signal(signal.SIGTERM)
            up.communicate(timeout=20)


def test_up_refuses_a_directory_of_another_cluster(tmp_path) -> None:
    cluster = LocalCluster(tmp_path / "data")
    (cluster.data_dir / "n2").mkdir()
    (cluster.data_dir / "n2" / "CLUSTER_ID").write_text("some-other-cluster\n")
    started = time.monotonic()
    result = run_cli(["up", "--dir", str(cluster.data_dir)])
    assert result.returncode == 2 and "belongs to cluster some-other-cluster" in result.stderr
    assert result.stderr.count("\n") == 1 and time.monotonic() - started < 10


def test_up_refuses_mismatched_layout_flags(tmp_path) -> None:
    cluster = LocalCluster(tmp_path / "data")
    result = run_cli(["up", "--dir", str(cluster.data_dir), "--nodes", "5"])
    assert result.returncode == 2 and "--nodes" in result.stderr
