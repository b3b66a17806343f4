"""The user's flow through the CLI against a real cluster, and each error case."""

from __future__ import annotations

import json
import os
import pathlib
import socket
import time

from tests.e2e.harness import LocalCluster, run_cli
from tools.common import printable


def test_put_get_versions_and_past_reads(shared_cluster: LocalCluster) -> None:
    stamps = []
    for value in ("v1", "v2", "v3"):
        code, [row] = shared_cluster.cli_json("put", "flow-key", value)
        assert code == 0 and row["key"] == "flow-key"
        assert row["time"].endswith("Z")
        stamps.append(row["ts"])
    walls = [tuple(map(int, s.split("."))) for s in stamps]
    assert walls == sorted(walls) and len(set(walls)) == 3

    result = shared_cluster.cli("get", "flow-key")
    assert result.returncode == 0 and result.stdout.strip() == "v3"
    for ts, value in zip(stamps, ("v1", "v2", "v3")):
        code, [row] = shared_cluster.cli_json("get", "flow-key", "--at", ts)
        assert code == 0
        assert (row["value"], row["version_ts"], row["ts"]) == (value, ts, ts)

    code, [row] = shared_cluster.cli_json("delete", "flow-key")
    assert code == 0
    result = shared_cluster.cli("get", "flow-key")
    assert result.returncode == 1 and "not found" in result.stderr
    code, [row_json] = shared_cluster.cli_json("get", "flow-key")
    assert code == 1 and row_json["value"] is None
    # The old versions stay readable at their timestamps.
    code, [old] = shared_cluster.cli_json("get", "flow-key", "--at", stamps[1])
    assert code == 0 and old["value"] == "v2"


def test_scan_crosses_tablets_in_key_order(shared_cluster: LocalCluster) -> None:
    keys = ["0010", "3fff", "4000", "7f00", "8001", "c0ff", "ff00"]  # hex: one or two per tablet
    for i, key in enumerate(keys):
        assert shared_cluster.cli("put", "--hex", key, f"{i:02x}").returncode == 0
    wanted = [printable(bytes.fromhex(k)) for k in keys]
    code, rows = shared_cluster.cli_json("scan", "--hex", "00", "")
    assert code == 0
    assert [row["key"] for row in rows if row["key"] in wanted] == wanted
    assert [row["value"] for row in rows if row["key"] in wanted] == [printable(bytes([i])) for i in range(len(keys))]
    # Limit and an upper bound (0x7f.. and 0x80.. are no text keys of other tests).
    result = shared_cluster.cli("scan", "--hex", "7f", "c1", "--limit", "2")
    assert result.returncode == 0
    assert [line.split("\t")[0] for line in result.stdout.splitlines()] == wanted[3:5]
    # A scan at a past timestamp does not see later writes.
    code, [first] = shared_cluster.cli_json("put", "scan-past", "a")
    code, _ = shared_cluster.cli_json("put", "scan-past2", "b")
    code, rows = shared_cluster.cli_json("scan", "scan-past", "scan-past~", "--at", first["ts"])
    assert [r["key"] for r in rows] == ["scan-past"]


def wall(ts_text: str) -> int:
    return int(ts_text.split(".")[0])


def test_reads_by_staleness(shared_cluster: LocalCluster) -> None:
    code, [first] = shared_cluster.cli_json("put", "stale-key", "old")
    time.sleep(2.0)
    code, [second] = shared_cluster.cli_json("put", "stale-key", "new")
    for flags in (["--stale", "1s"], ["--at", "-1s"]):
        before = time.time_ns()
        code, [row] = shared_cluster.cli_json("get", "stale-key", *flags)
        after = time.time_ns()
        assert code == 0
        # Read at (the moment the command ran) - 1s, with the version of that time.
        assert before - 1_000_000_000 - 50_000_000 <= wall(row["ts"]) <= after - 1_000_000_000 + 50_000_000, (flags, row)
        expected = "old" if row["ts"] < second["ts"] else "new"
        assert row["value"] == expected and row["version_ts"] == (first if expected == "old" else second)["ts"]
    code, [row] = shared_cluster.cli_json("get", "stale-key", "--at", first["ts"])
    assert row["value"] == "old"
    middle = f"{(wall(first['ts']) + wall(second['ts'])) // 2}.0"
    code, [row] = shared_cluster.cli_json("get", "stale-key", "--at", middle)
    assert row["value"] == "old" and row["ts"] == middle
    # At most 10s stale, counted from when the command ran (which is after `before`).
    before = time.time_ns()
    code, [bounded] = shared_cluster.cli_json("get", "stale-key", "--max-stale", "10s")
    assert code == 0 and wall(bounded["ts"]) >= before - 10_000_000_000, bounded
    assert bounded["value"] == ("old" if bounded["ts"] < second["ts"] else "new")


def test_error_cases(shared_cluster: LocalCluster, tmp_path: pathlib.Path) -> None:
    bad_ts = shared_cluster.cli("get", "k", "--at", "yesterday")
    assert bad_ts.returncode == 2 and bad_ts.stderr.count("\n") == 1 and "timestamp" in bad_ts.stderr
    future = shared_cluster.cli("get", "k", "--at", "+1h", "--timeout", "5s")  # refused at once, not timed out
    assert future.returncode == 2 and "beyond" in future.stderr
    missing = run_cli(["get", "k", "--dir", str(tmp_path / "nowhere")])
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    bad_hex = shared_cluster.cli("put", "--hex", "zz", "00")
    assert bad_hex.returncode == 2 and "not hex" in bad_hex.stderr
    # A port in use: `up` refuses before starting anything.
    taken = shared_cluster.config.nodes[0].port
    up = run_cli(["up", "--dir", str(shared_cluster.data_dir)], timeout_s=30)
    assert up.returncode == 2 and f"port {taken}" in up.stderr
    # A corrupt cluster.toml.
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "cluster.toml").write_text("cluster_id = [\n")
    result = run_cli(["get", "k", "--dir", str(corrupt)])
    assert result.returncode == 2 and "corrupt" in result.stderr
    result = run_cli(["up", "--dir", str(corrupt)])
    assert result.returncode == 2 and "corrupt" in result.stderr


def test_connection_refused_has_its_own_exit_code(tmp_path: pathlib.Path) -> None:
    cluster = LocalCluster(tmp_path / "down")  # configured, never started
    result = cluster.cli("put", "k", "v", "--timeout", "1s")
    assert result.returncode == 3 and "no node reachable" in result.stderr
    result = cluster.cli("status")
    assert result.returncode == 1 and "no" in result.stdout


def test_status_reports_leaders(shared_cluster: LocalCluster) -> None:
    # A node too busy to answer within status's deadline shows as down: ask again.
    deadline = time.monotonic() + 60
    while True:
        result = shared_cluster.cli("status", "--json")
        report = json.loads(result.stdout)
        if result.returncode == 0 and all(n["up"] for n in report["nodes"]):
            break
        assert time.monotonic() < deadline, result.stdout + result.stderr
        time.sleep(0.2)
    assert [n["up"] for n in report["nodes"]] == [True, True, True]
    assert all(t["leader"] in t["replicas"] for t in report["tablets"])
    assert {t["id"] for t in report["tablets"]} == {"t1", "t2", "t3", "t4"}


def test_garbage_bytes_leave_the_node_serving(shared_cluster: LocalCluster) -> None:
    host, port = shared_cluster.address("n1")
    for payload in (b"\xff" * 64, b"\x00\x00\x00\x05abc", b"\x7f\xff\xff\xff", b"GET / HTTP/1.1\r\n\r\n"):
        with socket.create_connection((host, port), timeout=30) as sock:
            sock.sendall(payload)
            sock.settimeout(2)  # the node may keep the connection open: stop listening after 2s
            try:
                while sock.recv(4096):
                    pass
            except (socket.timeout, ConnectionResetError):
                pass
    assert shared_cluster.cli("put", "after-garbage", "ok").returncode == 0
    assert shared_cluster.cli("get", "after-garbage").stdout.strip() == "ok"


def thread_policies(pid: int) -> set[int]:
    """The scheduling policies of a process's threads (one that ends meanwhile is left out)."""
    policies = set()
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            policies.add(os.sched_getscheduler(int(tid)))
        except ProcessLookupError:
            pass
    return policies


def test_nodes_run_every_thread_under_the_batch_cpu_policy(shared_cluster: LocalCluster) -> None:
    """`chronodb node` defaults to `--cpu-policy batch` (txn/node/cpu_policy.py): each thread of
    each node process, those started after start-up (the log writer's) included."""
    assert shared_cluster.cli("put", "policy-key", "v").returncode == 0
    for node_id, process in shared_cluster.processes.items():
        assert thread_policies(process.pid) == {os.SCHED_BATCH}, node_id
