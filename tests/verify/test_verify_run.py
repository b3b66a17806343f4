"""One short real run of `chronodb verify`: a fresh local 3-node cluster, the
register workload, the kill and skew nemeses. The verdict must be valid,
faults must have been injected, and every output must be written."""

from __future__ import annotations

import argparse
import json
import pathlib

import attrs
import pytest

from tools import verify
from tools.errors import CliError
from tools.localcluster import run_cli
from tools.verify_register import check_register
from tools.verify_workloads import op_from_json

pytestmark = pytest.mark.e2e


def test_register_run_under_kill_and_skew_is_valid(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "out"
    result = run_cli(["verify", "--fresh", "--workload", "register", "--nemesis", "kill,skew", "--seconds", "18",
                      "--rate", "50", "--clients", "8", "--seed", "test-1", "--out", str(out)], timeout_s=240)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "verdict: valid" in result.stdout
    verdict = json.loads((out / "verdict.json").read_text())
    assert verdict["valid"] and verdict["anomalies"] == []
    assert verdict["faults"] >= 2 and set(verdict["faults_by_kind"]) <= {"kill", "skew"}
    faults = json.loads((out / "faults.json").read_text())
    assert all(f["end_ns"] is not None and f["end_ns"] > f["start_ns"] for f in faults)
    lines = (out / "history.jsonl").read_text().splitlines()
    assert len(lines) == verdict["ops"] > 200 and verdict["ok"] > 0.8 * verdict["ops"]
    for name in ("latency-raw.png", "rate.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (out / "logs").iterdir()) == ["n1.log", "n2.log", "n3.log"]
    assert_checker_catches_a_stale_read_in(lines)


def assert_checker_catches_a_stale_read_in(lines: list[str]) -> None:
    """The real history, read back, is valid; with one strong read made to return the
    version before the one it saw, it is not."""
    history = [op_from_json(json.loads(line)) for line in lines]
    assert check_register(history).valid
    acked = {}
    for op in history:
        if op.kind == "write" and op.outcome == "ok":
            acked.setdefault(op.key, []).append(op)
    for i, op in enumerate(history):
        versions = sorted(acked.get(op.key, []), key=lambda w: w.ts)
        seen = [n for n, w in enumerate(versions) if w.value == op.value]
        # Only a version acknowledged before the read began makes the older one a stale strong read.
        if (op.kind == "read" and op.mode == "strong" and op.outcome == "ok" and seen and seen[0] > 0
                and versions[seen[0]].complete_ns < op.invoke_ns):
            older = versions[seen[0] - 1]
            history[i] = attrs.evolve(op, value=older.value, version_ts=older.ts)
            break
    else:
        pytest.fail("no strong read of a key's second or later version acknowledged before it")
    assert {"stale-read", "stale-strong-read"} <= set(check_register(history).names())


def test_kill_and_pause_are_refused_against_a_running_cluster(tmp_path: pathlib.Path) -> None:
    from tools.localcluster import LocalCluster
    cluster = LocalCluster(tmp_path / "data")
    cluster.start_all()
    try:
        cluster.wait_healthy(60)
        result = cluster.cli("verify", "--nemesis", "kill", "--seconds", "10", "--out", str(tmp_path / "out"))
        assert result.returncode == 2 and "needs a local cluster" in result.stderr
    finally:
        cluster.stop_all()


def test_an_insecure_run_tests_a_plain_tcp_cluster_and_is_valid(tmp_path: pathlib.Path) -> None:
    """`--insecure`: the nodes run without TLS, so every connection takes its plain-TCP path
    (`send_plain`, txn/net/socket_send.py) while nodes are killed and partitioned."""
    out = tmp_path / "out"
    result = run_cli(["verify", "--fresh", "--insecure", "--workload", "register", "--nemesis", "kill,partition",
                      "--seconds", "14", "--rate", "50", "--clients", "6", "--seed", "test-insecure",
                      "--out", str(out)], timeout_s=240)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "verdict: valid" in result.stdout and ", --insecure" in result.stdout
    verdict = json.loads((out / "verdict.json").read_text())
    assert verdict["valid"] and verdict["faults"] >= 1 and verdict["ok"] > 0.5 * verdict["ops"]
    for node in ("n1", "n2", "n3"):
        assert "INSECURE (no TLS" in (out / "logs" / f"{node}.log").read_text()


def test_insecure_is_refused_against_a_running_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: pathlib.Path) -> None:
    def no_cluster(*args: object, **kwargs: object) -> None:
        raise AssertionError("verify started a cluster of its own")

    monkeypatch.setattr(verify, "cluster_runs", lambda data_dir: object())  # "a cluster runs in DIR"
    monkeypatch.setattr(verify, "LocalCluster", no_cluster)
    parser = argparse.ArgumentParser()
    verify.register(parser.add_subparsers())
    args = parser.parse_args(["verify", "--dir", str(tmp_path), "--insecure", "--out", str(tmp_path / "out")])
    with pytest.raises(CliError, match="--insecure applies to the fresh cluster"):
        verify.run(args)
    assert not (tmp_path / "out").exists(), "refused before writing anything"
